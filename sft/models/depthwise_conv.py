"""Depthwise convolutions on CPU: fp32 under autocast, and weight gradients from oneDNN's fast
depthwise kernel.

torch's CPU convolutions (oneDNN, torch 2.14) have a fast depthwise kernel for the weight
gradient (`jit_dw` under ONEDNN_VERBOSE=1) only for 3x3 filters on inputs at least 3 pixels
wide. Every other depthwise shape, such as EfficientNet's 5x5 filters or a 3x3 filter on a 2x2
map, goes to the generic grouped kernel. That kernel pads each channel's one-input,
one-output filter to a 16x16 block. On a 2-core Xeon, EfficientNet-Lite0's 1152 5x5 filters on
a 2x2 map took 6.5 ms for the weight gradient against 0.13 ms for the input gradient.

The weight gradient of a kxk filter is made of the weight gradients of its 3x3 blocks. Each
block's gradient is a 3x3 depthwise weight gradient of the explicitly padded input, shifted to
the block, with no padding, which the fast kernel computes. That is not always faster (the
copies of the shifted inputs cost too), so each shape is timed once both ways and keeps the
faster. The forward pass and the input gradient stay torch's kernels. Measured:
benchmarks/depthwise_conv.py (experiments/benchmarks/depthwise_conv.md).

Under CPU autocast the depthwise convolutions compute in fp32: oneDNN's bf16 depthwise kernels
are slower than its fp32 ones, so a whole EfficientNet-Lite0 step in bf16 was 1.8x slower than
in fp32, while its 1x1 convolutions gain from bf16. With the depthwise ones in fp32, bf16
autocast is faster than fp32 on a Zen 4 CPU with AVX512-BF16
(experiments/benchmarks/precision_layout.md).
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from sft.models.padding import same_padded_conv, zero_padded

log = logging.getLogger(__name__)

# oneDNN's fast kernel: 3x3 filters on inputs at least this wide (measured, torch 2.14)
_FAST_KERNEL = (3, 3)
_FAST_MIN_WIDTH = 3


def _block_starts(size: int) -> list[int]:
    """First taps of 3-wide blocks covering a filter of `size` taps (overlapping at the end)."""
    return sorted({*range(0, size - 3, 3), size - 3})


def depthwise_weight_grad(
    grad_output: torch.Tensor,
    inputs: torch.Tensor,
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
) -> torch.Tensor:
    """d loss / d weight of `conv2d(inputs, weight, stride=stride, padding=padding,
    groups=channels)`, from 3x3 blocks (kernel sides >= 3, dilation 1)."""
    channels = inputs.shape[1]
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    out_h, out_w = grad_output.shape[-2:]
    # the part of the padded input that a 3x3 block's windows read
    window_h, window_w = (out_h - 1) * sh + 3, (out_w - 1) * sw + 3
    height, width = inputs.shape[-2:]
    block = inputs.new_empty(channels, 1, 3, 3)  # only its shape is read
    grad = inputs.new_empty(channels, 1, kh, kw)
    for top in _block_starts(kh):
        for left in _block_starts(kw):
            # cut from the input and zero-padded in one copy, as the fast kernel wants it
            window = zero_padded(
                inputs,
                ph - top,
                top - ph + window_h - height,
                pw - left,
                left - pw + window_w - width,
            )
            only_weight = _Backward(
                grad_output, window, block, stride, (0, 0), (False, True, False)
            )
            grad[..., top : top + 3, left : left + 3] = only_weight.by_torch()[1]
    return grad


Grads = tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]


class _Backward(NamedTuple):
    """One depthwise convolution's backward, computable two ways."""

    grad_output: torch.Tensor
    inputs: torch.Tensor
    weight: torch.Tensor
    stride: tuple[int, int]
    padding: tuple[int, int]
    needs: tuple[bool, bool, bool]  # gradients of (input, weight, bias)

    def by_torch(self, needs: tuple[bool, bool, bool] | None = None) -> Grads:
        channels = self.weight.shape[0]
        return torch.ops.aten.convolution_backward(
            self.grad_output, self.inputs, self.weight, [channels], list(self.stride),
            list(self.padding), [1, 1], False, [0, 0], channels, list(needs or self.needs),
        )  # fmt: skip

    def by_blocks(self) -> Grads:
        need_input, _, need_bias = self.needs
        # oneDNN's bias gradient comes out of its weight-gradient kernel: not asked of it here
        grad_input = self.by_torch((True, False, False))[0] if need_input else None
        kernel = tuple(self.weight.shape[-2:])
        grad_weight = depthwise_weight_grad(
            self.grad_output, self.inputs, kernel, self.stride, self.padding
        )
        grad_bias = self.grad_output.sum((0, 2, 3)) if need_bias else None
        return grad_input, grad_weight, grad_bias


# (input shape and strides, filter shape, stride, padding, gradients needed, threads) -> whether
# the 3x3 blocks were the faster backward for it on this machine
_BLOCKS_FASTER: dict[tuple, bool] = {}
_TIMED_CALLS = 3


def _seconds(fn: Callable[[], object]) -> float:
    fn()  # the first call also creates oneDNN's primitive
    best = math.inf
    for _ in range(_TIMED_CALLS):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _blocks_are_faster(call: _Backward) -> bool:
    """Timed once per shape, as cudnn.benchmark does: which backward is faster depends on the
    channels and map size in ways that differ between CPUs (EfficientNet-Lite0 on a 2-core
    Xeon: 1.3-2x for 480-1152 channels on 2x2 and 4x4 maps, slower for 240 channels)."""
    inputs, weight = call.inputs, call.weight
    key = (
        tuple(inputs.shape), inputs.stride(), tuple(weight.shape), call.stride, call.padding,
        call.needs, torch.get_num_threads(),
    )  # fmt: skip
    if key not in _BLOCKS_FASTER:
        torch_seconds = _seconds(call.by_torch)
        block_seconds = _seconds(call.by_blocks)
        _BLOCKS_FASTER[key] = block_seconds < torch_seconds
        log.debug(
            f"depthwise {tuple(inputs.shape)}, filter {tuple(weight.shape[-2:])}, stride "
            f"{call.stride}: backward {torch_seconds * 1e3:.2f} ms torch's, "
            f"{block_seconds * 1e3:.2f} ms with 3x3 blocks"
        )
    return _BLOCKS_FASTER[key]


class _DepthwiseConv2d(torch.autograd.Function):
    """torch's depthwise conv2d (dilation 1), with the weight gradient from 3x3 blocks where
    they are faster."""

    @staticmethod
    def forward(ctx, inputs, weight, bias, stride, padding):
        ctx.save_for_backward(inputs, weight)
        ctx.stride, ctx.padding = stride, padding
        return F.conv2d(inputs, weight, bias, stride, padding, 1, weight.shape[0])

    @staticmethod
    @once_differentiable  # the blocks' windows are not recorded by autograd
    def backward(ctx, grad_output):
        inputs, weight = ctx.saved_tensors
        layout = (
            torch.channels_last
            if inputs.is_contiguous(memory_format=torch.channels_last)
            else torch.contiguous_format
        )
        grad_output = grad_output.contiguous(memory_format=layout)
        needs = tuple(ctx.needs_input_grad[:3])
        call = _Backward(grad_output, inputs, weight, ctx.stride, ctx.padding, needs)
        grads = call.by_blocks() if needs[1] and _blocks_are_faster(call) else call.by_torch()
        return *grads, None, None


def _takes_blocks(inputs: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether this call's weight gradient may go to oneDNN's slow kernel and could be made of
    3x3 blocks instead."""
    if not (weight.requires_grad and torch.is_grad_enabled()):
        return False
    if inputs.device.type != "cpu" or torch.compiler.is_compiling():
        return False
    # float32 only (under autocast `_conv_forward` has made it so): other dtypes would need
    # the blocks' own casts
    if inputs.dtype != torch.float32 or weight.dtype != torch.float32:
        return False
    # the choice is timed: deterministic runs (trainer.deterministic) keep torch's
    if torch.are_deterministic_algorithms_enabled():
        return False
    kernel = tuple(weight.shape[-2:])
    if min(kernel) < 3:
        return False
    return kernel != _FAST_KERNEL or min(inputs.shape[-2:]) < _FAST_MIN_WIDTH


def _conv_forward(
    conv: nn.Conv2d,
    inputs: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    fast_grad: bool = True,
) -> torch.Tensor:
    # autocast leaves float64 as it is; so does this
    if (
        inputs.device.type == "cpu"
        and torch.is_autocast_enabled("cpu")
        and torch.float64 not in (inputs.dtype, weight.dtype)
    ):
        # computed in fp32, returned in autocast's dtype as its other convolutions are: the
        # activation after it runs on half the bytes, the next convolution takes it as it is
        with torch.autocast("cpu", enabled=False):
            out = _conv_forward(
                conv, inputs.float(), weight.float(), None if bias is None else bias.float(),
                fast_grad,
            )  # fmt: skip
        return out.to(torch.get_autocast_dtype("cpu"))
    if fast_grad and _takes_blocks(inputs, weight):
        return _DepthwiseConv2d.apply(inputs, weight, bias, conv.stride, conv.padding)
    return type(conv)._conv_forward(conv, inputs, weight, bias)


def _same_forward(conv: nn.Conv2d, inputs: torch.Tensor) -> torch.Tensor:
    return same_padded_conv(conv, inputs, conv.weight, conv.bias)


def _is_depthwise(conv: nn.Module) -> bool:
    return (
        isinstance(conv, nn.Conv2d)
        and conv.groups == conv.in_channels == conv.out_channels
        and conv.dilation == (1, 1)
        and conv.padding_mode == "zeros"
        and not isinstance(conv.padding, str)  # "same"/"valid": torch's own handling
    )


def _is_conv2d_same(conv: nn.Module) -> bool:
    try:
        from timm.layers import Conv2dSame
    except ImportError:  # without timm (sft[vision]) its layers cannot be in the model
        return False
    return type(conv) is Conv2dSame


def route_depthwise_convs(model: nn.Module, fast_grad: bool = True) -> int:
    """Route `model`'s depthwise convolutions (nn.Conv2d, timm's Conv2dSame) through
    `_conv_forward`: in fp32 under CPU autocast and, with `fast_grad`, through
    `_DepthwiseConv2d` where oneDNN's weight gradient is slow; other calls stay torch's.
    Call after `fold_frozen_norms` (its folded convolutions call `_conv_forward` as well).
    Returns the number of convolutions routed; the state_dict and module tree are unchanged."""
    routed = 0
    for conv in model.modules():
        if not _is_depthwise(conv) or "_conv_forward" in vars(conv):
            continue
        if type(conv) is not nn.Conv2d and not _is_conv2d_same(conv):
            continue  # a subclass of unknown forward
        # instance attributes: partials of module functions, so that the model still copies
        # and pickles, and its modules keep their types
        conv._conv_forward = functools.partial(_conv_forward, conv, fast_grad=fast_grad)
        if _is_conv2d_same(conv) and "forward" not in vars(conv):  # folded: its forward is set
            conv.forward = functools.partial(_same_forward, conv)
        routed += 1
    return routed
