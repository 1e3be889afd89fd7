"""`trainer.max_time`: Lightning's Timer, stopping at a gradient accumulation's step."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import timer
from omegaconf import DictConfig, OmegaConf

from sft.callbacks.exact_resume import accumulating
from sft.utils.instantiate import lightning_refusals


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


def max_time_callbacks(trainer_cfg: DictConfig, callbacks: list[Callback]) -> dict[str, Any]:
    """Trainer arguments that time `trainer.max_time` with sft's Timer: `callbacks` with it,
    and no `max_time` for Lightning to add its own. Only `callbacks` where max_time is unset or
    they hold a Timer already (Lightning ignores max_time then, and says so)."""
    max_time = trainer_cfg.get("max_time")
    if max_time is None or any(isinstance(c, timer.Timer) for c in callbacks):
        return {"callbacks": callbacks}
    if isinstance(max_time, DictConfig):  # {days: 1, hours: 12}: a dict for timedelta
        max_time = OmegaConf.to_container(max_time)
    with lightning_refusals():  # Lightning's message for a duration it cannot read
        return {"callbacks": [*callbacks, Timer(duration=max_time)], "max_time": None}
