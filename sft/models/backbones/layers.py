"""Which layer of a backbone each of its parameters is in, for layer-wise LR decay."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from .wrappers import inner_model


def layer_numbering(backbone: nn.Module) -> tuple[Callable[[str], int], int] | None:
    """(layer_id(param_name), the id after the last layer) of a backbone that numbers its layers:
    sft's `layer_id`/`num_layers` protocol, or a timm model's `group_matcher`, numbered as timm's
    own layer decay numbers them (0 for the stem, one group per block; the last block, with the
    final norm, trains at the full lr)."""
    if hasattr(backbone, "layer_id") and hasattr(backbone, "num_layers"):
        return backbone.layer_id, backbone.num_layers + 1
    body = inner_model(backbone)
    if not hasattr(body, "group_matcher"):
        return None
    from timm.models import group_parameters

    groups = group_parameters(body, body.group_matcher(coarse=False), reverse=True)
    prefix = "body." if body is not backbone else ""
    top = max(groups.values(), default=0)
    return (lambda name: groups.get(name.removeprefix(prefix), top)), top
