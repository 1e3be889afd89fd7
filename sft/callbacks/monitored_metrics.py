"""A check that every callback monitoring a validation metric names one the run logs (any name
but a training metric's, `train/...` and `lr-...`, or the step and epoch).

Lightning looks a callback's `monitor` up only when it first reads it: after a whole training
epoch (or `trainer.val_check_interval` of one), where ModelCheckpoint's miss is an error and
EarlyStopping's a RuntimeError traceback. Validation's metrics are known at the end of the
sanity check, before any training: a typo (`callbacks.early_stopping.monitor=val/accc`) is one
line there; without a sanity check (`trainer.num_sanity_val_steps=0`), at the end of the first
validation, just before the callback reads it: each monitoring callback gets a check placed right
before it (`with_monitored_metrics_checks`), so a callback listed earlier that adds a metric in
its own `on_validation_end` has added it. Other metrics (`train/...`) are left to Lightning.
"""

from __future__ import annotations

import difflib

import lightning as L
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import Checkpoint

from sft.errors import SFTError
from sft.utils.config import is_validation_metric

# where a LightningModule logs validation metrics
_VALIDATION_HOOKS = (
    "validation_step",
    "on_validation_epoch_end",
    "on_validation_batch_end",
    "on_validation_end",
)


def _defined_elsewhere(hook: object) -> bool:
    """Whether a validation hook is the user's (not sft's model's, nor Lightning's default)."""
    module = getattr(hook, "__module__", None) or ""
    return not module.startswith(("sft.", "lightning."))


# where a LightningModule logs training metrics: a model of the user's may log other names there
_TRAINING_HOOKS = ("training_step", "on_train_batch_end", "on_train_epoch_end")


def _monitored(callback: Callback) -> str | None:
    # the others (training metrics, step, epoch) are left to Lightning; any other name must be
    # logged by validation's end (`eval_f1`, HF's: was a traceback after an epoch)
    monitor = getattr(callback, "monitor", None)
    return monitor if is_validation_metric(monitor) else None


def with_monitored_metrics_checks(callbacks: list[Callback]) -> list[Callback]:
    """`callbacks` with a MonitoredMetricsCheck for each one monitoring a validation metric: right
    before it, or, for a Checkpoint, at the end (Lightning runs checkpoints after the others)."""

    def check(callback: Callback) -> MonitoredMetricsCheck:
        # the others watching the same metric: early stopping follows the checkpoint's
        monitor = _monitored(callback)
        same = [c for c in callbacks if c is not callback and _monitored(c) == monitor]
        return MonitoredMetricsCheck(callback, same)

    placed: list[Callback] = []
    for callback in callbacks:
        if _monitored(callback) and not isinstance(callback, Checkpoint):
            placed.append(check(callback))
        placed.append(callback)
    checkpoints = [c for c in callbacks if _monitored(c) and isinstance(c, Checkpoint)]
    return placed + [check(c) for c in checkpoints]


class MonitoredMetricsCheck(Callback):
    """At the end of the sanity check (else of the first validation): SFTError when `watched`
    monitors a validation metric that validation did not log."""

    def __init__(self, watched: Callback, same: list[Callback] | None = None) -> None:
        self.watched = watched
        self.same = same or []  # other callbacks that monitor the same metric, named with it
        self.checked = False

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.checked = False

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # (was: EarlyStopping's RuntimeError traceback after the first epoch)
        if not trainer.sanity_checking and not self.checked:
            self.on_sanity_check_end(trainer, pl_module)

    def on_sanity_check_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.checked = True
        # a model class of the user's with validation hooks of its own may log a metric only
        # after the sanity check (`if self.trainer.sanity_checking: return`): left to Lightning
        if any(_defined_elsewhere(getattr(type(pl_module), h)) for h in _VALIDATION_HOOKS):
            return
        logged = sorted(k for k in trainer.callback_metrics if k.startswith("val/"))
        monitor = _monitored(self.watched)
        # any metric logged by now counts (a callback of the user's logging `val_ece`)
        if not logged or monitor is None or monitor in trainer.callback_metrics:
            return
        hooks = _TRAINING_HOOKS if not monitor.startswith("val/") else ()
        if any(_defined_elsewhere(getattr(type(pl_module), h)) for h in hooks):
            return  # a name of a model of the user's, which may log it as it trains
        close = difflib.get_close_matches(monitor, logged, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        logs = f"({hint}it logs {', '.join(logged)})"
        # a callback sft adds for a setting of the run (OptunaPruning: optimized_metric)
        if setting := getattr(self.watched, "monitor_setting", None):
            raise SFTError(f"{setting}={monitor}: validation does not log it {logs}")
        names = list(dict.fromkeys(type(c).__name__ for c in [self.watched, *self.same]))
        verb = "monitors" if len(names) == 1 else "monitor"
        raise SFTError(
            f"{' and '.join(names)} {verb} '{monitor}', which validation does not log {logs}: "
            "set the callback's monitor (callbacks.<name>.monitor=...) to one of them"
        )
