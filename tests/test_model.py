"""The fused head, the regularisers, parameter groups, freezing and the linear probe."""

from types import SimpleNamespace

import lightning as L
import pytest
import torch
from torch import nn

from sft.callbacks import BackboneUnfreeze
from sft.models import FusedHead, SFTClassifier
from sft.models.linear_probe import fit_logistic_regression
from sft.utils.errors import SFTError

SMALL_CNN = {"_target_": "sft.models.backbones.create_backbone", "name": "small_cnn", "width": 8}


def make_model(**overrides) -> SFTClassifier:
    torch.manual_seed(0)
    args = {
        "backbone": SMALL_CNN,
        "num_classes": 3,
        "head": {"_target_": "sft.models.heads.FusedHead"},
    }
    return SFTClassifier(**{**args, **overrides})


def test_fold_is_exact_and_branch_starts_at_zero():
    torch.manual_seed(0)
    head = FusedHead(32, 5, branch="linear")
    h = torch.randn(64, 32)
    assert torch.equal(head(h), head.base(h)), "step 0 must equal the base head"
    with torch.no_grad():  # as after some training: a non-zero branch of the base's scale
        head.branch.weight.normal_(std=0.1)
        head.branch.bias.normal_(std=0.1)
    folded = head.fold()
    assert isinstance(folded, nn.Linear)
    assert (folded(h) - head(h)).abs().max().item() <= 1e-6
    assert not torch.allclose(folded(h), head.base(h))


def test_mlp_branch_starts_at_base_and_cannot_fold():
    head = FusedHead(16, 4, branch="mlp", hidden_dim=8)
    h = torch.randn(8, 16)
    assert torch.equal(head(h), head.base(h))
    with pytest.raises(SFTError, match="fold"):
        head.fold()


def test_unknown_branch_is_a_clear_error():
    with pytest.raises(SFTError, match="branch"):
        FusedHead(4, 2, branch="resnet")


def test_freeze_base_trains_only_the_branch():
    head = FusedHead(8, 2, freeze_base=True)
    assert not any(p.requires_grad for p in head.base.parameters())
    assert all(p.requires_grad for p in head.branch.parameters())


def test_l2sp_is_zero_at_init_and_positive_after_a_step():
    model = make_model(regularizer="l2sp", reg_lambda=1.0)
    assert model.regularizer(model.backbone).item() == 0.0
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    assert model.regularizer(model.backbone).item() > 0.0
    # the reference weights travel with the checkpoint
    assert any(k.startswith("regularizer.ref_") for k in model.state_dict())


def test_l2_penalises_weights():
    model = make_model(regularizer="l2")
    expected = sum(p.pow(2).sum() for p in model.backbone.parameters())
    assert torch.allclose(model.regularizer(model.backbone), expected)


def test_param_groups_split_lr_and_decay():
    model = make_model(lr_backbone=1e-4, lr_head=1e-2, weight_decay=0.05)
    opt = model.configure_optimizers()["optimizer"]
    groups = {g["name"]: g for g in opt.param_groups}
    assert set(groups) == {"head", "head/no_decay", "backbone", "backbone/no_decay"}
    assert groups["backbone"]["lr"] == 1e-4 and groups["head"]["lr"] == 1e-2
    assert (
        groups["backbone"]["weight_decay"] == 0.05
        and groups["backbone/no_decay"]["weight_decay"] == 0.0
    )
    assert all(p.ndim <= 1 for p in groups["backbone/no_decay"]["params"])
    assert all(p.ndim > 1 for p in groups["backbone"]["params"])
    n_params = sum(len(g["params"]) for g in opt.param_groups)
    assert n_params == len(list(model.parameters()))


def test_freeze_backbone_is_a_linear_probe():
    model = make_model(freeze_backbone=True)
    opt = model.configure_optimizers()["optimizer"]
    assert {g["name"] for g in opt.param_groups} == {"head", "head/no_decay"}
    model.train()
    assert not model.backbone.training, "frozen backbone keeps norm statistics frozen"
    assert model.head.training


class _FakeTrainer:
    current_epoch = 0


def test_backbone_unfreeze_callback():
    model = make_model()
    callback, trainer = BackboneUnfreeze(unfreeze_at_epoch=2), _FakeTrainer()
    for epoch, trainable in [(0, False), (1, False), (2, True), (3, True)]:
        trainer.current_epoch = epoch
        callback.on_train_epoch_start(trainer, model)
        assert all(p.requires_grad == trainable for p in model.backbone.parameters())
        assert model.backbone.training == trainable
        assert all(p.requires_grad for p in model.head.parameters())


def test_logistic_regression_probe_fits_separable_features():
    torch.manual_seed(0)
    centers = torch.randn(4, 16) * 3 + 5  # offset and scale: standardisation must be undone right
    labels = torch.arange(4).repeat_interleave(50)
    feats = centers[labels] + 0.5 * torch.randn(200, 16)
    w, b = fit_logistic_regression(feats, labels, 4)
    assert ((feats @ w.T + b).argmax(-1) == labels).float().mean() == 1.0


def test_linear_probe_initialises_only_the_base_head():
    model = make_model(linear_probe={"max_iter": 50})

    class Probe:
        def probe_dataloader(self):
            g = torch.Generator().manual_seed(0)
            return [(torch.rand(8, 3, 32, 32, generator=g), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]))]

        def transform_batch(self, batch, train):
            return batch

    before = model.head.base.weight.clone()
    model.initialise_base_head(Probe())
    assert not torch.equal(before, model.head.base.weight)
    assert bool(model.linear_probe_done)
    assert torch.count_nonzero(model.head.branch.weight) == 0


def test_num_classes_must_match_the_data():
    class Data(L.LightningDataModule):
        num_classes = 10

    model = make_model()
    model._trainer = SimpleNamespace(datamodule=Data())
    with pytest.raises(SFTError, match=r"model.num_classes=3 but the data has 10"):
        model.setup("fit")


def test_freeze_norm_stats_keeps_batch_norm_in_eval_mode_but_trainable():
    model = make_model(freeze_norm_stats=True)
    model.train()
    norms = [m for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and not any(m.training for m in norms)
    assert all(p.requires_grad for m in norms for p in m.parameters())
    convs = [m for m in model.backbone.modules() if isinstance(m, nn.Conv2d)]
    assert all(m.training for m in convs)
    before = norms[0].running_mean.clone()
    model(torch.randn(4, 3, 32, 32) + 3.0)
    assert torch.equal(norms[0].running_mean, before)


class _RecordModes(L.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        norms = [m for m in pl_module.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
        self.backbone_training = pl_module.backbone.training
        self.norms_training = {m.training for m in norms}


@pytest.mark.parametrize("freeze_norm_stats", [False, True])
def test_fit_trains_a_backbone_built_in_eval_mode(freeze_norm_stats):
    """HF's from_pretrained returns eval mode and Lightning keeps modes as it finds them:
    training must still run with dropout/batch statistics on (or frozen norms if asked)."""
    model = make_model(freeze_norm_stats=freeze_norm_stats)
    model.backbone.eval()
    data = torch.utils.data.TensorDataset(torch.randn(8, 3, 32, 32), torch.randint(0, 3, (8,)))
    recorder = _RecordModes()
    trainer = L.Trainer(
        fast_dev_run=True,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[recorder],
    )
    trainer.fit(model, train_dataloaders=torch.utils.data.DataLoader(data, batch_size=4))
    assert recorder.backbone_training
    assert recorder.norms_training == {not freeze_norm_stats}


def test_frozen_norm_statistics_survive_the_linear_probe():
    """The probe runs the backbone in eval mode and restores it: fine-tuning must still start
    with frozen batch-norm statistics."""
    model = make_model(freeze_norm_stats=True, linear_probe={"max_iter": 5})

    class Probe:
        def probe_dataloader(self):
            return [(torch.rand(6, 3, 32, 32), torch.tensor([0, 1, 2, 0, 1, 2]))]

        def transform_batch(self, batch, train):
            return batch

    model._trainer = SimpleNamespace(datamodule=Probe(), limit_train_batches=1.0)
    model.on_fit_start()
    assert bool(model.linear_probe_done)
    norms = [m for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and not any(m.training for m in norms)
    assert model.backbone.training
