"""Zero padding that writes its output once computes what F.pad and timm's pad_same do."""

import pytest
import torch
import torch.nn.functional as F

from sft.models.padding import pad_same, zero_padded


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(
    "pads", [(0, 1, 0, 1), (1, 2, 2, 1), (2, 2, 2, 2), (-1, 1, 2, -2), (0, -2, -1, 0), (0, 0, 0, 0)]
)
def test_zero_padding_is_f_pad_in_the_inputs_layout(pads, channels_last):
    x = torch.randn(2, 5, 4, 6)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    top, bottom, left, right = pads
    got = zero_padded(x, top, bottom, left, right)
    torch.testing.assert_close(got, F.pad(x, (left, right, top, bottom)), rtol=0, atol=0)
    assert got.is_contiguous(memory_format=torch.channels_last) == channels_last


@pytest.mark.parametrize(
    "size, kernel, stride",
    [(32, 3, 2), (16, 5, 2), (7, 5, 1), (8, 3, 1), (9, 1, 1), (5, (3, 5), 2)],
)
def test_same_padding_and_its_gradient_are_timms(size, kernel, stride):
    timm_padding = pytest.importorskip("timm.layers.padding")
    kernel = kernel if isinstance(kernel, tuple) else (kernel, kernel)
    x = torch.randn(2, 3, size, size + 1, requires_grad=True)
    want = timm_padding.pad_same(x, kernel, (stride, stride), (1, 1))
    got = pad_same(x, kernel, (stride, stride), (1, 1))
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    grad = torch.randn_like(want)
    (want_grad,) = torch.autograd.grad(want, x, grad)
    (got_grad,) = torch.autograd.grad(got, x, grad)
    torch.testing.assert_close(got_grad, want_grad, rtol=0, atol=0)


def test_zero_padding_of_an_output_that_is_all_padding():
    x = torch.randn(1, 2, 4, 3)
    got = zero_padded(x, -5, 3, 0, 0)  # the rows cut reach past the input
    assert got.shape == (1, 2, 2, 3)
    assert not got.any()


def test_same_padding_traces_for_torchscript():
    """sft-export's torch.jit.trace of an EfficientNet-Lite0 (timm's Conv2dSame) failed with
    "RuntimeError: unordered_map::at": the tracer cannot record a Python autograd Function."""

    class StridedSame(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return pad_same(x, (3, 3), (2, 2), (1, 1)) * 2

    module = StridedSame()
    with torch.no_grad():
        traced = torch.jit.trace(module, (torch.rand(1, 3, 9, 9),))
        other = torch.rand(2, 3, 9, 9)  # another batch: the graph holds no fixed batch size
        torch.testing.assert_close(traced(other), module(other), rtol=0, atol=0)
