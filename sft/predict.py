"""Prediction entry point: checkpoint + inputs -> predicted labels and class probabilities.

sft-predict ckpt_path=<run>/checkpoints/last.ckpt inputs=reviews.txt            # one text per line
sft-predict ckpt_path=... inputs=data/sst2/test.tsv                              # + SST-2.tsv for GLUE
sft-predict ckpt_path=... inputs=photos/ format=json                             # a folder of images
"""

import hydra
from omegaconf import DictConfig

from sft import entry_points
from sft.errors import report_user_errors
from sft.runs.lock import releasing_held_folders
from sft.utils.cli import checks_overrides
from sft.utils.config import CONF_DIR, register_resolvers
from sft.utils.io import check_checkpoint_file, checkpoint_path
from sft.utils.logs import error_to_log_files, log_levels_kept

# before Hydra composes (also in launcher processes that import this module): ${sft_root:}
register_resolvers()


@releasing_held_folders
@checks_overrides(config_name="predict", adds=("data.", "paths", "hydra"))
@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="predict")
def main(cfg: DictConfig) -> None:
    # torch and Lightning (about 10 s) load for a run only: --help, --cfg job, a mistaken
    # override and a checkpoint that is not there are answered in about a second
    report_user_errors(
        lambda: check_checkpoint_file(checkpoint_path(cfg.ckpt_path)), logged=error_to_log_files
    )
    with log_levels_kept():  # Lightning's import resets its loggers' levels
        from sft.jobs.predict import predict

    report_user_errors(lambda: predict(cfg), logged=error_to_log_files)


if __name__ == "__main__":
    entry_points.run(main)
