"""Stop training at the first NaN / inf loss, before it reaches the weights or a checkpoint."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import ModelCheckpoint

from sft.errors import SFTError


def last_checkpoint(trainer: L.Trainer) -> Path | None:
    """The newest `last.ckpt` of the trainer's checkpoint callbacks, if one was written."""
    found = [
        Path(cb.dirpath) / f"{cb.CHECKPOINT_NAME_LAST}{cb.FILE_EXTENSION}"
        for cb in trainer.callbacks
        if isinstance(cb, ModelCheckpoint) and cb.dirpath
    ]
    found = [p for p in found if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


class StopOnNonFiniteLoss(Callback):
    """Raise a one-line SFTError naming the step when the training loss is NaN or inf.

    Checked before backward, so the optimizer never steps on it and no checkpoint is written
    after it: the last checkpoint on disk is the last good state. (Lightning 2 dropped its
    `terminate_on_nan`; `detect_anomaly` traces the backward pass, far slower.) One
    device-to-host sync per step.
    """

    def on_before_backward(
        self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor
    ) -> None:
        if bool(torch.isfinite(loss).all()):
            return
        kind = "nan" if bool(torch.isnan(loss).any()) else "inf"
        last = last_checkpoint(trainer)
        raise SFTError(
            f"non-finite loss ({kind}) at epoch {trainer.current_epoch}, step "
            f"{trainer.global_step}; last good checkpoint: {last or 'none'} (lower the learning "
            "rate, or check the data and the model for overflows)"
        )
