"""Backbone registry: builders register under a name; `create_backbone` is the single factory.

A backbone maps its inputs to features (B, D) and exposes `num_features = D`; the classifier head
is not part of it. Image backbones take a normalised float batch (B, 3, H, W); text backbones
(modality "text") take the tokenizer's tensors as keyword arguments (input_ids, attention_mask).
"""

from __future__ import annotations

import difflib
import inspect
import logging
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, NamedTuple

from annotated_types import Interval
from torch import nn

from sft.contracts import IMAGENET, InputSpec, Modality, Normalization
from sft.errors import SFTError
from sft.utils.config_types import check_value
from sft.utils.io import expand_home
from sft.utils.plugins import load_plugins

from .wrappers import ResizeInput, load_backbone_checkpoint

log = logging.getLogger(__name__)

BackboneBuilder = Callable[..., nn.Module]
# the statistics a family's weights expect, or for a family of many models (timm's, torchvision's)
# a function of the backbone config that reads them from the named model's weights
NormalizationOf = Callable[[Mapping], Normalization | None]


@dataclass(frozen=True)
class BackboneEntry:
    builder: BackboneBuilder
    # what its weights expect; None for text backbones and those without weights
    normalization: Normalization | NormalizationOf | None
    modality: Modality = "image"
    # Measured speed hints (benchmarks/precision_layout.py): CPU bf16 autocast is faster than
    # fp32 on bf16-capable CPUs; NHWC (channels_last) is faster than NCHW.
    cpu_bf16: bool = False
    channels_last: bool = False
    # the family's config as a checkpoint keeps it (e.g. a local model folder made absolute)
    saved_config: Callable[[dict], dict] | None = None
    # config keys naming local files or folders a rebuilt backbone reads (its config, tokenizer)
    local_paths: tuple[str, ...] = ()
    # image backbones: the side of the images the family is built for (or a function of the
    # backbone config giving it), when the config sets no input_size
    image_size: int | Callable[[dict], int] = 224


_REGISTRY: dict[str, BackboneEntry] = {}
# installed packages' backbone modules, registered by their decorators once imported:
# `[project.entry-points."sft.backbones"] my_net = "my_package.backbones"` in their pyproject
ENTRY_POINT_GROUP = "sft.backbones"


def _registered(name: object) -> BackboneEntry | None:
    """The entry of `name`; the installed packages' backbone modules (entry points of
    ENTRY_POINT_GROUP) are imported the first time a name is not known, as pytest loads its
    plugins: a registered backbone of one's own is then known to every command, sft-eval,
    sft-predict and sft-export included (was: only where one's own script imported it)."""
    if not isinstance(name, str):
        return None
    if name not in _REGISTRY:
        load_plugins(ENTRY_POINT_GROUP, "backbone")
    return _REGISTRY.get(name)


def register_backbone(
    name: str,
    *,
    normalization: Normalization | NormalizationOf | None = IMAGENET,
    modality: Modality = "image",
    cpu_bf16: bool = False,
    channels_last: bool = False,
    saved_config: Callable[[dict], dict] | None = None,
    local_paths: tuple[str, ...] = (),
    image_size: int | Callable[[dict], int] = 224,
) -> Callable[[BackboneBuilder], BackboneBuilder]:
    """Register `builder(pretrained: bool, **options) -> nn.Module` under `name`.

    `normalization`: the pixel statistics the family's weights expect (sft.contracts; None
    for a family without weights), or a function of the backbone config giving them, which the
    data pipeline gets through `resolve_input_spec`; text backbones have none.
    `cpu_bf16` / `channels_last`: the family measured faster with CPU bf16 autocast / in NHWC
    layout; `trainer.precision=auto` and `model.channels_last=null` follow them.
    `saved_config`: the backbone config as checkpoints keep it (`config_as_saved`).
    `local_paths`: the config keys naming files or folders the backbone reads when it is rebuilt
    from a checkpoint (`local_paths_read`).
    `image_size`: the image side the family is built for (or a function of the backbone config
    giving it), which data of no image size of its own is decoded to unless `input_size` is set.
    """
    if modality not in ("image", "text"):
        raise ValueError(f"unknown modality {modality!r}")

    def decorator(builder: BackboneBuilder) -> BackboneBuilder:
        known = _REGISTRY.get(name)
        if known is not None and _qualified(known.builder) != _qualified(builder):
            # Two builders under one name is a programming error, not a user mistake. The same
            # builder defined again (a notebook cell run twice, importlib.reload) replaces it.
            raise ValueError(
                f"backbone {name!r} is already registered (by {_qualified(known.builder)})"
            )
        norm = normalization if modality == "image" else None
        _REGISTRY[name] = BackboneEntry(
            builder, norm, modality, cpu_bf16, channels_last, saved_config, local_paths, image_size
        )
        return builder

    return decorator


def list_backbones(modality: Modality | None = None) -> list[str]:
    """Names accepted by `create_backbone`, sorted; only those of `modality` when given."""
    load_plugins(ENTRY_POINT_GROUP, "backbone")
    return sorted(n for n, e in _REGISTRY.items() if modality in (None, e.modality))


def backbone_modality(name: str) -> Modality:
    """ "image" or "text": what backbone `name` takes as input."""
    return _entry(name).modality


def resolve_input_spec(backbone_cfg: Mapping | None) -> InputSpec:
    """The input spec of the backbone a model's `backbone` config builds: its family's
    modality, the image side it takes, and its weights' normalisation when it loads weights
    (`pretrained` or a `checkpoint`); from scratch it expects none. Of a backbone built by
    another `_target_` nothing is known (modality None)."""
    cfg = dict(backbone_cfg or {})
    entry = _entry_of(cfg)
    if entry is None:
        return InputSpec(None)
    size = None
    if entry.modality == "image":
        native = entry.image_size
        size = cfg.get("input_size") or (native(cfg) if callable(native) else native)
    loads_weights = bool(cfg.get("pretrained")) or cfg.get("checkpoint") is not None
    if not loads_weights:
        return InputSpec(entry.modality, image_size=size)
    norm = entry.normalization
    return InputSpec(entry.modality, norm(cfg) if callable(norm) else norm, image_size=size)


def square_side(value: object) -> int | None:
    """A builder's image-size option as one side: an int, or a sequence of equal ints (an
    `(h, w)` of two sides, or anything else, is None)."""
    sides = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value]
    if sides and all(isinstance(s, int) and not isinstance(s, bool) for s in sides):
        return sides[0] if len(set(sides)) == 1 else None
    return None


def config_as_saved(backbone_cfg: dict) -> dict:
    """`backbone_cfg` as a checkpoint keeps it, so that sft-eval, sft-predict and sft-export
    rebuild the same backbone from any directory: a weights file (`checkpoint`) and the
    family's local folders absolute."""
    cfg = dict(backbone_cfg)
    weights = cfg.get("checkpoint")
    if isinstance(weights, str) and expand_home(weights).exists():
        cfg["checkpoint"] = str(expand_home(weights).absolute())
    entry = _entry_of(cfg)
    return entry.saved_config(cfg) if entry and entry.saved_config else cfg


def local_paths_read(backbone_cfg: Mapping) -> tuple[str, ...]:
    """The config keys naming files or folders the backbone reads when it is rebuilt from a
    checkpoint (the huggingface backbone's model folder: its config and tokenizer)."""
    entry = _entry_of(backbone_cfg)
    return entry.local_paths if entry else ()


def _entry_of(backbone_cfg: Mapping) -> BackboneEntry | None:
    """The registry entry a backbone config names; None for another `_target_`'s."""
    return _registered(backbone_cfg.get("name"))


class SpeedHints(NamedTuple):
    cpu_bf16: bool
    channels_last: bool


def backbone_speed_hints(backbone_cfg: Mapping | None) -> SpeedHints:
    """The speed hints of the registered backbone a model's `backbone` config builds; none for
    a backbone built by another `_target_` (nothing was measured about it)."""
    entry = _entry_of(backbone_cfg or {})
    return SpeedHints(entry.cpu_bf16, entry.channels_last) if entry else SpeedHints(False, False)


def create_backbone(
    name: str,
    pretrained: bool = False,
    checkpoint: str | None = None,
    input_size: int | None = None,
    **kwargs: object,
) -> nn.Module:
    """Build backbone `name`.

    pretrained: load the backbone's ImageNet weights (downloaded or packaged, per backbone).
    checkpoint: local file with the backbone's weights (a plain state_dict, or a Lightning
        checkpoint whose "state_dict" holds "backbone.*" keys). It replaces every weight, so
        when it is given the pretrained weights are not fetched at all (works offline).
    input_size: resize inputs to input_size x input_size first (e.g. 32x32 CIFAR -> 224); image
        backbones only.
    kwargs: backbone-specific options (e.g. cifar_stem=True for the ResNets).
    """
    entry = _entry(name)
    if input_size is not None and entry.modality != "image":
        raise SFTError(
            f"backbone {name!r} takes {entry.modality}: input_size={input_size!r} resizes images "
            "and does not apply; remove it"
        )
    _check_options(name, entry.builder, kwargs)
    model = entry.builder(pretrained=pretrained and checkpoint is None, **kwargs)
    if checkpoint is not None:
        load_backbone_checkpoint(model, checkpoint)
    if input_size is not None:
        if int(input_size) <= 0:
            raise SFTError(
                f"model.backbone.input_size must be a positive integer, got {input_size!r}"
            )
        model = ResizeInput(model, int(input_size))
    return model


def _entry(name: str) -> BackboneEntry:
    entry = _registered(name)
    if entry is None:
        known = list_backbones()
        close = difflib.get_close_matches(str(name), known, n=1)
        libraries = libraries_having(name)
        if libraries:
            hint = (
                f" (a {' and '.join(libraries)} model: model.backbone.name="
                f"{'|'.join(libraries)} model.backbone.model_name={name})"
            )
        else:
            hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise SFTError(
            f"unknown backbone {name!r}{hint}; known backbones: {', '.join(known)} (one "
            "registered in your own module is known where it is imported, and to every "
            f"command once your installed package lists it as an {ENTRY_POINT_GROUP!r} entry "
            "point; or name its class, model.backbone._target_=<module.Class>)"
        )
    return entry


def libraries_having(name: object) -> list[str]:
    """Which of torchvision and timm have a model called `name`."""
    if not isinstance(name, str):
        return []
    import torchvision

    found = ["torchvision"] if name in torchvision.models.list_models(torchvision.models) else []
    try:
        import timm
    except ImportError:
        return found
    return [*found, "timm"] if timm.is_model(name) else found


def _check_options(name: str, builder: BackboneBuilder, kwargs: dict[str, object]) -> None:
    # A config typo (e.g. cifar_stem on mobilenetv2) should read as one clear line, not a
    # TypeError from deep inside a builder.
    params = inspect.signature(builder).parameters
    # each option its builder annotates: its type and range (was: `drop_path_rate=abc` a
    # TypeError in Hydra's block; 1.5, a RuntimeError at the first training step)
    try:
        hints = typing.get_type_hints(builder, include_extras=True)
    except Exception:  # an annotation not evaluable here (a name imported for type checkers)
        hints = {}
    for key, value in kwargs.items():
        # timm's drop rates, also where a builder passes its options on (timm's own)
        hint = hints.get(key) if key in params else DropRate if key in DROP_RATES else None
        if hint is not None:
            check_value(value, hint, f"model.backbone.{key}")
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [p for p in params if p != "pretrained"]
    unknown = [k for k in kwargs if k not in accepted]
    if unknown:
        raise SFTError(
            f"backbone {name!r} does not accept option(s) {', '.join(unknown)}; "
            f"accepted: {', '.join(accepted) or 'none'}"
        )


# timm's dropout rates, a probability each (a rate of 1 drops everything)
DROP_RATES = ("drop_rate", "drop_path_rate")
DropRate = Annotated[float, Interval(ge=0, lt=1)]


def _qualified(builder: BackboneBuilder) -> str:
    return f"{builder.__module__}.{builder.__qualname__}"
