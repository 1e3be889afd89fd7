"""Evaluation entry point: checkpoint -> test metrics, confusion matrix (PNG, logged), predictions CSV.

Without a labelled test split (GLUE SST-2) the metrics, confusion matrix and predictions are the
validation split's.

sft-eval ckpt_path=outputs/train/cifar10_resnet18/<run>/checkpoints/last.ckpt
"""

import hydra
from omegaconf import DictConfig

from sft import entry_points
from sft.errors import report_user_errors
from sft.runs.lock import releasing_held_folders
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
    # torch and Lightning (about 10 s) load for a run only: --help, --cfg job, a mistaken
    # override and a checkpoint that is not there are answered in about a second
    report_user_errors(lambda: check_checkpoint_file(checkpoint_path(cfg.ckpt_path)))
    with log_levels_kept():  # Lightning's import resets its loggers' levels
        from sft.jobs.eval import evaluate

    report_user_errors(lambda: evaluate(cfg))


if __name__ == "__main__":
    entry_points.run(main)
