"""Training entry point: compose config -> seed -> instantiate -> fit -> test -> monitored metric.

sft-train experiment=cifar10_resnet18 trainer.max_epochs=5
python -m sft.train experiment=cifar10_effnet_lite0 ckpt_path=outputs/.../last.ckpt
"""

import logging
from typing import Any

import hydra
import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from sft.utils.config import CONF_DIR, print_and_save_config
from sft.utils.errors import report_user_errors
from sft.utils.instantiate import instantiate_callbacks, instantiate_loggers

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit (optionally resuming from `ckpt_path`), then test the best checkpoint; return metrics."""
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    print_and_save_config(cfg, cfg.paths.output_dir)

    datamodule: L.LightningDataModule = instantiate(cfg.data)
    model: L.LightningModule = instantiate(cfg.model)
    trainer: L.Trainer = instantiate(
        cfg.trainer,
        callbacks=instantiate_callbacks(
            cfg.get("callbacks"), progress_bar=cfg.trainer.get("enable_progress_bar", True)
        ),
        logger=instantiate_loggers(cfg.get("logger")),
    )
    for logger in trainer.loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    if cfg.get("train"):
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
    metrics = dict(trainer.callback_metrics)

    if cfg.get("test") and not getattr(datamodule, "has_labelled_test", True):
        log.info(
            "The data has no labelled test split: skipping test (sft-eval writes predictions)."
        )
    elif cfg.get("test"):
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if not best:
            log.warning("No best checkpoint recorded: testing the current weights.")
        trainer.test(model, datamodule=datamodule, ckpt_path=best or None, weights_only=True)
        if best:
            log.info(f"Best checkpoint: {best}")
        metrics.update(trainer.callback_metrics)
    return {k: float(v) for k, v in metrics.items()}


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = report_user_errors(lambda: train(cfg))
    name = cfg.get("optimized_metric")
    return metrics.get(name) if name else None


if __name__ == "__main__":
    main()
