"""model.metrics: what each named metric computes (against scikit-learn), what a run logs for each
split, and a mistake in the list as one line before anything is built."""

import itertools
import json
import logging
import math
import re

import pytest
import torch
from conftest import FAST, compose_config, run_entry_point
from sklearn import metrics as skm
from test_errors import assert_one_error_line, run_main

import sft.train
from sft.errors import SFTError
from sft.jobs.eval import evaluate
from sft.models import SFTClassifier
from sft.models.metrics import check_metric_names, create_metrics

SMALL_CNN = {"_target_": "sft.models.backbones.create_backbone", "name": "small_cnn", "width": 8}


def computed(name: str, logits: torch.Tensor, labels: torch.Tensor) -> float:
    metric = create_metrics([name], logits.shape[1])[name]
    for part in range(0, len(labels), 64):  # over batches, as a split is
        metric.update(logits[part : part + 64], labels[part : part + 64])
    return float(metric.compute())


@pytest.mark.parametrize("num_classes", [2, 7])
def test_each_metric_is_scikit_learns(num_classes):
    generator = torch.Generator().manual_seed(num_classes)
    labels = torch.randint(num_classes, (300,), generator=generator)
    # informative logits: the label's a little higher
    logits = torch.randn(300, num_classes, generator=generator)
    logits[torch.arange(300), labels] += 1.0
    predicted, probs = logits.argmax(1).numpy(), logits.softmax(1).numpy()
    y = labels.numpy()
    expected = {
        "acc": skm.accuracy_score(y, predicted),
        "f1": skm.f1_score(y, predicted, average="macro"),
        "precision": skm.precision_score(y, predicted, average="macro"),
        "recall": skm.recall_score(y, predicted, average="macro"),
        "mcc": skm.matthews_corrcoef(y, predicted),
        "auroc": (
            skm.roc_auc_score(y, probs[:, 1])
            if num_classes == 2
            else skm.roc_auc_score(y, probs, multi_class="ovr", average="macro")
        ),
    }
    if num_classes == 2:  # sklearn's f1_score default: the positive class's
        expected["binary_f1"] = skm.f1_score(y, predicted)
    else:
        expected["top5"] = skm.top_k_accuracy_score(y, probs, k=5)
    for name, value in expected.items():
        assert computed(name, logits, labels) == pytest.approx(value, abs=1e-5), name
    # ECE: the confidence-weighted gap over 15 equal-width bins
    confidence, correct = probs.max(1), predicted == y
    bins = torch.linspace(0, 1, 16).numpy()
    ece = 0.0
    for low, high in itertools.pairwise(bins):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            ece += inside.mean() * abs(confidence[inside].mean() - correct[inside].mean())
    assert computed("ece", logits, labels) == pytest.approx(ece, abs=1e-5)


def test_edge_cases_are_scikit_learns():
    """A class absent from a split's labels has no AUROC (torchmetrics' macro average counted it
    as 0); a model predicting one class has a Matthews correlation of 0 (torchmetrics' two-class
    fallback gave +-0.026 on CoLA's validation split sizes)."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(4, (200,), generator=generator)  # class 4 of 5 never a label
    logits = torch.randn(200, 5, generator=generator)
    logits[torch.arange(200), labels] += 1.0
    probs, y = logits.softmax(1).numpy(), labels.numpy()
    present = [skm.roc_auc_score(y == c, probs[:, c]) for c in range(4)]
    assert computed("auroc", logits, labels) == pytest.approx(sum(present) / 4, abs=1e-5)
    one_class = torch.tensor([1] * 721 + [0] * 322)
    always_1 = torch.tensor([[0.0, 1.0]]).expand(len(one_class), -1)
    assert computed("mcc", always_1, one_class) == 0.0
    assert skm.matthews_corrcoef(one_class.numpy(), always_1.argmax(1).numpy()) == 0.0
    assert math.isnan(computed("auroc", logits[:10], torch.zeros(10, dtype=torch.long)))


def test_a_run_logs_the_listed_metrics_for_each_split_and_eval_scores_them(
    tmp_path, monkeypatch, capsys
):
    """A run's result.json and sft-eval's metrics hold val/ and test/ of each listed metric, and
    train/ of those that keep no predictions; the best checkpoint can rank by one of them."""
    run = tmp_path / "train"
    listed = ["model.metrics=[acc,top5,mcc,auroc]", "callbacks.model_checkpoint.monitor=val/top5"]
    argv = ["sft-train", *FAST, "trainer.max_epochs=1", *listed, f"hydra.run.dir={run}"]
    assert run_entry_point(sft.train.main, argv) == 0
    metrics = json.loads((run / "result.json").read_text())["metrics"]
    for split in ("val", "test"):
        assert {f"{split}/{m}" for m in ("acc", "top5", "mcc", "auroc")} <= set(metrics)
        assert f"{split}/f1" not in metrics  # not listed
    assert {"train/acc", "train/top5", "train/mcc"} <= set(metrics)
    assert "train/auroc" not in metrics  # it would hold the epoch's predictions
    best = next((run / "checkpoints").glob("epoch*.ckpt"))
    cpu = ["trainer.accelerator=cpu", "trainer.enable_progress_bar=false"]
    scored = evaluate(compose_config("eval", [f"ckpt_path={best}", *cpu], tmp_path / "eval"))
    assert {"test/top5", "test/mcc", "test/auroc"} <= set(scored) and "test/ece" not in scored
    # others than the run logged
    others = [f"ckpt_path={best}", "metrics=[ece]", *cpu]  # acc is always scored
    scored = evaluate(compose_config("eval", others, tmp_path / "eval2"))
    assert {"test/acc", "test/ece"} <= set(scored) and "test/top5" not in scored
    status, stderr = run_main(
        "eval", [*others[:1], "metrics=[acc,mc]"], tmp_path, monkeypatch, capsys
    )
    assert_one_error_line(
        status, stderr, "error: metrics: no metric named 'mc' (did you mean 'mcc'?)"
    )


@pytest.mark.parametrize(
    ("names", "num_classes", "expected"),
    [
        (["acc", "top_5"], 10, "model.metrics: no metric named 'top_5' (did you mean 'top5'?)"),
        # matched against the names other tools give them too (was: 'auroc', then 'recall')
        (["acuracy"], 2, "model.metrics: no metric named 'acuracy' (did you mean 'acc'?)"),
        (["matthews"], 2, "model.metrics: no metric named 'matthews' (did you mean 'mcc'?)"),
        (["acc", "top5"], 3, "model.metrics: top5 is defined for at least 6 classes"),
        (["acc", "binary_f1"], 3, "model.metrics: binary_f1 is defined for exactly 2 classes"),
        (["f1"], 2, "model.metrics: ['f1'] leaves out 'acc'"),
        (["acc", "f1", "acc"], 2, "model.metrics: 'acc' is listed twice"),
        ("acc", 2, "model.metrics: expected a list of metric names"),
        ({"a": 1}, 2, "model.metrics: expected a list of metric names"),
    ],
)
def test_a_mistake_in_the_list_is_named(names, num_classes, expected):
    with pytest.raises(SFTError, match="^" + re.escape(expected)):
        check_metric_names(names, num_classes)


def test_a_mistake_in_the_list_is_one_line_before_the_backbone_is_built(
    tmp_path, monkeypatch, capsys
):
    import sft.models.classifier

    def no_backbone(*args, **kwargs):
        raise AssertionError("the backbone was built before the metrics were checked")

    monkeypatch.setattr(sft.models.classifier, "instantiate", no_backbone)
    args = [*FAST, "model.metrics=[acc,binary_f1]"]
    status, stderr = run_main("train", args, tmp_path, monkeypatch, capsys)
    assert_one_error_line(
        status,
        stderr,
        "model.metrics: binary_f1 is defined for exactly 2 classes; this model has 10",
    )


def test_a_checkpoint_without_the_setting_logs_acc_and_f1():
    """Checkpoints of runs before model.metrics rebuild with the metrics they logged."""
    model = SFTClassifier(backbone=SMALL_CNN, num_classes=3)
    assert model.hparams.metrics is None
    assert set(model.val_metrics) == {"val/acc", "val/f1"}
    assert set(model.train_metrics) == {"train/acc", "train/f1"}


PLUGIN_METRIC = """
from torchmetrics.classification import MulticlassAccuracy

from sft.models.metrics import register_metric


@register_metric("top2")
def top2(num_classes):
    return MulticlassAccuracy(num_classes, top_k=2, average="micro")
"""


def test_a_metric_an_installed_package_registers_is_known_by_name(tmp_path, monkeypatch, caplog):
    """As for backbones: a package listing its module as an `sft.metrics` entry point has it
    imported when a name is not known, and one that fails to import is named."""
    from sft.models import metrics
    from sft.utils import plugins

    (tmp_path / "my_plugin_metrics.py").write_text(PLUGIN_METRIC)
    info = tmp_path / "my_metrics-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-metrics\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[sft.metrics]\nbroken = my_plugin_missing\ntop2 = my_plugin_metrics\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(metrics, "_METRICS", dict(metrics._METRICS))
    monkeypatch.setattr(plugins, "_loaded", set())
    with caplog.at_level(logging.WARNING):
        model = SFTClassifier(backbone=SMALL_CNN, num_classes=3, metrics=["acc", "top2"])
    assert "the metric plugin broken = 'my_plugin_missing' (an sft.metrics entry" in caplog.text
    logits = torch.tensor([[3.0, 2.0, 1.0], [3.0, 1.0, 2.0]])
    model.val_metrics.update(logits, torch.tensor([1, 1]))
    assert model.val_metrics.compute()["val/top2"] == 0.5


@pytest.mark.parametrize(
    ("metric", "mode"),
    [
        ("val/ece", "min"),
        ("val/loss", "min"),
        ("val/error_rate", "min"),
        ("val/acc", "max"),
        ("val/top5", "max"),
        ("val/precision", "max"),
        ("val/mcc", "max"),
    ],
)
def test_checkpoints_and_early_stopping_rank_a_calibration_error_lowest_first(
    tmp_path, metric, mode
):
    """val/ece is better lower: the best checkpoint was the worst calibrated (mode max)."""
    cfg = compose_config(
        "train", [*FAST, f"callbacks.model_checkpoint.monitor={metric}"], tmp_path / "run"
    )
    assert cfg.callbacks.model_checkpoint.mode == mode
    assert cfg.callbacks.early_stopping.mode == mode


def test_a_monitored_metric_model_metrics_does_not_list_is_named_before_training(
    tmp_path, monkeypatch, capsys
):
    args = [*FAST, "model.metrics=[acc,f1]", "callbacks.model_checkpoint.monitor=val/mcc"]
    status, stderr = run_main("train", args, tmp_path, monkeypatch, capsys)
    assert_one_error_line(
        status,
        stderr,
        "EarlyStopping and ModelCheckpoint monitor 'val/mcc', which this run does not log: "
        "model.metrics does not list mcc (model.metrics=[acc,f1,mcc])",
    )
    assert "Sanity Checking" not in stderr and "sanity check" not in stderr


def test_a_checkpoint_naming_a_metric_not_installed_here_still_loads(tmp_path, caplog):
    """A run that logged a plugin's metric: its checkpoint predicts and exports where the plugin
    is not installed (was: "no metric named ..."), the metric left out with a warning."""
    from lightning.pytorch import Trainer

    from sft.models import load_classifier

    model = SFTClassifier(backbone=SMALL_CNN, num_classes=3)
    trainer = Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(model)
    path = tmp_path / "plugin.ckpt"
    trainer.save_checkpoint(path)
    state = torch.load(path, weights_only=True)
    state["hyper_parameters"]["metrics"] = ["acc", "top2"]
    torch.save(state, path)
    with caplog.at_level(logging.WARNING):
        loaded = load_classifier(path)
    assert "its run logged top2, which no installed package registers" in caplog.text
    assert set(loaded.val_metrics) == {"val/acc"}
