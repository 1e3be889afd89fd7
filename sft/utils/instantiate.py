"""Build the lists of callbacks and loggers from their config groups (one entry per key)."""

from hydra.utils import instantiate
from lightning.pytorch import Callback
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig


def _instantiate_entries(cfg: DictConfig | None) -> list:
    # Entries without a _target_ (or set to null) are switched-off slots, e.g. `callbacks.early_stopping=null`.
    if not cfg:
        return []
    return [instantiate(entry) for entry in cfg.values() if entry and "_target_" in entry]


def instantiate_callbacks(cfg: DictConfig | None) -> list[Callback]:
    return _instantiate_entries(cfg)


def instantiate_loggers(cfg: DictConfig | None) -> list[Logger]:
    return _instantiate_entries(cfg)
