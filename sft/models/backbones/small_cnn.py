"""A few-thousand-parameter CNN: smoke tests, debugging configs, CPU benchmarks of the loop."""

from torch import nn

from sft.errors import SFTError

from .registry import register_backbone


class SmallCNN(nn.Module):
    """Three conv-BN-ReLU stages (stride 2 after the first) and global average pooling."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        layers, channels = [], 3
        for i, out in enumerate((width, 2 * width, 4 * width)):
            layers += [
                nn.Conv2d(channels, out, 3, stride=1 if i == 0 else 2, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
            ]
            channels = out
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.num_features = channels

    def forward(self, x):
        return self.features(x)


# no weights: the data's own statistics; a network for CIFAR-sized images
@register_backbone("small_cnn", normalization=None, image_size=32)
def small_cnn(pretrained: bool = False, width: int = 16) -> nn.Module:
    if pretrained:
        raise SFTError("backbone 'small_cnn' has no pretrained weights; set pretrained=false")
    return SmallCNN(width)
