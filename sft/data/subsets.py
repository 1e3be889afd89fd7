"""Few-label training subsets: stratified per class, seeded, deterministic (any modality)."""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Real

import torch
from lightning.pytorch.utilities import rank_zero_warn

from sft.errors import SFTError


def check_few_label_args(train_fraction: float | None, samples_per_class: int | None) -> None:
    """Raise SFTError unless at most one of the two is set and it is in range."""
    if train_fraction is not None and samples_per_class is not None:
        raise SFTError(
            "data.train_fraction and data.samples_per_class are both set; set at most one "
            f"(got {train_fraction!r} and {samples_per_class!r})"
        )
    if train_fraction is not None and (
        isinstance(train_fraction, bool)
        or not isinstance(train_fraction, Real)
        or not 0 < train_fraction <= 1
    ):
        raise SFTError(f"data.train_fraction must be a number in (0, 1], got {train_fraction!r}")
    if samples_per_class is not None and (
        isinstance(samples_per_class, bool)
        or not isinstance(samples_per_class, int)
        or samples_per_class < 1
    ):
        raise SFTError(f"data.samples_per_class must be an integer >= 1, got {samples_per_class!r}")


def few_label_indices(
    labels: Sequence[int] | torch.Tensor,
    train_fraction: float | None = None,
    samples_per_class: int | None = None,
    seed: int = 0,
) -> list[int]:
    """Indices (sorted) of a class-stratified subset of `labels`.

    - both None: every index.
    - `samples_per_class=k`: k random samples of every class; a class with fewer than k samples
      contributes all it has (no error: small classes stay in, just under-filled).
    - `train_fraction=f`: round(f * n_c) random samples of each class c, at least one.
    The draw depends only on `labels` and `seed`, and for one seed a smaller subset is contained
    in a larger one (each class takes a prefix of the same seeded permutation).
    """
    check_few_label_args(train_fraction, samples_per_class)
    labels_t = torch.as_tensor(labels).reshape(-1).to(torch.int64)
    n = labels_t.numel()
    if train_fraction is None and samples_per_class is None:
        return list(range(n))
    gen = torch.Generator().manual_seed(int(seed))
    if samples_per_class is not None:
        counts = torch.bincount(labels_t[labels_t >= 0])
        short = counts[(counts > 0) & (counts < samples_per_class)]
        if short.numel():
            rank_zero_warn(
                f"data.samples_per_class={samples_per_class}: {short.numel()} of "
                f"{int((counts > 0).sum())} classes have fewer training samples (the smallest "
                f"{int(short.min())}); they train on all they have"
            )
    chosen = []
    for cls in torch.unique(labels_t):  # sorted, so the draw order is fixed
        members = (labels_t == cls).nonzero().flatten()
        if samples_per_class is not None:
            k = samples_per_class
        else:
            k = max(1, round(float(train_fraction) * members.numel()))
        perm = torch.randperm(members.numel(), generator=gen)
        chosen.append(members[perm[:k]])
    return sorted(torch.cat(chosen).tolist()) if chosen else []
