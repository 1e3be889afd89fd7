"""Warnings that go in a run's log: Lightning's `rank_zero_warn` sends them through Python's
`warnings`, which print on stderr only, so `train.log` (Hydra's file handler) never held them."""

import logging
from collections.abc import Iterable

from lightning_utilities.core.rank_zero import rank_zero_only  # Lightning's, without loading it


@rank_zero_only  # every DDP rank reads the data; one warning
def rank_zero_warning(logger: logging.Logger, message: str) -> None:
    """`message` at WARNING level through `logger`, on the global rank 0 only."""
    logger.warning(message)


def first_few(items: Iterable[object], n: int, sep: str = ", ") -> str:
    """The first `n` of `items`, `sep`-separated, and "<sep>..." when there are more: a message
    names some, not thousands."""
    items = list(items)
    return sep.join(map(str, items[:n])) + (f"{sep}..." if len(items) > n else "")
