"""Evaluation entry point: checkpoint -> test metrics, confusion matrix (PNG, logged), predictions CSV.

Without a labelled test split (GLUE SST-2) the metrics, confusion matrix and predictions are the
validation split's.

sft-eval ckpt_path=outputs/train/cifar10_resnet18/<run>/checkpoints/last.ckpt
"""

from typing import Any

import hydra
from omegaconf import DictConfig

from sft import entry_points
from sft.runs.lock import releasing_held_folders
from sft.runs.recorded_job import run_recorded
from sft.runs.result import job_recorder
from sft.utils.cli import checks_overrides
from sft.utils.config import CONF_DIR, register_resolvers
from sft.utils.io import check_checkpoint_file, checkpoint_path
from sft.utils.logs import log_levels_kept

# before Hydra composes (also in launcher processes that import this module): ${sft_root:}
register_resolvers()


@releasing_held_folders
@checks_overrides(config_name="eval", adds=("data", "debug", "trainer", "logger", "paths", "hydra"))
@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="eval")
def main(cfg: DictConfig) -> None:
    """Score the checkpoint and write scores.json (its metrics: a sweep over checkpoints
    summarises them); a sweep's failing job leaves the others going."""

    recorder = job_recorder(cfg)

    def job() -> dict[str, Any]:
        # torch and Lightning (about 10 s) load for a run only: --help, --cfg job, a mistaken
        # override and a checkpoint that is not there are answered in about a second
        check_checkpoint_file(checkpoint_path(cfg.ckpt_path))
        with log_levels_kept():  # Lightning's import resets its loggers' levels
            from sft.data.resumable import end_loader_workers
            from sft.jobs.eval import evaluate

        try:
            return evaluate(cfg, recorder)
        finally:  # however it ends (a failed job of a sweep goes on)
            end_loader_workers()

    run_recorded(job, recorder)


if __name__ == "__main__":
    entry_points.run(main)
