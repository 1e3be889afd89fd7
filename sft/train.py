"""Training entry point: compose config -> the training job (sft.jobs.train) -> monitored metric.

sft-train experiment=cifar10_resnet18 trainer.max_epochs=5
python -m sft.train experiment=cifar10_effnet_lite0 ckpt_path=outputs/.../last.ckpt
"""

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from sft import entry_points
from sft.runs.lock import releasing_held_folders
from sft.runs.result import job_recorder
from sft.runs.sweep_summary import stop_of_a_sweep_job
from sft.utils.cli import checks_overrides
from sft.utils.config import CONF_DIR, register_resolvers
from sft.utils.logs import log_levels_kept
from sft.utils.signals import ctrl_c_deferred

# before Hydra composes (also in launcher processes that import this module): ${sft_root:}
register_resolvers()


@releasing_held_folders
@checks_overrides(config_name="train")
@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Train and write result.json; the monitored metric, for a sweeper."""
    recorder = job_recorder(cfg)
    # torch, Lightning and the models (about 10 s) load for a run only: --help, --cfg job and a
    # mistaken override are answered in about a second
    try:
        with log_levels_kept():  # Lightning's import resets its loggers' levels
            from sft.jobs.train import train_job
    except KeyboardInterrupt as exc:  # recorded in the run directory Hydra made
        with ctrl_c_deferred("the run's record"):
            recorder.failed(exc)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise stop_of_a_sweep_job(HydraConfig.get(), exc) from None
        raise
    return train_job(cfg, recorder)


if __name__ == "__main__":
    entry_points.run(main)
