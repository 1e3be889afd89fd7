"""1x1 convolutions on CPU whose backward is matrix products where that is faster.

A 1x1 convolution (stride 1, no padding, one group) of a channels_last map is a matrix product:
the map's (N*H*W, C_in) rows times the weight's (C_out, C_in) transposed. Its input gradient is
grad_output's rows times the weight, its weight gradient grad_output's rows transposed times the
input's. torch (2.14) runs it as a oneDNN convolution, whose backward is slow on small maps:
on 2 Zen 3 cores in fp32, EfficientNet-Lite0's weight gradients at 64 px, batch 64, took
1.2-2.6x as long as the matrix products on 8x8 to 2x2 maps, while on 32x32 maps oneDNN's whole
backward was 1.2-1.4x faster than the products (experiments/benchmarks/pointwise_conv.md).

So each 1x1 convolution's backward is timed once per shape, oneDNN's against the matrix
products (sft.models.timed_ways, as the depthwise parts are), and keeps the faster. The forward
pass stays oneDNN's, with the ReLU or ReLU6 of a folded norm (sft.models.norm_folding) as its
post-op (sft.models.conv_activation): summed over the layers the products' forward passes were
only 3 % faster, and timing them cost ~0.9 s per new batch size, in evaluation too. Calls
without a gradient, and those without the timing (compiled, traced or deterministic runs,
`model.fast_pointwise=false`), are torch's own. Maps that are not channels_last keep torch's
kernels too; 1x1 maps (squeeze-excite) are both layouts, and are timed.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from sft.models import timed_ways
from sft.models.conv_activation import compute_dtype, conv2d_activation, post_op, post_op_grad


def _rows(x: torch.Tensor) -> torch.Tensor:
    """A channels_last (N, C, H, W) map as its (N*H*W, C) rows (a view)."""
    return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])


def _map_of_products(rows: torch.Tensor, matrix: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`rows @ matrix` as a channels_last (N, C, H, W) map of `like`'s batch and size, written
    straight into the map's memory."""
    batch, _, height, width = like.shape
    out = torch.empty(
        (batch, matrix.shape[1], height, width), dtype=rows.dtype, device=rows.device,
        memory_format=torch.channels_last,
    )  # fmt: skip
    torch.mm(rows, matrix, out=_rows(out))
    return out


def _by_convolution(x, weight, bias, activation: nn.Module | None) -> torch.Tensor:
    if activation is None:
        return F.conv2d(x, weight, bias)
    return conv2d_activation(x, weight, bias, (1, 1), (0, 0), (1, 1), 1, activation)


class _Pointwise(torch.autograd.Function):
    """A 1x1 convolution of a channels_last map (and its ReLU or ReLU6 `activation`) by oneDNN,
    whose backward is oneDNN's or matrix products, whichever was faster for the shape."""

    @staticmethod
    def forward(ctx, x, weight, bias, activation):
        y = _by_convolution(x, weight, bias, activation)
        post = None if activation is None else post_op(activation)
        ctx.save_for_backward(x, weight, y if post is not None else None)
        ctx.key = timed_ways.Call.of(x, weight, (1, 1), (0, 0), x.dtype)
        ctx.post, ctx.has_bias = post, bias is not None
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):
        x, weight, y = ctx.saved_tensors
        grad = grad_y.contiguous(memory_format=torch.channels_last)
        if ctx.post is not None:
            grad = post_op_grad(grad, y, *ctx.post)
        needs = list(ctx.needs_input_grad[:3])
        needs[2] = needs[2] and ctx.has_bias

        def by_convolution():
            return torch.ops.aten.convolution_backward(
                grad, x, weight, [weight.shape[0]] if needs[2] else None, [1, 1], [0, 0],
                [1, 1], False, [0, 0], 1, needs,
            )  # fmt: skip

        def by_matrix_products():
            rows, matrix = _rows(grad), weight.reshape(weight.shape[0], -1)
            grad_x = _map_of_products(rows, matrix, x) if needs[0] else None
            grad_w = (rows.t() @ _rows(x)).reshape(weight.shape) if needs[1] else None
            grad_b = rows.sum(0) if needs[2] else None
            return grad_x, grad_w, grad_b

        ways = {"convolution": by_convolution, "matrix products": by_matrix_products}
        # the activation's pass is the same in both ways; which gradients are asked is not
        what = f"pointwise backward, gradients {tuple(needs)}"
        grad_x, grad_w, grad_b = timed_ways.fastest(what, ctx.key, ways)
        return grad_x, grad_w, grad_b, None


def _is_timed(x: torch.Tensor, dtype: torch.dtype | None) -> bool:
    """Whether this call has ways to time: a plain CPU call (not compiled, traced or
    deterministic) on a channels_last map, in fp32 or bf16."""
    return (
        dtype is not None
        and x.device.type == "cpu"
        and x.dim() == 4
        and x.permute(0, 2, 3, 1).is_contiguous()
        and not torch.compiler.is_compiling()
        and not torch.jit.is_tracing()
        and not torch.jit.is_scripting()
        # the choice is timed: deterministic runs (trainer.deterministic) keep torch's
        and not torch.are_deterministic_algorithms_enabled()
    )


def _conv_forward(
    conv: nn.Conv2d,
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    activation: nn.Module | None = None,
) -> torch.Tensor:
    """`conv`'s convolution by `weight` and `bias` (a folded norm's), then `activation`."""
    dtype = compute_dtype(x, weight)
    grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
    unknown_activation = activation is not None and post_op(activation) is None
    if not grad or unknown_activation or not _is_timed(x, dtype):
        return _by_convolution(x, weight, bias, activation)  # torch's, as before the routing
    # autocast's casts, recorded by autograd as its own are (the gradients come back in the
    # parameters' dtype)
    with torch.autocast("cpu", enabled=False):
        return _Pointwise.apply(
            x.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype), activation
        )


def is_pointwise(conv: nn.Module) -> bool:
    """A plain 1x1 convolution: stride 1, no padding, one group, no dilation."""
    return (
        type(conv) is nn.Conv2d
        and conv.kernel_size == (1, 1)
        and conv.stride == (1, 1)
        and conv.padding in ((0, 0), "valid")
        and conv.dilation == (1, 1)
        and conv.groups == 1
    )


def is_routed(conv: nn.Module) -> bool:
    forward = vars(conv).get("_conv_forward")
    return getattr(forward, "func", None) is _conv_forward


def route_pointwise_convs(model: nn.Module) -> int:
    """Route `model`'s 1x1 convolutions through `_conv_forward`, timed per shape on CPU.
    Call after `fold_frozen_norms`, whose folded convolutions (and their activations) go
    through it too. Returns the number of convolutions routed; the state_dict and module tree
    are unchanged."""
    routed = 0
    for conv in model.modules():
        if is_pointwise(conv) and "_conv_forward" not in vars(conv):
            # an instance attribute: a partial of a module function, so that the model still
            # copies and pickles, and the module keeps its type
            conv._conv_forward = functools.partial(_conv_forward, conv)
            routed += 1
    return routed
