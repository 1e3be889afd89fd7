"""torchvision ResNets as feature extractors (fc removed)."""

from __future__ import annotations

import os
import urllib.error
from collections.abc import Callable

import torch
import torchvision
from torch import nn
from torchvision.models import ResNet18_Weights, ResNet34_Weights, ResNet50_Weights

from sft.errors import out_of_memory

from .build_errors import download_failure, url_unreachable
from .registry import register_backbone


def _build_resnet(
    name: str,
    factory: Callable[..., torchvision.models.ResNet],
    weights: torchvision.models.WeightsEnum,
    pretrained: bool,
    cifar_stem: bool,
) -> nn.Module:
    cache = os.path.join(torch.hub.get_dir(), "checkpoints")
    what = f"the ImageNet weights of {name}"
    if pretrained and (unreachable := url_unreachable(weights.url, cache)) is not None:
        raise download_failure(what, weights.url, unreachable, cache)
    try:
        # The real torchvision path: downloads into the torch hub cache, or reads it from there.
        model = factory(weights=weights if pretrained else None)
    except (urllib.error.URLError, OSError, RuntimeError) as err:
        if not pretrained or out_of_memory(err) is not None:  # (out of memory: said as such)
            raise
        raise download_failure(what, weights.url, err, cache) from err
    if cifar_stem:
        # 32x32 inputs: a 7x7/2 conv plus max-pool would shrink them to 8x8 before layer1.
        # The pretrained conv1 cannot be reused at this shape, so it starts from random init.
        model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    model.num_features = model.fc.in_features
    model.fc = nn.Identity()
    return model


def _image_size(cfg: dict) -> int:
    """The CIFAR stem is built for 32x32 images (at 224 it would cost 49x the compute)."""
    return 32 if cfg.get("cifar_stem") else 224


# bf16 autocast + channels_last: 1.5x fp32 NCHW on an AMX CPU (benchmarks/precision_layout.py)
@register_backbone("resnet18", cpu_bf16=True, channels_last=True, image_size=_image_size)
def resnet18(pretrained: bool = False, cifar_stem: bool = False) -> nn.Module:
    return _build_resnet(
        "resnet18",
        torchvision.models.resnet18,
        ResNet18_Weights.IMAGENET1K_V1,
        pretrained,
        cifar_stem,
    )


@register_backbone("resnet34", cpu_bf16=True, channels_last=True, image_size=_image_size)
def resnet34(pretrained: bool = False, cifar_stem: bool = False) -> nn.Module:
    return _build_resnet(
        "resnet34",
        torchvision.models.resnet34,
        ResNet34_Weights.IMAGENET1K_V1,
        pretrained,
        cifar_stem,
    )


@register_backbone("resnet50", cpu_bf16=True, channels_last=True, image_size=_image_size)
def resnet50(pretrained: bool = False, cifar_stem: bool = False) -> nn.Module:
    return _build_resnet(
        "resnet50",
        torchvision.models.resnet50,
        ResNet50_Weights.IMAGENET1K_V1,
        pretrained,
        cifar_stem,
    )
