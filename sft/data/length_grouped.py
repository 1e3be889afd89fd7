"""Length-grouped training order: batches of similar length, so dynamic padding pads little.

Why a `DistributedSampler` subclass that shards itself: under DDP, Lightning 2.6
(`_requires_distributed_sampler`) wraps any sampler that is *not* a `DistributedSampler` in a
`DistributedSamplerWrapper(shuffle=True)` for training. That wrapper re-permutes the wrapped
sampler's output before striding it over ranks, which scatters the length groups: every batch
would mix lengths again. A sampler that already is a `DistributedSampler` is left as it is, and
Lightning still calls its `set_epoch` every epoch. So this sampler takes `num_replicas`/`rank`
(the datamodule reads them from `trainer.distributed_sampler_kwargs`) and hands each rank its own
whole batches; the ranks' batches of one step come from the same length slab, so no rank waits
on a much longer batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import DistributedSampler


class LengthGroupedSampler(DistributedSampler):
    """Indices for a `DataLoader(batch_size=batch_size)` whose batches are length-homogeneous.

    Per epoch (seed + epoch, identical on every rank): a random permutation, padded like
    `DistributedSampler` to a multiple of `num_replicas` by repeating its first indices (at most
    `num_replicas - 1` repeats; none on one process); cut into pools of `pool_batches` steps
    (a step = `batch_size * num_replicas` examples) and sorted by length inside each pool;
    cut into steps, which are shuffled; rank r takes the r-th `batch_size` slice of every step.
    The one partial step (the tail) comes last, split evenly over the ranks. So every example
    is seen exactly once per epoch (up to that padding), each rank gets `num_samples` indices,
    and batches differ from epoch to epoch. Sorting within random pools, not globally, keeps
    which examples share a batch random; `pool_batches=None` sorts globally (least padding).
    """

    def __init__(
        self,
        lengths: Sequence[int] | torch.Tensor,
        batch_size: int,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        pool_batches: int | None = 50,
    ) -> None:
        self.lengths = torch.as_tensor(lengths, dtype=torch.int64).reshape(-1)
        # dataset only serves len(); explicit num_replicas/rank keep torch.distributed untouched.
        super().__init__(
            self.lengths, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed
        )
        if batch_size < 1 or (pool_batches is not None and pool_batches < 1):
            raise ValueError("batch_size and pool_batches must be >= 1")
        self.batch_size = batch_size
        self.pool_batches = pool_batches
        self._skip = 0  # indices a resumed pass leaves out (see sft/data/resumable.py)

    def __iter__(self) -> Iterator[int]:
        gen = torch.Generator().manual_seed(self.seed + self.epoch)
        n, total = len(self.lengths), self.total_size
        order = torch.randperm(n, generator=gen)
        if total > n:  # pad to num_samples per rank, as DistributedSampler does
            order = torch.cat([order, order.repeat(-(-(total - n) // n))[: total - n]])
        step = self.batch_size * self.num_replicas
        pool = total if self.pool_batches is None else self.pool_batches * step
        # stable sort: ties keep their random order; longest first inside a pool
        order = torch.cat(
            [
                p[self.lengths[p].sort(descending=True, stable=True).indices]
                for p in order.split(pool)
            ]
        )
        full = total // step
        steps = order[: full * step].view(full, step)
        steps = steps[torch.randperm(full, generator=gen)]
        mine = steps[:, self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
        # the tail: total - full*step = num_replicas * (num_samples - full*batch_size) indices
        per_rank = self.num_samples - full * self.batch_size
        tail = order[full * step :][self.rank * per_rank : (self.rank + 1) * per_rank]
        skip, self._skip = self._skip, 0
        return iter(torch.cat([mine.reshape(-1), tail])[skip:].tolist())

    def pass_state(self) -> dict[str, int]:
        return {"epoch": self.epoch}

    def resume_pass(self, state: dict[str, int], skip: int) -> None:
        """The next pass repeats the order of epoch `state["epoch"]` without its first `skip`."""
        self.set_epoch(int(state["epoch"]))
        self._skip = skip


def padding_fraction(lengths: torch.Tensor, batches: Sequence[Sequence[int]]) -> float:
    """Share of padded positions when each batch is padded to its longest row."""
    lengths = torch.as_tensor(lengths)
    real = padded = 0
    for batch in batches:
        rows = lengths[torch.as_tensor(list(batch), dtype=torch.int64)]
        real += int(rows.sum())
        padded += int(rows.max()) * len(rows)
    return 1.0 - real / padded if padded else 0.0
