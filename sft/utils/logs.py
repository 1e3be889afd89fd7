"""Warnings that go in a run's log: Lightning's `rank_zero_warn` sends them through Python's
`warnings`, which print on stderr only, so `train.log` (Hydra's file handler) never held them."""

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

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


@contextmanager
def log_levels_kept() -> Iterator[None]:
    """The levels the run's logging config gave its loggers, kept through what runs inside:
    Lightning's import sets its loggers to INFO (lightning/pytorch/__init__.py, fabric's too),
    which dropped `debug=*`'s DEBUG lines once Lightning loaded after Hydra set up logging."""
    loggers = logging.Logger.manager.loggerDict
    levels = {name: lg.level for name, lg in loggers.items() if isinstance(lg, logging.Logger)}
    try:
        yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
