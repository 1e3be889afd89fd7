"""The metrics a classifier logs for each split (`model.metrics`): torchmetrics classes, by name.

A registry of names, as for backbones, not `_target_` configs: the names travel in a checkpoint's
hyperparameters, and building a model from a checkpoint must import nothing it names (sft.api
and sft-eval read checkpoints of others). Code of one's own adds a metric with
`@register_metric("name")` on a function of the number of classes, in a module an installed
package lists as an `sft.metrics` entry point (imported when a name is not known, as backbone
plugins are) or one imported before the model is built.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassCalibrationError,
    MulticlassF1Score,
    MulticlassMatthewsCorrCoef,
    MulticlassPrecision,
    MulticlassRecall,
)
from torchmetrics.utilities import dim_zero_cat

from sft.errors import SFTError
from sft.utils.plugins import load_plugins
from sft.utils.suggest import did_you_mean, nearest_names

MetricFactory = Callable[[int], Metric]
# installed packages' metric modules: `[project.entry-points."sft.metrics"] my = "my_package.x"`
ENTRY_POINT_GROUP = "sft.metrics"
# what every run logs: val/acc_best, the default checkpoint and early-stopping monitor, and
# sft-compare's columns read val/acc and test/acc
REQUIRED = "acc"
DEFAULT_METRICS = ("acc", "f1")
# these metrics' names in HF evaluate, scikit-learn and torchmetrics: a mistyped name is matched
# against them too (was: `acuracy` -> 'auroc', nearer to it than `acc`)
NAMED_ELSEWHERE = {
    "accuracy": "acc",
    "f1_score": "f1",
    "top_k_accuracy": "top5",
    "matthews_corrcoef": "mcc",
    "roc_auc": "auroc",
    "calibration_error": "ece",
}


@dataclass(frozen=True)
class MetricEntry:
    factory: MetricFactory
    # the fewest and most classes it is defined for (None: any number)
    min_classes: int = 2
    max_classes: int | None = None
    # it keeps every prediction of a split (AUROC, calibration): not for the training split,
    # whose epoch of predictions (ImageNet's: 1.3 M x 1,000) it would hold in memory
    keeps_predictions: bool = False


_METRICS: dict[str, MetricEntry] = {}


def register_metric(
    name: str,
    min_classes: int = 2,
    max_classes: int | None = None,
    keeps_predictions: bool = False,
) -> Callable[[MetricFactory], MetricFactory]:
    """Register `factory(num_classes) -> torchmetrics Metric` as `name`, logged as val/<name>,
    test/<name> and, unless it `keeps_predictions`, train/<name>. It is updated with the logits
    (batch, classes) and the class indices, and computes one number."""

    def add(factory: MetricFactory) -> MetricFactory:
        if name in _METRICS:
            raise SFTError(f"a metric named {name!r} is registered already")
        _METRICS[name] = MetricEntry(factory, min_classes, max_classes, keeps_predictions)
        return factory

    return add


def metric_names() -> list[str]:
    return sorted(_METRICS)


class PositiveClassF1(MulticlassF1Score):
    """F1 of class 1 of two (sklearn's `f1_score` default, GLUE's F1 for MRPC and QQP)."""

    def __init__(self) -> None:
        super().__init__(num_classes=2, average="none")

    def compute(self) -> torch.Tensor:
        return super().compute()[1]


class MatthewsCorrelation(MulticlassMatthewsCorrCoef):
    """scikit-learn's Matthews correlation: 0 where a split's labels or predictions are all one
    class (torchmetrics' two-class fallback gave +-0.026 to a model predicting one class of
    CoLA's validation split, ranking it above a real one)."""

    def compute(self) -> torch.Tensor:
        # over proportions: the same value, and float32 keeps its digits on large splits
        p = self.confmat.float() / self.confmat.sum().clamp_min(1)
        true, predicted = p.sum(1), p.sum(0)
        covariance = p.trace() - (true * predicted).sum()
        scale = ((1 - (predicted * predicted).sum()) * (1 - (true * true).sum())).sqrt()
        return torch.where(scale > 0, covariance / scale.clamp_min(1e-30), 0.0)


class MacroAUROC(MulticlassAUROC):
    """One-vs-rest AUROC averaged over the classes the split has examples of and others: a class
    without them has no AUROC (scikit-learn's), which torchmetrics' macro average counted as 0
    (0.618 for 0.773 on a validation split without one of 5 classes); NaN when no class has."""

    def __init__(self, num_classes: int) -> None:
        super().__init__(num_classes, average="none")

    def compute(self) -> torch.Tensor:
        target = dim_zero_cat(self.target)
        counts = torch.bincount(target.long(), minlength=self.num_classes)
        defined = (counts > 0) & (counts < target.numel())
        with warnings.catch_warnings():  # torchmetrics' on the undefined classes, left out here
            warnings.filterwarnings("ignore", message=".*No (positive|negative) samples")
            per_class = super().compute()
        return per_class[defined].mean() if defined.any() else per_class.new_tensor(float("nan"))


register_metric("acc")(lambda n: MulticlassAccuracy(n, average="micro"))
register_metric("f1")(lambda n: MulticlassF1Score(n, average="macro"))
register_metric("precision")(lambda n: MulticlassPrecision(n, average="macro"))
register_metric("recall")(lambda n: MulticlassRecall(n, average="macro"))
# top-5 of 5 classes or fewer is always 1
register_metric("top5", min_classes=6)(lambda n: MulticlassAccuracy(n, top_k=5, average="micro"))
register_metric("binary_f1", max_classes=2)(lambda n: PositiveClassF1())
register_metric("mcc")(lambda n: MatthewsCorrelation(n))
# one-vs-rest, macro over the classes present; exact (thresholds=None): it keeps the split's
# probabilities
register_metric("auroc", keeps_predictions=True)(lambda n: MacroAUROC(n))
# expected calibration error over 15 confidence bins (Guo et al. 2017)
register_metric("ece", keeps_predictions=True)(
    lambda n: MulticlassCalibrationError(n, n_bins=15, norm="l1")
)


def check_metric_names(
    names: Sequence[str] | None, num_classes: int, key: str = "model.metrics"
) -> tuple[str, ...]:
    """`names` as the names to log (None: DEFAULT_METRICS); SFTError naming the config `key` for
    a name not registered, one given twice, one not defined for this many classes, or a list
    without acc."""
    if names is None:
        return DEFAULT_METRICS
    if not is_name_list(names):
        raise SFTError(f"{key}: expected a list of metric names, got {names!r}")
    unknown = unregistered(names)
    for name in names:
        if name in unknown:
            # (a name a plugin registers is its own metric, not another tool's name for one)
            elsewhere = {k: v for k, v in NAMED_ELSEWHERE.items() if k not in metric_names()}
            close = nearest_names(name, [*metric_names(), *elsewhere], n=1)
            close = [elsewhere.get(c, c) for c in close]
            hint = f" ({did_you_mean([repr(close[0])])})" if close else ""
            raise SFTError(
                f"{key}: no metric named {name!r}{hint}; known: {', '.join(metric_names())}"
            )
        fewest, most = _METRICS[name].min_classes, _METRICS[name].max_classes
        if num_classes < fewest or (most is not None and num_classes > most):
            if most is None:
                needs = f"at least {fewest}"
            else:
                needs = f"exactly {most}" if most == fewest else f"{fewest} to {most}"
            raise SFTError(
                f"{key}: {name} is defined for {needs} classes; this model has {num_classes}"
            )
    twice = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if twice is not None:
        raise SFTError(f"{key}: {twice!r} is listed twice")
    if REQUIRED not in names:
        raise SFTError(
            f"{key}: {list(names)} leaves out {REQUIRED!r}, which every run logs "
            "(val/acc_best, the default checkpoint and early-stopping metric): list it too"
        )
    return tuple(names)


def is_name_list(names: object) -> bool:
    """Whether `names` is a list of names (a list of strings, not a string or a mapping)."""
    return (
        isinstance(names, Sequence)
        and not isinstance(names, str | Mapping)
        and all(isinstance(n, str) for n in names)
    )


def unregistered(names: Sequence[str]) -> list[str]:
    """The names no metric is registered under, the installed plugins' included."""
    if any(name not in _METRICS for name in names):
        load_plugins(ENTRY_POINT_GROUP, "metric")
    return [name for name in names if name not in _METRICS]


def create_metrics(
    names: Sequence[str], num_classes: int, training: bool = False
) -> MetricCollection:
    """The metrics of `names` (checked by check_metric_names), keyed by name; `training`: those
    fit for the training split."""
    return MetricCollection(
        {
            name: _METRICS[name].factory(num_classes)
            for name in names
            if not (training and _METRICS[name].keeps_predictions)
        }
    )
