"""A training DataLoader whose position inside an epoch survives a checkpoint.

Lightning 2.6 saves `state_dict()` of every training loader that has one (`_Stateful`) with each
checkpoint and calls `load_state_dict()` before it creates the iterator of a resumed fit, so a
run resumed from a mid-epoch (step) checkpoint gets exactly the batches the interrupted run had
not trained on. Hand-written rather than torchdata's StatefulDataLoader: that one re-implements
the whole DataLoader and draws its shuffling seed at a different point of the global RNG stream,
which would change every seeded run; here only the sampler knows the order of a pass.

The sampler must offer `pass_state() -> dict` (what reproduces the current pass's order) and
`resume_pass(state, skip)` (the next pass repeats that order without its first `skip` indices):
`ResumableRandomSampler` and `LengthGroupedSampler` do. Any other sampler (e.g. the
DistributedSampler Lightning puts in under DDP) finishes the interrupted epoch with batches of a
fresh pass, with a warning.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import weakref
from collections.abc import Iterator, Sized
from typing import Any

import torch
from lightning.pytorch.utilities.combined_loader import _shutdown_workers_and_reset_iterator
from torch.utils.data import DataLoader, RandomSampler

from sft.utils.logs import rank_zero_warning

log = logging.getLogger(__name__)


class ResumableRandomSampler(RandomSampler):
    """`RandomSampler` (no replacement, no generator) that can repeat a pass: the same order.

    Like torch's, each pass draws its seed from the global torch RNG when iteration starts (so
    seeded runs shuffle exactly as before); the seed is kept, so a resumed pass rebuilds the
    same permutation.
    """

    def __init__(self, data_source: Sized) -> None:
        super().__init__(data_source)
        self._seed: int | None = None
        self._resume: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self.data_source)

    def __iter__(self) -> Iterator[int]:
        if self._resume is not None:
            (seed, skip), self._resume = self._resume, None
        else:
            seed, skip = int(torch.empty((), dtype=torch.int64).random_().item()), 0
        self._seed = seed
        order = torch.randperm(len(self.data_source), generator=torch.Generator().manual_seed(seed))
        yield from order[skip:].tolist()

    def pass_state(self) -> dict[str, Any]:
        return {"seed": self._seed}

    def resume_pass(self, state: dict[str, Any], skip: int) -> None:
        self._resume = (int(state["seed"]), skip)


def split_loader(data: Any, split: str, **kwargs: Any) -> DataLoader:
    """The DataLoader of a split (`train`: resumable) with a random generator of its own.

    torch draws a loader iterator's base seed (its workers' seeds) from the loader's generator,
    else from the global RNG: each validation pass, and each training epoch unless its workers
    persist (`num_workers > 0`), took one draw from the stream that dropout, augmentation and
    the sampler's shuffling read, so `data.num_workers`, how often validation ran and a resume
    (which builds its iterators afresh) each changed a seeded run. The generator starts from the
    run's seed (`torch.initial_seed()`) and draws nothing from the global stream.
    """
    loader_cls = ResumableDataLoader if split == "train" else DataLoader
    generator = torch.Generator().manual_seed(torch.initial_seed())
    with_workers = bool(kwargs.get("num_workers"))
    if with_workers and kwargs.get("worker_init_fn") is None:
        kwargs["worker_init_fn"] = outlast_stop_signals
    loader = loader_cls(data, generator=generator, **kwargs)
    if with_workers:
        _LOADERS_WITH_WORKERS.add(loader)
    return loader


def outlast_stop_signals(worker_id: int) -> None:
    """In each DataLoader worker: a SIGTERM from another process than the worker's parent is
    passed over. torch's worker dies of it, so a SIGTERM to the whole process group (`timeout`,
    a cluster's preemption) killed the workers while the main process stopped after its batch,
    whose validation then failed ("DataLoader worker ... exited unexpectedly"): status 1 and no
    last.ckpt. The parent's SIGTERM (torch's shutdown, multiprocessing's exit, a DDP rank's end)
    ends the worker at once, as torch's own handler does; the worker exits when its parent dies
    (torch's watchdog). The signal is blocked and taken by a thread (`sigwaitinfo` tells who sent
    it); where the system has no sigwaitinfo (macOS), torch's handler stays."""
    if not hasattr(signal, "sigwaitinfo"):
        return
    parent = os.getppid()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})

    def exit_on_parents_sigterm() -> None:
        while True:
            if signal.sigwaitinfo({signal.SIGTERM}).si_pid == parent:
                os._exit(0)

    threading.Thread(target=exit_on_parents_sigterm, name="sft-sigterm", daemon=True).start()


# the loaders of split_loader with worker processes, whose workers end_loader_workers ends
_LOADERS_WITH_WORKERS: weakref.WeakSet[DataLoader] = weakref.WeakSet()


def end_loader_workers() -> None:
    """End the worker processes of the loaders split_loader made, as Lightning ends a finished
    loop's. A job calls it as it ends, however it ends (was: a failed run's persistent workers
    lived on while its exception was held, as a notebook or a sweep holds it)."""
    for loader in list(_LOADERS_WITH_WORKERS):
        _shutdown_workers_and_reset_iterator(loader)


def _resumable(sampler: Any) -> bool:
    return hasattr(sampler, "pass_state") and hasattr(sampler, "resume_pass")


class ResumableDataLoader(DataLoader):
    """DataLoader that counts the batches it served in the current pass and can skip them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._served = 0
        self._pending: dict[str, Any] | None = None

    def __iter__(self) -> Iterator[Any]:
        pending, self._pending = self._pending, None
        skip = 0
        if pending is not None:
            skip = int(pending["batches"])
            self.sampler.resume_pass(pending["sampler"], skip * self.batch_size)
        # The iterator is created here, not lazily: torch draws its base seed now.
        batches = super().__iter__()
        self._served = skip
        return self._count(batches)

    def _count(self, batches: Iterator[Any]) -> Iterator[Any]:
        for batch in batches:
            self._served += 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        """Plain ints and strings only: checkpoints must load with `weights_only=True`."""
        sampler = self.sampler.pass_state() if _resumable(self.sampler) else None
        # the batches' size and the data's: a resumed run with others skips other examples
        shape = {"batch_size": self.batch_size, "examples": _length(self.dataset)}
        return {"batches": self._served, "sampler": sampler, **shape}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        batches = int(state.get("batches", 0))
        # A finished pass (checkpoint at the end of an epoch) leaves nothing to skip.
        if not 0 < batches < len(self):
            return
        if state.get("sampler") is None or not _resumable(self.sampler) or self.batch_size is None:
            rank_zero_warning(
                log,
                f"Cannot restore the position inside the epoch with {type(self.sampler).__name__}:"
                " the rest of the interrupted epoch comes from a fresh pass over the data.",
            )
            return
        self._pending = {"batches": batches, "sampler": state["sampler"]}
        then = (state.get("batch_size", self.batch_size), state.get("examples"))
        now = (self.batch_size, _length(self.dataset))
        if then[0] != now[0] or (None not in (then[1], now[1]) and then[1] != now[1]):
            # (was: without a word; data.batch_size=64 on a run of 32 left half the epoch's
            # examples untrained)
            rank_zero_warning(
                log,
                f"the checkpoint was written {batches} batches into an epoch of {then[1]} "
                f"examples in batches of {then[0]}; this run's data has {now[1]} in batches of "
                f"{now[0]}: the rest of that epoch skips its first {batches} batches "
                f"({batches * now[0]} examples), which are not the {batches * then[0]} examples "
                "trained (the same data.batch_size and data resume it exactly)",
            )


def _length(dataset: Any) -> int | None:
    return len(dataset) if isinstance(dataset, Sized) else None
