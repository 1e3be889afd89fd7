"""1x1 convolutions whose backward is timed against matrix products once per shape: torch's
values and gradients whichever way runs, torch's own kernels where the timing is off."""

import copy
import logging
import pickle

import pytest
import torch
from torch import nn

from sft.errors import SFTError
from sft.models import SFTClassifier, conv_activation, pointwise_conv, timed_ways
from sft.models.conv_activation import conv2d_activation
from sft.models.norm_folding import fold_frozen_norms, freeze_norm_statistics
from sft.models.pointwise_conv import route_pointwise_convs

MOBILENETV2 = {"_target_": "sft.models.backbones.create_backbone", "name": "mobilenetv2"}


def channels_last(*shape: int) -> torch.Tensor:
    return torch.randn(*shape).contiguous(memory_format=torch.channels_last)


def take(monkeypatch, way: str) -> list[str]:
    """Every 1x1 convolution's timed choice takes its way named `way` (the depthwise parts
    their first); returns the 1x1 choices made, in order."""
    taken = []

    def fastest(what, call, ways):
        if not what.startswith("pointwise"):
            return next(iter(ways.values()))()
        taken.append(f"{what.split(',')[0]}: {way}")  # "pointwise backward, gradients ..."
        return ways[way]()

    monkeypatch.setattr(timed_ways, "fastest", fastest)
    return taken


def step(
    conv: nn.Conv2d, x: torch.Tensor, activation: nn.Module | None, fused: bool = False
) -> list[torch.Tensor]:
    """The output and the input's, weight's and bias's gradients of activation(conv(x)) under a
    loss that weighs every output differently; `fused`: torch's convolution with the
    activation as one call, as folded norms run it unrouted."""
    x = x.detach().requires_grad_()
    conv.zero_grad(set_to_none=True)
    if activation is None:
        y = conv(x)
    elif pointwise_conv.is_routed(conv):
        y = conv._conv_forward(x, conv.weight, conv.bias, activation)  # as a folded norm calls it
    elif fused:
        y = conv2d_activation(x, conv.weight, conv.bias, (1, 1), (0, 0), (1, 1), 1, activation)
    else:
        y = activation(conv(x))
    if x.is_contiguous(memory_format=torch.channels_last):
        assert y.is_contiguous(memory_format=torch.channels_last)
    weights = torch.linspace(-1, 1, y.numel()).view_as(y)
    (y * weights).sum().backward()
    grads = [x.grad, conv.weight.grad] + ([conv.bias.grad] if conv.bias is not None else [])
    return [y.detach(), *grads]


@pytest.mark.parametrize("way", ["convolution", "matrix products"])
@pytest.mark.parametrize(
    "activation",
    [None, nn.ReLU(), nn.ReLU6(), nn.Hardtanh(-0.5, 0.7)],
    ids=["none", "relu", "relu6", "hardtanh"],
)
@pytest.mark.parametrize("bias", [True, False])
def test_either_way_gives_torchs_values_and_gradients(monkeypatch, way, activation, bias):
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 16, 1, bias=bias)
    routed = copy.deepcopy(conv)
    assert route_pointwise_convs(routed) == 1
    taken = take(monkeypatch, way)
    x = 4 * channels_last(4, 8, 5, 5)  # outputs past ReLU6's 6 too
    for got, want in zip(step(routed, x, activation), step(conv, x, activation), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert taken == [f"pointwise backward: {way}"]


def test_each_shape_is_timed_once_and_keeps_the_faster_way(monkeypatch):
    monkeypatch.setattr(timed_ways, "FASTEST", {})
    # shape 1: the products faster; shape 2: oneDNN's convolution
    timings = iter([2.0, 1.0, 1.0, 2.0])
    monkeypatch.setattr(timed_ways, "time_ways", lambda ways: {way: next(timings) for way in ways})
    conv = nn.Conv2d(8, 16, 1)
    route_pointwise_convs(conv)
    for size in (4, 4, 6):  # the second call of size 4 is not timed again
        conv(channels_last(2, 8, size, size)).sum().backward()
    ways = {
        (what.split(",")[0], call.input_shape[-1]): way
        for (what, call), way in timed_ways.FASTEST.items()
    }
    assert ways == {
        ("pointwise backward", 4): "matrix products",
        ("pointwise backward", 6): "convolution",
    }


@pytest.mark.parametrize("activation", [None, nn.ReLU6()], ids=["none", "relu6"])
@pytest.mark.parametrize("case", ["nchw", "deterministic", "float64", "no timing"])
def test_calls_without_timing_run_torchs_convolution_bit_for_bit(monkeypatch, case, activation):
    monkeypatch.setattr(timed_ways, "FASTEST", {})
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 16, 1)
    x = torch.randn(2, 8, 4, 4) if case == "nchw" else channels_last(2, 8, 4, 4)
    if case == "float64":
        conv, x = conv.double(), x.double()
    routed = copy.deepcopy(conv)
    route_pointwise_convs(routed)
    if case == "deterministic":
        monkeypatch.setattr(torch, "are_deterministic_algorithms_enabled", lambda: True)
    if case == "no timing":  # traced for sft-export
        monkeypatch.setattr(torch.jit, "is_tracing", lambda: True)
    for got, want in zip(
        step(routed, x, activation), step(conv, x, activation, fused=True), strict=True
    ):
        assert torch.equal(got, want)
    assert timed_ways.FASTEST == {}


def test_under_bf16_autocast_the_output_is_bf16_and_the_gradients_fp32(monkeypatch):
    # timed in bf16 where oneDNN computes in bf16 (AMX, AVX512-BF16 CPUs): here on any CPU
    monkeypatch.setattr(conv_activation, "_BF16_SUPPORTED", True)
    taken = take(monkeypatch, "matrix products")
    conv = nn.Conv2d(8, 16, 1)
    reference = copy.deepcopy(conv)
    route_pointwise_convs(conv)
    x = channels_last(2, 8, 4, 4).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv(x)
        assert y.dtype == torch.bfloat16
        torch.testing.assert_close(y, reference(x), rtol=1e-2, atol=1e-2)
    y.float().sum().backward()
    assert x.grad.dtype == conv.weight.grad.dtype == conv.bias.grad.dtype == torch.float32
    assert taken == ["pointwise backward: matrix products"]


def test_without_a_gradient_the_convolution_is_torchs_and_nothing_is_timed(monkeypatch):
    """Evaluation (no_grad, Lightning's inference_mode) and a frozen layer on a frozen input."""
    taken = take(monkeypatch, "matrix products")
    conv = nn.Conv2d(8, 16, 1)
    routed = copy.deepcopy(conv)
    route_pointwise_convs(routed)
    x = channels_last(2, 8, 4, 4)
    for mode in (torch.no_grad, torch.inference_mode):
        with mode():
            assert torch.equal(routed(x), conv(x))
    routed.requires_grad_(False)
    assert routed(x).grad_fn is None
    assert taken == []


def test_folded_norms_and_their_relu6_run_in_the_timed_call(monkeypatch):
    """timm's EfficientNet blocks: 1x1 conv -> BatchNormAct2d (ReLU6), frozen and folded, then
    routed: the products apply the activation, with the unfolded block's values and gradients."""
    from timm.layers import BatchNormAct2d

    torch.manual_seed(0)
    block = nn.Sequential(nn.Conv2d(8, 16, 1, bias=False), BatchNormAct2d(16, act_layer=nn.ReLU6))
    block[1].running_mean.uniform_(-1, 1)
    block[1].running_var.uniform_(0.5, 2)
    block.to(memory_format=torch.channels_last)
    routed = copy.deepcopy(block)
    x = 4 * channels_last(4, 8, 5, 5)
    assert fold_frozen_norms(routed, x[:2]) == 1
    assert route_pointwise_convs(routed) == 1
    taken = take(monkeypatch, "matrix products")
    results = []
    for net in (routed, block):
        freeze_norm_statistics(net)
        inputs = x.clone().requires_grad_()
        y = net(inputs)
        (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
        results.append([y.detach(), inputs.grad, net[0].weight.grad])
    for got, want in zip(*results, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert taken == ["pointwise backward: matrix products"]


def test_a_routed_model_copies_and_pickles_with_its_state_dict_unchanged():
    conv = nn.Conv2d(8, 16, 1)
    keys = list(conv.state_dict())
    route_pointwise_convs(conv)
    assert list(conv.state_dict()) == keys
    for copied in (copy.deepcopy(conv), pickle.loads(pickle.dumps(conv))):
        assert pointwise_conv.is_routed(copied)
        assert copied._conv_forward.args[0] is copied  # its own module, not the original


def pointwise_routed(model: SFTClassifier) -> int:
    return sum(pointwise_conv.is_routed(m) for m in model.backbone.modules())


def test_the_classifier_routes_its_1x1_convolutions_unless_asked_not_to():
    """MobileNetV2's 34 1x1 convolutions (16 expansions, 17 projections, the last 320 -> 1280);
    not with model.fast_pointwise=false or model.compile=true."""
    assert pointwise_routed(SFTClassifier(num_classes=10, backbone=MOBILENETV2)) == 34
    off = SFTClassifier(num_classes=10, backbone=MOBILENETV2, fast_pointwise=False)
    assert pointwise_routed(off) == 0
    compiled = SFTClassifier(num_classes=10, backbone=MOBILENETV2, compile=True)
    assert pointwise_routed(compiled) == 0
    with pytest.raises(SFTError, match=r"model\.fast_pointwise: expected true or false"):
        SFTClassifier(num_classes=10, backbone=MOBILENETV2, fast_pointwise="yes")


def test_the_log_says_what_the_layout_leaves_to_torch(caplog):
    """With model.channels_last=false the 1x1 convolutions of MobileNetV2 run on NCHW maps,
    which keep torch's kernels (was: the log said their backward was timed)."""
    with caplog.at_level(logging.INFO, logger="sft.models.classifier"):
        SFTClassifier(num_classes=10, backbone=MOBILENETV2, channels_last=True)
        SFTClassifier(num_classes=10, backbone=MOBILENETV2, channels_last=False)
    lines = [r.getMessage() for r in caplog.records if "1x1 convolutions" in r.getMessage()]
    assert len(lines) == 2, lines
    assert "time their backward once per shape" in lines[0]
    assert "keep torch's kernels on NCHW maps (model.channels_last=false)" in lines[1]


@pytest.mark.parametrize("way", ["convolution", "matrix products"])
def test_the_output_can_be_changed_in_place(monkeypatch, way):
    """A ReLU(inplace=True) or a `+=` after a 1x1 convolution (torchvision's ResNets, timm's
    squeeze-excite): the products' output was a view made inside the autograd Function, which
    autograd refuses to change in place."""
    take(monkeypatch, way)
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 8, 1)
    routed = copy.deepcopy(conv)
    route_pointwise_convs(routed)
    x = channels_last(2, 8, 4, 4)
    grads = []
    for net in (routed, conv):
        inputs = x.clone().requires_grad_()
        y = net(inputs)
        y += inputs
        y.relu_()
        y.sum().backward()
        grads.append((y.detach(), inputs.grad, net.weight.grad))
    for got, want in zip(*grads, strict=True):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("way", ["convolution", "matrix products"])
def test_an_empty_batch_a_frozen_weight_and_an_input_without_gradient(monkeypatch, way):
    take(monkeypatch, way)
    conv = nn.Conv2d(8, 16, 1)
    route_pointwise_convs(conv)
    empty = conv(channels_last(0, 8, 4, 4).requires_grad_())
    assert empty.shape == (0, 16, 4, 4)
    empty.sum().backward()
    conv.zero_grad(set_to_none=True)
    conv.weight.requires_grad_(False)
    conv(channels_last(2, 8, 4, 4)).sum().backward()  # the bias's gradient alone
    assert conv.weight.grad is None
    torch.testing.assert_close(conv.bias.grad, torch.full((16,), 32.0))


def test_a_second_derivative_is_refused():
    conv = nn.Conv2d(4, 4, 1)
    route_pointwise_convs(conv)
    x = channels_last(2, 4, 3, 3).requires_grad_()
    (grad,) = torch.autograd.grad(conv(x).square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiable"):
        grad.sum().backward()


def test_a_timm_model_with_squeeze_excite_trains_through_the_products(monkeypatch):
    """MobileNetV3's squeeze-excite 1x1 convolutions run on 1x1 maps, with an in-place ReLU
    after the first: one step of the classifier, every 1x1 convolution by matrix products."""
    taken = take(monkeypatch, "matrix products")
    backbone = {
        "_target_": "sft.models.backbones.create_backbone",
        "name": "timm",
        "model_name": "mobilenetv3_small_050",
        "pretrained": False,
    }
    model = SFTClassifier(num_classes=10, backbone=backbone).train()
    assert pointwise_routed(model) > 0
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    assert "pointwise backward: matrix products" in taken
    assert all(p.grad is not None for p in model.backbone.parameters() if p.requires_grad)
