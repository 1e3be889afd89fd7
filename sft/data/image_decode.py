"""One image decoder for training and inference: file -> RGB -> square uint8 (3, S, S) tensor."""

from __future__ import annotations

import os
import warnings
from typing import Annotated, Literal

import numpy as np
import torch
from annotated_types import Interval
from PIL import Image
from torchvision.transforms import v2

from sft.errors import SFTError, denied_access

# data.crop_pct: the centre square's share of the shorter side, as timm's crop_pct; None: the
# whole image
CropShare = Annotated[float, Interval(gt=0, le=1)] | None
Interpolation = Literal["bilinear", "bicubic"]

# what PIL raises for a file it cannot decode
DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def quiet_large_image_warning() -> None:
    """PIL warns for an image of 89 to 179 million pixels (its bomb guard's first step) with its
    own source line, once per worker; the image decodes and is resized as any other. Above that
    PIL raises, and the file is named with what to do (decode_error_text). Set at import (a
    spawned DataLoader worker) and where decoding starts (a process whose warning filters were
    reset since, as pytest does for each test)."""
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


quiet_large_image_warning()


class ImageDecoder:
    """Decode an image file to RGB and resize it to `size` x `size` (antialiased), uint8 CHW:
    the whole image squashed to the square, or with `crop_pct` its centre square, as timm's
    eval transform takes it (the shorter side resized to `size / crop_pct`, then the centre
    `size` x `size`: aspect kept; 1.0 crops only the longer side).

    The image-folder datasets use it as their loader (in the DataLoader workers: picklable),
    and sft-predict / sft-export decode the user's images with it as the model was trained.
    """

    def __init__(
        self, size: int, crop_pct: CropShare = None, interpolation: Interpolation = "bilinear"
    ) -> None:
        quiet_large_image_warning()
        self.size = int(size)
        self.crop_pct = crop_pct
        self.interpolation = interpolation
        self._filter = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}[
            interpolation
        ]

    def describe(self) -> str:
        """How an image becomes the model's input square, in words (export metadata, logs)."""
        how = (
            "the whole image squashed to"
            if self.crop_pct is None
            else f"its centre square ({self.crop_pct:g} of the shorter side) resized to"
        )
        return f"{how} {self.size} x {self.size} px ({self.interpolation}, antialiased)"

    def resize(self, image: Image.Image) -> torch.Tensor:
        """`image` (RGB) as the (3, size, size) uint8 tensor. PIL's resize filters antialias
        when they shrink, as torchvision's Resize of a PIL image does (it calls this)."""
        box = None
        if self.crop_pct is not None:
            # the centre square first, then one resize: timm's resize-then-crop without
            # resizing all of a long image (a 3000 x 2 strip to a 256-px shorter side: 1.2 GB)
            side = min(image.size) * self.crop_pct
            left, top = (image.width - side) / 2, (image.height - side) / 2
            box = (left, top, left + side, top + side)
        resized = image.resize((self.size, self.size), self._filter, box=box)
        return v2.functional.pil_to_tensor(resized)

    def __call__(self, path: str | os.PathLike | Image.Image) -> torch.Tensor:
        if isinstance(path, Image.Image):  # decoded already (sft.api's predictor)
            return self.resize(to_rgb(upright(path)))
        # the images were checked when listed: these are files changed since (were: tracebacks
        # from a DataLoader worker, mid-training)
        try:
            with Image.open(path) as image:
                return self.resize(to_rgb(upright(image)))
        except FileNotFoundError:
            raise SFTError(
                f"{path}: no such file (deleted or moved since the images were listed)"
            ) from None
        except PermissionError as err:  # (raised as it is, a DataLoader worker's lost its path)
            raise denied_access(err) from None
        except DECODE_ERRORS as err:
            why = f"{type(err).__name__}: {decode_error_text(err, path)}"
            raise SFTError(
                f"{path} cannot be decoded ({why}); it could be when the images were listed: was "
                "it changed since?"
            ) from None


def decode_error_text(err: BaseException, path: str | os.PathLike) -> str:
    """`err`'s message in one line, without the path PIL puts in it ("cannot identify image
    file '<path>'"): the line names the file once."""
    path = str(path)
    text = " ".join(str(err).replace(repr(path), "").replace(path, "").split()).rstrip(":")
    if isinstance(err, Image.DecompressionBombError):  # PIL's guard, not a broken file
        text += "; images this large are refused: save it smaller"
    return text


EXIF_ORIENTATION = 0x0112
# the turn each EXIF orientation (2-8) asks for, as PIL's ImageOps.exif_transpose applies it;
# applied here directly: exif_transpose also rewrites the EXIF block, which costs and can fail
ORIENTATION_TURNS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def upright(image: Image.Image) -> Image.Image:
    """`image` turned the way up its EXIF Orientation tag says (a camera's JPEG is often stored
    sideways with one), as image viewers show it; an image without the tag as it is."""
    image.load()  # a file that does not decode fails here, as before (PNG's EXIF needs it)
    try:
        turn = ORIENTATION_TURNS.get(image.getexif().get(EXIF_ORIENTATION))
    except (OSError, SyntaxError, ValueError, TypeError):  # an unreadable EXIF block: as viewers
        return image
    return image if turn is None else image.transpose(turn)


# PIL's convert("RGB") clips pixel values at 255: a 16-bit greyscale PNG or TIFF (modes I;16*)
# came out nearly white. Those are scaled to 8 bits, as is a 16-bit PGM/PPM, which PIL reads as
# 32-bit integers (mode I) already scaled to 0..65535 whatever its maximum; other 32-bit integer
# and float pixels (modes I, F) have no agreed range to scale from, so they are refused rather
# than guessed.
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
UNSCALED_MODES = ("I", "F")
TIFF_BITS_PER_SAMPLE, TIFF_SAMPLE_FORMAT = 258, 339


def _sixteen_bit(image: Image.Image) -> bool:
    return image.mode in SIXTEEN_BIT_MODES or (image.mode == "I" and image.format == "PPM")


def check_mode(image: Image.Image) -> None:
    """ValueError for pixels that cannot be brought to 8 bits without guessing their range."""
    if image.mode in UNSCALED_MODES and not _sixteen_bit(image):
        kind = "integer" if image.mode == "I" else "float"
        tags = getattr(image, "tag_v2", {})  # a TIFF says what it stores (was: "32-bit" for all)
        if bits := tags.get(TIFF_BITS_PER_SAMPLE):
            signed = "signed " if tags.get(TIFF_SAMPLE_FORMAT) in (2, (2,)) else ""
            stored = f"{bits[0] if isinstance(bits, tuple) else bits}-bit {signed}{kind} pixels"
        else:
            stored = f"{kind} pixels"
        raise ValueError(
            f"{stored} (PIL mode {image.mode}) have no known 8-bit scale; save the image with 8 "
            "or 16 bits per channel, unsigned"
        )


def to_rgb(image: Image.Image) -> Image.Image:
    """`image` as 8-bit RGB; 16-bit greyscale scaled to 8 bits (65535 -> 255)."""
    check_mode(image)
    if _sixteen_bit(image):
        pixels = np.asarray(image).astype(np.uint32)
        image = Image.fromarray(((pixels * 255 + 32767) // 65535).astype(np.uint8), "L")
    elif image.mode == "P" and "transparency" in image.info:
        # by way of RGBA, the same pixels: straight to RGB, PIL warns for every such image
        # (icons, screenshots) that it "should be converted to RGBA"
        image = image.convert("RGBA")
    return image.convert("RGB")
