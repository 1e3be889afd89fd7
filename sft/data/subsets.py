"""Few-label training subsets: stratified per class, seeded, deterministic (any modality)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from numbers import Real

import torch

from sft.errors import SFTError
from sft.utils.logs import first_few, rank_zero_warning

log = logging.getLogger(__name__)


def check_few_label_args(train_fraction: float | None, samples_per_class: int | None) -> None:
    """Raise SFTError unless at most one of the two is set and it is in range."""
    if train_fraction is not None and samples_per_class is not None:
        raise SFTError(
            "data.train_fraction and data.samples_per_class are both set; set at most one "
            f"(got {train_fraction!r} and {samples_per_class!r}; an experiment may set one: "
            "data.samples_per_class=null or data.train_fraction=null clears it)"
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
    - `train_fraction=f`: round(f * n_c) random samples of each class c, at least one (a class
      raised to one is counted in a warning).
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
            rank_zero_warning(
                log,
                f"data.samples_per_class={samples_per_class}: {short.numel()} of the "
                f"{int((counts > 0).sum())} classes in the training data have fewer samples "
                f"(the smallest {int(short.min())}); they train on all they have",
            )
    if samples_per_class is not None:
        return _draw_per_class(labels_t, lambda n: samples_per_class, gen)
    counts = torch.bincount(labels_t[labels_t >= 0])
    raised = counts[(counts > 0) & (torch.round(float(train_fraction) * counts) < 1)]
    if raised.numel():
        rank_zero_warning(
            log,
            f"data.train_fraction={train_fraction}: {raised.numel()} of the "
            f"{int((counts > 0).sum())} classes in the training data have too few samples for "
            f"that fraction to keep any (the largest {int(raised.max())}); they train on one each",
        )
    return _draw_per_class(labels_t, lambda n: max(1, round(float(train_fraction) * n)), gen)


def holdout_indices(labels: Sequence[int] | torch.Tensor, fraction: float, seed: int) -> list[int]:
    """Indices (sorted) of a class-stratified `fraction` of `labels` to hold out for validation:
    round(fraction * n_c) of each class c, at least one, but never a class's last sample, which
    stays for training (was: a class of one sample went to validation whole). The same draw as
    `few_label_indices(labels, train_fraction=fraction, seed=seed)` otherwise."""
    labels_t = torch.as_tensor(labels).reshape(-1).to(torch.int64)
    gen = torch.Generator().manual_seed(int(seed))
    return _draw_per_class(labels_t, lambda n: min(n - 1, max(1, round(fraction * n))), gen)


def _draw_per_class(
    labels: torch.Tensor, count: Callable[[int], int], gen: torch.Generator
) -> list[int]:
    """`count(n_c)` members of each class c, a prefix of a seeded permutation of its members."""
    chosen = []
    for cls in torch.unique(labels):  # sorted, so the draw order is fixed
        members = (labels == cls).nonzero().flatten()
        perm = torch.randperm(members.numel(), generator=gen)
        chosen.append(members[perm[: count(members.numel())]])
    return sorted(torch.cat(chosen).tolist()) if chosen else []


def warn_classes_without_examples(
    labels: Sequence[int] | torch.Tensor,
    class_names: Sequence[str],
    where: str,
    split: str = "training",
) -> None:
    """A warning naming the classes a split's examples `labels` have none of (unlabelled ones,
    -1, do not count). In training, the model gets an output for each but never learns to
    predict it (label names the data lacks, a class folder whose images were all left out as
    undecodable); in validation or test, that split's scores say nothing about them."""
    labels = torch.as_tensor(labels).reshape(-1).to(torch.int64)
    if split != "training" and not (labels >= 0).any():
        return  # an unlabelled test split: nothing is scored
    counts = torch.bincount(labels[labels >= 0], minlength=len(class_names))
    empty = [str(name) for name, n in zip(class_names, counts.tolist(), strict=False) if n == 0]
    if empty:
        why = (
            "the model cannot learn to predict them"
            if split == "training"
            else "its scores say nothing about them"
        )
        rank_zero_warning(
            log,
            f"{where}: no {split} examples of {len(empty)} of the {len(class_names)} classes "
            f"({first_few(empty, 20)}); {why}",
        )
