"""Whether a fit is (or stopped) in its sanity check.

Lightning clears `trainer.sanity_checking` when a fit stops on an exception, and clears the
sanity check's metrics only once the check ends: a run refused or interrupted there (a misspelt
`callbacks.early_stopping.monitor`, a user callback's error) kept the untrained model's metrics
on a few validation batches as its own, in its result.json.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch import Callback


class SanityCheckWatch(Callback):
    """`in_sanity_check`: from the check's start until training starts (stays True when the
    fit stops in it)."""

    def __init__(self) -> None:
        self.in_sanity_check = False

    def on_sanity_check_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.in_sanity_check = True

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.in_sanity_check = False
