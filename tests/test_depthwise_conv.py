"""Depthwise convolutions computed the fastest way per shape (weight gradients from 3x3 blocks
where oneDNN's own is slow; each part in bf16 or fp32 under CPU autocast): the same outputs and
gradients as torch's convolution to float rounding, the same modules and weights."""

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from sft.errors import SFTError
from sft.models import SFTClassifier, depthwise_conv, timed_ways
from sft.models.depthwise_conv import (
    depthwise_weight_grad,
    depthwise_weight_grad_as_convolution,
    depthwise_weight_grad_from_pairs,
    route_depthwise_convs,
)
from sft.models.norm_folding import fold_frozen_norms, freeze_norm_statistics


def torch_weight_grad(grad_output, x, weight, stride, padding):
    weight = weight.detach().requires_grad_()
    out = F.conv2d(x, weight, None, stride, padding, 1, weight.shape[0])
    (grad,) = torch.autograd.grad(out, weight, grad_output)
    return grad


# kernel, stride, padding, input size
SHAPES = [
    ((5, 5), 1, 2, 2),  # EfficientNet's last stage at 64 px
    ((5, 5), 1, 2, 4),
    ((5, 5), 2, 0, 7),  # after a TF "SAME" pad: odd input, no padding
    ((5, 5), 2, 1, 8),
    ((3, 3), 1, 1, 2),  # a 3x3 on a 2x2 map
    ((3, 3), 2, 0, 9),
    ((3, 3), 2, 0, 10),  # a stride that leaves the last row and column unread
    ((7, 7), 1, 3, 5),  # three blocks per side, overlapping
    ((3, 5), 1, (1, 2), 6),  # not square
    ((5, 5), 1, 0, 5),  # one output pixel
    ((9, 9), 1, 4, 1),  # blocks whose windows are all padding
]


def depthwise_case(kernel, stride, padding, size, channels_last):
    """(input, weight, stride, padding, grad_output) of a 6-channel depthwise convolution."""
    torch.manual_seed(0)
    x = torch.randn(3, 6, size, size + (size > 1))
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(6, 1, *kernel)
    stride = (stride, stride)
    padding = padding if isinstance(padding, tuple) else (padding, padding)
    out = F.conv2d(x, weight, None, stride, padding, 1, 6)
    return x, weight, stride, padding, torch.randn_like(out)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("kernel, stride, padding, size", SHAPES)
@pytest.mark.parametrize(
    "weight_grad",
    [
        depthwise_weight_grad,
        depthwise_weight_grad_from_pairs,
        depthwise_weight_grad_as_convolution,
    ],
    ids=["blocks", "pairs", "convolution"],
)
def test_each_way_of_the_weight_gradient_is_torchs(
    weight_grad, kernel, stride, padding, size, channels_last
):
    x, weight, stride, padding, grad_output = depthwise_case(
        kernel, stride, padding, size, channels_last
    )
    got = weight_grad(grad_output, x, kernel, stride, padding)
    want = torch_weight_grad(grad_output, x, weight, stride, padding)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("kernel, stride, padding, size", SHAPES)
@pytest.mark.parametrize(
    "way, function",
    [
        ("position pairs", "depthwise_weight_grad_from_pairs"),
        ("as a convolution", "depthwise_weight_grad_as_convolution"),
    ],
)
def test_a_convolution_routed_through_another_way_and_a_transposed_input_gradient_is_torchs(
    monkeypatch, way, function, kernel, stride, padding, size, channels_last
):
    x, weight, stride, padding, _ = depthwise_case(kernel, stride, padding, size, channels_last)
    conv = nn.Conv2d(6, 6, kernel, stride, padding, groups=6)
    with torch.no_grad():
        conv.weight.copy_(weight)
    routed = copy.deepcopy(conv)
    assert route_depthwise_convs(routed) == 1
    # through the timed autograd function in fp32 for every shape, as under autocast
    monkeypatch.setattr(depthwise_conv, "_is_timed", lambda *args: True)
    weight_grads = counted(monkeypatch, depthwise_conv, function)
    transposed = counted(monkeypatch, depthwise_conv.F, "conv_transpose2d")
    choose(monkeypatch, way, "transposed")
    for got, want in zip(gradients(routed, x), gradients(conv, x), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert weight_grads == transposed == [1]


def test_position_pairs_and_the_convolution_are_not_tried_on_large_maps(monkeypatch):
    """The pairs' product holds (output x input positions) per channel: 1024 x 1024 on a 32x32
    map; the convolution's filters would be 32x32."""
    conv = nn.Conv2d(4, 4, 5, padding=2, groups=4)
    route_depthwise_convs(conv)
    tried = []

    def fastest(what, key, ways):
        tried.extend(ways)
        return next(iter(ways.values()))()

    monkeypatch.setattr(timed_ways, "fastest", fastest)
    for size in (4, 32):
        conv(torch.randn(2, 4, size, size)).sum().backward()
    assert tried.count("position pairs torch.float32") == 1  # the 4x4 map's
    assert tried.count("as a convolution torch.float32") == 1


def choose(monkeypatch, *prefer: str) -> None:
    """Every timed choice takes its first way whose name holds the first of `prefer` that one
    holds, else its first way."""

    def fastest(what, key, ways):
        names = [name for part in prefer for name in ways if part in name]
        return ways[next(iter(names or ways))]()

    monkeypatch.setattr(timed_ways, "fastest", fastest)


def counted(monkeypatch, owner, name: str) -> list[int]:
    """Calls of `owner.name` from here on."""
    calls, function = [], getattr(owner, name)

    def counting(*args, **kwargs):
        calls.append(1)
        return function(*args, **kwargs)

    monkeypatch.setattr(owner, name, counting)
    for way, weight_grad in depthwise_conv._WEIGHT_GRADS.items():  # the ways' table too
        if weight_grad is function:
            monkeypatch.setitem(depthwise_conv._WEIGHT_GRADS, way, counting)
    return calls


def count_block_gradients(monkeypatch, faster: bool = True) -> list[int]:
    """Calls of the 3x3-block weight gradient, chosen as the faster one (or not) for any shape."""
    calls = counted(monkeypatch, depthwise_conv, "depthwise_weight_grad")
    choose(monkeypatch, "3x3 blocks" if faster else "torch")
    return calls


def gradients(module: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    x = x.detach().requires_grad_()
    module.zero_grad()
    out = module(x)
    out.backward(torch.linspace(-1, 1, out.numel()).reshape(out.shape))
    return [out.detach(), x.grad, *(p.grad for p in module.parameters())]


def test_a_routed_depthwise_convolution_computes_what_torch_does(monkeypatch):
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 8, 5, padding=2, groups=8)
    routed = copy.deepcopy(conv)
    assert route_depthwise_convs(routed) == 1
    calls = count_block_gradients(monkeypatch)
    x = torch.randn(4, 8, 4, 4).contiguous(memory_format=torch.channels_last)
    for got, want in zip(gradients(routed, x), gradients(conv, x), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert calls == [1]  # the blocks made the weight gradient
    assert list(routed.state_dict()) == list(conv.state_dict())


def test_timm_same_padded_depthwise_convolutions_are_routed(monkeypatch):
    layers = pytest.importorskip("timm.layers")
    torch.manual_seed(0)
    conv = layers.Conv2dSame(8, 8, 5, stride=2, groups=8)  # EfficientNet's strided 5x5
    routed = copy.deepcopy(conv)
    assert route_depthwise_convs(routed) == 1
    calls = count_block_gradients(monkeypatch)
    x = torch.randn(4, 8, 8, 8)
    for got, want in zip(gradients(routed, x), gradients(conv, x), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert calls == [1]


def test_only_plain_depthwise_convolutions_are_routed():
    class OwnConv(nn.Conv2d):  # a subclass may do more in its forward
        pass

    net = nn.Sequential(
        nn.Conv2d(4, 4, 5, padding=2, groups=4),  # routed
        nn.Conv2d(4, 8, 3, padding=1),  # dense
        nn.Conv2d(8, 16, 5, padding=2, groups=8),  # two filters per channel
        nn.Conv2d(16, 16, 5, padding=4, dilation=2, groups=16),  # dilated
        nn.Conv2d(16, 16, 5, padding="same", groups=16),  # string padding
        nn.Conv2d(16, 16, 5, padding=2, groups=16, padding_mode="reflect"),
        OwnConv(16, 16, 5, padding=2, groups=16),
    )
    assert route_depthwise_convs(net) == 1
    assert "_conv_forward" in vars(net[0])
    assert all("_conv_forward" not in vars(m) for m in net[1:])
    assert route_depthwise_convs(net) == 0  # once only


def test_torchs_own_gradient_where_it_is_fast_or_not_needed(monkeypatch):
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 8, 5, padding=2, groups=8)
    small_3x3 = nn.Conv2d(8, 8, 3, padding=1, groups=8)
    route_depthwise_convs(conv), route_depthwise_convs(small_3x3)
    calls = count_block_gradients(monkeypatch)
    x = torch.randn(2, 8, 8, 8, requires_grad=True)
    small_3x3(x).sum().backward()  # a 3x3 on an 8x8 map: oneDNN's fast kernel
    with torch.no_grad():
        conv(x)
    conv.double()(x.double()).sum().backward()
    conv.float().requires_grad_(False)
    conv(x).sum().backward()  # only the input gradient
    assert calls == []
    assert x.grad is not None


def test_torchs_weight_gradient_where_the_blocks_are_slower(monkeypatch):
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 8, 5, padding=2, groups=8)
    routed = copy.deepcopy(conv)
    route_depthwise_convs(routed)
    calls = count_block_gradients(monkeypatch, faster=False)
    x = torch.randn(4, 8, 4, 4)
    for got, want in zip(gradients(routed, x), gradients(conv, x), strict=True):
        torch.testing.assert_close(got, want)
    assert calls == []


def test_each_shape_is_timed_once_and_keeps_the_faster_way(monkeypatch):
    monkeypatch.setattr(timed_ways, "FASTEST", {})
    timings = iter([2.0, 1.0, 1.0, 2.0])  # shape 1: torch 2 s, blocks 1 s; shape 2: the reverse
    monkeypatch.setattr(timed_ways, "time_ways", lambda ways: {way: next(timings) for way in ways})
    ways = {"torch": lambda: "torch's", "3x3 blocks": lambda: "the blocks'"}
    fastest = timed_ways.fastest
    assert fastest("weight grad", ("small",), ways) == "the blocks'"
    assert fastest("weight grad", ("small",), ways) == "the blocks'"  # cached: not timed again
    assert fastest("weight grad", ("large",), ways) == "torch's"
    assert fastest("forward", ("large",), {"only": lambda: "one way"}) == "one way"  # not timed
    assert len(timed_ways.FASTEST) == 3


def test_the_first_backward_of_a_shape_times_its_weight_gradients(monkeypatch):
    monkeypatch.setattr(timed_ways, "FASTEST", {})
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 16, 5, padding=2, groups=16)
    routed = copy.deepcopy(conv)
    route_depthwise_convs(routed)
    x = torch.randn(4, 16, 2, 2).contiguous(memory_format=torch.channels_last)
    for got, want in zip(gradients(routed, x), gradients(conv, x), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert [key[0] for key in timed_ways.FASTEST] == [
        "depthwise forward",
        "depthwise input grad",
        "depthwise weight grad",
    ]


def test_deterministic_runs_keep_torchs_gradient(monkeypatch):
    conv = nn.Conv2d(8, 8, 5, padding=2, groups=8)
    route_depthwise_convs(conv)
    calls = count_block_gradients(monkeypatch)
    monkeypatch.setattr(torch, "are_deterministic_algorithms_enabled", lambda: True)
    conv(torch.randn(2, 8, 4, 4)).sum().backward()
    assert calls == []


def test_a_routed_model_copies_and_pickles():
    net = nn.Sequential(nn.Conv2d(4, 4, 5, padding=2, groups=4), nn.ReLU())
    route_depthwise_convs(net)
    x = torch.randn(2, 4, 4, 4)
    for clone in (copy.deepcopy(net), pickle.loads(pickle.dumps(net))):
        assert clone[0]._conv_forward.args == (clone[0],)  # its own module, not the original's
        torch.testing.assert_close(clone(x), net(x))


def test_efficientnet_folded_and_routed_trains_as_torch_does(monkeypatch):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    reference = timm.create_model("tf_efficientnet_lite0", num_classes=0)
    for bn in (m for m in reference.modules() if isinstance(m, nn.BatchNorm2d)):
        bn.running_mean.uniform_(-0.1, 0.1), bn.running_var.uniform_(0.5, 1.5)
    fast = copy.deepcopy(reference)
    x = torch.randn(2, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    assert fold_frozen_norms(fast, x) == 49
    assert route_depthwise_convs(fast) == 16  # every depthwise convolution, folded or not
    for net in (reference, fast):
        net.train(), freeze_norm_statistics(net)
    calls = count_block_gradients(monkeypatch)
    got, want = gradients(fast, x), gradients(reference, x)
    assert len(calls) == 10  # the nine 5x5 filters and the 3x3 on a 2x2 map
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=2e-3, atol=2e-3 * float(w.abs().max()))


def test_the_classifier_routes_its_image_backbones_depthwise_convolutions(monkeypatch):
    backbone = {"_target_": "sft.models.backbones.create_backbone", "name": "mobilenetv2"}
    model = SFTClassifier(num_classes=10, backbone=backbone, freeze_norm_stats=True).train()
    calls = count_block_gradients(monkeypatch)
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    assert calls  # MobileNetV2's 3x3 filters on its last 2x2 maps
    relu6 = [m for m in model.backbone.modules() if isinstance(m, nn.ReLU6)]
    assert relu6 and not any(m.inplace for m in relu6)


def test_timm_same_padded_convolutions_folded_with_norms_in_training_mode(monkeypatch):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    reference = timm.create_model("tf_efficientnet_lite0", num_classes=0).train()
    fast = copy.deepcopy(reference)
    x = torch.randn(2, 3, 64, 64)
    fold_frozen_norms(fast, x)
    route_depthwise_convs(fast)
    fast = pickle.loads(pickle.dumps(fast))  # the Conv2dSame forwards travel with it
    calls = count_block_gradients(monkeypatch)
    # batch statistics: the folded convolutions run unfolded, through the routed calls
    for got, want in zip(gradients(fast, x), gradients(reference, x), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))
    assert len(calls) == 10  # the strided 5x5 Conv2dSame ones included


def test_a_second_derivative_through_the_blocks_is_refused(monkeypatch):
    conv = nn.Conv2d(4, 4, 5, padding=2, groups=4)
    route_depthwise_convs(conv)
    count_block_gradients(monkeypatch)
    x = torch.randn(2, 4, 4, 4, requires_grad=True)
    (grad,) = torch.autograd.grad(conv(x).square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiable"):
        grad.sum().backward()


def assert_routed_without_blocks(model: SFTClassifier) -> None:
    """MobileNetV2's 17 depthwise convolutions routed, without the 3x3-block weight gradients."""
    forwards = [vars(m).get("_conv_forward") for m in model.backbone.modules()]
    routed = [f for f in forwards if getattr(f, "func", None) is depthwise_conv._conv_forward]
    assert len(routed) == 17
    assert all(forward.keywords == {"timed": False} for forward in routed)


def test_the_classifier_leaves_depthwise_gradients_to_torch_when_asked(monkeypatch):
    backbone = {"_target_": "sft.models.backbones.create_backbone", "name": "mobilenetv2"}
    model = SFTClassifier(num_classes=10, backbone=backbone, fast_depthwise=False).train()
    calls = count_block_gradients(monkeypatch)
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    assert calls == []
    assert_routed_without_blocks(model)  # still routed: in fp32 under autocast
    with pytest.raises(SFTError, match=r"model\.fast_depthwise"):
        SFTClassifier(num_classes=10, backbone=backbone, fast_depthwise="yes")


def autocast_step(net: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """A routed depthwise convolution and a 1x1 one under bf16 autocast, and its backward:
    the depthwise convolution's output."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        depthwise = net[0](x)
        assert depthwise.dtype == net[1](depthwise).dtype == torch.bfloat16
        net[1](depthwise).float().sum().backward()
    assert net[0].weight.grad.dtype == torch.float32
    return depthwise


@pytest.mark.parametrize("timed", [True, False])
def test_depthwise_convolutions_in_fp32_under_cpu_autocast(monkeypatch, timed):
    """Without the timed kernels (model.fast_depthwise=false, model.compile=true, deterministic
    runs), or where fp32's are the faster: under bf16 autocast the routed depthwise convolution
    computes in fp32 and returns bf16, as the 1x1 one beside it."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(8, 8, 5, padding=2, groups=8), nn.Conv2d(8, 4, 1))
    reference = copy.deepcopy(net)
    assert route_depthwise_convs(net, timed=timed) == 1
    calls = count_block_gradients(monkeypatch)
    # where the kernels are timed: fp32's, the blocks' for the weight gradient
    choose(monkeypatch, "3x3 blocks torch.float32", "torch.float32")
    x = torch.randn(2, 8, 4, 4)
    depthwise = autocast_step(net, x)
    assert len(calls) == int(timed)  # the blocks' weight gradient, in fp32
    # fp32's output in bf16 (a bf16 kernel's differs), and fp32's weight gradient to the bf16
    # rounding of what flows back
    assert torch.equal(depthwise, reference[0](x).to(torch.bfloat16))
    reference[1](reference[0](x)).sum().backward()
    want = reference[0].weight.grad
    torch.testing.assert_close(
        net[0].weight.grad, want, rtol=2e-2, atol=2e-2 * float(want.abs().max())
    )


class CastsOf(TorchDispatchMode):
    """Counts the bf16 -> fp32 casts of tensors of one shape."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape, self.count = shape, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if (
            func is torch.ops.aten._to_copy.default
            and args[0].dtype == torch.bfloat16
            and out.dtype == torch.float32
            and tuple(out.shape) == self.shape
        ):
            self.count += 1
        return out


def test_what_flows_back_is_cast_to_fp32_once_for_both_gradients(monkeypatch):
    """Where the input and weight gradients both compute in fp32 under bf16 autocast, the bf16
    gradient flowing back is cast once (was: once for each)."""
    net = nn.Sequential(nn.Conv2d(8, 8, 5, stride=2, padding=2, groups=8), nn.Conv2d(8, 4, 1))
    assert route_depthwise_convs(net) == 1
    choose(monkeypatch, "torch torch.float32", "torch.float32")
    x = torch.randn(2, 8, 8, 8, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x)
    casts = CastsOf((2, 8, 4, 4))  # the depthwise convolution's output
    with casts:
        out.float().sum().backward()
    assert x.grad is not None and net[0].weight.grad is not None
    assert casts.count == 1


def test_depthwise_convolutions_in_bf16_under_cpu_autocast_where_its_kernels_are_faster(
    monkeypatch,
):
    """oneDNN's bf16 depthwise kernels are faster than fp32's for some shapes (forward passes,
    unstrided input gradients, 3x3 weight gradients on wide maps): where timed so, the routed
    convolution computes what torch's autocast computes, and keeps its fp32 input's gradient in
    fp32."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Conv2d(8, 4, 1))
    reference = copy.deepcopy(net)
    assert route_depthwise_convs(net) == 1
    choose(monkeypatch, "bfloat16")
    x = torch.randn(2, 8, 6, 6, requires_grad=True)
    depthwise = autocast_step(net, x)
    got_input_grad, x.grad = x.grad, None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = reference[0](x)
        reference[1](want).float().sum().backward()
    assert torch.equal(depthwise, want)
    assert got_input_grad.dtype == net[0].bias.grad.dtype == torch.float32
    torch.testing.assert_close(got_input_grad, x.grad)
    torch.testing.assert_close(net[0].weight.grad, reference[0].weight.grad)
    # summed in fp32 where torch's bf16 kernel rounds it
    torch.testing.assert_close(net[0].bias.grad, reference[0].bias.grad, rtol=1e-2, atol=1e-2)
    # evaluation runs the forward pass as training does
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(net[0](x), reference[0](x))


def test_a_frozen_depthwise_convolution_keeps_no_input_for_backward(monkeypatch):
    """Frozen weights (LoRA elsewhere, layers before it training): only the input gradient is
    asked for, which needs the input's shape and layout, not its values."""
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 8, 5, stride=2, groups=8).requires_grad_(False)
    reference = copy.deepcopy(conv)
    route_depthwise_convs(conv)
    choose(monkeypatch, "float32")
    x = torch.randn(2, 8, 9, 9).contiguous(memory_format=torch.channels_last).requires_grad_()
    grads = []
    for net in (conv, reference):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(x)
        if net is conv:
            assert out.grad_fn.saved_tensors[0] is None
        (grad,) = torch.autograd.grad(out.float().sum(), x)
        grads.append(grad)
    assert grads[0].is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-2, atol=1e-2)


def test_a_bf16_model_outside_autocast_runs_torchs_own_kernels(monkeypatch):
    monkeypatch.setattr(timed_ways, "FASTEST", {})
    conv = nn.Conv2d(8, 8, 5, padding=2, groups=8).to(torch.bfloat16)
    reference = copy.deepcopy(conv)
    route_depthwise_convs(conv)
    x = torch.randn(2, 8, 4, 4, dtype=torch.bfloat16)
    for got, want in zip(gradients(conv, x), gradients(reference, x), strict=True):
        assert torch.equal(got, want)
    assert timed_ways.FASTEST == {}


def test_a_compiled_image_backbone_routes_its_depthwise_convolutions_without_blocks():
    """model.compile=true: the blocks' timed autograd function is not traced, but the depthwise
    convolutions are routed, to compute in fp32 under autocast."""
    backbone = {"_target_": "sft.models.backbones.create_backbone", "name": "mobilenetv2"}
    assert_routed_without_blocks(SFTClassifier(num_classes=10, backbone=backbone, compile=True))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_routed_depthwise_convolution_returns_autocasts_dtype(dtype):
    conv = nn.Conv2d(4, 4, 3, padding=1, groups=4)
    route_depthwise_convs(conv)
    x = torch.randn(2, 4, 5, 5)
    with torch.autocast("cpu", dtype=dtype):
        assert conv(x).dtype == dtype
        # autocast leaves float64 as it is, and so does the routing
        assert conv.double()(x.double()).dtype == torch.float64


def test_a_shape_timed_under_one_autocast_dtype_is_timed_again_under_another(monkeypatch):
    monkeypatch.setattr(timed_ways, "FASTEST", {})
    timings = iter([1.0, 2.0] * 2)  # the autocast dtype's forward is the faster each time
    monkeypatch.setattr(timed_ways, "time_ways", lambda ways: {way: next(timings) for way in ways})
    conv = nn.Conv2d(4, 4, 3, padding=1, groups=4)
    route_depthwise_convs(conv)
    x = torch.randn(2, 4, 5, 5)
    for dtype in (torch.bfloat16, torch.float16):
        with torch.autocast("cpu", dtype=dtype):
            assert conv(x).dtype == dtype
    assert len(timed_ways.FASTEST) == 2


def test_efficientnet_folded_and_routed_under_bf16_autocast_is_as_close_to_fp32_as_torchs():
    """Folded TF "SAME" and plain depthwise convolutions under autocast return bf16, and the
    step's outputs and gradients are at least as close to fp32's as torch's own bf16 autocast
    gets (a bf16 backward through 16 blocks drifts from fp32 either way)."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    reference = timm.create_model("tf_efficientnet_lite0", num_classes=0)
    x = torch.randn(2, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    fast = copy.deepcopy(reference)
    fold_frozen_norms(fast, x)
    route_depthwise_convs(fast)
    for net in (reference, fast):
        net.train(), freeze_norm_statistics(net)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        strided = fast.blocks[1][0].conv_dw  # a strided 3x3 Conv2dSame, folded
        assert strided(torch.randn(2, 96, 32, 32, dtype=torch.bfloat16)).dtype == torch.bfloat16
        routed, plain = gradients(fast, x), gradients(reference, x)
    fp32 = gradients(reference, x)

    def mean_cosine(grads: list[torch.Tensor]) -> float:
        pairs = zip(grads, fp32, strict=True)
        return sum(
            F.cosine_similarity(g.float().flatten(), w.flatten(), 0) for g, w in pairs
        ) / len(fp32)

    assert routed[0].dtype == torch.bfloat16
    assert F.cosine_similarity(routed[0].float().flatten(), fp32[0].flatten(), 0) > 0.999
    assert mean_cosine(routed) >= mean_cosine(plain) - 0.01
