"""Batched image augmentation as tensor ops on whole batches, on whatever device the batch is on.

Hand-written rather than torchvision.transforms.v2 because v2 draws one set of random parameters
per call: applied to a batch tensor it gives every image the same crop and the same flip. Here
every sample gets its own crop offset and flip, drawn from the global torch RNG of the batch's
device (which Lightning's `seed_everything` seeds), and crop + flip are one gather.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from sft.errors import SFTError


def crop_flip(
    images: torch.Tensor,
    padding: int,
    shift_y: torch.Tensor,
    shift_x: torch.Tensor,
    flip: torch.Tensor | None = None,
) -> torch.Tensor:
    """Crop every image of a (B, C, H, W) batch at its own offset from the zero-padded image.

    `shift_y`/`shift_x` (B,) integers in [-padding, padding] move the H x W window relative to the
    original image (0 = identity); `flip` (B,) bool mirrors that sample horizontally. Keeps dtype.
    """
    b, c, h, w = images.shape
    dev = images.device
    padded = F.pad(images, (padding, padding, padding, padding)) if padding else images
    wp = w + 2 * padding
    rows = (shift_y.to(dev) + padding)[:, None] + torch.arange(h, device=dev)  # (B, H)
    cols = (shift_x.to(dev) + padding)[:, None] + torch.arange(w, device=dev)  # (B, W)
    if flip is not None:
        # Flipping is reading the window's columns backwards: fold it into the same gather.
        cols = torch.where(flip.to(dev)[:, None], cols.flip(1), cols)
    # One gather over flattened pixels, the (B, H*W) index shared by all channels: ~5x faster
    # on CPU than 4-tensor advanced indexing, which materialises a (B, C, H, W) index per dim.
    flat = (rows[:, :, None] * wp + cols[:, None, :]).view(b, 1, h * w).expand(b, c, h * w)
    return padded.reshape(b, c, -1).gather(2, flat).view(b, c, h, w)


def random_crop_flip(images: torch.Tensor, padding: int = 4, hflip: bool = True) -> torch.Tensor:
    """Per-sample random crop (zero padding `padding`) and random horizontal flip (p=0.5)."""
    b = images.shape[0]
    dev = images.device
    if padding == 0 and not hflip:
        return images
    shift_y = torch.randint(-padding, padding + 1, (b,), device=dev)
    shift_x = torch.randint(-padding, padding + 1, (b,), device=dev)
    flip = torch.rand(b, device=dev) < 0.5 if hflip else None
    return crop_flip(images, padding, shift_y, shift_x, flip)


def to_float_normalized(
    images: torch.Tensor, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """uint8 [0, 255] (or float [0, 1]) -> float32 `(x - mean) / std` (in place on one copy)."""
    dev = images.device
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=dev).view(1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32, device=dev).view(1, -1, 1, 1)
    to_unit = 1.0 / 255.0 if images.dtype == torch.uint8 else 1.0
    # copy=True: the in-place ops below must never write into a float input.
    x = images.to(torch.float32, copy=True)
    return x.mul_(to_unit / std_t).sub_(mean_t / std_t)


class ImageBatchTransform:
    """The on-device image transform shared by the image datamodules: (x uint8, y) -> (x float, y)."""

    def __init__(
        self,
        augment: bool,
        crop_padding: int,
        hflip: bool,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        check_augment_args(crop_padding, mean, std)
        self.augment = augment
        self.crop_padding = int(crop_padding)
        self.hflip = hflip
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    def __call__(self, batch: tuple[torch.Tensor, torch.Tensor], train: bool) -> tuple:
        x, y = batch[0], batch[1]
        if train and self.augment:
            x = random_crop_flip(x, self.crop_padding, self.hflip)
        return (to_float_normalized(x, self.mean, self.std), y, *batch[2:])


def check_augment_args(crop_padding: int, mean: Sequence[float], std: Sequence[float]) -> None:
    """Raise SFTError for augmentation settings a user got wrong."""
    if isinstance(crop_padding, bool) or not isinstance(crop_padding, int) or crop_padding < 0:
        raise SFTError(f"data.crop_padding must be an integer >= 0, got {crop_padding!r}")
    for key, vals in (("mean", mean), ("std", std)):
        try:
            floats = [float(v) for v in vals]
        except (TypeError, ValueError):
            raise SFTError(
                f"data.{key} must be 3 numbers (one per channel), got {vals!r}"
            ) from None
        if len(floats) != 3:
            raise SFTError(f"data.{key} must be 3 numbers (one per channel), got {vals!r}")
        if key == "std" and min(floats) <= 0:
            raise SFTError(f"data.std must be 3 positive numbers, got {vals!r}")
        # pixels are scaled to [0, 1] before they are normalised: a mean or std on the 0-255
        # scale (ImageNet's [123.7, 116.3, 103.5]) made every input about -2, a run at chance
        # without a word; no [0, 1] channel has a mean above 1 or a std above 0.5
        if max(abs(v) for v in floats) > 1:
            scaled = ", ".join(f"{v / 255:.3f}" for v in floats)
            raise SFTError(
                f"data.{key}={floats}: pixels are scaled to [0, 1] before they are normalised, "
                f"so give the {key} on that scale too (these / 255: [{scaled}])"
            )
