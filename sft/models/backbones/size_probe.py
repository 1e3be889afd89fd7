"""Whether a backbone that failed on its first batch of images fails for their size.

Decided by running it at its own size rather than by reading the error: a fixed-size model
fails in no one way (timm asserts, a layer's shape RuntimeError, a bad `view`), and errors of
other causes (a float type, a memory layout) name sizes too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .registry import resolve_input_spec
from .wrappers import inner_model


def own_side(backbone_cfg: Mapping[str, Any]) -> int | None:
    """The image side the backbone `backbone_cfg` builds is made for, before any resize
    (`input_size`): timm's `img_size` when set, else its family's; None when unknown."""
    built = backbone_cfg.get("img_size")
    sides = list(built) if isinstance(built, Sequence) and not isinstance(built, str) else [built]
    if sides and all(isinstance(s, int) and not isinstance(s, bool) for s in sides):
        return sides[0] if len(set(sides)) == 1 else None  # (h, w) of two: no square probe
    cfg = {key: value for key, value in backbone_cfg.items() if key != "input_size"}
    return resolve_input_spec(cfg).image_size


def fails_for_size(
    backbone: nn.Module, backbone_cfg: Mapping[str, Any], images: torch.Tensor, side: int
) -> bool:
    """Whether the batch `images`, given to `backbone` at `side` x `side`, failed for that
    size: its own model (inside input_size's resize) runs on one of them at its own side, in
    eval mode, without gradients, in the same float type, layout and autocast. True when that
    side is unknown (as sft said before it looked)."""
    own = own_side(backbone_cfg)
    if own is None:
        return True
    if own == side:  # the size it is made for: the failure is not the size
        return False
    model = inner_model(backbone)
    one = images[:1]
    probe = F.interpolate(one.float(), size=(own, own), mode="bilinear", align_corners=False)
    probe = probe.to(one.dtype)
    if not one.is_contiguous() and one.is_contiguous(memory_format=torch.channels_last):
        probe = probe.contiguous(memory_format=torch.channels_last)
    # each module's own mode back afterwards: .train() would undo frozen norm statistics
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            model(probe)
    except Exception:  # it fails at its own size too: the error is not the batch's size
        return False
    finally:
        for module, mode in modes:
            module.training = mode
    return True
