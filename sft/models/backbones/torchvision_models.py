"""Any torchvision classification model as a backbone: `name: torchvision`, `model_name: <name>`.

torchvision's models end in a Linear classifier (`fc`, `classifier.1`, `heads.head`, ...): it is
replaced by an identity, so the model returns what that layer took, its pooled features. The pixel
statistics the weights expect come from the weights' own transforms.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from typing import Any

import torch
import torchvision
from torch import nn
from torchvision.models import WeightsEnum, get_model, get_model_weights, list_models

from sft.contracts import Normalization
from sft.errors import SFTError

from .build_errors import download_failure, model_build_errors, url_unreachable
from .registry import libraries_having, register_backbone, square_side
from .wrappers import REMOVED_HEADS

# GoogLeNet's and Inception v3's auxiliary classifiers: their outputs come with the features
# while training
_AUX_CLASSIFIERS = ("aux1", "aux2", "AuxLogits")
# Builder options torchvision sets only when it loads weights, which change what the model
# computes: set always, so that a model rebuilt without downloading (sft-eval, sft-predict,
# sft-export, checkpoint=) computes what it trained as (GoogLeNet and Inception v3 re-normalise
# their inputs to the statistics of their original weights)
_WEIGHTS_OPTIONS = {
    "googlenet": {"transform_input": True},
    "inception_v3": {"transform_input": True},
}


def _classification_models() -> list[str]:
    return list_models(module=torchvision.models)


def _chosen_weights(cfg: Mapping) -> WeightsEnum | None:
    """The weights a backbone config names (None for an unknown model or weights: the builder
    then names what is wrong)."""
    name = cfg.get("model_name")
    if name not in _classification_models():
        return None
    try:
        return _weights(name, cfg.get("weights", "DEFAULT"))
    except SFTError:
        return None


def _weights_normalization(cfg: Mapping) -> Normalization | None:
    """The mean and std of the named weights' transforms (None when unknown)."""
    weights = _chosen_weights(cfg)
    if weights is None:
        return None
    transforms = weights.transforms()
    return Normalization(tuple(transforms.mean), tuple(transforms.std))


# models whose builder takes its image size from the weights it loads (the weights' min_size:
# ViT's SWAG weights are at 384 or 518): set always, so that a model rebuilt without them is
# built as it trained (was: at 224, which its position embedding did not fit)
_SIZED_BY_WEIGHTS = ("vit_",)


def _weights_size(model_name: str, weights: WeightsEnum) -> dict[str, int]:
    """The `image_size` builder option of a model sized by its weights ({} for others)."""
    if not model_name.startswith(_SIZED_BY_WEIGHTS):
        return {}
    return {"image_size": weights.meta["min_size"][0]}


def _image_size(cfg: Mapping) -> int:
    """The side the model is built for: its `image_size` option, else its weights' (a ViT's),
    else 224."""
    if (built := square_side(cfg.get("image_size"))) is not None:
        return built
    weights = _chosen_weights(cfg)
    if weights is None:
        return 224
    return _weights_size(cfg["model_name"], weights).get("image_size", 224)


# Not measured per model: no speed hints (model.channels_last / trainer.precision set them).
@register_backbone("torchvision", normalization=_weights_normalization, image_size=_image_size)
def torchvision_model(
    pretrained: bool = False,
    model_name: str | None = None,
    weights: str = "DEFAULT",
    **options: Any,
) -> nn.Module:
    """Pooled features of torchvision's `model_name` (`torchvision.models.list_models()`).
    `weights`: which of its weights `pretrained` loads (DEFAULT: the best; e.g. IMAGENET1K_V1).
    `options` go to the model's builder (e.g. dropout, stochastic_depth_prob)."""
    known = _classification_models()
    if not isinstance(model_name, str) or model_name not in known:
        raise _unknown_model(model_name, known)
    chosen = _weights(model_name, weights)
    built_with = {
        **_WEIGHTS_OPTIONS.get(model_name, {}),
        **_weights_size(model_name, chosen),
        **options,
    }
    cache = os.path.join(torch.hub.get_dir(), "checkpoints")

    def download_failed(err: OSError) -> SFTError:
        what = f"the weights {chosen} of torchvision model {model_name}"
        return download_failure(what, chosen.url, err, cache)

    if pretrained and (unreachable := url_unreachable(chosen.url, cache)) is not None:
        raise download_failed(unreachable)
    with model_build_errors("torchvision", model_name, options, pretrained, download_failed):
        model = get_model(model_name, weights=chosen if pretrained else None, **built_with)
    return _without_classifier(model, model_name)


def _weights(model_name: str, weights: object) -> WeightsEnum:
    available = get_model_weights(model_name)
    try:
        return available[str(weights)]
    except KeyError:
        raise SFTError(
            f"model.backbone.weights: torchvision model {model_name!r} has no weights "
            f"{weights!r}; it has DEFAULT, {', '.join(w.name for w in available)}"
        ) from None


def _without_classifier(model: nn.Module, model_name: str) -> nn.Module:
    removed = [aux for aux in _AUX_CLASSIFIERS if hasattr(model, aux)]
    for aux in removed:
        setattr(model, aux, None)
    if hasattr(model, "aux_logits"):
        model.aux_logits = False
    linears = [path for path, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise SFTError(
            f"model.backbone: torchvision model {model_name!r} has no Linear classifier to remove "
            "(squeezenet's is a convolution); use another model, or your own backbone (README: "
            "Your own configs and code)"
        )
    parent, _, attribute = linears[-1].rpartition(".")
    owner = model.get_submodule(parent)
    model.num_features = getattr(owner, attribute).in_features
    setattr(owner, attribute, nn.Identity())
    setattr(model, REMOVED_HEADS, (linears[-1], *removed))
    return model


def _unknown_model(name: object, known: list[str]) -> SFTError:
    if "timm" in libraries_having(name):
        return SFTError(
            f"model.backbone.model_name: {name!r} is a timm model, not a torchvision one: "
            "model=timm_fused (model.backbone.name=timm) builds it"
        )
    close = difflib.get_close_matches(str(name), known, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return SFTError(
        f"model.backbone.model_name: {name!r} is not a torchvision classification model{hint}; "
        "torchvision.models.list_models(module=torchvision.models) lists them"
    )
