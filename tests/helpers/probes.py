"""Callbacks that record what a training run did, for tests that run it through its config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch import Callback


class RecordLearningRates(Callback):
    """Append `{step: the first parameter group's learning rate}` as each training batch starts
    (the rate its optimizer step uses) to the JSON file `path`."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        rates = json.loads(self.path.read_text()) if self.path.is_file() else {}
        rates[str(trainer.global_step)] = trainer.optimizers[0].param_groups[0]["lr"]
        self.path.write_text(json.dumps(rates))


class AddsValidationMetric(Callback):
    """A user's metric callback: adds `name` (the epoch, as a stand-in) to the trainer's
    callback metrics in its own `on_validation_end`, after the metrics validation logged."""

    def __init__(self, name: str) -> None:
        self.name = name

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.callback_metrics[self.name] = torch.tensor(float(trainer.current_epoch))


class OwnFinetuning(L.pytorch.callbacks.BaseFinetuning):
    """A user's BaseFinetuning that freezes and thaws nothing (a real one may add groups)."""

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        pass

    def finetune_function(self, pl_module: L.LightningModule, epoch: int, optimizer: Any) -> None:
        pass


class OwnCheckpoint(L.pytorch.callbacks.Checkpoint):
    """A user's checkpoint callback that is no ModelCheckpoint: no monitor, no file names."""


class CheckValidationLoss(Callback):
    """Write to `path` (JSON) the last validation's `val/loss` as the model's metric computed
    it and as float64 recomputes it from the logits its steps returned, and the dtypes of the
    loss's and the best accuracy's metrics and states."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self._total, self._count = 0.0, 0

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        self._total, self._count = 0.0, 0

    def on_validation_batch_end(
        self, trainer: L.Trainer, pl_module: Any, outputs: Any, *args: Any
    ) -> None:
        labels = outputs["labels"]
        loss = pl_module.criterion(outputs["logits"].double(), labels)
        self._total += float(loss) * labels.numel()
        self._count += labels.numel()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        # the loss's and the best accuracy's (the others count in integers)
        dtypes = {
            str(t.dtype)
            for m in (pl_module.val_loss, pl_module.val_acc_best)
            for t in (torch.empty(0, dtype=m.dtype), *(getattr(m, k) for k in m._defaults))
        }
        record = {
            "metric": float(pl_module.val_loss.compute()),
            "recomputed": self._total / self._count,
            "dtypes": sorted(dtypes),
        }
        self.path.write_text(json.dumps(record))


class RecordRankMetric(Callback):
    """At the end of training, write this rank's callback metric `name` to
    `<folder>/rank<global rank>.json`."""

    def __init__(self, folder: str, name: str) -> None:
        self.folder, self.name = Path(folder), name

    def on_train_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        value = float(trainer.callback_metrics[self.name])
        (self.folder / f"rank{trainer.global_rank}.json").write_text(json.dumps(value))
