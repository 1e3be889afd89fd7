"""A convolution and the ReLU or ReLU6 after it as one oneDNN call on CPU.

The activation after a convolution is one more pass over its output at memory speed: the
forward ReLU6 calls were ~4 % of EfficientNet-Lite0's bf16 training step at 64 px, batch 64, on
2 Xeon cores (its 64x96x32x32 one: 1.33 ms for conv + clamp, 0.57 ms as one call). oneDNN
applies the activation as the convolution writes its output (a post-op); PyTorch reaches that
only through `torch.ops.mkldnn._convolution_pointwise`, the op that torch.compile's CPU backend
(inductor) emits for a convolution and its activation. The op has no gradient; the Function
below gives it one: the activation's gradient read from its output (ReLU6 passes the gradient
where 0 < y < 6, which is where 0 < x < 6), then torch's convolution backward. Where the op is
missing (a torch built without oneDNN), off (`torch.backends.mkldnn.enabled = False`), or the
call is not a plain CPU one in fp32 or bf16, the convolution and the activation run as before.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

# oneDNN's convolution with a post-op: None in a torch built without it
_CONV_POINTWISE = getattr(getattr(torch.ops, "mkldnn", None), "_convolution_pointwise", None)
# oneDNN computes in bf16 only on CPUs with AVX512 (BW, VL, DQ) or AVX-NE-CONVERT: elsewhere the
# op raises, where F.conv2d takes another kernel (on AMD EPYC Zen 3, say)
_BF16_SUPPORTED = _CONV_POINTWISE is not None and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def post_op(activation: nn.Module) -> tuple[str, list[float]] | None:
    """oneDNN's name and scalars for `activation` where its gradient follows from its output
    (exact types: a subclass may compute more), else None."""
    if type(activation) is nn.ReLU:
        return "relu", []
    if type(activation) in (nn.ReLU6, nn.Hardtanh):
        return "hardtanh", [float(activation.min_val), float(activation.max_val)]
    return None


def compute_dtype(x: torch.Tensor, weight: torch.Tensor) -> torch.dtype | None:
    """The dtype the convolution computes in (autocast's, as it would cast a conv2d), where the
    fused op takes it; else None."""
    if torch.is_autocast_enabled("cpu") and torch.float64 not in (x.dtype, weight.dtype):
        dtype = torch.get_autocast_dtype("cpu")
    elif x.dtype == weight.dtype:
        dtype = x.dtype
    else:
        return None
    return (
        dtype if dtype == torch.float32 or (dtype == torch.bfloat16 and _BF16_SUPPORTED) else None
    )


def _fusible(x: torch.Tensor) -> bool:
    return (
        _CONV_POINTWISE is not None
        and torch.backends.mkldnn.is_available()
        and torch.backends.mkldnn.enabled
        and x.device.type == "cpu"
        and x.dim() == 4
        # torch.compile fuses on its own; a traced or scripted graph (sft-export) keeps the
        # modules' ops
        and not torch.compiler.is_compiling()
        and not torch.jit.is_tracing()
        and not torch.jit.is_scripting()
    )


def post_op_grad(
    grad_y: torch.Tensor, y: torch.Tensor, attr: str, scalars: list[float]
) -> torch.Tensor:
    """The gradient before the activation `attr` (post_op's name and scalars), read from its
    output `y`: ReLU passes it where y > 0, ReLU6/Hardtanh where y is inside its bounds."""
    if attr == "relu":
        return torch.ops.aten.threshold_backward(grad_y, y, 0)
    return torch.ops.aten.hardtanh_backward(grad_y, y, *scalars)


class _ConvPostOp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups, attr, scalars):
        y = _CONV_POINTWISE(x, weight, bias, padding, stride, dilation, groups, attr, scalars, "")
        ctx.save_for_backward(x, weight, y)
        ctx.conv = (stride, padding, dilation, groups, bias is not None)
        ctx.post_op = (attr, scalars)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):
        x, weight, y = ctx.saved_tensors
        stride, padding, dilation, groups, has_bias = ctx.conv
        grad = post_op_grad(grad_y, y, *ctx.post_op)
        needs = ctx.needs_input_grad
        grad_x, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
            grad, x, weight, [weight.shape[0]] if has_bias else None, stride, padding,
            dilation, False, [0, 0], groups, [needs[0], needs[1], has_bias and needs[2]],
        )  # fmt: skip
        return grad_x, grad_weight, grad_bias, None, None, None, None, None, None


def conv2d_activation(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
    activation: nn.Module,
) -> torch.Tensor:
    """`activation(F.conv2d(x, weight, bias, stride, padding, dilation, groups))` (zero
    padding), as one oneDNN call where it can be, in the dtype autocast would compute it in."""
    spec = post_op(activation)
    dtype = compute_dtype(x, weight)
    if spec is None or dtype is None or not _fusible(x):
        return activation(F.conv2d(x, weight, bias, stride, padding, dilation, groups))
    attr, scalars = spec
    # autocast's casts, recorded by autograd as its own are (the gradients come back in the
    # parameters' dtype); the op itself is not on autocast's lists
    with torch.autocast("cpu", enabled=False):
        return _ConvPostOp.apply(
            x.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype),
            list(stride), list(padding), list(dilation), groups, attr, scalars,
        )  # fmt: skip
