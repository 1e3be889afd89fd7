"""A convolution and its ReLU / ReLU6 as one oneDNN call on CPU: torch's values and gradients,
the fused op actually used where it applies and left alone where it does not."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sft.models import conv_activation
from sft.models.conv_activation import conv2d_activation
from sft.models.norm_folding import fold_frozen_norms, folded_activations, freeze_norm_statistics

pytestmark = pytest.mark.skipif(
    conv_activation._CONV_POINTWISE is None or not torch.backends.mkldnn.is_available(),
    reason="torch without oneDNN: the fused op does not exist",
)


def count_fused_calls(monkeypatch) -> list[int]:
    calls, op = [], conv_activation._CONV_POINTWISE

    def counting(*args):
        calls.append(1)
        return op(*args)

    monkeypatch.setattr(conv_activation, "_CONV_POINTWISE", counting)
    return calls


def values_and_gradients(fn, x, weight, bias):
    leaves = [t.detach().clone().requires_grad_() for t in (x, weight, bias) if t is not None]
    out = fn(*leaves, *([None] if bias is None else []))
    # a gradient that is not constant, so that a wrong mask or layout shows
    out.backward(torch.linspace(-1, 1, out.numel()).reshape(out.shape).to(out.dtype))
    return [out.detach()] + [leaf.grad for leaf in leaves]


ACTIVATIONS = [nn.ReLU(), nn.ReLU6(), nn.Hardtanh(-0.5, 0.25)]


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=["relu", "relu6", "hardtanh"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize(
    "kernel,stride,padding,dilation,bias",
    [(1, 1, 0, 1, True), (3, 2, 1, 1, False), (3, 1, 2, 2, True)],
    ids=["1x1", "3x3-stride2-nobias", "3x3-dilated"],
)
def test_one_call_gives_torchs_values_and_gradients(
    monkeypatch, activation, channels_last, kernel, stride, padding, dilation, bias
):
    torch.manual_seed(0)
    x = torch.randn(2, 6, 9, 9) * 3  # values on both sides of ReLU6's bounds
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    weight, b = torch.randn(8, 6, kernel, kernel), torch.randn(8) if bias else None
    args = ((stride, stride), (padding, padding), (dilation, dilation), 1, activation)

    def torchs(x, w, b):
        return activation(F.conv2d(x, w, b, *args[:4]))

    want = values_and_gradients(torchs, x, weight, b)
    calls = count_fused_calls(monkeypatch)
    got = values_and_gradients(lambda x, w, b: conv2d_activation(x, w, b, *args), x, weight, b)
    assert calls == [1]
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
    assert got[0].is_contiguous(memory_format=torch.channels_last) == channels_last


def test_under_cpu_autocast_it_computes_in_bf16_with_fp32_gradients_as_autocast_does(monkeypatch):
    """Fused where oneDNN computes bf16 on this CPU; elsewhere (no AVX512) the same values from
    torch's own kernels, not oneDNN's error."""
    torch.manual_seed(0)
    x, weight, bias = torch.randn(4, 8, 6, 6) * 3, torch.randn(16, 8, 1, 1), torch.randn(16)
    args = ((1, 1), (0, 0), (1, 1), 1, nn.ReLU6())

    def torchs(x, w, b):
        return nn.ReLU6()(F.conv2d(x, w, b))

    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = values_and_gradients(torchs, x, weight, bias)
        calls = count_fused_calls(monkeypatch)
        got = values_and_gradients(
            lambda x, w, b: conv2d_activation(x, w, b, *args), x, weight, bias
        )
    assert calls == ([1] if conv_activation._BF16_SUPPORTED else [])
    assert got[0].dtype == want[0].dtype == torch.bfloat16
    assert [g.dtype for g in got[1:]] == [torch.float32] * 3
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize(
    "case", ["silu", "relu_subclass", "onednn_off", "float64", "fp16_autocast", "bf16_unsupported"]
)
def test_what_the_fused_op_does_not_cover_runs_as_before(monkeypatch, case):
    class MyReLU(nn.ReLU):  # may compute more than its base
        def forward(self, x):
            return super().forward(x) * 2

    torch.manual_seed(0)
    activation = {"silu": nn.SiLU(), "relu_subclass": MyReLU()}.get(case, nn.ReLU())
    dtype = torch.float64 if case == "float64" else torch.float32
    x, weight = torch.randn(2, 3, 5, 5, dtype=dtype), torch.randn(4, 3, 3, 3, dtype=dtype)
    args = ((1, 1), (1, 1), (1, 1), 1)
    calls = count_fused_calls(monkeypatch)
    if case == "bf16_unsupported":  # a CPU where oneDNN's bf16 convolution raises
        monkeypatch.setattr(conv_activation, "_BF16_SUPPORTED", False)
    autocast_dtype = torch.bfloat16 if case == "bf16_unsupported" else torch.float16
    with (
        torch.backends.mkldnn.flags(enabled=case != "onednn_off"),
        torch.autocast(
            "cpu", dtype=autocast_dtype, enabled=case.endswith(("autocast", "unsupported"))
        ),
    ):
        got = conv2d_activation(x, weight, None, *args, activation)
        want = activation(F.conv2d(x, weight, None, *args))
    assert calls == []
    torch.testing.assert_close(got, want)


def count_module_calls(modules) -> list[int]:
    calls = []
    for module in modules:
        module.register_forward_hook(lambda *_: calls.append(1))
    return calls


def test_efficientnet_norm_act_layers_apply_relu6_inside_their_folded_dense_convolutions(
    monkeypatch,
):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    net = timm.create_model("tf_efficientnet_lite0", num_classes=0)
    for bn in (m for m in net.modules() if isinstance(m, nn.BatchNorm2d)):
        bn.running_mean.uniform_(-0.1, 0.1)
        bn.running_var.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 64, 64)
    assert fold_frozen_norms(net, x) == 49
    # the same folded weights, with the activations run as modules
    reference = copy.deepcopy(net)
    # the norms with a ReLU6 after a dense convolution: the stem, the 15 expansions, the head
    norms = [m for m in net.modules() if type(m).__name__ == "BatchNormAct2d"]
    relu6 = [norm.act for norm in norms if isinstance(norm.act, nn.ReLU6)]
    dense_relu6 = [
        act
        for conv, norm in zip(
            [m for m in net.modules() if isinstance(m, nn.Conv2d)], norms, strict=True
        )
        if conv.groups == 1 and (act := norm.act) in relu6
    ]
    assert len(dense_relu6) == 17 and len(relu6) == 17 + 16  # and the 16 depthwise ones
    assert folded_activations(net) == 17
    calls = []
    for act in relu6:
        act.register_forward_hook(lambda module, *_: calls.append(module))

    fused = count_fused_calls(monkeypatch)
    outputs = []
    for model in (net, reference):
        freeze_norm_statistics(model)  # training, with frozen statistics
        model(x).square().sum().backward()
        outputs.append([p.grad for p in model.parameters()])
        monkeypatch.setattr(conv_activation, "_CONV_POINTWISE", None)
    # the dense convolutions applied their ReLU6 in the fused call: only the depthwise
    # convolutions' ReLU6 modules ran
    assert len(fused) == 17
    assert len(calls) == 16
    assert not any(module is act for module in calls for act in dense_relu6)
    # the same to float rounding (oneDNN may sum in another order, e.g. on one thread)
    for got, want in zip(*outputs, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-2 * float(want.abs().max()))
