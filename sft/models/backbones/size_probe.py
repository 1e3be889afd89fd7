"""Whether a backbone that failed on its first batch of images fails for their size.

Decided by running it rather than by reading the error: a fixed-size model fails in no one
way (timm asserts, a layer's shape RuntimeError, a bad `view`), and errors of other causes (a
float type, a memory layout, a batch too large) name sizes too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .registry import resolve_input_spec
from .wrappers import inner_model


def fails_for_size(
    backbone: nn.Module,
    backbone_cfg: Mapping[str, Any],
    images: torch.Tensor,
    failed_at: tuple[int, int],
) -> bool:
    """Whether the batch `images`, given to `backbone`'s own model (inside input_size's
    resize) at `failed_at` (height, width), failed for that size: one of them, in eval mode,
    without gradients, in the same float type, layout and autocast, fails at that size too
    and runs at the side the model is built for (its family's, or its size option)."""
    cfg = {key: value for key, value in backbone_cfg.items() if key != "input_size"}
    own = resolve_input_spec(cfg).image_size
    if own is None:  # not known: as sft said before it looked
        return True
    return (
        (own, own) != failed_at
        and not _runs(backbone, images, failed_at)
        and _runs(backbone, images, (own, own))
    )


def _runs(backbone: nn.Module, images: torch.Tensor, size: tuple[int, int]) -> bool:
    model = inner_model(backbone)
    one = images[:1]
    probe = F.interpolate(one.float(), size=size, mode="bilinear", align_corners=False)
    probe = probe.to(one.dtype)
    if not one.is_contiguous() and one.is_contiguous(memory_format=torch.channels_last):
        probe = probe.contiguous(memory_format=torch.channels_last)
    # each module's own mode back afterwards: .train() would undo frozen norm statistics
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            model(probe)
    except Exception:  # whatever it raises: it does not run at this size
        return False
    finally:
        for module, mode in modes:
            module.training = mode
    return True
