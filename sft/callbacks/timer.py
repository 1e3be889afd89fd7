"""`trainer.max_time`: Lightning's Timer, stopping at a gradient accumulation's step."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import lightning as L
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import timer
from omegaconf import DictConfig, OmegaConf

from sft.callbacks.exact_resume import accumulating
from sft.errors import SFTError
from sft.utils.instantiate import lightning_refusals

# what `timedelta` takes, which Lightning's Timer builds from a mapping
DURATION_KEYS = ("weeks", "days", "hours", "minutes", "seconds", "milliseconds", "microseconds")


# named as Lightning's: its checkpoint state key is the class name, so a run resumes the time
# its checkpoint counted with either
class Timer(timer.Timer):
    """Lightning's Timer, whose stop mid-way through a gradient accumulation waits for its step.

    A checkpoint holds no gradients: a run that `max_time` stopped inside an accumulation was
    resumed stepping on the accumulation's remaining batches alone (GracefulInterrupt waits for
    the step the same way).
    """

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        if not accumulating(trainer):
            super().on_train_batch_end(trainer, *args, **kwargs)


def with_max_time_timer(trainer_cfg: DictConfig, callbacks: list[Callback]) -> dict[str, Any]:
    """The trainer's `callbacks` argument, with sft's Timer for `trainer.max_time` and no
    `max_time` for Lightning to add its own; `callbacks` alone where max_time is unset or they
    hold a Timer already (Lightning ignores max_time then, and says so)."""
    max_time = trainer_cfg.get("max_time")
    if max_time is None or any(isinstance(c, timer.Timer) for c in callbacks):
        return {"callbacks": callbacks}
    if isinstance(max_time, DictConfig):  # {days: 1, hours: 12}: a dict for timedelta
        max_time = OmegaConf.to_container(max_time)
    mapping = isinstance(max_time, dict)
    unread = mapping and any(
        key not in DURATION_KEYS or isinstance(n, bool) or not isinstance(n, int | float)
        for key, n in max_time.items()
    )
    if unread or not isinstance(max_time, str | dict | timedelta):  # (Lightning: a traceback)
        raise SFTError(
            f"trainer.max_time={max_time!r}: expected a duration DD:HH:MM:SS (00:12:00:00) or a "
            f"mapping of {', '.join(DURATION_KEYS)} ({{hours: 12}})"
        )
    with lightning_refusals(setting="trainer.max_time"):  # a string it cannot read
        return {"callbacks": [*callbacks, Timer(duration=max_time)], "max_time": None}
