"""Exact resume: a run resumed from a checkpoint trains on the same batches with the same random
numbers as the uninterrupted run would have.

Two things Lightning 2.6 does not do by itself: save the RNG states with a Trainer checkpoint
(only Fabric has helpers for it; augmentation, dropout and each epoch's shuffling seed come from
the global RNGs), and restore the position of a stateful train loader when `configure_optimizers`
reads `trainer.estimated_stepping_batches` (our LR schedules do): that sets up the loader before
the checkpoint is loaded, and the saved loader state is dropped (Lightning issue #20550).
"""

from __future__ import annotations

import logging
import random
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch import Callback

from sft.utils.logs import rank_zero_warning

log = logging.getLogger(__name__)

# in the saved states: written by an sft whose loaders draw their workers' seeds from
# generators of their own (sft/data/resumable.py::split_loader), not from the global RNG
OWN_LOADER_GENERATORS = "own_loader_generators"


def collect_rng_states() -> dict[str, Any]:
    """torch (CPU, every CUDA device), numpy and python states as tensors, ints and lists only,
    so that checkpoints still load with `torch.load(weights_only=True)`."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "torch.cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": {"version": version, "state": list(py_state), "gauss": py_gauss},
    }


def restore_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if states["torch.cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["torch.cuda"])
    n = states["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["gauss"]))
    p = states["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


class ExactResume(Callback):
    """Saves the RNG states with every checkpoint; a resumed fit restores the train loader's
    position in the epoch (see sft/data/resumable.py) and then the RNG states at train start.

    Not when the checkpoint is loaded: between the two, the resumed run does what the original
    did long before the checkpoint (sanity-check validation, creating the train iterator), which
    draws from the same RNGs.
    """

    def __init__(self) -> None:
        self._to_restore: dict[str, Any] | None = None
        # the running epoch's counts at its start, and whether its end hooks ran (a cut epoch)
        self._in_epoch: dict[str, tuple[int, int]] = {}
        self._epoch, self._epoch_ended = 0, False

    def state_dict(self) -> dict[str, Any]:
        return {**collect_rng_states(), OWN_LOADER_GENERATORS: True}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # (Lightning also loads it for the test of the best checkpoint: said when fitting only)
        self._to_restore = state_dict

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # the epoch's counts while it runs, as a checkpoint written inside it holds them
        progress = trainer.fit_loop.epoch_progress
        self._in_epoch = {
            part: (tracker.processed, tracker.completed)
            for part, tracker in (("total", progress.total), ("current", progress.current))
        }
        self._epoch, self._epoch_ended = trainer.current_epoch, False

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_ended = True

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # Lightning ends an epoch that max_steps, max_time or a stop cut short as it ends a
        # whole one, and a checkpoint written after that (last.ckpt, in the epoch-end hooks or
        # when training ends) counts it done: the resumed run finished the epoch's batches as
        # the next epoch and stopped at max_epochs an epoch early, steps untrained and the run
        # recorded as completed. Saved with the counts it had while it ran instead, as a
        # checkpoint written inside it, which resumes at the epoch's next batch. (Told by the
        # epoch's hooks, not by comparing Lightning's counters, which one of its restarts
        # leaves out of step.)
        if not self._epoch_ended or trainer.fit_loop.epoch_loop._num_ready_batches_reached():
            return
        saved = checkpoint["loops"]["fit_loop"]["epoch_progress"]
        for part, (processed, completed) in self._in_epoch.items():
            saved[part]["processed"], saved[part]["completed"] = processed, completed
        checkpoint["epoch"] = self._epoch

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        restore_loader_position(trainer)
        if self._to_restore is not None:
            if not self._to_restore.get(OWN_LOADER_GENERATORS):
                rank_zero_warning(
                    log,
                    "this checkpoint was written by an sft whose data loaders drew their seeds "
                    "from the global RNG: the rest of the run will not match what that sft "
                    "would have trained, and a monitored val/loss it recorded may be a mean of "
                    "batch means (now: the mean over the examples)",
                )
            restore_rng_states(self._to_restore)
            self._to_restore = None
            if epoch_finished(trainer) and trainer.fit_loop._data_fetcher is not None:
                # Saved at the end of an epoch: the original run created the next epoch's train
                # iterator after this point (which draws from the RNG); the resumed one created
                # it before the restore. Create it again so the draws happen in the same order.
                iter(trainer.fit_loop._data_fetcher)


def restore_loader_position(trainer: L.Trainer) -> None:
    """Load the train loader states Lightning kept aside but never loaded (issue #20550), and
    create the train iterator again so that it starts from them. A no-op once Lightning loads
    them itself (it empties the list)."""
    fit_loop = trainer.fit_loop
    if getattr(fit_loop, "_combined_loader_states_to_load", None) and fit_loop.restarting:
        fit_loop._load_combined_loader_states()
        if fit_loop._data_fetcher is not None:
            iter(fit_loop._data_fetcher)


def epoch_finished(trainer: L.Trainer) -> bool:
    """Whether the checkpoint being resumed was written after the last batch of its epoch."""
    done = trainer.fit_loop.epoch_loop.batch_progress.current.ready
    return done >= trainer.num_training_batches


def accumulating(trainer: L.Trainer) -> bool:
    """Whether the training batch that just ended left its gradient for the next batches to add
    to (`trainer.accumulate_grad_batches` > 1, no optimizer step yet). Checkpoints hold no
    gradients: a run resumed from one written here steps on the rest of the accumulation alone.
    Lightning's own test, as it runs in a training batch's end and in the validation after it."""
    return trainer.accumulate_grad_batches > 1 and trainer.fit_loop.epoch_loop._should_accumulate()


def validation_follows(trainer: L.Trainer) -> bool:
    """Whether Lightning validates right after the training batch that just ended (its own
    test, `_should_check_val_fx`). False for a time-based `val_check_interval`: each rank reads
    its own clock, and the ranks must agree on where they stop."""
    if getattr(trainer, "_val_check_time_interval", None) is not None:
        return False
    loop = trainer.fit_loop
    return bool(loop.epoch_loop._should_check_val_fx(loop._data_fetcher))
