"""The fused head, the regularisers, parameter groups, freezing and the linear probe."""

import functools
import logging
import math
import warnings
from types import SimpleNamespace
from typing import Any

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from conftest import logs_warning
from lightning.pytorch.plugins.precision import MixedPrecision
from torch import nn

from sft.callbacks import BackboneUnfreeze
from sft.data.base import SFTDataModule
from sft.errors import SFTError
from sft.models import FusedHead, SFTClassifier, load_classifier
from sft.models.classifier import check_decoupled_pull, check_optimizer_settings
from sft.models.linear_probe import fit_logistic_regression
from sft.models.optim import create_scheduler

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


class ConvMaps(nn.Module):
    """A user's backbone that forgets to pool: (B, 4, H, W) maps, not (B, D) features."""

    def __init__(self, num_features: int | None = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        if num_features is not None:
            self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_a_backbone_outside_the_contract_is_one_line():
    """README: a backbone returns (batch, D) features and sets num_features = D. Was: Hydra's
    multi-line AttributeError (no num_features) and torch's "mat1 and mat2 shapes cannot be
    multiplied" traceback (maps not pooled)."""
    target = {"_target_": f"{__name__}.ConvMaps"}
    with pytest.raises(SFTError, match=r"^model\.backbone: ConvMaps sets no num_features \(got"):
        make_model(backbone={**target, "num_features": None})
    model = make_model(backbone=target)
    with pytest.raises(SFTError, match=r"returned \(2, 4, 6, 6\), expected \(batch, 4\) features"):
        model(torch.zeros(2, 3, 8, 8))


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


@pytest.mark.parametrize("regularizer", ["l2sp", "l2"])
def test_regularizer_gradient_equals_autograd(regularizer):
    """The gradient added before the optimizer step is autograd's of CE + lambda R(theta)."""
    lam = 0.3
    model = make_model(regularizer=regularizer, reg_lambda=lam)
    with torch.no_grad():  # away from theta_0, so that the L2-SP term is not zero
        for p in model.backbone.parameters():
            p.add_(torch.randn_like(p), alpha=0.1)
    model.backbone.features[0].weight.requires_grad_(False)  # frozen parameters get no penalty
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])

    def autograd_reference() -> torch.Tensor:
        if regularizer == "l2":
            return sum(p.pow(2).sum() for p in model.backbone.parameters())
        refs = [getattr(model.regularizer, f"ref_{i}") for i in range(len(model.regularizer.names))]
        return sum(
            (p - r).pow(2).sum() for p, r in zip(model.backbone.parameters(), refs, strict=True)
        )

    (nn.functional.cross_entropy(model(x), y) + lam * autograd_reference()).backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(model(x), y).backward()
    model.on_before_optimizer_step(None)
    got = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert got.keys() == expected.keys()
    assert "backbone.features.0.weight" not in got
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, rtol=1e-5, atol=1e-6, msg=name)
    assert model.regularizer(model.backbone).item() == pytest.approx(
        autograd_reference().item(), rel=1e-5
    )


@pytest.mark.parametrize("regularizer", ["l2sp", "l2"])
def test_decoupled_regularizer_moves_each_group_by_its_lr(regularizer):
    """reg_decoupled: before the step the weights move by -lr * lambda * dR/dtheta, each
    parameter group with its own lr; the gradients stay the data term's, frozen weights stay."""
    lam = 0.3
    model = make_model(regularizer=regularizer, reg_lambda=lam, reg_decoupled=True)
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(torch.randn_like(p), alpha=0.1)
    model.backbone.features[0].weight.requires_grad_(False)
    params = [p for p in model.backbone.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(
        [{"params": params[:2], "lr": 0.1}, {"params": params[2:], "lr": 0.01}], lr=0.1
    )
    lr = {id(p): 0.1 if i < 2 else 0.01 for i, p in enumerate(params)}
    named = dict(model.backbone.named_parameters())
    refs = dict(zip(named, model.regularizer._refs(), strict=True)) if regularizer == "l2sp" else {}
    before = {n: p.detach().clone() for n, p in named.items()}
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    nn.functional.cross_entropy(model(x), y).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.on_before_optimizer_step(optimizer)
    for name, p in named.items():
        if not p.requires_grad:
            assert torch.equal(p, before[name]), name
            continue
        toward = refs[name] if regularizer == "l2sp" else torch.zeros_like(p)
        expected = before[name] - lr[id(p)] * lam * 2 * (before[name] - toward)
        torch.testing.assert_close(p.detach(), expected, rtol=1e-6, atol=1e-7, msg=name)
    for name, p in model.named_parameters():  # the data gradient, untouched
        if p.grad is not None:
            assert torch.equal(p.grad, grads[name]), name


def pull_only_model(decoupled: bool, every: int) -> SFTClassifier:
    """L2-SP with lambda 10 under SGD at lr 0.01, the backbone moved off theta_0, and a zero
    head: no data gradient reaches the backbone, so only the pull moves it."""
    model = make_model(
        regularizer="l2sp",
        reg_lambda=10.0,
        reg_decoupled=decoupled,
        reg_every=every,
        lr_backbone=0.01,
        lr_head=0.0,
        weight_decay=0.0,
    )
    model.hparams.optimizer = {"_target_": "torch.optim.SGD"}
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(1.0)
        for p in model.head.parameters():
            p.zero_()
    return model


def quiet_trainer(tmp_path, **settings) -> L.Trainer:
    """A Trainer for the regulariser tests: no logger, progress bar, summary or checkpoints
    (unless `settings` give a checkpoint callback)."""
    checkpoints = any(
        isinstance(c, L.pytorch.callbacks.Checkpoint) for c in settings.get("callbacks", [])
    )
    return L.Trainer(
        logger=False,
        enable_checkpointing=checkpoints,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        **settings,
    )


@pytest.mark.parametrize("split", ["val", "test"])
def test_the_loss_of_a_split_is_its_mean_over_examples(tmp_path, split):
    """A split of 5 in batches of 4 and 1: the logged loss is the mean over its 5 examples
    (was: the mean of the two batch means, torchmetrics' MeanMetric(nan_strategy="disable")
    dropping the batch-size weights; sft-eval's val/loss then changed with eval_batch_size)."""
    model = make_model().eval()
    torch.manual_seed(1)
    images, labels = torch.randn(5, 3, 32, 32), torch.tensor([0, 1, 2, 0, 1])
    with torch.no_grad():
        expected = F.cross_entropy(model(images), labels).item()
        one_batch_mean = F.cross_entropy(model(images[4:]), labels[4:]).item()
    assert abs(expected - one_batch_mean) > 1e-3  # an unweighted mean would differ
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(images, labels), batch_size=4
    )
    trainer = quiet_trainer(tmp_path, accelerator="cpu")
    run = trainer.validate if split == "val" else trainer.test
    (logged,) = run(model, loader, verbose=False)
    assert logged[f"{split}/loss"] == pytest.approx(expected, rel=1e-5)
    with torch.no_grad():  # a diverged model: its loss says so, not the finite batches' mean
        model.head.base.bias[0] = float("nan")
    (logged,) = run(model, loader, verbose=False)
    assert math.isnan(logged[f"{split}/loss"])


def tiny_loader() -> torch.utils.data.DataLoader:
    data = torch.utils.data.TensorDataset(
        torch.randn(8, 3, 32, 32), torch.tensor([0, 1, 2] * 2 + [0, 1])
    )
    return torch.utils.data.DataLoader(data, batch_size=4)


@pytest.mark.parametrize(
    ("decoupled", "every"),
    [(False, 1), (True, 1), (True, 2)],
    ids=["gradient", "decoupled", "every2"],
)
def test_lightning_applies_the_regularizer_every_step(tmp_path, decoupled, every):
    """Through Lightning's loop, L2-SP pulls the weights back towards theta_0 by the same total
    amount in every form: with plain SGD at lr 0.01 and lambda 10 each step scales theta - theta_0
    by 1 - 2 * 0.01 * 10 = 0.8, whether as a gradient, as a decoupled pull, or held back and
    applied two steps at once (reg_every=2; the pull of the odd last step at the end of
    training). A zero head gives the backbone no data gradient, so the pull is all that moves."""
    model = pull_only_model(decoupled, every)
    start = model.regularizer(model.backbone).item()
    trainer = quiet_trainer(tmp_path, max_steps=3)
    trainer.fit(model, train_dataloaders=tiny_loader())
    # R is squared: 0.8 ** 3 on theta - theta_0, 0.8 ** 6 on R
    assert model.regularizer(model.backbone).item() == pytest.approx(0.8**6 * start, rel=1e-4)


def scheduled_lrs(scheduler_cfg: dict, total: int = 10, warmup_ratio: float = 0.06) -> list:
    """The LR of each of `total` optimizer steps under `create_scheduler(scheduler_cfg)`."""
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = create_scheduler(scheduler_cfg, optimizer, total, warmup_ratio)
    lrs = []
    for _ in range(total):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_schedules_take_the_step_counts_they_accept():
    """Every schedule was given num_warmup_steps and num_training_steps: transformers' constant
    schedule and torch's schedules were a TypeError traceback. A count the config sets is kept
    (was: overwritten), and the warm-up is HF Trainer's ceil(ratio * steps) (was: rounded down,
    none in a run under 17 steps at the default 0.06)."""
    linear = {"_target_": "transformers.get_linear_schedule_with_warmup"}
    assert scheduled_lrs(linear)[:3] == pytest.approx([0.0, 1.0, 8 / 9])
    constant = {"_target_": "transformers.get_constant_schedule_with_warmup"}
    assert scheduled_lrs(constant, warmup_ratio=0.2) == pytest.approx([0, 0.5] + [1.0] * 8)
    assert scheduled_lrs({**linear, "num_warmup_steps": 0})[:2] == pytest.approx([1.0, 0.9])
    cosine = {"_target_": "torch.optim.lr_scheduler.CosineAnnealingLR", "T_max": 10}
    assert scheduled_lrs(cosine)[5] == pytest.approx(0.5)
    with pytest.raises(SFTError, match=r"^model.scheduler: torch.optim.lr_scheduler.Cosine"):
        scheduled_lrs({"_target_": "torch.optim.lr_scheduler.CosineAnnealingLR"})
    # a schedule on a metric (was: Lightning's "The lr scheduler dict must include a monitor")
    for plateau in (
        "torch.optim.lr_scheduler.ReduceLROnPlateau",
        "transformers.get_reduce_on_plateau_schedule",
    ):
        with pytest.raises(SFTError, match=rf"^model.scheduler: {plateau} steps on a metric"):
            scheduled_lrs({"_target_": plateau}, warmup_ratio=0)


def test_step_counts_that_do_not_fit_the_run_are_warned(caplog):
    """Accepted without a word: a schedule's num_training_steps below the run's (5 of 8 steps at
    rate 0), a warm-up longer than the run (the peak never reached), and the default warm-up
    over the one step of a one-step run (that step at rate 0: the run trained nothing)."""
    linear = {"_target_": "transformers.get_linear_schedule_with_warmup"}
    with logs_warning(
        caplog,
        r"^model\.scheduler\.num_training_steps=3, but the run takes 8 optimizer steps: its last "
        r"5 at the schedule's end rate",
    ):
        assert scheduled_lrs({**linear, "num_training_steps": 3}, total=8)[3:] == [0.0] * 5
    with logs_warning(caplog, r"^model\.scheduler\.num_warmup_steps: a warm-up of 100 steps, and"):
        scheduled_lrs({**linear, "num_warmup_steps": 100}, total=8)
    with logs_warning(
        caplog,
        r"^model\.warmup_ratio: a warm-up of 1 step, and the run takes 1 optimizer step: every "
        r"step is a warm-up step",
    ):
        assert scheduled_lrs(linear, total=1) == [0.0]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        scheduled_lrs(linear, total=2)
        scheduled_lrs(linear, total=0, warmup_ratio=0)  # max_steps=0: said as a run of none
    assert not caplog.records


def restored_optimizer_settings(scheduler: Any, configured: dict, ckpt_path: str | None) -> dict:
    """One AdamW group (lr 0.1, decay 0.01) under `scheduler` (make(optimizer)), given this
    run's `configured` settings by SFTClassifier._take_this_runs_optimizer_settings as if
    restored from `ckpt_path`: the group's settings after, and the schedule's base rates."""
    optimizer = torch.optim.AdamW([nn.Parameter(torch.zeros(2))], lr=0.1, weight_decay=0.01)
    made = scheduler(optimizer) if scheduler else None
    configs = [SimpleNamespace(scheduler=made)] if made else []
    run = SimpleNamespace(
        trainer=SimpleNamespace(
            optimizers=[optimizer], lr_scheduler_configs=configs, ckpt_path=ckpt_path
        ),
        _configured_groups=[configured],
    )
    SFTClassifier._take_this_runs_optimizer_settings(run)
    group = {k: v for k, v in optimizer.param_groups[0].items() if k != "params"}
    return {**group, "base_lrs": getattr(made, "base_lrs", None)}


def test_a_restored_optimizer_takes_this_runs_rate_and_decay_but_not_its_flags_or_cycles():
    """resume=/ckpt_path= with other settings: this run's rate (the schedule's base) and decay
    replace the restored ones; torch's flags stay (the state was placed for them), and so do
    the rate and momentum a cycling schedule sets itself (was: OneCycleLR's first rate and
    betas overwritten by model.lr_head's, in every run)."""
    lambda_lr = functools.partial(torch.optim.lr_scheduler.LambdaLR, lr_lambda=lambda step: 0.5)
    wanted = {"lr": 0.001, "weight_decay": 0.1, "betas": (0.8, 0.99)}
    after = restored_optimizer_settings(lambda_lr, wanted, "last.ckpt")
    assert after["initial_lr"] == 0.001 and after["base_lrs"] == [0.001]
    assert after["weight_decay"] == 0.1 and after["betas"] == (0.8, 0.99)
    assert after["foreach"] is None  # not configured: as restored
    one_cycle = functools.partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=1.0, total_steps=10)
    after = restored_optimizer_settings(one_cycle, wanted, "last.ckpt")
    assert after["lr"] == pytest.approx(0.04) and after["betas"] == (0.95, 0.999)
    assert after["weight_decay"] == 0.1
    # nothing restored (a fresh run): its optimizer is as configured, schedule and all
    assert restored_optimizer_settings(one_cycle, wanted, None)["weight_decay"] == 0.01
    after = restored_optimizer_settings(None, wanted, "last.ckpt")
    assert after["lr"] == 0.001 and "initial_lr" not in after
    # amsgrad shapes the state (a restored one without max_exp_avg_sq): as restored
    after = restored_optimizer_settings(lambda_lr, {**wanted, "amsgrad": True}, "last.ckpt")
    assert after["amsgrad"] is False


def test_a_restored_optimizer_without_its_schedule_trains_at_this_runs_rate():
    """A run resumed with model.scheduler=null after a scheduled part: its groups still held
    the schedule's base rate, where the new rate went, and the rate stayed the schedule's last."""
    optimizer = torch.optim.AdamW([nn.Parameter(torch.zeros(2))], lr=0.1)
    torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.3)  # the earlier part's
    run = SimpleNamespace(
        trainer=SimpleNamespace(optimizers=[optimizer], lr_scheduler_configs=[], ckpt_path="x"),
        _configured_groups=[{"lr": 0.01}],
    )
    SFTClassifier._take_this_runs_optimizer_settings(run)
    assert optimizer.param_groups[0]["lr"] == 0.01


def test_a_torch_schedule_restored_with_another_rate_says_it_keeps_its_own(caplog):
    """StepLR restored: its base rates are its own state; a new model.lr_head was not applied,
    without a word."""
    step_lr = functools.partial(torch.optim.lr_scheduler.StepLR, step_size=2)
    with logs_warning(caplog, r"^model.scheduler \(StepLR\) restored keeps the checkpoint's base"):
        after = restored_optimizer_settings(step_lr, {"lr": 0.001, "betas": (0.5, 0.9)}, "x")
    assert after["initial_lr"] == 0.1
    assert after["betas"] == (0.5, 0.9)  # StepLR sets no momentum: this run's applies


def test_a_warmup_ratio_no_schedule_applies_is_warned_about(caplog):
    """model.warmup_ratio with model.scheduler=null, or with a schedule that takes no warm-up
    count (torch's), did nothing without a word: the run trained with no warm-up."""
    cosine = {"_target_": "torch.optim.lr_scheduler.CosineAnnealingLR", "T_max": 10}
    linear = {"_target_": "transformers.get_linear_schedule_with_warmup"}
    with caplog.at_level(logging.WARNING):
        make_model(scheduler=None, warmup_ratio=0.0).configure_optimizers()
        scheduled_lrs(linear)
        scheduled_lrs({**linear, "num_warmup_steps": 2})
        # said when training, not whenever the model is built (sft-eval/predict/export)
        unscheduled = make_model(scheduler=None, warmup_ratio=0.06)
        assert not caplog.records
        unscheduled.configure_optimizers()
        scheduled_lrs(cosine)
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2
    assert said[0].startswith("model.warmup_ratio=0.06: model.scheduler is null")
    assert said[1].startswith("model.warmup_ratio=0.06: torch.optim.lr_scheduler.CosineAnn")


def mixed_precision(precision: str) -> MixedPrecision:
    """Lightning's AMP plugin on CPU; 16-mixed with a loss scale (sft's own `auto` picks no
    16-mixed on a CPU), as on a GPU without bf16."""
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0) if precision == "16-mixed" else None
    return MixedPrecision(precision, "cpu", scaler)


def test_the_regularizer_gradient_is_on_a_fused_optimizers_true_gradients_under_16_mixed(
    tmp_path,
):
    """16-mixed leaves a fused optimizer's gradients on the loss scale until its step, and
    L2-SP's gradient was added to them there: it counted 1/1024 here (1/65,536 at the default
    scale), so the weights moved 0.99998x instead of 0.8x per step."""
    model = pull_only_model(decoupled=False, every=1)
    model.hparams.optimizer = {"_target_": "torch.optim.SGD", "fused": True}
    start = model.regularizer(model.backbone).item()
    trainer = quiet_trainer(tmp_path, max_steps=3, plugins=[mixed_precision("16-mixed")])
    trainer.fit(model, train_dataloaders=tiny_loader())
    assert model.regularizer(model.backbone).item() == pytest.approx(0.8**6 * start, rel=1e-4)


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
@pytest.mark.parametrize("algorithm", ["norm", "value"])
def test_gradient_clipping_with_a_fused_optimizer_under_mixed_precision(
    tmp_path, precision, algorithm
):
    """Lightning refuses to clip for a fused optimizer under its AMP plugin, bf16 included,
    which has no loss scale: `trainer.gradient_clip_val=...` with the model configs' fused
    AdamW was a RuntimeError at the first step wherever precision=auto picks bf16-mixed. One
    step of SGD at lr 1 moves the weights by the clipped gradient."""
    model = make_model(lr_backbone=1.0, lr_head=1.0, weight_decay=0.0)
    model.hparams.optimizer = {"_target_": "torch.optim.SGD", "fused": True}
    start = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    trainer = quiet_trainer(
        tmp_path,
        max_steps=1,
        gradient_clip_val=1e-3,
        gradient_clip_algorithm=algorithm,
        plugins=[mixed_precision(precision)],
    )
    trainer.fit(model, train_dataloaders=tiny_loader())
    moved = torch.cat([p.detach().flatten() for p in model.parameters()]) - start
    size = moved.norm() if algorithm == "norm" else moved.abs().max()
    assert 0 < size <= 1e-3 * (1 + 1e-4)


@pytest.mark.parametrize("decoupled", [False, True], ids=["gradient", "decoupled"])
def test_log_regularizer_logs_r_and_the_objective_it_is_a_term_of(tmp_path, decoupled):
    """model.log_regularizer=true: train/reg is R, and train/loss the regularised objective
    CE + lambda R in the gradient form. The decoupled pull is not a term of an objective (its
    lambda is on another scale): train/loss is the data term (was: CE + lambda R, which rose
    with R while the data term fell)."""
    model = pull_only_model(decoupled, every=1)
    model.hparams.log_regularizer = True
    start = model.regularizer(model.backbone).item()
    logged = []

    class FirstStep(L.Callback):
        def on_train_batch_end(self, trainer, *args):
            metrics = trainer.callback_metrics
            logged.append((metrics["train/loss_step"].item(), metrics["train/reg"].item()))

    trainer = quiet_trainer(tmp_path, max_steps=1, callbacks=[FirstStep()])
    trainer.fit(model, train_dataloaders=tiny_loader())
    ((loss, reg),) = logged
    ce = math.log(3)  # the zero head's uniform logits over 3 classes
    assert reg == pytest.approx(start, rel=1e-5)
    assert loss == pytest.approx(ce if decoupled else ce + 10.0 * start, rel=1e-5)


def test_last_checkpoint_holds_the_trained_weights_with_every_pull_applied(tmp_path):
    """reg_every=2 and max_steps=3: the run ends one step into a cycle. last.ckpt, written when
    training ends, held the weights without that step's pull (and the pull itself, which only
    a resumed run applies): sft-eval, -predict and -export read other weights than trained."""
    from sft.callbacks.last_checkpoint import LastCheckpoint

    model = pull_only_model(decoupled=True, every=2)
    trainer = quiet_trainer(tmp_path, max_steps=3, callbacks=[LastCheckpoint(tmp_path)])
    trainer.fit(model, train_dataloaders=tiny_loader())
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert "reg_held" not in saved
    for name, p in model.state_dict().items():
        assert torch.equal(saved["state_dict"][name], p), name


def test_validation_sees_the_held_pulls_applied(tmp_path):
    """reg_every=3 with validation after 2 steps: validation (and the checkpoint saved after
    it) sees both steps' pulls, not the weights of before them."""
    model = pull_only_model(decoupled=True, every=3)
    start = model.regularizer(model.backbone).item()
    seen = []

    class RecordR(L.Callback):
        def on_validation_epoch_end(self, trainer, pl_module):
            seen.append(pl_module.regularizer(pl_module.backbone).item())

    loader = tiny_loader()
    trainer = quiet_trainer(tmp_path, max_steps=2, num_sanity_val_steps=0, callbacks=[RecordR()])
    trainer.fit(model, train_dataloaders=loader, val_dataloaders=loader)
    assert seen == [pytest.approx(0.8**4 * start, rel=1e-4)]


def test_reg_every_holds_the_pulls_back_and_applies_them_compounded():
    """reg_every=3: the first two steps leave the weights as they are, the third applies the
    three steps' pulls at once, compounded over each step's lr per optimizer group: what three
    single pulls give. A checkpoint saved between pulls carries the held ones."""

    def model_and_optimizer(every: int) -> tuple[SFTClassifier, torch.optim.Optimizer]:
        model = make_model(regularizer="l2sp", reg_lambda=0.5, reg_decoupled=True, reg_every=every)
        with torch.no_grad():
            for p in model.backbone.parameters():
                p.add_(torch.randn_like(p), alpha=0.1)
        params = list(model.backbone.parameters())
        optimizer = torch.optim.SGD(
            [{"params": params[:2], "lr": 0.1}, {"params": params[2:], "lr": 0.01}], lr=0.1
        )
        return model, optimizer

    def pull(model: SFTClassifier, optimizer: torch.optim.Optimizer, step: int) -> None:
        for group, lr in zip(optimizer.param_groups, (0.1, 0.01), strict=True):
            group["lr"] = lr * (1 - step / 4)  # a decaying schedule
        model.on_before_optimizer_step(optimizer)

    def weights(model: SFTClassifier) -> list[torch.Tensor]:
        return [p.detach().clone() for p in model.backbone.parameters()]

    lazy, lazy_opt = model_and_optimizer(3)
    every, every_opt = model_and_optimizer(1)
    start = weights(lazy)
    pull(lazy, lazy_opt, 0)
    pull(lazy, lazy_opt, 1)
    for got, before in zip(weights(lazy), start, strict=True):
        assert torch.equal(got, before)
    checkpoint: dict = {}
    lazy.on_save_checkpoint(checkpoint)
    resumed, resumed_opt = model_and_optimizer(3)
    resumed.on_load_checkpoint(checkpoint)
    pull(resumed, resumed_opt, 2)
    pull(lazy, lazy_opt, 2)
    for step in range(3):
        pull(every, every_opt, step)
    for a, b, c, before in zip(weights(lazy), weights(resumed), weights(every), start, strict=True):
        assert not torch.equal(a, before)
        torch.testing.assert_close(a, c, rtol=1e-6, atol=1e-7)
        assert torch.equal(a, b)


def test_held_pulls_follow_changes_between_steps():
    """reg_every=3 against single pulls (reg_every=1) when things change inside a cycle: a
    group frozen for the first step (BackboneUnfreeze) gets no pull for it, a group added at the
    second step (Lightning's BaseFinetuning) only the pulls from then on, and a run resumed with
    reg_every=1 from a checkpoint holding two steps applies them at its first step."""

    def pulled(every: int, resume_every: int | None = None) -> list[torch.Tensor]:
        model = make_model(regularizer="l2sp", reg_lambda=0.5, reg_decoupled=True, reg_every=every)
        with torch.no_grad():
            for p in model.backbone.parameters():
                p.add_(torch.randn_like(p), alpha=0.1)
        params = list(model.backbone.parameters())
        optimizer = torch.optim.SGD([{"params": params[:2], "lr": 0.1}], lr=0.1)
        for p in params[:2]:
            p.requires_grad_(False)
        model.on_before_optimizer_step(optimizer)
        for p in params[:2]:
            p.requires_grad_(True)
        optimizer.add_param_group({"params": params[2:], "lr": 0.01})
        model.on_before_optimizer_step(optimizer)
        if resume_every is not None:
            checkpoint: dict = {}
            model.on_save_checkpoint(checkpoint)
            resumed = make_model(
                regularizer="l2sp", reg_lambda=0.5, reg_decoupled=True, reg_every=resume_every
            )
            resumed.load_state_dict(model.state_dict())
            resumed.on_load_checkpoint(checkpoint)
            model = resumed
            params = list(model.backbone.parameters())
            optimizer = torch.optim.SGD(
                [{"params": params[:2], "lr": 0.1}, {"params": params[2:], "lr": 0.01}]
            )
        model.on_before_optimizer_step(optimizer)
        return [p.detach().clone() for p in model.backbone.parameters()]

    single = pulled(1)
    for got in (pulled(3), pulled(3, resume_every=1)):
        for a, b in zip(got, single, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_reg_every_needs_the_decoupled_pull():
    with pytest.raises(SFTError, match=r"reg_every=4 needs model\.reg_decoupled=true"):
        make_model(regularizer="l2sp", reg_lambda=0.1, reg_every=4)
    with pytest.raises(SFTError, match="reg_every: expected an integer >= 1"):
        make_model(regularizer="l2sp", reg_lambda=0.1, reg_decoupled=True, reg_every=0)


def test_a_decoupled_pull_past_theta_0_is_refused():
    """2 lr lambda >= 1: each step's pull overshoots theta_0 (was: trained on, each pull
    pushing the weights further away, and the run recorded as completed)."""
    pull = {"regularizer": "l2sp", "reg_decoupled": True, "lr_backbone": 1e-4}
    with pytest.raises(
        SFTError,
        match=r"^model\.reg_lambda=5000 with a learning rate of 0\.0001: the decoupled pull keeps "
        r"1 - 2 lr lambda = 0 of the weights' distance to their target a step, .* below 5e\+03$",
    ):
        check_decoupled_pull({**pull, "reg_lambda": 5000.0}, None)
    check_decoupled_pull({**pull, "reg_lambda": 4999.0}, None)
    # a frozen backbone's adapters are what is pulled, at their own rate
    frozen = {**pull, "reg_lambda": 5000.0, "freeze_backbone": True, "lr_adapter": 1e-3}
    with pytest.raises(SFTError, match=r"with a learning rate of 0\.001: "):
        check_decoupled_pull(frozen, {"r": 8})
    # the gradient form is plain gradient descent on lambda R, and nothing pulls without a
    # regulariser: any lambda is the user's to give
    check_decoupled_pull({**pull, "reg_lambda": 5000.0, "reg_decoupled": False}, None)
    check_decoupled_pull({**pull, "reg_lambda": 5000.0, "regularizer": "none"}, None)
    # a model with such settings (a checkpoint saved before this check) still builds and loads
    make_model(**pull, reg_lambda=5000.0)


def test_a_rate_given_to_the_optimizer_itself_is_refused():
    """Each parameter group has its own rate and decay: model.optimizer.lr=0.1 was accepted
    and the run trained at lr_head."""
    for key in ("lr", "weight_decay"):
        with pytest.raises(SFTError, match=rf"^model\.optimizer\.{key}: sft sets it per param"):
            check_optimizer_settings({"_target_": "torch.optim.SGD", key: 0.1})
    check_optimizer_settings({"_target_": "torch.optim.SGD", "momentum": 0.9})
    check_optimizer_settings(None)


@pytest.mark.slow
def test_compile_keeps_outputs_and_checkpoint_keys():
    """model.compile=true: the same outputs and state_dict keys (checkpoints stay loadable by an
    uncompiled model), and channels_last changes the layout only."""
    plain = make_model(channels_last=False)
    compiled = make_model(compile=True, channels_last=True)
    compiled.load_state_dict(plain.state_dict())
    assert list(compiled.state_dict()) == list(plain.state_dict())
    x = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(compiled.eval()(x), plain.eval()(x), rtol=1e-4, atol=1e-5)


def test_a_model_trained_compiled_loads_for_inference_uncompiled(tmp_path):
    """sft-eval / sft-predict / sft-export: a checkpoint of a model.compile=true run loads as
    the plain model with the same outputs (no compilation for a few inference batches)."""
    model = make_model(compile=True)
    path = tmp_path / "model.ckpt"
    torch.save({"hyper_parameters": dict(model.hparams), "state_dict": model.state_dict()}, path)
    loaded = load_classifier(path)
    assert loaded.backbone._compiled_call_impl is None
    plain = make_model()
    plain.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), plain.eval()(x))


def test_channels_last_follows_the_backbone_family():
    from sft.models.backbones import backbone_speed_hints

    def default_channels_last(backbone: dict) -> bool:
        return backbone_speed_hints(backbone).channels_last

    assert default_channels_last({"name": "efficientnet_lite0"})
    assert default_channels_last({"name": "resnet18"})
    assert not default_channels_last({"name": "huggingface"})
    assert not default_channels_last({"_target_": "my.own.Backbone"})  # nothing measured
    model = make_model(channels_last=True)
    weight = model.backbone.features[0].weight
    assert weight.is_contiguous(memory_format=torch.channels_last)
    assert not make_model().channels_last  # small_cnn: no hint


def test_the_channels_last_default_is_said_on_the_models_own_logger(caplog):
    """sft-eval, sft-predict and sft-export leave the model's INFO lines out as they load it
    (info_left_out): this one went through Lightning's logger, so they printed it."""
    with caplog.at_level(logging.INFO):
        make_model(backbone={"_target_": SMALL_CNN["_target_"], "name": "resnet18"})
    said = [r.name for r in caplog.records if "channels_last=null -> on" in r.getMessage()]
    assert said == [SFTClassifier.__module__]


@pytest.mark.parametrize("name", ["efficientnet_lite0", "mobilenetv2", "resnet18", "huggingface"])
def test_auto_precision_picks_bf16_on_a_bf16_cpu_for_the_families_faster_in_it(monkeypatch, name):
    """EfficientNet-Lite0 and MobileNetV2 too, with each part of their depthwise convolutions in
    bf16 or fp32, whichever is faster (experiments/benchmarks/depthwise_conv.md); a family
    without a measurement stays fp32."""
    from omegaconf import OmegaConf

    from sft.models.backbones import backbone_speed_hints
    from sft.utils import hardware

    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: True)
    for backbone, expected in (({"name": name}, "bf16-mixed"), ({"name": "small_cnn"}, "32-true")):
        trainer = OmegaConf.create({"accelerator": "cpu", "precision": "auto"})
        hardware.resolve_auto_precision(trainer, backbone_speed_hints(backbone).cpu_bf16)
        assert trainer.precision == expected


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


def test_backbone_unfreeze_callback(caplog):
    """It also says when the backbone is frozen and when it is unfrozen: the run log's count,
    the model's as built, said every parameter trains (was: no word)."""
    model = make_model()
    callback, trainer = BackboneUnfreeze(unfreeze_at_epoch=2), _FakeTrainer()
    head = sum(p.numel() for p in model.head.parameters())
    total = sum(p.numel() for p in model.parameters())
    said = []
    for epoch, trainable in [(0, False), (1, False), (2, True), (3, True)]:
        trainer.current_epoch = epoch
        with caplog.at_level(logging.INFO):
            caplog.clear()
            callback.on_train_epoch_start(trainer, model)
        said += [r.getMessage() for r in caplog.records if "backbone" in r.getMessage()]
        assert all(p.requires_grad == trainable for p in model.backbone.parameters())
        assert model.backbone.training == trainable
        assert all(p.requires_grad for p in model.head.parameters())
    assert said == [
        f"epoch 0: backbone frozen until epoch 2 (callbacks.backbone_unfreeze): {head:,} of "
        f"{total:,} parameters train",
        f"epoch 2: backbone unfrozen: {total:,} of {total:,} parameters train",
    ]


def test_backbone_unfreeze_with_a_frozen_backbone_is_warned_about(caplog):
    """model.freeze_backbone=true leaves the backbone out of the optimizer: the callback could
    unfreeze nothing, and said nothing."""
    model = make_model(freeze_backbone=True)
    with logs_warning(caplog, r"^callbacks.backbone_unfreeze does nothing with model.freeze"):
        BackboneUnfreeze(unfreeze_at_epoch=1).on_fit_start(_FakeTrainer(), model)


def test_logistic_regression_probe_fits_separable_features():
    torch.manual_seed(0)
    centers = torch.randn(4, 16) * 3 + 5  # offset and scale: standardisation must be undone right
    labels = torch.arange(4).repeat_interleave(50)
    feats = centers[labels] + 0.5 * torch.randn(200, 16)
    w, b = fit_logistic_regression(feats, labels, 4)
    assert ((feats @ w.T + b).argmax(-1) == labels).float().mean() == 1.0


def test_logistic_regression_probe_is_scikit_learns_standardised_logistic_regression():
    """The probe is documented as StandardScaler + LogisticRegression: it standardised by the
    sample spread (ddof=1) where StandardScaler takes ddof=0, a penalty n/(n-1) too strong in
    the features' units (9 % for the 12 examples here: a few-label probe)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    torch.manual_seed(0)
    labels = torch.arange(3).repeat(4)
    feats = torch.randn(3, 5)[labels] + torch.randn(12, 5) * 2 + 3
    weight_decay = 0.5
    w, b = fit_logistic_regression(feats, labels, 3, weight_decay=weight_decay)
    sklearn = make_pipeline(
        StandardScaler(),
        LogisticRegression(C=1 / (len(labels) * weight_decay), tol=1e-12, max_iter=10_000),
    ).fit(feats.double().numpy(), labels.numpy())
    probs = torch.softmax(feats @ w.T + b, -1).double()
    want = torch.from_numpy(sklearn.predict_proba(feats.double().numpy()))
    torch.testing.assert_close(probs, want, rtol=0, atol=1e-4)


def test_logistic_regression_probe_gives_a_constant_feature_no_weight():
    """A feature of almost no spread (MiniLM's last LayerNorm has dimensions of gain 1e-9) was
    standardised like any other: its raw weight came out 1e5 times the others', and the first
    fine-tuning steps, which move that gain, moved the logits with it."""
    torch.manual_seed(0)
    feats = torch.randn(200, 4)
    feats[:, 3] *= 1e-5
    labels = (feats[:, 0] + 0.5 * torch.randn(200) > 0).long()
    w, b = fit_logistic_regression(feats, labels, 2, weight_decay=1e-2, max_iter=500)
    assert w[:, 3].abs().max() == 0 and w[:, 0].abs().max() > 1
    # the other features' fit is the one without that feature
    w3, b3 = fit_logistic_regression(feats[:, :3], labels, 2, weight_decay=1e-2, max_iter=500)
    assert torch.allclose(w[:, :3], w3, atol=1e-4) and torch.allclose(b, b3, atol=1e-4)


def test_logistic_regression_probe_keeps_a_near_dead_features_weight_in_scale():
    """A feature of 1/200 of the others' spread, as informative as one of them, was
    standardised by its own spread: its raw weight came out 200 times that feature's
    (EfficientNet-Lite0 at 32 px: raw weights up to ~90 where most were below 1), and
    fine-tuning moved the logits with every change of it."""
    torch.manual_seed(0)
    signal = torch.randn(400)
    feats = torch.randn(400, 8)
    feats[:, 0] = signal + 0.5 * torch.randn(400)
    feats[:, 1] = (signal + 0.5 * torch.randn(400)) / 200
    labels = (signal > 0).long()
    w, b = fit_logistic_regression(feats, labels, 2, weight_decay=1e-2, max_iter=500)
    ratio = w[:, 1].abs().max() / w[:, 0].abs().max()
    assert ratio < 20, ratio  # was 167 (12.6 standardised by 1/20 of the mean spread)
    assert ((feats @ w.T + b).argmax(-1) == labels).float().mean() > 0.8


def test_linear_probe_initialises_only_the_base_head():
    model = make_model(linear_probe={"max_iter": 50})

    class Probe(SFTDataModule):
        modality, num_classes, class_names = "image", 3, ["a", "b", "c"]

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
    class Data(SFTDataModule):
        modality, num_classes, class_names = "image", 10, [str(i) for i in range(10)]

    model = make_model()
    model._trainer = SimpleNamespace(datamodule=Data())
    with pytest.raises(SFTError, match=r"model.num_classes=3 but the data has 10"):
        model.setup("fit")


def test_a_datamodule_not_given_the_models_input_settings_is_warned_about(caplog):
    """A user's own script that builds the model and datamodule and calls a plain Trainer
    without `datamodule.configure_input(model.input_spec)` trained on images prepared by the
    datamodule's own statistics and size (ImageNet's, 224 px), not the backbone's, without a
    word; sft's entry points call it."""

    class Data(SFTDataModule):
        modality, num_classes, class_names = "image", 3, ["a", "b", "c"]

    model = make_model()
    data = Data()
    model._trainer = SimpleNamespace(datamodule=data)
    with caplog.at_level(logging.WARNING):
        model.setup("fit")
    assert "Data was set up without this model's input settings (InputSpec(" in caplog.text
    assert "call datamodule.configure_input(model.input_spec)" in caplog.text
    caplog.clear()
    data.configure_input(model.input_spec)
    with caplog.at_level(logging.WARNING):
        model.setup("fit")
    assert "input settings" not in caplog.text


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

    class Probe(SFTDataModule):
        modality, num_classes, class_names = "image", 3, ["a", "b", "c"]

        def probe_dataloader(self):
            return [(torch.rand(6, 3, 32, 32), torch.tensor([0, 1, 2, 0, 1, 2]))]

        def transform_batch(self, batch, train):
            return batch

    model._trainer = SimpleNamespace(
        datamodule=Probe(),
        limit_train_batches=1.0,
        lr_scheduler_configs=[],
        strategy=None,
        optimizers=[],
        ckpt_path=None,
    )
    model.on_fit_start()
    assert bool(model.linear_probe_done)
    model.on_train_start()  # Lightning's next hook of the two (train()'s rules apply there)
    norms = [m for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and not any(m.training for m in norms)
    assert model.backbone.training


@pytest.mark.parametrize(
    ("accelerator", "cuda", "bf16_gpu", "cpu_bf16", "pays", "expected"),
    [
        ("auto", True, True, False, False, "bf16-mixed"),
        ("gpu", True, False, False, False, "16-mixed"),
        # bf16 emulated (V100, T4: torch's default count says supported): fp16 with a scaler
        ("gpu", True, "emulated", False, False, "16-mixed"),
        ("auto", False, False, True, True, "bf16-mixed"),
        ("cpu", False, False, True, False, "32-true"),
        ("cpu", False, False, False, True, "32-true"),
    ],
)
def test_auto_precision_follows_the_hardware(
    monkeypatch, accelerator, cuda, bf16_gpu, cpu_bf16, pays, expected
):
    from omegaconf import OmegaConf

    from sft.utils import hardware

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(
        torch.cuda,
        "is_bf16_supported",
        lambda including_emulation=True: (
            bf16_gpu is True or (including_emulation and bf16_gpu == "emulated")
        ),
    )
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "a GPU")
    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: cpu_bf16)
    trainer = OmegaConf.create({"accelerator": accelerator, "precision": "auto"})
    hardware.resolve_auto_precision(trainer, cpu_bf16_pays=pays)
    assert trainer.precision == expected
    explicit = OmegaConf.create({"accelerator": accelerator, "precision": "32-true"})
    hardware.resolve_auto_precision(explicit, cpu_bf16_pays=pays)
    assert explicit.precision == "32-true"


# "16" is Lightning's alias of 16-mixed, which has a scaler
@pytest.mark.parametrize(
    ("precision", "warned"),
    [
        ("16-true", "without a loss scaler"),
        ("16-mixed", None),
        ("16", None),
        # bf16 weights: most of MiniLM's did not move in 4 steps, without a word (was)
        ("bf16-true", "bf16 weights round small updates away"),
        ("bf16-mixed", None),
    ],
)
def test_half_precision_weights_are_warned_about(precision, warned, caplog):
    """trainer.precision=16-true trained fp16 weights with AdamW and no scaler: on CPU the run
    'completed' at val/loss 5000 and chance accuracy, without a word."""
    from omegaconf import OmegaConf

    from sft.utils import hardware

    with caplog.at_level(logging.WARNING, logger="sft.utils.hardware"):
        hardware.warn_fp16_weights(OmegaConf.create({"precision": precision}))
    if warned is None:
        assert caplog.messages == []
    else:
        assert any(warned in m for m in caplog.messages), caplog.messages


@pytest.mark.parametrize(
    ("precision", "accelerator", "kept"),
    [
        ("16-mixed", "gpu", False),
        ("16", "auto", False),  # Lightning's old name; auto is the GPU here
        ("bf16-mixed", "gpu", True),
        ("32-true", "gpu", True),
        ("16-mixed", "cpu", True),  # bf16 without a scaler on a CPU
    ],
)
def test_debug_anomaly_detection_is_off_under_fp16_loss_scaling(
    monkeypatch, caplog, precision, accelerator, kept
):
    """`debug=fdr trainer.precision=16-mixed` on an H200 stopped at EfficientNet-Lite0's first
    step: the scaler's overflowing step (skipped by design) turned NaN in a folded norm's weight
    gradient, and the debug configs' anomaly detection raised there."""
    from omegaconf import OmegaConf

    from sft.utils import hardware

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    trainer = OmegaConf.create(
        {"accelerator": accelerator, "precision": precision, "detect_anomaly": True}
    )
    with caplog.at_level(logging.WARNING, logger="sft.utils.hardware"):
        hardware.drop_anomaly_detection_under_loss_scaling(trainer)
    assert trainer.detect_anomaly is kept
    assert any("loss scaler" in m for m in caplog.messages) is not kept


@pytest.mark.parametrize(
    ("precision", "accelerator", "cpu_bf16", "warned"),
    [
        ("bf16-mixed", "auto", False, True),
        ("16-mixed", "cpu", False, True),  # Lightning runs it as bf16-mixed on a CPU
        (16, "cpu", False, True),  # its old name, the same run (was: no warning)
        ("bf16-mixed", "auto", True, False),
        ("32-true", "cpu", False, False),
    ],
)
def test_half_precision_on_a_cpu_without_bf16_units_is_warned_about(
    precision, accelerator, cpu_bf16, warned, monkeypatch, caplog
):
    """bf16-mixed on a CPU without AMX/AVX512-BF16 ran 3-4x slower than fp32 without a word
    from sft (it already knew: precision=auto says so)."""
    from omegaconf import OmegaConf

    from sft.utils import hardware

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: cpu_bf16)
    trainer = OmegaConf.create({"accelerator": accelerator, "precision": precision})
    with caplog.at_level(logging.WARNING, logger="sft.utils.hardware"):
        hardware.resolve_auto_precision(trainer, cpu_bf16_pays=True)
    half = str(precision) in ("16", "16-mixed")  # run as bf16-mixed on a CPU
    assert trainer.precision == ("bf16-mixed" if half else precision)
    assert any("bf16 is emulated there" in m for m in caplog.messages) == warned


@pytest.mark.parametrize("precision", ["16-mixed", 16])
def test_16_mixed_on_a_cpu_is_the_bf16_mixed_lightning_runs(precision, monkeypatch, caplog):
    """Lightning runs fp16 autocast as bf16-mixed on a CPU, with a warning of its own beside
    sft's (was: two warnings, one a raw path and line number; the saved config said 16-mixed).
    On a GPU 16-mixed stays, with its loss scaler."""
    from omegaconf import OmegaConf

    from sft.utils import hardware

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: True)
    trainer = OmegaConf.create({"accelerator": "auto", "precision": precision})
    with caplog.at_level(logging.INFO, logger="sft.utils.hardware"):
        hardware.resolve_auto_precision(trainer, cpu_bf16_pays=True)
    assert trainer.precision == "bf16-mixed"
    assert caplog.messages == [
        f"trainer.precision={precision} on CPU runs as bf16-mixed (CPUs have no fp16 autocast "
        "with a loss scaler)"
    ]
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        L.Trainer(accelerator="cpu", precision=trainer.precision, logger=False)
    assert not [w for w in warned if "fp16 is not supported on CPU" in str(w.message)]
    gpu = OmegaConf.create({"accelerator": "gpu", "precision": precision})
    hardware.resolve_auto_precision(gpu, cpu_bf16_pays=True)
    assert gpu.precision == precision


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        # was: no L-BFGS iteration, the zero head logged as "fitted", LP-FT from zero
        ({"max_iter": 0}, r"^model.linear_probe.max_iter: expected an integer >= 1, got 0$"),
        # was: IndexError from inside L-BFGS, after the features were extracted
        ({"weight_decay": -5}, r"^model.linear_probe.weight_decay: expected a float >= 0, got -5$"),
        (
            {"iters": 5},
            r"^model.linear_probe.iters: no such setting \(it takes weight_decay, max_iter\)",
        ),
        (5, r"^model.linear_probe: expected its settings"),
    ],
)
def test_linear_probe_settings_out_of_range_are_one_line(settings, message):
    with pytest.raises(SFTError, match=message):
        make_model(linear_probe=settings)


def test_a_model_with_nothing_to_train_is_one_line():
    """A frozen backbone, a frozen base head and no branch: was 'optimizer got an empty
    parameter list' (a traceback) once the data had been read."""
    with pytest.raises(SFTError, match=r"^nothing would train: model.freeze_backbone=true"):
        make_model(
            freeze_backbone=True,
            head={"_target_": "sft.models.heads.FusedHead", "branch": "none", "freeze_base": True},
        )


@pytest.mark.parametrize(("branch", "warned"), [("linear", True), ("none", True), ("mlp", False)])
def test_mlp_settings_on_another_branch_are_warned_about(branch, warned, caplog):
    """model.head.dropout / hidden_dim with branch=linear changed nothing, without a word."""
    with caplog.at_level(logging.WARNING, logger="sft.models.heads"):
        FusedHead(8, 2, branch=branch, dropout=0.1)
    assert any("only the mlp branch has them" in m for m in caplog.messages) == warned


def test_an_adapter_learning_rate_without_an_adapter_is_warned_about(caplog):
    """model.lr_adapter without adapter=lora changed nothing, without a word."""
    with caplog.at_level(logging.WARNING, logger="sft.models.classifier"):
        make_model(lr_adapter=0.1)
    assert any("no adapter is chosen (adapter=lora adds them)" in m for m in caplog.messages)


@pytest.mark.parametrize(("backbone", "warned"), [("small_cnn", True), ("tiny_bert", False)])
def test_frozen_norm_statistics_are_warned_about_only_where_there_are_batch_norms(
    backbone, warned, caplog
):
    """freeze_norm_stats=true without pretrained weights: the warning that the batch-norm
    statistics stay at their initial values was given for backbones without batch norms too
    (timm's ConvNeXt, a BERT: LayerNorms)."""
    from helpers.tiny_models import TINY_BERT

    config = SMALL_CNN if backbone == "small_cnn" else TINY_BERT
    model = make_model(backbone=config, freeze_norm_stats=True, linear_probe=None)
    with caplog.at_level(logging.WARNING):
        model.on_fit_start()
    assert ("keeps the batch-norm statistics" in caplog.text) is warned


def test_fp32_metrics_keep_their_values_through_a_half_cast():
    """Lightning's bf16-true casts the model with .to(dtype): the best accuracy and the loss
    sums stay float32, not rounded through bf16 (0.4531 read 0.453125 after a first fix)."""
    from sft.models.fp32_metrics import Float32Max, Float32Mean

    best = Float32Max()
    best.update(torch.tensor(0.4531))
    best = best.to(torch.bfloat16)
    assert best.max_value.dtype == torch.float32 and best.dtype == torch.float32
    assert best.compute().item() == pytest.approx(0.4531, abs=1e-7)
    mean = Float32Mean().to(dtype=torch.float16)
    mean.update(torch.tensor([235.6, 235.4]), weight=torch.tensor([64.0, 64.0]))
    assert mean.mean_value.dtype == torch.float32 and mean.compute().item() == pytest.approx(235.5)
