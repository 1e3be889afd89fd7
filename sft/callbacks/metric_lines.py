"""A log line per validation, and lines of training progress where no progress bar shows it.

A run whose output is not a terminal (a cluster job's log, nohup, CI) has no progress bar
(sft.utils.terminal): Rich's printed one frame when the fit ended, at 80 columns, the metrics'
names and values on different lines, and the run's log file never held a validation's metrics.
These lines go to the console and the log file; under a live bar, which shows the metrics, the
validation's line goes to the log file only.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from typing import Any

import lightning as L
from lightning.pytorch import Callback

from sft.errors import SFTError
from sft.utils.logs import log_to_files, rank_zero_warning

log = logging.getLogger(__name__)


def metric_text(metrics: Mapping[str, Any]) -> str:
    """`val/acc 0.9083, val/loss 0.2571`: sorted, 4 significant digits."""
    return ", ".join(f"{name} {float(value):.4g}" for name, value in sorted(metrics.items()))


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class MetricLines(Callback):
    """Log the `val/` metrics after each validation (not the sanity check) and, without a
    progress bar, a line each `progress_every` of a training epoch: batches done, the training
    loss, the rate and the epoch's time left. On global rank 0."""

    def __init__(self, progress_every: float = 0.1) -> None:
        if isinstance(progress_every, bool) or not 0 < progress_every <= 1:
            raise SFTError(
                "callbacks.metric_lines.progress_every: expected a fraction of an epoch in "
                f"(0, 1], got {progress_every!r}"
            )
        self.progress_every = progress_every
        # when this process began the epoch, and at which batch (an epoch resumed mid-way: past
        # the batches its first part did)
        self._epoch_start = 0.0
        self._first_batch: int | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning counts the interval in batches, and a validation between two optimizer
        # steps scores the weights of the one before (was: six validations of the untrained
        # weights at steps 0 and 1, early stopping's patience spent on them, a "completed" run)
        per_step, every = trainer.accumulate_grad_batches, trainer.val_check_batch
        if per_step < 2 or every is None or trainer.fast_dev_run:  # None: by wall time
            return
        batches = trainer.num_training_batches
        if trainer.check_val_every_n_epoch is None and math.isfinite(batches):
            # counted over the run's batches: where in its epoch each of the first validations
            # falls (accumulations start again with each epoch)
            at = {k * every % batches for k in range(1, 101)}
        else:
            at = {every} if every < batches else set()  # once an epoch: its last batch steps
        if any(position % per_step for position in at) and trainer.is_global_zero:
            # the interval a multiple of the steps already: an epoch's batches are not, and the
            # run-long count falls between steps in later epochs (was: the same advice, which
            # the interval followed)
            advice = (
                f"validate at a multiple of {per_step} batches (the interval counts batches, "
                "not optimizer steps)"
                if every % per_step
                else f"an epoch's {batches} batches are no multiple of {per_step}, so the "
                "interval, counted over the run, falls between steps in later epochs: make "
                f"an epoch a multiple of {per_step} batches (data.batch_size, data.drop_last), "
                "or validate once an epoch (trainer.check_val_every_n_epoch=1)"
            )
            rank_zero_warning(
                log,
                f"validation every {every} batches (trainer.val_check_interval="
                f"{trainer.val_check_interval}) and an optimizer step every {per_step} "
                f"(trainer.accumulate_grad_batches={per_step}): a validation between steps "
                "scores the weights of the step before (several, the same weights, each counted "
                f"by early stopping's patience); {advice}",
            )

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._first_batch = None

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._first_batch is None:
            self._epoch_start, self._first_batch = time.monotonic(), batch_idx

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if trainer.progress_bar_callback is not None or not trainer.is_global_zero:
            return
        total = trainer.num_training_batches
        sized = math.isfinite(total) and total >= 1
        # an epoch of no length (an iterable dataset under max_steps): a line each 10 logging
        # intervals
        every = math.ceil(total * self.progress_every) if sized else 10 * trainer.log_every_n_steps
        done = batch_idx + 1
        if done % max(1, every) and done != total:
            return
        elapsed = time.monotonic() - self._epoch_start
        # validations mid-epoch included: the rate the epoch's end comes at
        rate = (done - (self._first_batch or 0)) / elapsed if elapsed > 0 else 0.0
        metrics = trainer.callback_metrics
        loss = metrics.get("train/loss_step", metrics.get("train/loss"))
        parts = [f"epoch {trainer.current_epoch}: {done}{f'/{total}' if sized else ''} batches"]
        if loss is not None:
            parts.append(f"train/loss {float(loss):.4g}")
        parts.append(f"{rate:.1f} batches/s")
        if sized and done < total and rate > 0:
            parts.append(f"{_duration((total - done) / rate)} left in the epoch")
        log.info(", ".join(parts))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        metrics = {k: v for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        if not metrics:
            return
        line = (
            f"validation at epoch {trainer.current_epoch}, step {trainer.global_step}: "
            + metric_text(metrics)
        )
        if trainer.progress_bar_callback is not None:
            log_to_files(log, logging.INFO, line)
        else:
            log.info(line)
