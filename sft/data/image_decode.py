"""One image decoder for training and inference: file -> RGB -> square uint8 (3, S, S) tensor."""

from __future__ import annotations

import os

import torch
from PIL import Image
from torchvision.transforms import v2


class ImageDecoder:
    """Decode an image file to RGB and resize it to `size` x `size` (antialiased), uint8 CHW.

    The image-folder datasets use it as their loader (in the DataLoader workers: picklable),
    and sft-predict / sft-export decode the user's images with it at the training resolution.
    """

    def __init__(self, size: int) -> None:
        self.size = int(size)
        self.resize = v2.Compose(
            [v2.Resize((self.size, self.size), antialias=True), v2.PILToTensor()]
        )

    def __call__(self, path: str | os.PathLike) -> torch.Tensor:
        with Image.open(path) as image:
            return self.resize(image.convert("RGB"))
