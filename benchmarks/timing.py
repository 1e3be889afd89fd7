"""Timing helper shared by the benchmark scripts (run as `python benchmarks/<name>.py`, which puts
this folder on the import path)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_seconds(fn: Callable[[], None], calls: int, repeats: int) -> float:
    """The median over `repeats` blocks of the time per call of `calls` calls of `fn`, after one
    untimed call."""
    fn()
    blocks = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        blocks.append((time.perf_counter() - start) / calls)
    return statistics.median(blocks)
