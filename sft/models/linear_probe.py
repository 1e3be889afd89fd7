"""Linear-probe initialisation of the base head (the LP of LP-FT, Kumar et al., 2022).

Multinomial logistic regression on cached frozen-backbone features, solved full-batch with
L-BFGS. Chosen over closed-form ridge on one-hot targets because it minimises the same
cross-entropy that fine-tuning then continues with: the head starts calibrated, whereas ridge
logits live on a [0, 1] regression scale and make the first fine-tuning steps re-learn the scale.
"""

from collections.abc import Callable, Iterable, Mapping
from typing import Annotated, Any

import torch
import torch.nn.functional as F
from annotated_types import Ge
from torch import nn

from sft.errors import SFTError
from sft.utils.config_types import NonNegative, check_value

# a feature whose spread is below this fraction of the features' mean spread is taken as
# constant: its weight is 0 (standardised, it got a weight of the usual size, so a raw weight
# 1e5 times others on MiniLM's dead LayerNorm dimensions, which fine-tuning then moves)
CONSTANT_FEATURE_SPREAD = 1e-3
# a live feature is standardised by at least this fraction of the features' mean spread: by its
# own tiny spread, a near-dead feature got a weight of the usual size on the standardised scale,
# so a raw weight far above the others', which fine-tuning then moved with every change of that
# feature. EfficientNet-Lite0 at 32 px on 1,000 CIFAR-10 images (364 of 1,280 features dead):
# largest raw weight 90.8 -> 18.9, probe accuracy on 200 held out 0.365 -> 0.370. Low enough to
# leave the configs' probes as they were: at 80 px the weights are the same to 5 digits, and
# MiniLM on SST-2 has no live feature below it.
MIN_FEATURE_SPREAD = 0.05
# fit_logistic_regression's settings (model.linear_probe) and the values each takes
PROBE_SETTINGS = {"weight_decay": NonNegative, "max_iter": Annotated[int, Ge(1)]}


def check_probe_settings(settings: Any) -> None:
    """SFTError naming `model.linear_probe.<key>` for a setting the probe does not take or a
    value it cannot (was: max_iter=0 fitted nothing, and the zero head was logged as fitted;
    a negative weight_decay was an IndexError from inside L-BFGS)."""
    if not isinstance(settings, Mapping):
        raise SFTError(
            f"model.linear_probe: expected its settings (e.g. '{{max_iter: 200}}') or null, got "
            f"{settings!r}"
        )
    for key, value in settings.items():
        if key not in PROBE_SETTINGS:
            raise SFTError(
                f"model.linear_probe.{key}: no such setting (it takes {', '.join(PROBE_SETTINGS)})"
            )
        check_value(value, PROBE_SETTINGS[key], f"model.linear_probe.{key}")


@torch.no_grad()
def extract_features(
    backbone: nn.Module,
    batches: Iterable[tuple[object, torch.Tensor]],
    on_images: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and labels of every batch, with the backbone in eval mode (restored after).
    `on_images`: how image batches go through the backbone (default: called directly)."""
    was_training = backbone.training
    backbone.eval()
    on_images = on_images or backbone
    feats, labels = [], []
    for inputs, y in batches:
        feats.append(backbone(**inputs) if isinstance(inputs, dict) else on_images(inputs))
        labels.append(y)
    backbone.train(was_training)
    return torch.cat(feats).float(), torch.cat(labels)


def fit_logistic_regression(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    weight_decay: float = 1e-4,
    max_iter: int = 200,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(W, b) minimising mean cross-entropy + weight_decay/2 * ||W_z||^2 on standardised features
    z (as scikit-learn's StandardScaler + LogisticRegression), deterministically, folded back
    into (W, b) on raw features. A feature constant to within CONSTANT_FEATURE_SPREAD of the
    mean spread gets weight 0 (standardised, it would get a weight of the usual size: a huge
    one on the raw feature); one of less than MIN_FEATURE_SPREAD of it is standardised by that
    fraction instead of its own spread."""
    mean = features.mean(0)
    std = features.std(0, correction=0)  # ddof=0, as StandardScaler
    live = std > CONSTANT_FEATURE_SPREAD * std.mean()
    std = torch.where(live, std.clamp_min(MIN_FEATURE_SPREAD * std.mean()), torch.ones_like(std))
    z = (features - mean) / std * live  # constant features: 0, no gradient, weight stays 0
    w = torch.zeros(num_classes, z.shape[1], device=z.device, requires_grad=True)
    b = torch.zeros(num_classes, device=z.device, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(z @ w.T + b, labels) + 0.5 * weight_decay * w.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    w_raw = (w / std).detach()
    return w_raw, (b - w_raw @ mean).detach()
