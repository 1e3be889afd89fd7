"""Helpers shared by the backbones: input resizing, checkpoint loading, packaged weights."""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType

import torch
import torch.nn.functional as F
from torch import nn

from sft.errors import SFTError
from sft.hub import peft_merge_advice
from sft.utils.checkpoint_io import (
    SAVE_AT_DEFAULT_PROTOCOL,
    load_failure,
    load_weights_only,
    saved_at_protocol_4_or_5,
)
from sft.utils.io import expand_home, missing_file
from sft.utils.logs import first_few

log = logging.getLogger(__name__)

# Prefixes a saved state_dict may carry around the backbone's own keys: our LightningModule
# stores the backbone as `backbone`, ResizeInput stores it as `body`, torch.compile adds
# `_orig_mod`.
_LIGHTNING_PREFIX = "backbone."
_WRAPPER_PREFIXES = ("_orig_mod.", "body.")
# ImageNet classifier heads (torchvision `fc`, timm `classifier`): a backbone has none, so a
# full-model weights file (e.g. torchvision's resnet18-f37072fd.pth) loads with its head dropped.
_HEAD_PREFIXES = ("fc.", "classifier.")
# attribute of a backbone built from a library's classifier: the paths of the heads its builder
# removed, whose keys a full model's weights file may hold
REMOVED_HEADS = "removed_heads"

VISION_EXTRA_HINT = "pip install 'sft[vision]'"


def import_timm(backbone: str) -> ModuleType:
    """timm, an optional dependency (sft[vision]), imported late because it is slow."""
    try:
        import timm
    except ImportError as err:
        raise SFTError(f"backbone {backbone} needs timm: {VISION_EXTRA_HINT}") from err
    return timm


class ResizeInput(nn.Module):
    """Resize inputs to size x size before the backbone (feeds 32x32 images to ImageNet nets)."""

    def __init__(self, body: nn.Module, size: int) -> None:
        super().__init__()
        self.body = body
        self.size = size
        self.num_features: int = body.num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return self.body(x)

    def extra_repr(self) -> str:
        return f"size={self.size}"


def inner_model(backbone: nn.Module) -> nn.Module:
    """The backbone's own model, inside the resize wrapper (input_size)."""
    return backbone.body if isinstance(backbone, ResizeInput) else backbone


def load_backbone_checkpoint(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """Load backbone weights from a local file into `model` (strict: every key must match).

    Accepts a plain state_dict of the backbone, or a dict with a "state_dict" entry (a
    Lightning checkpoint of our classifier: its "backbone.*" keys are used, the rest ignored).
    """
    file = expand_home(path)
    if not file.is_file():
        raise SFTError(f"backbone checkpoint {file}: {missing_file(file)}")
    try:
        # weights_only: a checkpoint is data; never run code from it.
        obj = load_weights_only(file)
    except OSError as err:  # the file itself: permissions, a disk error
        raise SFTError(f"backbone checkpoint {file}: cannot be read ({err})") from err
    except Exception as err:  # unpickling junk raises anything (KeyError, ValueError, ...)
        reason = load_failure(err)
        why = (
            SAVE_AT_DEFAULT_PROTOCOL
            if saved_at_protocol_4_or_5(reason)
            else "the file is corrupt, or not a state_dict saved with torch.save"
        )
        raise SFTError(f"backbone checkpoint {file}: cannot be read ({reason}); {why}") from err
    own = model.state_dict()
    state = _under_own_prefix(_extract_state_dict(obj, file), own)
    unsaved = _non_persistent_buffers(model)
    state = {
        k: v
        for k, v in state.items()
        if k in own
        or not (k.startswith(_HEAD_PREFIXES) or k in unsaved or _under_removed_head(model, k))
    }
    load_state_dict_checked(model, state, source=str(file))


def _under_own_prefix(
    state: dict[str, torch.Tensor], own: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """A state_dict of the model the backbone wraps (a plain transformers model's
    `state_dict()`, whose keys lack the huggingface backbone's `model.`): its keys with the
    prefix all of the backbone's own keys share (was: refused as "missing"/"unexpected")."""
    prefixes = {key.partition(".")[0] for key in own}
    if len(prefixes) != 1 or any(key in own for key in state):
        return state
    prefixed = {f"{next(iter(prefixes))}.{key}": value for key, value in state.items()}
    return prefixed if any(key in own for key in prefixed) else state


def _non_persistent_buffers(model: nn.Module) -> set[str]:
    """Buffers the model rebuilds instead of saving, which older library versions saved (BERT's
    `embeddings.position_ids`, persistent before transformers 4.31): skipped in a checkpoint
    (was: refused as an unexpected key)."""
    return {
        f"{path}.{name}" if path else name
        for path, module in model.named_modules()
        for name in module._non_persistent_buffers_set
    }


def _under_removed_head(model: nn.Module, key: str) -> bool:
    """Whether `key` belongs to a classifier the backbone's builder removed (its `removed_heads`,
    replaced by an identity or None: timm's `head`, torchvision's `heads.head`, GoogLeNet's
    auxiliary classifiers), or to a module holding one that it removed as a whole (LeViT's
    `head`, whose classifier is `head.linear`). Other modules that are identities (a timm
    model built without the file's qk_norm or layer scale) keep their keys: refused."""
    removed = getattr(model, REMOVED_HEADS, ())
    parts = key.split(".")
    for i in range(1, len(parts)):
        path = ".".join(parts[:i])
        if any(head == path or head.startswith(f"{path}.") for head in removed):
            module = _module_at(model, path)
            if module is None or isinstance(module, nn.Identity):
                return True
    return False


def _module_at(model: nn.Module, path: str) -> nn.Module | None:
    module: nn.Module | None = model
    for name in path.split("."):
        module = module._modules.get(name) if module is not None else None
    return module


# the key of a timm train.py checkpoint's model EMA weights
EMA_STATE = "state_dict_ema"


def _extract_state_dict(obj: object, file: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping) and isinstance(obj.get(EMA_STATE), Mapping):
        # timm's train.py saves its EMA weights beside the live ones; its load_checkpoint reads
        # them by default (was: the live weights, without a word)
        log.info(f"backbone checkpoint {file}: its EMA weights ({EMA_STATE}), as timm reads them")
        obj = obj[EMA_STATE]
    elif isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
        # A classifier checkpoint: keep only the backbone's part.
        if any(str(k).startswith(_LIGHTNING_PREFIX) for k in obj):
            obj = {
                k[len(_LIGHTNING_PREFIX) :]: v
                for k, v in obj.items()
                if k.startswith(_LIGHTNING_PREFIX)
            }
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise SFTError(
            f"backbone checkpoint {file} is neither a state_dict nor a dict with a 'state_dict' entry"
        )
    state = dict(obj)
    for prefix in _WRAPPER_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


# a peft adapter (adapter_config.json + adapter_model.safetensors) given as a backbone's weights
PEFT_ADAPTER_HINT = (
    f"it is a peft adapter, {peft_merge_advice('<adapter folder>')} as "
    "model.backbone.model_name_or_path"
)


def load_state_dict_checked(
    model: nn.Module, state: Mapping[str, torch.Tensor], source: str
) -> None:
    """Strict load that reports mismatching keys and shapes as one SFTError line."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or wrong_shape:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {first_few(missing, 3)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {first_few(unexpected, 3)})")
        if wrong_shape:
            parts.append(f"{len(wrong_shape)} shape mismatches (e.g. {first_few(wrong_shape, 3)})")
        hint = (
            # peft's adapter_model.safetensors: the adapters alone (was: told to start from it
            # with ckpt_path=, which then said it was no sft checkpoint)
            PEFT_ADAPTER_HINT
            if state and all(".lora_" in k for k in state)
            # a LoRA run's checkpoint: its weights are base_layer + lora_A/B, not the backbone's
            else "it holds LoRA adapters (a run with adapter=lora): start from it with "
            f"ckpt_path={source} and that run's adapter settings, or, for a text backbone, "
            "export it with the adapters merged (sft-export formats=[hf]) and set "
            "model.backbone.model_name_or_path to the export's hf folder"
            if any(".lora_A." in k for k in unexpected)
            else "was it saved from the same backbone with the same options?"
        )
        raise SFTError(f"weights in {source} do not fit the backbone: {'; '.join(parts)} ({hint})")
    model.load_state_dict(state, strict=True)


def map_state_dict_by_position(
    source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], source_name: str
) -> dict[str, torch.Tensor]:
    """Rename `source`'s tensors to `target`'s keys, pairing them in order.

    For weights saved from a different implementation of the same architecture (same tensors in
    the same order, other names). Every shape must match, so a wrong pairing cannot pass silently.
    """
    if len(source) != len(target):
        raise SFTError(
            f"{source_name} holds {len(source)} tensors but the model expects {len(target)}; "
            "the packaged weights do not match this architecture"
        )
    mapped: dict[str, torch.Tensor] = {}
    for (src_key, tensor), (dst_key, ref) in zip(source.items(), target.items(), strict=True):
        if tensor.shape != ref.shape:
            raise SFTError(
                f"{source_name}: tensor {src_key} {tuple(tensor.shape)} does not fit "
                f"{dst_key} {tuple(ref.shape)}; the packaged weights do not match this architecture"
            )
        mapped[dst_key] = tensor
    return mapped


def packaged_file(package: str, relative: str, pip_name: str) -> Path:
    """Path of a data file shipped inside an installed package, without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SFTError(
            f"pretrained weights need the package {pip_name!r}, which is not installed: "
            f"{VISION_EXTRA_HINT} (or use pretrained=false)"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / relative
        if candidate.is_file():
            return candidate
    raise SFTError(
        f"package {pip_name!r} is installed but lacks {relative}; reinstall it: "
        f"pip install --force-reinstall {pip_name}"
    )


def load_packaged_weights(file: Path) -> dict[str, torch.Tensor]:
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # a damaged install: reinstalling the package fixes it
        raise SFTError(
            f"cannot read packaged weights {file} ({load_failure(err)}): reinstall its package"
        ) from err
