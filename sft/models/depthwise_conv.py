"""Depthwise convolutions on CPU, each part computed the way that is fastest on this machine.

torch's CPU convolutions (oneDNN, torch 2.14) have a fast depthwise kernel for the weight
gradient (`jit_dw` under ONEDNN_VERBOSE=1) only for 3x3 filters on inputs at least 3 pixels
wide. Every other depthwise shape, such as EfficientNet's 5x5 filters or a 3x3 filter on a 2x2
map, goes to the generic grouped kernel. That kernel pads each channel's one-input,
one-output filter to a 16x16 block. On a 2-core Xeon, EfficientNet-Lite0's 1152 5x5 filters on
a 2x2 map took 6.5 ms for the weight gradient against 0.13 ms for the input gradient.

The weight gradient of a kxk filter is made of the weight gradients of its 3x3 blocks. Each
block's gradient is a 3x3 depthwise weight gradient of the explicitly padded input, shifted to
the block, with no padding, which the fast kernel computes. That is not always faster (the
copies of the shifted inputs cost too). On small maps (up to 8x8 at the sizes sft trains)
it can also be one batched matrix product over the channels: for each pair of an output and an
input position, grad_output times input summed over the batch, then each pair added to the
filter tap where the two meet. In bf16 on AMX that is 2-5x faster than the blocks. And the
weight gradient of a depthwise convolution is itself a depthwise forward convolution: of the
input, the batch folded into the channels, by grad_output as the filters (dilated by the
stride), summed over the batch; oneDNN's forward kernel takes any filter size, so in fp32 that
is 1.3-2.3x faster than the blocks for 5x5 filters on 4x4 to 16x16 maps.

The input gradient is torch's convolution backward or, the same numbers, the transposed
convolution of grad_output, which oneDNN runs 1.3-2.5x faster for strided fp32 filters.

Under CPU autocast (bf16) oneDNN's depthwise kernels are faster than its fp32 ones for some
parts and far slower for others: on 2 Zen 4 cores with AVX512-BF16, bf16 forward passes 1.2-3x
faster, input gradients of strided filters 6-140x slower, weight gradients of 5x5 filters 3-5x
slower. Whole, an EfficientNet-Lite0 step with every layer in bf16 was 1.8x slower than in
fp32, while its 1x1 convolutions gain from bf16.

So each part of a depthwise convolution (forward pass, input gradient, weight gradient) is
timed once per shape in autocast's dtype and in fp32, each of its ways above, as
cudnn.benchmark does, and keeps the fastest; the output is in autocast's dtype as
its other convolutions' are. Without the timing (`timed=False`, compiled or deterministic runs)
they compute in fp32 under autocast. Measured: benchmarks/depthwise_conv.py
(experiments/benchmarks/depthwise_conv.md, precision_layout.md).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from sft.models import timed_ways
from sft.models.padding import same_padded_conv, zero_padded

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
            block_call = _Backward(grad_output, window, block, stride, (0, 0))
            grad[..., top : top + 3, left : left + 3] = block_call.by_torch((False, True, False))[1]
    return grad


# the position pairs' product holds (output positions) x (input positions) per channel: kept
# to small maps, where it is small and the product's rows are long enough to pay
_PAIRS_MAX = 4096


def _has_pairs(grad_output: torch.Tensor, inputs: torch.Tensor) -> bool:
    return grad_output.shape[-2:].numel() * inputs.shape[-2:].numel() <= _PAIRS_MAX


@functools.cache
def _pairs_to_taps(
    out_size: tuple[int, int],
    in_size: tuple[int, int],
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dtype: torch.dtype,
) -> torch.Tensor:
    """0/1 matrix (out positions x in positions, filter taps): the tap at which each pair of an
    output and an input position meet, if any."""
    (out_h, out_w), (in_h, in_w), (kh, kw) = out_size, in_size, kernel_size
    (sh, sw), (ph, pw) = stride, padding
    taps = torch.zeros(out_h, out_w, in_h, in_w, kh, kw)
    for y in range(out_h):
        for x in range(out_w):
            for row in range(in_h):
                for col in range(in_w):
                    i, j = row - y * sh + ph, col - x * sw + pw
                    if 0 <= i < kh and 0 <= j < kw:
                        taps[y, x, row, col, i, j] = 1
    return taps.view(out_h * out_w * in_h * in_w, kh * kw).to(dtype)


def depthwise_weight_grad_from_pairs(
    grad_output: torch.Tensor,
    inputs: torch.Tensor,
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
) -> torch.Tensor:
    """d loss / d weight of `conv2d(inputs, weight, stride=stride, padding=padding,
    groups=channels)` (dilation 1) as matrix products: per channel, grad_output's and the
    input's values summed over the batch for every pair of an output and an input position
    (one batched product over channels), then each pair added to the filter tap where the two
    meet. On small maps it reads each tensor once in long, dense products where oneDNN's
    kernels loop over few pixels per channel (on an AMX Xeon in bf16, EfficientNet-Lite0's 5x5
    filters on 2x2 to 8x8 maps: 0.3-0.9 ms against 1.6-2.3 ms from 3x3 blocks)."""
    batch, channels = inputs.shape[:2]
    out_size, in_size = tuple(grad_output.shape[-2:]), tuple(inputs.shape[-2:])
    pairs = torch.bmm(
        grad_output.permute(1, 2, 3, 0).reshape(channels, -1, batch),
        inputs.permute(1, 0, 2, 3).reshape(channels, batch, -1),
    )
    taps = _pairs_to_taps(
        out_size, in_size, tuple(kernel_size), tuple(stride), tuple(padding), pairs.dtype
    )
    grad = pairs.view(channels, -1) @ taps
    return grad.view(channels, 1, *kernel_size)


# filters of the convolution below: grad_output's map, kept to at most 16x16 (sizes where
# oneDNN's forward kernel ran fast; its timing runs it four times per dtype)
_AS_CONVOLUTION_MAX = 256


def _has_convolution(grad_output: torch.Tensor) -> bool:
    return grad_output.shape[-2:].numel() <= _AS_CONVOLUTION_MAX


def depthwise_weight_grad_as_convolution(
    grad_output: torch.Tensor,
    inputs: torch.Tensor,
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
) -> torch.Tensor:
    """d loss / d weight of `conv2d(inputs, weight, stride=stride, padding=padding,
    groups=channels)` (dilation 1) as one depthwise forward convolution: of the input, the
    batch folded into the channels, by grad_output as the filters (dilated by the stride), then
    summed over the batch. oneDNN's forward kernel takes any filter size, where its weight
    gradient kernel is fast for 3x3 only (in fp32 on an AMX Xeon, EfficientNet-Lite0's 5x5
    filters on 4x4 to 16x16 maps: 0.8-2.4 ms against 1.9-4.5 ms from 3x3 blocks)."""
    batch, channels, height, width = inputs.shape
    out_h, out_w = grad_output.shape[-2:]
    grad = F.conv2d(
        inputs.contiguous().view(1, batch * channels, height, width),
        grad_output.contiguous().view(batch * channels, 1, out_h, out_w),
        None, 1, padding, stride, batch * channels,
    )  # fmt: skip
    kh, kw = kernel_size
    # the stride's remainder can add a row and a column past the filter
    return grad[..., :kh, :kw].reshape(batch, channels, kh, kw).sum(0).unsqueeze(1)


class _Backward(NamedTuple):
    """One depthwise convolution's backward (dilation 1), each gradient computable several
    ways. `inputs` may be a placeholder of the input's shape and layout where only the input
    gradient is asked for: its values do not enter that gradient."""

    grad_output: torch.Tensor
    inputs: torch.Tensor
    weight: torch.Tensor
    stride: tuple[int, int]
    padding: tuple[int, int]

    def by_torch(self, needs: tuple[bool, bool, bool]) -> tuple[torch.Tensor | None, ...]:
        channels = self.weight.shape[0]
        return torch.ops.aten.convolution_backward(
            self.grad_output, self.inputs, self.weight, [channels], list(self.stride),
            list(self.padding), [1, 1], False, [0, 0], channels, list(needs),
        )  # fmt: skip

    def input_grad(self, transposed: bool) -> torch.Tensor:
        """Computed in grad_output's dtype, by torch's convolution backward or as the
        transposed convolution of grad_output."""
        dtype = self.grad_output.dtype
        weight = self.weight.to(dtype)
        if transposed:
            return F.conv_transpose2d(
                self.grad_output, weight, None, self.stride, self.padding,
                self._output_padding(), weight.shape[0],
            )  # fmt: skip
        call = self._replace(
            # only its shape and layout are read: not cast
            inputs=torch.empty_like(self.inputs, dtype=dtype),
            weight=weight,
        )
        return call.by_torch((True, False, False))[0]

    def _output_padding(self) -> tuple[int, ...]:
        """The input rows and columns past the last window (a stride that does not divide
        the padded input): the transposed convolution adds them, with a zero gradient."""
        sizes = zip(
            self.inputs.shape[-2:], self.grad_output.shape[-2:], self.weight.shape[-2:],
            self.stride, self.padding, strict=True,
        )  # fmt: skip
        return tuple(size - ((out - 1) * s - 2 * p + k) for size, out, k, s, p in sizes)

    def weight_grad(self, way: str) -> torch.Tensor:
        """Computed in grad_output's dtype, by torch or one of the other ways above."""
        inputs = self.inputs.to(self.grad_output.dtype)
        if way == "torch":
            call = self._replace(inputs=inputs, weight=self.weight.to(inputs.dtype))
            return call.by_torch((False, True, False))[1]
        kernel = tuple(self.weight.shape[-2:])
        return _WEIGHT_GRADS[way](self.grad_output, inputs, kernel, self.stride, self.padding)


_WEIGHT_GRADS = {
    "3x3 blocks": depthwise_weight_grad,
    "position pairs": depthwise_weight_grad_from_pairs,
    "as a convolution": depthwise_weight_grad_as_convolution,
}


def _has_blocks(kernel: tuple[int, ...], inputs: torch.Tensor) -> bool:
    """Whether oneDNN's weight gradient for this call may be its slow generic kernel, which 3x3
    blocks can replace."""
    if min(kernel) < 3:
        return False
    return kernel != _FAST_KERNEL or min(inputs.shape[-2:]) < _FAST_MIN_WIDTH


def _depthwise_in(
    compute: torch.dtype,
    dtype: torch.dtype,
    inputs: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
) -> torch.Tensor:
    """The depthwise convolution computed in `compute`, returned in `dtype`."""
    bias = None if bias is None else bias.to(compute)
    out = F.conv2d(
        inputs.to(compute), weight.to(compute), bias, stride, padding, 1, weight.shape[0]
    )
    return out.to(dtype)


def _timed_forward(
    inputs: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dtype: torch.dtype,
) -> torch.Tensor:
    """The depthwise convolution in `dtype` or float32, whichever is faster for it, returned in
    `dtype`."""
    ways = {
        str(d): functools.partial(_depthwise_in, d, dtype, inputs, weight, bias, stride, padding)
        for d in dict.fromkeys((dtype, torch.float32))
    }
    return timed_ways.fastest(
        "depthwise forward", timed_ways.Call.of(inputs, weight, stride, padding, dtype), ways
    )


class _DepthwiseConv2d(torch.autograd.Function):
    """torch's depthwise conv2d (dilation 1) in `dtype` (autocast's, or float32), each part
    computed the fastest way on this machine: each part in `dtype` or float32, the input
    gradient also as a transposed convolution, the weight gradient also from 3x3 blocks,
    position pairs or as a forward convolution."""

    @staticmethod
    def forward(ctx, inputs, weight, bias, stride, padding, dtype):
        ctx.dtypes = (inputs.dtype, weight.dtype, None if bias is None else bias.dtype)
        ctx.stride, ctx.padding, ctx.dtype = stride, padding, dtype
        # in the compute dtype, as autocast keeps a convolution's input, and only where the
        # weight gradient reads it: the input gradient needs its shape and layout alone
        ctx.save_for_backward(inputs.to(dtype) if ctx.needs_input_grad[1] else None, weight)
        ctx.input_meta = inputs.to("meta", dtype)
        return _timed_forward(inputs, weight, bias, stride, padding, dtype)

    @staticmethod
    @once_differentiable  # the blocks' windows are not recorded by autograd
    def backward(ctx, grad_output):
        inputs, weight = ctx.saved_tensors
        if inputs is None:
            inputs = torch.empty_like(ctx.input_meta, device=grad_output.device)
        layout = (
            torch.channels_last
            if inputs.is_contiguous(memory_format=torch.channels_last)
            else torch.contiguous_format
        )
        grad_output = grad_output.contiguous(memory_format=layout)
        # grad_output in each dtype, cast once for both gradients (and the ways timed)
        call_in = functools.cache(
            lambda dtype: _Backward(grad_output.to(dtype), inputs, weight, ctx.stride, ctx.padding)
        )
        key = timed_ways.Call.of(inputs, weight, ctx.stride, ctx.padding, ctx.dtype)
        dtypes = list(dict.fromkeys((ctx.dtype, torch.float32)))
        (input_dtype, weight_dtype, bias_dtype), needs = ctx.dtypes, ctx.needs_input_grad
        grad_input = grad_weight = grad_bias = None
        if needs[0]:
            ways = {
                f"{'transposed' if transposed else 'torch'} {d}": (
                    lambda d=d, transposed=transposed: call_in(d).input_grad(transposed)
                )
                for d in dtypes
                for transposed in (False, True)
            }
            grad_input = timed_ways.fastest("depthwise input grad", key, ways).to(input_dtype)
        if needs[1]:
            kernel = tuple(weight.shape[-2:])
            kinds = ["torch"] + ["3x3 blocks"] * _has_blocks(kernel, inputs)
            kinds += ["position pairs"] * _has_pairs(grad_output, inputs)
            kinds += ["as a convolution"] * _has_convolution(grad_output)
            ways = {
                f"{kind} {d}": lambda d=d, kind=kind: call_in(d).weight_grad(kind)
                for d in dtypes
                for kind in kinds
            }
            grad_weight = timed_ways.fastest("depthwise weight grad", key, ways).to(weight_dtype)
        if needs[2]:
            grad_bias = grad_output.sum((0, 2, 3), dtype=torch.float32).to(bias_dtype)
        return grad_input, grad_weight, grad_bias, None, None, None


def _is_timed(inputs: torch.Tensor, weight: torch.Tensor, dtype: torch.dtype | None) -> bool:
    """Whether this call has ways to time: on CPU, not compiled or deterministic, under autocast
    (`dtype`: its dtype, else None) or in float32 where oneDNN's weight gradient may be slow."""
    if inputs.device.type != "cpu" or torch.compiler.is_compiling():
        return False
    # the choice is timed: deterministic runs (trainer.deterministic) keep torch's
    if torch.are_deterministic_algorithms_enabled():
        return False
    if dtype is not None:
        return True  # autocast's dtype or float32
    if not inputs.dtype == weight.dtype == torch.float32:
        return False
    return weight.requires_grad and _has_blocks(tuple(weight.shape[-2:]), inputs)


def _conv_forward(
    conv: nn.Conv2d,
    inputs: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    timed: bool = True,
) -> torch.Tensor:
    # autocast leaves float64 as it is; so does this
    autocast = (
        torch.get_autocast_dtype("cpu")
        if inputs.device.type == "cpu"
        and torch.is_autocast_enabled("cpu")
        and torch.float64 not in (inputs.dtype, weight.dtype)
        else None
    )
    if timed and _is_timed(inputs, weight, autocast):
        grad = torch.is_grad_enabled() and (weight.requires_grad or inputs.requires_grad)
        with torch.autocast("cpu", enabled=False):
            if grad:
                return _DepthwiseConv2d.apply(
                    inputs, weight, bias, conv.stride, conv.padding, autocast or torch.float32
                )
            if autocast is not None:  # evaluation: the forward pass as training runs it
                return _timed_forward(inputs, weight, bias, conv.stride, conv.padding, autocast)
    if autocast is not None:
        # computed in fp32 (some of oneDNN's bf16 depthwise kernels are up to 140x slower),
        # returned in autocast's dtype as its other convolutions are: the activation after it
        # runs on half the bytes, the next convolution takes it as it is
        with torch.autocast("cpu", enabled=False):
            return _depthwise_in(
                torch.float32, autocast, inputs, weight, bias, conv.stride, conv.padding
            )
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


def route_depthwise_convs(model: nn.Module, timed: bool = True) -> int:
    """Route `model`'s depthwise convolutions (nn.Conv2d, timm's Conv2dSame) through
    `_conv_forward`: with `timed`, through `_DepthwiseConv2d` where a gradient is needed and a
    part has more than one way to compute it (under CPU autocast, or weight gradients that
    oneDNN computes slowly); otherwise in fp32 under CPU autocast; other calls stay torch's.
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
        conv._conv_forward = functools.partial(_conv_forward, conv, timed=timed)
        if _is_conv2d_same(conv) and "forward" not in vars(conv):  # folded: its forward is set
            conv.forward = functools.partial(_same_forward, conv)
        routed += 1
    return routed
