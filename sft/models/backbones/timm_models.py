"""Any timm image model as a backbone: `name: timm`, `model_name: <timm model name>`.

`timm.create_model(model_name, num_classes=0)` returns the pooled (pre-logits) features, and the
pixel statistics the weights expect come from the model's pretrained config, where timm's own
`resolve_model_data_config` reads them.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from torch import nn

from sft.contracts import Normalization
from sft.errors import SFTError
from sft.hub import hub_unreachable

from .build_errors import download_failure, model_build_errors, url_unreachable
from .registry import libraries_having, register_backbone, square_side
from .wrappers import REMOVED_HEADS, import_timm

# weights files timm looks for in a hub repository, in its order
_HUB_FILES = ("model.safetensors", "pytorch_model.bin")


def _weights_normalization(cfg: Mapping) -> Normalization | None:
    """The mean and std of the named model's pretrained config (None when unknown: the builder
    then names what is wrong)."""
    name = cfg.get("model_name")
    try:
        timm = import_timm("timm")
    except SFTError:
        return None
    pretrained_cfg = _pretrained_cfg(timm, name) if _is_model(timm, name) else None
    if pretrained_cfg is None or len(pretrained_cfg.mean) != 3 or len(pretrained_cfg.std) != 3:
        return None
    return Normalization(tuple(pretrained_cfg.mean), tuple(pretrained_cfg.std))


def _image_size(cfg: Mapping) -> int:
    """The side the model is built for: its `img_size` option (fixed-size models), else its
    pretrained input's (timm's `input_size`), else 224."""
    if (built := square_side(cfg.get("img_size"))) is not None:
        return built
    try:
        timm = import_timm("timm")
    except SFTError:
        return 224
    name = cfg.get("model_name")
    pretrained_cfg = _pretrained_cfg(timm, name) if _is_model(timm, name) else None
    return int(pretrained_cfg.input_size[-1]) if pretrained_cfg is not None else 224


# Not measured per model: no speed hints (model.channels_last / trainer.precision set them).
@register_backbone("timm", normalization=_weights_normalization, image_size=_image_size)
def timm_model(
    pretrained: bool = False, model_name: str | None = None, **options: Any
) -> nn.Module:
    """Pooled features of timm's `model_name` (a name or `name.tag`, as `timm.list_models()`
    gives them). `options` go to `timm.create_model` (e.g. drop_rate, drop_path_rate, img_size,
    pretrained_cfg_overlay={file: <local weights>})."""
    timm = import_timm("timm")
    if not _is_model(timm, model_name):
        raise _unknown_model(timm, model_name)
    if "." in model_name and _pretrained_cfg(timm, model_name) is None:
        raise _no_weights(
            timm, model_name, f"has no pretrained tag {model_name.partition('.')[2]!r}"
        )
    if options.get("in_chans", 3) != 3:
        raise SFTError(
            f"model.backbone.in_chans={options['in_chans']}: sft feeds models RGB images (3 "
            "channels; grayscale images are converted); remove it"
        )
    if pretrained:
        _check_weights_available(timm, model_name, options)
    with model_build_errors(
        "timm",
        model_name,
        options,
        pretrained,
        lambda err: _download_failure(timm, model_name, err),
    ):
        model = timm.create_model(model_name, pretrained=pretrained, num_classes=0, **options)
    # forward() returns the pre-logits features: head_hidden_size wide where a model has a
    # pre-logits layer (MobileNetV3: 1024, while its num_features is 576)
    model.num_features = getattr(model, "head_hidden_size", None) or model.num_features
    heads = model.pretrained_cfg.get("classifier") or ()
    setattr(model, REMOVED_HEADS, (heads,) if isinstance(heads, str) else tuple(heads))
    return model


def _is_model(timm: ModuleType, name: object) -> bool:
    return isinstance(name, str) and bool(name) and timm.is_model(name)


def _pretrained_cfg(timm: ModuleType, name: str) -> Any:
    """timm's pretrained config of `name` (`arch` or `arch.tag`); None for an unknown tag."""
    try:
        return timm.get_pretrained_cfg(name)
    except RuntimeError:  # "Invalid pretrained tag"
        return None


def _no_weights(timm: ModuleType, name: str, what: str) -> SFTError:
    arch = name.partition(".")[0]
    with_weights = timm.list_pretrained(f"{arch}.*")
    return SFTError(
        f"model.backbone.model_name: timm model {arch!r} {what}; "
        + (
            f"its names with weights: {', '.join(with_weights[:5])}"
            if with_weights
            else "set model.backbone.pretrained=false, or +model.backbone.checkpoint=PATH to a "
            "local state_dict"
        )
    )


def _unknown_model(timm: ModuleType, name: object) -> SFTError:
    if not isinstance(name, str) or not name:
        return SFTError(
            f"model.backbone.model_name: expected a timm model name (e.g. convnext_atto; "
            f"timm.list_models() lists them), got {name!r}"
        )
    if "torchvision" in libraries_having(name):
        return SFTError(
            f"model.backbone.model_name: {name!r} is a torchvision model, not a timm one: "
            "model=torchvision_fused (model.backbone.name=torchvision) builds it"
        )
    close = difflib.get_close_matches(name, timm.list_models(), n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return SFTError(
        f"model.backbone.model_name: {name!r} is not a timm model{hint}; "
        f"timm.list_models('*{name.split('.')[0][:6]}*') lists similar names"
    )


def _check_weights_available(timm: ModuleType, name: str, options: Mapping) -> None:
    """Weights that timm cannot get, said at once: without network, a hub download retries for
    ~45 s before it fails."""
    pretrained_cfg = _pretrained_cfg(timm, name)
    if pretrained_cfg is None or not (pretrained_cfg.hf_hub_id or pretrained_cfg.url):
        raise _no_weights(timm, name, "has no pretrained weights to download")
    if "pretrained_cfg_overlay" in options or "pretrained_cfg" in options:
        return  # the user points timm at the weights
    repo = pretrained_cfg.hf_hub_id
    if not repo:  # a plain URL, which torch.hub downloads
        import torch

        cache = os.path.join(torch.hub.get_dir(), "checkpoints")
        if (unreachable := url_unreachable(pretrained_cfg.url, cache)) is not None:
            raise _download_failure(timm, name, unreachable)
        return
    from huggingface_hub import try_to_load_from_cache

    if any(isinstance(try_to_load_from_cache(repo, file), str) for file in _HUB_FILES):
        return
    if (unreachable := hub_unreachable(repo, _HUB_FILES[0])) is not None:
        raise _download_failure(timm, name, unreachable)


def _download_failure(timm: ModuleType, name: str, err: BaseException) -> SFTError:
    pretrained_cfg = _pretrained_cfg(timm, name)
    if pretrained_cfg is not None and pretrained_cfg.hf_hub_id:
        from huggingface_hub.constants import HF_HUB_CACHE

        source, cache = f"https://huggingface.co/{pretrained_cfg.hf_hub_id}", HF_HUB_CACHE
    else:
        import torch

        url = pretrained_cfg.url if pretrained_cfg is not None else None
        source, cache = url or "timm", os.path.join(torch.hub.get_dir(), "checkpoints")
    return download_failure(f"the weights of timm model {name}", source, err, cache)
