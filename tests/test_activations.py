"""In-place activations whose gradient needs their input run out of place: the same outputs and
gradients, without autograd's copy of the input."""

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from sft.models.activations import out_of_place_activations


class RecordOps(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


def net_with(activation: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), activation, nn.Conv2d(8, 4, 1))


@pytest.mark.parametrize(
    "activation",
    [nn.ReLU6(inplace=True), nn.Hardswish(inplace=True), nn.SiLU(inplace=True)],
)
def test_in_place_activations_stop_copying_their_input(activation):
    reference, net = net_with(activation), net_with(type(activation)(inplace=True))
    assert out_of_place_activations(net, torch.randn(1, 3, 8, 8)) == 1
    x = torch.randn(2, 3, 8, 8)
    with RecordOps() as before:
        reference(x).square().sum().backward()
    with RecordOps() as after:
        net(x).square().sum().backward()
    assert "aten.clone" in before.ops  # autograd saved a copy of the input
    assert "aten.clone" not in after.ops
    for got, want in zip(net.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(got.grad, want.grad)


def test_activations_whose_gradient_reads_the_output_stay_in_place():
    net = nn.Sequential(nn.ReLU(inplace=True), nn.LeakyReLU(inplace=True), nn.ReLU6())
    assert out_of_place_activations(net, torch.randn(1, 2, 4, 4)) == 0
    assert net[0].inplace and net[1].inplace


class ReturnsItsInput(nn.Module):
    """Relies on the activation changing its input in place."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.act = nn.Conv2d(3, 4, 1), nn.ReLU6(inplace=True)

    def forward(self, x):
        x = self.conv(x) * 10
        self.act(x)
        return x


def test_activations_whose_side_effect_the_model_uses_stay_in_place():
    net = ReturnsItsInput()
    assert out_of_place_activations(net, torch.randn(2, 3, 4, 4)) == 0
    assert net.act.inplace
