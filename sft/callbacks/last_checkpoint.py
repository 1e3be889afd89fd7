"""`last.ckpt`: the run's newest state, which resume= continues and sft-eval/-predict/-export read.

Lightning 2.6's `ModelCheckpoint(save_last=True)` falls short of that twice: at a validation it
writes last.ckpt only when a top-k checkpoint is saved at the same step (after a validation that
did not improve, last.ckpt stayed behind), and when training ends it writes it only if it never
wrote one (a run stopped by `max_steps` or `max_time` mid-epoch kept the state of its last
validation). A ModelCheckpoint without a monitor saves every time it is triggered; this one also
saves when training ends, once per step, and under fast_dev_run too (as save_last did).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info

from sft.callbacks.exact_resume import accumulating, validation_follows


class LastCheckpoint(ModelCheckpoint):
    """Write `<dirpath>/last.ckpt` after every validation (at each epoch's end without one),
    whatever it scored, and when training ends after a step not saved yet."""

    def __init__(self, dirpath: str | Path, every_n_epochs: int = 1) -> None:
        super().__init__(
            dirpath=dirpath,
            filename="last",
            monitor=None,
            save_top_k=1,
            save_last=False,
            every_n_epochs=every_n_epochs,
            # one file, shared with step_checkpoint (conf/callbacks): no last-v1.ckpt
            enable_version_counter=False,
        )
        # a validation came mid-way through a gradient accumulation: last.ckpt is written at its
        # step instead (checkpoints hold no gradients; a run resumed from one written there
        # stepped on the rest of the accumulation alone)
        self._at_step = False

    def _save_topk_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict) -> None:
        # at a validation mid-way through a gradient accumulation, where ModelCheckpoint's own
        # tests say to save: at the accumulation's step instead; not after a validation by wall
        # time, which may follow the step's batch at once (its scores would then be missing)
        self._at_step = (
            trainer.validating
            and accumulating(trainer)
            and getattr(trainer, "_val_check_time_interval", None) is None
        )
        if not self._at_step:
            super()._save_topk_checkpoint(trainer, monitor_candidates)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, *args)
        # a validation due now writes it after its scores (one written before it resumed past
        # it: Lightning counts it done)
        if self._at_step and not accumulating(trainer) and not validation_follows(trainer):
            self._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        # a resumed run starts from this step's last.ckpt: saved already (was: a run that early
        # stopping had ended wrote it again at its end, at another loader position and RNG)
        self._last_global_step_saved = trainer.global_step

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # also under fast_dev_run (debug=fdr), where ModelCheckpoint saves nothing else: "one
        # batch of everything" includes the checkpoint that sft-eval/-predict/-export read
        if trainer.global_step != self._last_global_step_saved:
            self._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))


def ranking_checkpoint(trainer: L.Trainer) -> Checkpoint | None:
    """The checkpoint callback whose best checkpoint a run's test reads: the first that ranks
    by a monitored metric, else Lightning's first (`last_checkpoint` alone, Lightning's default
    one). Lightning's `trainer.checkpoint_callback` is the first in the list, which was
    last_checkpoint under `callbacks=[last_checkpoint,model_checkpoint]`, or beside a
    user's own monitored `+callbacks.best=...`: last.ckpt was tested, not the best."""
    # (a user's own Checkpoint that is no ModelCheckpoint ranks nothing sft can read)
    monitored = (c for c in trainer.checkpoint_callbacks if getattr(c, "monitor", None))
    return next(monitored, trainer.checkpoint_callback)


def name_checkpoints_by_step(trainer: L.Trainer) -> None:
    """A model checkpoint callback that keeps several checkpoints (`save_top_k` other than 0
    and 1) where one epoch can validate or save more than once (`trainer.val_check_interval`
    below an epoch, a count of batches or a wall time; `every_n_train_steps`) gets the step in
    its file names: named by epoch alone, a later checkpoint of the epoch was written over an
    earlier one, and a best state kept in the top k could be lost (a model checkpoint's
    `enable_version_counter` is off so that a resumed run writes over the epochs it redoes)."""
    # a fraction of an epoch, a count of batches; unset when validation is by wall time
    interval = getattr(trainer, "val_check_interval", None)
    within_epoch = not isinstance(interval, float) or interval < 1.0
    for callback in trainer.checkpoint_callbacks:
        if not isinstance(callback, ModelCheckpoint) or isinstance(callback, LastCheckpoint):
            continue  # a user's own Checkpoint names its files itself
        name = callback.filename or ""
        if callback.save_top_k in (0, 1) or "{step" in name:
            continue
        if not (within_epoch or callback._every_n_train_steps):
            continue
        step = "{step}" if callback.auto_insert_metric_name else "step_{step:06d}"
        callback.filename = f"{name}-{step}" if name else "{epoch}-{step}"
        rank_zero_info(
            f"checkpoints are named {callback.filename}.ckpt: with save_top_k="
            f"{callback.save_top_k}, one per epoch would be written over by the next saved in "
            "the same epoch"
        )
