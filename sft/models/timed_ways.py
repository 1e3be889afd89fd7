"""Ways of computing the same thing, timed once per call signature, the fastest kept.

Which of oneDNN's kernels, a matrix product or another formulation is fastest for a convolution
part depends on the channels, map size, stride and dtype, in ways that differ between CPUs.
So, as cudnn.benchmark does on GPUs, the first call of each signature times every way and
later calls take the fastest (sft.models.depthwise_conv, sft.models.pointwise_conv).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import torch

log = logging.getLogger(__name__)


class Call(NamedTuple):
    """What a convolution's timed ways depend on: its input and weight (shape, layout, dtype),
    stride, padding, the dtype it computes in, and torch's threads."""

    input_shape: tuple[int, ...]
    input_strides: tuple[int, ...]
    input_dtype: torch.dtype
    weight_shape: tuple[int, ...]
    weight_strides: tuple[int, ...]
    weight_dtype: torch.dtype
    stride: tuple[int, int]
    padding: tuple[int, int]
    dtype: torch.dtype
    threads: int

    @classmethod
    def of(
        cls, inputs: torch.Tensor, weight: torch.Tensor, stride, padding, dtype: torch.dtype
    ) -> Call:
        return cls(
            tuple(inputs.shape), inputs.stride(), inputs.dtype, tuple(weight.shape),
            weight.stride(), weight.dtype, tuple(stride), tuple(padding), dtype,
            torch.get_num_threads(),
        )  # fmt: skip


# (what is computed, the call) -> the name of the way that was fastest
FASTEST: dict[tuple[str, Call], str] = {}
TIMED_CALLS = 5


def time_ways(ways: dict[str, Callable[[], Any]]) -> dict[str, float]:
    """Each way's best of TIMED_CALLS calls, after one untimed call of each (which also creates
    oneDNN's primitives). The ways take turns, so that a slow spell of a shared machine falls
    on all of them alike: timed one after the other, with 3 calls each, a 2-core VM chose
    differently from process to process for some of EfficientNet-Lite0's 1x1 convolutions."""
    for fn in ways.values():
        fn()
    best = dict.fromkeys(ways, math.inf)
    for _ in range(TIMED_CALLS):
        for name, fn in ways.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def fastest(what: str, call: Call, ways: dict[str, Callable[[], Any]]) -> Any:
    """The result of the way that was fastest for `what` of `call` on this machine, the ways
    timed on the first such call (EfficientNet-Lite0: on 2 Zen 4 cores, bf16 depthwise input
    gradients 6-140x slower than fp32 ones for strided filters, 1.4-3.6x faster for the others;
    on a 2-core Xeon, fp32 3x3-block weight gradients 1.3-2x faster than torch's for 480-1152
    channels on 2x2 and 4x4 maps, slower for 240 channels)."""
    key = (what, call)
    if key not in FASTEST:
        timed = time_ways(ways) if len(ways) > 1 else {}
        FASTEST[key] = min(timed, key=timed.get) if timed else next(iter(ways))
        if timed:
            timings = ", ".join(f"{name} {t * 1e3:.2f} ms" for name, t in timed.items())
            log.debug(f"{what} {call}: {timings}")
    return ways[FASTEST[key]]()
