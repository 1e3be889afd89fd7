"""Backbone factory: `create_backbone(name, ...)` over a registry of named builders."""

# Importing the modules registers their backbones.
from . import (  # noqa: F401
    efficientnet_lite,
    huggingface,
    mobilenet,
    small_cnn,
    timm_models,
    torchvision_models,
    torchvision_resnet,
)
from .efficientnet_lite import efficientnet_lite0_imagenet
from .huggingface import HFEncoder
from .layers import layer_numbering
from .registry import (
    backbone_modality,
    backbone_speed_hints,
    config_as_saved,
    create_backbone,
    list_backbones,
    local_paths_read,
    register_backbone,
    resolve_input_spec,
)
from .wrappers import ResizeInput, inner_model, load_backbone_checkpoint

__all__ = [
    "HFEncoder",
    "ResizeInput",
    "backbone_modality",
    "backbone_speed_hints",
    "config_as_saved",
    "create_backbone",
    "efficientnet_lite0_imagenet",
    "inner_model",
    "layer_numbering",
    "list_backbones",
    "load_backbone_checkpoint",
    "local_paths_read",
    "register_backbone",
    "resolve_input_spec",
]
