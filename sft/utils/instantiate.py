"""Build the trainer, and the lists of callbacks and loggers from their config groups (one entry
per key)."""

import logging
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import EarlyStopping, ProgressBar
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig

from sft.errors import SFTError

log = logging.getLogger(__name__)


def _instantiate_entries(cfg: DictConfig | None) -> list:
    # Entries without a _target_ (or set to null) are switched-off slots, e.g. `callbacks.early_stopping=null`.
    if not cfg:
        return []
    return [instantiate(entry) for entry in cfg.values() if entry and "_target_" in entry]


def instantiate_callbacks(
    cfg: DictConfig | None, progress_bar: bool = True, validates: bool = True
) -> list[Callback]:
    """The configured callbacks; without progress bars when `trainer.enable_progress_bar=false`
    (Lightning refuses a progress-bar callback then, and plain logs are what the user asked for),
    and, when no validation runs (`validates` false), without early stopping on a validation
    metric: Lightning raises at the first epoch's end for the missing metric."""
    callbacks = _instantiate_entries(cfg)
    kept = []
    for callback in callbacks:
        if isinstance(callback, ProgressBar) and not progress_bar:
            continue
        on_validation = isinstance(callback, EarlyStopping) and callback.monitor.startswith("val/")
        if on_validation and not validates:
            log.warning(
                f"no validation runs (trainer.limit_val_batches=0): early stopping on "
                f"{callback.monitor} is off for this run"
            )
            continue
        kept.append(callback)
    return kept


def runs_validation(trainer_cfg: DictConfig) -> bool:
    """Whether `trainer_cfg` validates at all (`limit_val_batches` 0 or 0.0 turns it off)."""
    limit = trainer_cfg.get("limit_val_batches")
    return limit is None or limit != 0


def instantiate_loggers(cfg: DictConfig | None) -> list[Logger]:
    return _instantiate_entries(cfg)


def build_trainer(cfg: DictConfig, **kwargs: Any) -> Trainer:
    """`instantiate(cfg, **kwargs)`; Lightning's refusal of a setting (e.g. max_epochs=-3) is a
    user error: its own message, as one line."""
    try:
        return instantiate(cfg, **kwargs)
    except (InstantiationException, MisconfigurationException) as exc:
        cause = exc if isinstance(exc, MisconfigurationException) else exc.__cause__
        if not isinstance(cause, MisconfigurationException):
            raise
        raise SFTError(f"trainer: {' '.join(str(cause).split())}") from exc
