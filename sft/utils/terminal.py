"""Whether a run's output is a terminal, where a progress bar can redraw itself."""

from __future__ import annotations

import logging
import sys
from collections.abc import Collection

from omegaconf import DictConfig, open_dict

log = logging.getLogger(__name__)


def progress_bar_off_unless_terminal(
    trainer_cfg: DictConfig, typed: Collection[str], rich: bool
) -> None:
    """`trainer.enable_progress_bar` false where the bar's stream is not a terminal (a file or
    a pipe: a cluster job's log, nohup, CI), unless the command line sets it. There Rich's bar
    (`rich`: on stdout) printed one frame as the run ended, at 80 columns (the metrics' names
    and values on different lines), and Lightning's TQDM bar (on stderr) a frame per refresh,
    carriage returns filling the log; `callbacks.metric_lines` logs the run's progress
    instead."""
    if not trainer_cfg.get("enable_progress_bar", True) or "trainer.enable_progress_bar" in typed:
        return
    if (sys.stdout if rich else sys.stderr).isatty():
        return
    with open_dict(trainer_cfg):
        trainer_cfg.enable_progress_bar = False
    log.info(
        "no progress bar: the output is not a terminal (trainer.enable_progress_bar=true shows "
        "it anyway)"
    )
