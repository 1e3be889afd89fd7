"""Stop training at the first NaN / inf loss, before it reaches the weights or a checkpoint."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch import Callback

from sft.errors import SFTError
from sft.runs.directories import trainer_last_checkpoint


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
        last = trainer_last_checkpoint(trainer)
        raise SFTError(
            f"non-finite loss ({kind}) at epoch {trainer.current_epoch}, step "
            f"{trainer.global_step}; last good checkpoint: {last if last.is_file() else 'none'} (lower the learning "
            "rate, or check the data and the model for overflows)"
        )
