"""Backbone factory: `create_backbone(name, ...)` over a registry of named builders."""

# Importing the modules registers their backbones.
from . import efficientnet_lite, huggingface, mobilenet, small_cnn, torchvision_resnet  # noqa: F401
from .efficientnet_lite import (
    EFFICIENTNET_LITE0_MEAN,
    EFFICIENTNET_LITE0_STD,
    efficientnet_lite0_imagenet,
)
from .huggingface import HFEncoder
from .mobilenet import MOBILENETV2_MEAN, MOBILENETV2_STD
from .registry import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    backbone_modality,
    backbone_normalization,
    backbone_speed_hints,
    create_backbone,
    list_backbones,
    register_backbone,
)
from .wrappers import ResizeInput, load_backbone_checkpoint

__all__ = [
    "EFFICIENTNET_LITE0_MEAN",
    "EFFICIENTNET_LITE0_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MOBILENETV2_MEAN",
    "MOBILENETV2_STD",
    "HFEncoder",
    "ResizeInput",
    "backbone_modality",
    "backbone_normalization",
    "backbone_speed_hints",
    "create_backbone",
    "efficientnet_lite0_imagenet",
    "list_backbones",
    "load_backbone_checkpoint",
    "register_backbone",
]
