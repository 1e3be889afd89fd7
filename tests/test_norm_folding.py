"""Batch norms with frozen statistics run folded into their convolutions: the same function and
gradients, one pass fewer, the same weights and checkpoints."""

import copy
import pickle

import pytest
import torch
from torch import nn

from sft.models import SFTClassifier
from sft.models.norm_folding import fold_frozen_norms


def conv_bn_net() -> nn.Module:
    """Two conv -> BN -> ReLU stages (the second conv with a bias) and a pooled linear head, with
    non-trivial BN statistics and affine weights."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    )
    for bn in (net[1], net[4]):
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.5, 0.5)
    return net


def count_batch_norm_calls(monkeypatch) -> list[int]:
    calls, batch_norm = [], torch.nn.functional.batch_norm

    def counting(*args, **kwargs):
        calls.append(1)
        return batch_norm(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "batch_norm", counting)
    return calls


def test_frozen_norms_run_inside_their_convolutions_with_the_same_gradients(monkeypatch):
    reference, folded = conv_bn_net(), conv_bn_net()
    x = torch.randn(4, 3, 16, 16)
    assert fold_frozen_norms(folded, x[:2]) == 2
    assert folded.training  # modes as they were
    assert list(folded.state_dict()) == list(reference.state_dict())

    # frozen statistics (eval-mode norms) while the weights train, as freeze_norm_stats does
    for net in (reference, folded):
        net[1].eval(), net[4].eval()
    calls = count_batch_norm_calls(monkeypatch)
    outputs = []
    for net in (reference, folded):
        out = net(x)
        out.square().sum().backward()
        outputs.append(out)
    assert len(calls) == 2  # the reference's two norms; the folded net computes none
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-5, atol=1e-5)
    for (name, p), q in zip(reference.named_parameters(), folded.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-5, msg=name)


def test_norms_in_training_mode_use_batch_statistics_as_before():
    reference, folded = conv_bn_net(), conv_bn_net()
    x = torch.randn(4, 3, 16, 16)
    fold_frozen_norms(folded, x[:2])
    torch.testing.assert_close(folded(x), reference(x))
    # the running statistics moved alike: evaluation afterwards folds the updated ones
    torch.testing.assert_close(folded[1].running_var, reference[1].running_var)
    torch.testing.assert_close(folded.eval()(x), reference.eval()(x), rtol=1e-5, atol=1e-5)


class SkipPastTheNorm(nn.Module):
    """The convolution's output is used after its norm as well: folding would change it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        return self.bn(h) + h


class BranchAddedInPlace(nn.Module):
    """A zero-initialised branch added in place to the convolution's output before its norm
    (as an adapter may): the norm does not take the convolution's output."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.branch = nn.Conv2d(3, 3, 1)
        nn.init.zeros_(self.branch.weight), nn.init.zeros_(self.branch.bias)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        h += self.branch(x)
        return self.bn(h)


@pytest.mark.parametrize("net_type", [SkipPastTheNorm, BranchAddedInPlace])
def test_a_convolution_whose_output_does_not_go_only_to_its_norm_is_left_as_it_is(net_type):
    """Not judged on the fresh weights: a fresh norm is close to the identity and a fresh branch
    is zero, so the wrong fold would compute the same until training moves them."""
    torch.manual_seed(0)
    net = net_type().eval()
    reference = copy.deepcopy(net)
    x = torch.randn(2, 3, 8, 8)
    assert fold_frozen_norms(net, x) == 0
    assert "forward" not in vars(net.conv) and "forward" not in vars(net.bn)
    with torch.no_grad():  # weights as after training (or a pretrained checkpoint)
        for model in (net, reference):
            model.bn.running_mean.fill_(2.0)
            model.bn.running_var.fill_(3.0)
            if hasattr(model, "branch"):
                model.branch.weight.fill_(0.5)
    torch.testing.assert_close(net(x), reference(x))


def test_norms_without_affine_weights_fold_and_without_running_statistics_do_not():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8)
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, affine=False)).eval()
    plain[1].running_mean.uniform_(-1, 1)
    plain[1].running_var.uniform_(0.5, 2)
    batch_stats = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False))
    for net, folds in ((plain, 1), (batch_stats.eval(), 0)):
        want = net(x)
        assert fold_frozen_norms(net, x) == folds
        torch.testing.assert_close(net(x), want, rtol=1e-5, atol=1e-5)


def test_dropout_between_a_convolution_and_its_norm_keeps_them_apart():
    """Dropout passes its input through unchanged in eval mode, but not while training with
    frozen norm statistics: folding would drop out the norm's shift too."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Dropout(0.5), nn.BatchNorm2d(4))
    net[2].running_mean.uniform_(-1, 1)
    x = torch.randn(2, 3, 8, 8)
    assert fold_frozen_norms(net, x) == 0


def test_norms_converted_for_ddp_sync_run_their_own_forward():
    """Lightning's sync_batchnorm replaces every norm by a SyncBatchNorm after the model is
    built: the convolutions then run as they are, not folded with the replaced norms."""
    reference, folded = conv_bn_net(), conv_bn_net()
    x = torch.randn(4, 3, 16, 16)
    assert fold_frozen_norms(folded, x[:2]) == 2
    reference, folded = (
        nn.SyncBatchNorm.convert_sync_batchnorm(n.eval()) for n in (reference, folded)
    )
    assert isinstance(folded[1], nn.SyncBatchNorm)
    torch.testing.assert_close(folded(x), reference(x))


def test_a_backbone_that_cannot_take_the_example_is_left_as_it_is():
    """The classifier probes with 3-channel images: a backbone for other inputs still builds."""
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4))
    assert fold_frozen_norms(net, torch.zeros(2, 3, 16, 16)) == 0
    assert net.training and "forward" not in vars(net[0])
    assert net(torch.zeros(2, 1, 16, 16)).shape == (2, 4, 14, 14)


def test_a_folded_model_copies_and_pickles_with_its_own_norms():
    net = conv_bn_net().eval()
    x = torch.randn(2, 3, 16, 16)
    fold_frozen_norms(net, x)
    for clone in (copy.deepcopy(net), pickle.loads(pickle.dumps(net))):
        torch.testing.assert_close(clone(x), net(x))
        clone[1].running_var.mul_(4.0)  # the clone's statistics, not the original's
        assert not torch.allclose(clone(x), net(x))


def test_timm_efficientnet_norm_act_layers_fold():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    net = timm.create_model("tf_efficientnet_lite0", num_classes=0).eval()
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in norms:  # non-trivial statistics (random init has mean 0, var 1)
        bn.running_mean.uniform_(-0.1, 0.1)
        bn.running_var.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 64, 64)
    want = net(x)
    assert fold_frozen_norms(net, x) == len(norms) == 49  # every Conv2dSame / BatchNormAct2d
    torch.testing.assert_close(net(x), want, rtol=1e-4, atol=1e-4)


def test_the_classifier_trains_its_image_backbone_folded_while_norm_statistics_are_frozen(
    monkeypatch,
):
    backbone = {"_target_": "sft.models.backbones.create_backbone", "name": "small_cnn", "width": 8}
    model = SFTClassifier(num_classes=10, backbone=backbone, freeze_norm_stats=True).train()
    calls = count_batch_norm_calls(monkeypatch)
    model(torch.randn(4, 3, 32, 32)).sum().backward()
    assert calls == []
    assert all(p.grad is not None for p in model.backbone.parameters())
