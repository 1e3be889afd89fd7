"""Telling one signal delivered twice from a second Ctrl-C (GracefulInterrupt, the launchers)."""

import logging
import signal
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

# a second SIGINT this soon after the first is that one delivered twice (`timeout -s INT`, and
# `kill -INT <pid>; kill -INT -<group>`, signal the process and then its group), not a second
# Ctrl-C: one process merges the two when they come before its handler runs, ddp_spawn's main
# process, waiting for its ranks, did not
SAME_SIGNAL_S = 0.1


def is_second_ctrl_c(signum: int, first: int | None, first_at: float) -> bool:
    """Whether SIGINT `signum`, after the signal `first` received at `first_at` (monotonic),
    is a second Ctrl-C (stop at once): not the first SIGINT delivered twice."""
    twice = first == signal.SIGINT and time.monotonic() - first_at < SAME_SIGNAL_S
    return first is not None and signum == signal.SIGINT and not twice


def warn_in_handler(logger: logging.Logger, message: str) -> None:
    """`logger.warning(message)` from a signal handler. The handler may have stopped this thread
    mid-write to the console, and a write to that stream again is a RuntimeError ("reentrant
    call") that logging printed as a traceback (seen under Ray's stream wrapper): that
    handler's copy of the line is dropped instead; the others (the run's log file) keep it."""
    raising, logging.raiseExceptions = logging.raiseExceptions, False
    try:
        logger.warning(message)
    finally:
        logging.raiseExceptions = raising


@contextmanager
def signal_handlers(handlers: Mapping[int, Any]) -> Iterator[None]:
    """`handlers` ({signal: handler}) in place for the block, the earlier ones back after it;
    none outside the main thread, where Python takes no handlers."""
    try:
        previous = {signum: signal.signal(signum, handler) for signum, handler in handlers.items()}
    except ValueError:  # not the main thread
        previous = {}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextmanager
def ctrl_c_deferred(what: str) -> Iterator[None]:
    """Around what a stopping run writes (its record, the sweep summary): Ctrl-C meanwhile is
    said and passed over, the run stopping right after anyway (was: a KeyboardInterrupt in the
    middle of it, which left the summary unwritten and the console with a bare "interrupted
    (Ctrl-C)")."""

    def said(signum: int, frame: FrameType | None) -> None:
        log.warning(f"Ctrl-C again while {what} is written: stopping right after it")

    with signal_handlers({signal.SIGINT: said}):
        yield
