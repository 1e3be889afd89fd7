"""sft.data: CIFAR-10 / image-folder datamodules, few-label subsets, batched augmentation.

Offline, CPU. Needs CIFAR-10 in the python layout under $SFT_DATA_DIR (default: <repo>/data);
prepare it with `python ../shared/data/cifar10/prepare.py data --folder`.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from conftest import compose_config, logged_warnings, logs_warning
from hydra.utils import instantiate
from lightning.pytorch.plugins.precision import Precision
from PIL import Image
from torch.utils.data import DataLoader, DistributedSampler

import sft.data.cifar10 as cifar10_mod
from sft.contracts import CIFAR10, IMAGENET, SIGNED_UNIT, InputSpec
from sft.data import CIFAR10DataModule, ImageFolderDataModule, few_label_indices
from sft.data.augment import (
    BatchAugmentation,
    ImageBatchTransform,
    crop_flip,
    random_crop_flip,
    random_resized_crop,
    to_float_normalized,
)
from sft.data.base import SFTDataModule, TensorBatchDataset
from sft.data.image_decode import ImageDecoder
from sft.data.image_folder import undecodable
from sft.errors import SFTError
from sft.inference.inputs import read_images
from sft.models.backbones import resolve_input_spec

CIFAR10_MEAN, CIFAR10_STD = CIFAR10.mean, CIFAR10.std

REPO = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(os.environ.get("SFT_DATA_DIR") or REPO / "data")
CIFAR_DIR = DATA_ROOT / "cifar-10-batches-py"
IMAGES_DIR = DATA_ROOT / "cifar10-images"


def _require_cifar() -> Path:
    if not CIFAR_DIR.is_dir():
        pytest.fail(
            f"CIFAR-10 missing: expected {CIFAR_DIR}. Run "
            f"`python ../shared/data/cifar10/prepare.py {DATA_ROOT} --folder` "
            "(or set SFT_DATA_DIR to a directory holding cifar-10-batches-py)"
        )
    return DATA_ROOT


@pytest.fixture(scope="module")
def cifar() -> CIFAR10DataModule:
    dm = CIFAR10DataModule(str(_require_cifar()), download=False)
    dm.setup()
    return dm


@pytest.fixture(scope="module")
def few() -> CIFAR10DataModule:
    """250 training images (25 per class), small batches, no dropped batch."""
    dm = CIFAR10DataModule(
        str(_require_cifar()), samples_per_class=25, batch_size=32, drop_last=False, download=False
    )
    dm.setup("fit")
    return dm


def _counts(labels: torch.Tensor) -> list[int]:
    return torch.bincount(labels, minlength=10).tolist()


# ---------------------------------------------------------------- CIFAR-10 splits


def test_split_sizes_classes_and_storage(cifar: CIFAR10DataModule) -> None:
    assert cifar.num_classes == 10
    assert cifar.class_names[:3] == ["airplane", "automobile", "bird"]
    sizes = [len(d) for d in (cifar.train_data, cifar.val_data, cifar.test_data)]
    assert sizes == [45000, 5000, 10000]
    for data in (cifar.train_data, cifar.val_data, cifar.test_data):
        images, labels = data.tensors
        assert images.dtype == torch.uint8 and images.shape[1:] == (3, 32, 32)
        assert labels.dtype == torch.int64
    train_counts = _counts(cifar.train_data.tensors[1])
    val_counts = _counts(cifar.val_data.tensors[1])
    assert [a + b for a, b in zip(train_counts, val_counts, strict=True)] == [5000] * 10
    assert _counts(cifar.test_data.tensors[1]) == [1000] * 10


def test_val_split_fixed_and_disjoint_from_train(cifar: CIFAR10DataModule) -> None:
    again = CIFAR10DataModule(str(DATA_ROOT), download=False, samples_per_class=3, batch_size=8)
    again.setup("fit")
    # Same val split regardless of the few-label setting, and the same pixels.
    assert torch.equal(again.val_indices, cifar.val_indices)
    assert torch.equal(again.val_data.tensors[0], cifar.val_data.tensors[0])
    train, val = set(cifar.train_indices.tolist()), set(cifar.val_indices.tolist())
    assert not train & val and len(train | val) == 50000
    # The run seed draws subsets, not the validation set: seeds compare on one val split.
    other_seed = CIFAR10DataModule(str(DATA_ROOT), download=False, seed=1)
    other_seed.setup("validate")
    assert torch.equal(other_seed.val_indices, cifar.val_indices)
    other_split = CIFAR10DataModule(str(DATA_ROOT), download=False, split_seed=1)
    other_split.setup("validate")
    assert not torch.equal(other_split.val_indices, cifar.val_indices)


def test_a_validation_split_leaving_classes_without_training_images_is_warned_about(caplog):
    """data.val_size=49990 leaves 10 training images, not of every class: the model gets
    outputs it never learns (image folders and text data said so; CIFAR-10 did not)."""
    dm = CIFAR10DataModule(str(DATA_ROOT), download=False, val_size=49990, batch_size=4)
    with logs_warning(caplog, r"cifar-10-batches-py: no training examples of \d of the 10"):
        dm.setup("fit")


@pytest.mark.parametrize("data", ["cifar10", "image_folder"])
def test_an_unseeded_run_draws_the_seed_0_subset_of_image_data(data, tmp_path):
    """`seed=null` (conf/train.yaml: "null: unseeded") with image data: `error: data.seed:
    expected an integer, got None` (text data took it as 0)."""
    from sft.utils.config_types import check_config_types

    overrides = [f"data={data}", "seed=null", "data.samples_per_class=3"]
    cfg = compose_config("train", overrides, tmp_path)
    check_config_types(cfg.data, "data")
    assert instantiate(cfg.data).seed == 0


def test_few_label_datamodule_counts(few: CIFAR10DataModule, cifar: CIFAR10DataModule) -> None:
    assert _counts(few.train_data.tensors[1]) == [25] * 10
    assert set(few.train_indices.tolist()) <= set(cifar.train_indices.tolist())
    assert len(few.val_data) == 5000


def test_hparams_are_plain_and_rebuild(few: CIFAR10DataModule) -> None:
    hp = dict(few.hparams)
    assert hp["data_dir"] == str(DATA_ROOT) and hp["samples_per_class"] == 25
    assert isinstance(hp["mean"], list) and all(isinstance(v, float) for v in hp["mean"])
    rebuilt = CIFAR10DataModule(**hp)
    assert rebuilt.hparams == few.hparams


def test_truncated_pickle_names_file(tmp_path: Path) -> None:
    src = _require_cifar() / "cifar-10-batches-py"
    dst = tmp_path / "cifar-10-batches-py"
    dst.mkdir()
    (dst / "batches.meta").write_bytes((src / "batches.meta").read_bytes())
    (dst / "data_batch_1").write_bytes((src / "data_batch_1").read_bytes()[:5000])
    dm = CIFAR10DataModule(str(tmp_path), download=False)
    with pytest.raises(SFTError, match="data_batch_1"):
        dm.setup("fit")


def test_a_cifar_file_that_names_code_is_refused_unrun(tmp_path: Path) -> None:
    """The batches were read with pickle.load: a crafted file under a data_dir (which a
    checkpoint's settings may name, for sft-eval and sft-export) ran its code as it loaded."""
    import os
    import pickle

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    dst = tmp_path / "cifar-10-batches-py"
    dst.mkdir()
    (dst / "batches.meta").write_bytes(pickle.dumps({b"label_names": Payload()}))
    dm = CIFAR10DataModule(str(tmp_path), download=False)
    with pytest.raises(
        SFTError, match=r"batches\.meta is not a readable batches\.meta \(it names "
    ):
        dm.setup("fit")
    assert not marker.exists()


# ---------------------------------------------------------------- few-label subsets

LABELS = [0] * 100 + [1] * 50 + [2] * 10 + [3] * 3  # deliberately unbalanced


def _per_class(indices: list[int]) -> list[int]:
    return torch.bincount(torch.tensor(LABELS)[indices], minlength=4).tolist()


def test_samples_per_class_exact_and_short_classes_take_all(caplog) -> None:
    """A class with fewer samples than asked takes all it has, with a warning saying so (was:
    silent, so a study's "k per class" point could quietly be smaller)."""
    with logs_warning(caplog, r"samples_per_class=5: 1 of the 4 classes .* smallest 3"):
        idx = few_label_indices(LABELS, samples_per_class=5, seed=0)
    assert _per_class(idx) == [5, 5, 5, 3]  # class 3 has only 3 samples: all of them
    assert idx == sorted(idx) and len(set(idx)) == len(idx)


def test_train_fraction_is_stratified(caplog) -> None:
    """At least one sample per class even when the fraction rounds to zero, with a warning
    saying so (was: silent, so a study's smallest fraction could quietly be larger)."""
    assert _per_class(few_label_indices(LABELS, train_fraction=0.1)) == [10, 5, 1, 1]
    with logs_warning(caplog, r"train_fraction=0.01: 3 of the 4 classes .* largest 50\)"):
        idx = few_label_indices(LABELS, train_fraction=0.01)
    assert _per_class(idx) == [1, 1, 1, 1]
    assert few_label_indices(LABELS, train_fraction=1.0) == list(range(len(LABELS)))
    assert few_label_indices(torch.tensor(LABELS)) == list(range(len(LABELS)))


def test_subsets_seeded_deterministic_and_nested() -> None:
    a = few_label_indices(torch.tensor(LABELS), samples_per_class=4, seed=7)
    assert a == few_label_indices(LABELS, samples_per_class=4, seed=7)
    assert a != few_label_indices(LABELS, samples_per_class=4, seed=8)
    assert set(a) <= set(few_label_indices(LABELS, samples_per_class=8, seed=7))


@pytest.mark.parametrize("fraction", [0, 0.0, 1.5, -0.1])
def test_bad_train_fraction_raises(fraction: float) -> None:
    with pytest.raises(SFTError, match="train_fraction"):
        few_label_indices(LABELS, train_fraction=fraction)
    with pytest.raises(SFTError, match="train_fraction"):
        CIFAR10DataModule("unused", train_fraction=fraction)


def test_bad_samples_per_class_and_both_set_raise() -> None:
    with pytest.raises(SFTError, match="samples_per_class"):
        few_label_indices(LABELS, samples_per_class=0)
    with pytest.raises(SFTError, match="both set"):
        few_label_indices(LABELS, train_fraction=0.5, samples_per_class=2)


# ---------------------------------------------------------------- augmentation


def _images(b: int = 8, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, 3, 32, 32), dtype=torch.uint8, generator=g)


def test_transform_batch_shape_and_dtype(few: CIFAR10DataModule) -> None:
    x, y = next(iter(few.train_dataloader()))
    assert x.dtype == torch.uint8 and x.shape == (32, 3, 32, 32) and y.dtype == torch.int64
    for train in (True, False):
        out_x, out_y = few.transform_batch((x, y), train=train)
        assert out_x.dtype == torch.float32 and out_x.shape == x.shape
        assert out_y is y


def test_zero_shift_is_identity_and_shifts_move_pixels() -> None:
    x = _images()
    zero = torch.zeros(8, dtype=torch.int64)
    assert torch.equal(crop_flip(x, 4, zero, zero), x)
    assert torch.equal(crop_flip(x, 0, zero, zero), x)
    assert torch.equal(crop_flip(x, 4, zero, zero, torch.ones(8, dtype=torch.bool)), x.flip(-1))
    down = crop_flip(x, 4, zero + 2, zero - 3)  # window 2 rows down, 3 columns left
    assert torch.equal(down[:, :, :-2, 3:], x[:, :, 2:, :-3])
    assert (down[:, :, -2:, :] == 0).all() and (down[:, :, :, :3] == 0).all()


def test_flips_and_crops_vary_per_sample() -> None:
    torch.manual_seed(0)
    same = _images(1).expand(64, -1, -1, -1).contiguous()
    flipped = random_crop_flip(same, padding=0, hflip=True)
    is_flipped = (flipped == same.flip(-1)).flatten(1).all(1)
    is_plain = (flipped == same).flatten(1).all(1)
    assert (is_flipped | is_plain).all() and is_flipped.any() and is_plain.any()

    cropped = random_crop_flip(same, padding=4, hflip=False)
    candidates = torch.stack(
        [
            crop_flip(same[:1], 4, torch.tensor([dy]), torch.tensor([dx]))[0]
            for dy in range(-4, 5)
            for dx in range(-4, 5)
        ]
    )
    match = (cropped[:, None] == candidates[None]).flatten(2).all(2)  # (64, 81)
    assert match.any(1).all()  # every output is a valid padded crop
    assert len({tuple(row.nonzero().flatten().tolist()) for row in match}) > 10


def test_augmentation_follows_global_seed() -> None:
    x = _images(16)
    torch.manual_seed(3)
    a = random_crop_flip(x)
    torch.manual_seed(3)
    assert torch.equal(a, random_crop_flip(x))


def test_no_augment_path_is_plain_normalisation() -> None:
    x, y = _images(), torch.arange(8)
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    expected = (x.float() / 255 - mean) / std
    for tf, train in (
        (ImageBatchTransform(BatchAugmentation(augment=False), CIFAR10_MEAN, CIFAR10_STD), True),
        (ImageBatchTransform(BatchAugmentation(), CIFAR10_MEAN, CIFAR10_STD), False),
    ):
        out, _ = tf((x, y), train=train)
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(to_float_normalized(x, CIFAR10_MEAN, CIFAR10_STD), expected)
    unit = x.float() / 255  # float input in [0, 1]: same result, input left untouched
    torch.testing.assert_close(to_float_normalized(unit, CIFAR10_MEAN, CIFAR10_STD), expected)
    assert torch.equal(unit, x.float() / 255)


def test_timm_style_augmentation_of_a_training_batch() -> None:
    """RandAugment, random erasing, MixUp and CutMix (timm's --aa, --reprob, --mixup,
    --cutmix) were missing: each is per image where timm's is (one batch tensor given to a
    torchvision transform draws one set of parameters for all), MixUp and CutMix give soft
    labels, and nothing of them touches a batch that does not train."""
    x, y = _images(16), torch.arange(16) % 10
    plain = ImageBatchTransform(BatchAugmentation(augment=False), CIFAR10_MEAN, CIFAR10_STD)
    expected, _ = plain((x, y), train=True)

    def transform(**settings: Any) -> ImageBatchTransform:
        return ImageBatchTransform(
            BatchAugmentation(augment=False, **settings), CIFAR10_MEAN, CIFAR10_STD
        )

    torch.manual_seed(0)
    out, labels = transform(rand_augment=9)((x, y), train=True)
    assert out.shape == expected.shape and torch.equal(labels, y)
    changed = [not torch.equal(out[i], expected[i]) for i in range(16)]
    assert sum(changed) > 1  # RandAugment changed them
    erased, _ = transform(random_erasing=1.0)((x, y), train=True)
    zero_share = [(erased[i] == 0).float().mean().item() for i in range(16)]
    assert all(share >= 0.02 for share in zero_share) and len(set(zero_share)) > 1
    for mix in ({"mixup_alpha": 0.8}, {"cutmix_alpha": 1.0}):
        mixed, soft = transform(**mix)((x, y), train=True, num_classes=10)
        assert soft.shape == (16, 10) and torch.allclose(soft.sum(-1), torch.ones(16))
        assert not torch.equal(mixed, expected)
    for settings in ({"rand_augment": 9}, {"random_erasing": 1.0}, {"mixup_alpha": 0.8}):
        out, labels = transform(**settings)((x, y), train=False, num_classes=10)
        assert torch.equal(out, expected) and torch.equal(labels, y)


def crop_boxes(crops: torch.Tensor) -> torch.Tensor:
    """(left, top, width, height) of each crop of `coordinates()`, read from its pixels: a
    bilinear resize keeps the coordinates linear, pixel j's centre at `left + (j + 0.5) width /
    W`; read inside the crop, as the edge pixels of an enlarged crop are clamped."""
    side = crops.shape[-1]
    a, b = side // 4, 3 * side // 4
    x, y = crops[:, 0, 0], crops[:, 1, :, 0]
    bin_w, bin_h = (x[:, b] - x[:, a]) / (b - a), (y[:, b] - y[:, a]) / (b - a)
    left, top = x[:, a] - (a + 0.5) * bin_w, y[:, a] - (a + 0.5) * bin_h
    return torch.stack([left, top, bin_w * side, bin_h * side], dim=1)


def coordinates(b: int, side: int = 32) -> torch.Tensor:
    """Float images whose channel 0 holds each pixel centre's column coordinate, channel 1 its
    row's (x + 0.5, y + 0.5)."""
    centres = torch.arange(side, dtype=torch.float32) + 0.5
    image = torch.stack([centres.expand(side, side), centres[:, None].expand(side, side)])
    return torch.cat([image, image[:1]]).expand(b, -1, -1, -1).contiguous()


def test_random_resized_crops_are_torchvisions_boxes_per_image() -> None:
    """timm's and torchvision's RandomResizedCrop (timm's --scale, --ratio) was missing: each image
    gets its own box, of an area fraction in crop_scale and an aspect ratio in crop_ratio, inside
    the image, resized back to its side."""
    torch.manual_seed(0)
    boxes = crop_boxes(random_resized_crop(coordinates(256), (0.08, 1.0), (3 / 4, 4 / 3)))
    left, top, width, height = boxes.unbind(1)
    area = width * height / 32**2
    assert (area > 0.08 - 1e-3).all() and (area < 1 + 1e-3).all()
    assert area.min() < 0.2 and area.max() > 0.8  # drawn over the range
    ratio = width / height
    assert (ratio > 3 / 4 - 1e-3).all() and (ratio < 4 / 3 + 1e-3).all()
    assert (left > -1e-3).all() and (top > -1e-3).all()
    assert (left + width < 32 + 1e-3).all() and (top + height < 32 + 1e-3).all()
    assert len({round(v, 2) for v in left.tolist()}) > 100  # one box per image
    # the whole image: the image itself, uint8 unchanged
    x = _images(4)
    assert torch.equal(random_resized_crop(x, (1.0, 1.0), (1.0, 1.0)), x)
    # no draw fits (a 2:1 to 3:1 box of 90 % of a square): the whole width, the ratio clamped
    # to 2, centred, as torchvision falls back
    fallback = crop_boxes(random_resized_crop(coordinates(4), (0.9, 1.0), (2.0, 3.0)))
    expected = torch.tensor([0.0, 8.0, 32.0, 16.0]).expand(4, -1)
    torch.testing.assert_close(fallback, expected, atol=1e-3, rtol=0)
    # a training batch with crop_scale: cropped and flipped per image, following the seed
    settings = BatchAugmentation(crop_scale=(0.08, 1.0))
    transform = ImageBatchTransform(settings, CIFAR10_MEAN, CIFAR10_STD)
    x, y = _images(16), torch.arange(16) % 10
    torch.manual_seed(1)
    out, _ = transform((x, y), train=True)
    torch.manual_seed(1)
    again, _ = transform((x, y), train=True)
    plain, _ = transform((x, y), train=False)
    assert torch.equal(out, again) and out.shape == plain.shape
    assert all(not torch.equal(out[i], plain[i]) for i in range(16))


def test_crop_settings_are_kept_as_plain_lists_a_checkpoint_loads(data_dir, tmp_path) -> None:
    from omegaconf import ListConfig

    dm = CIFAR10DataModule(data_dir=str(data_dir), crop_scale=ListConfig([0.08, 1]))
    assert dm.hparams.crop_scale == [0.08, 1.0] and type(dm.hparams.crop_scale) is list
    torch.save(dict(dm.hparams), tmp_path / "hparams.pt")
    assert torch.load(tmp_path / "hparams.pt", weights_only=True)["crop_scale"] == [0.08, 1.0]
    # the random-resized crop pads nothing: a padding the padded crop refuses is left unused
    unpadded = CIFAR10DataModule(
        data_dir=str(data_dir),
        samples_per_class=2,
        batch_size=4,
        crop_padding=40,
        crop_scale=[0.5, 1.0],
    )
    unpadded.setup("fit")
    assert unpadded.train_dataloader() is not None


@pytest.mark.parametrize(
    ("setting", "line"),
    [
        (
            {"crop_scale": [0.5, 0.1]},
            "data.crop_scale must be [min, max], fractions of the image's area in (0, 1], min <= "
            "max (e.g. [0.08, 1.0]), got [0.5, 0.1]",
        ),
        ({"crop_scale": [0, 1]}, "data.crop_scale must be [min, max]"),
        ({"crop_scale": 0.5}, "data.crop_scale must be [min, max]"),
        ({"crop_ratio": [1.0]}, "data.crop_ratio must be [min, max], aspect ratios"),
        ({"rand_augment": 31}, "data.rand_augment must be a magnitude from 0 to 30"),
        ({"random_erasing": 1.5}, "data.random_erasing must be a probability in [0, 1], got 1.5"),
        ({"mixup_alpha": -1}, "data.mixup_alpha must be a number >= 0 (0: none), got -1"),
    ],
)
def test_an_augmentation_setting_out_of_range_is_one_line(data_dir, setting, line) -> None:
    with pytest.raises(SFTError) as err:
        CIFAR10DataModule(data_dir=str(data_dir), **setting)
    assert str(err.value).startswith(line)


def test_normalisation_given_by_the_user_else_the_backbone_else_the_dataset(data_dir) -> None:
    def used(dm):
        return dm.transform.mean, dm.transform.std, (dm.hparams.mean, dm.hparams.std)

    pretrained = InputSpec("image", SIGNED_UNIT)
    dm = CIFAR10DataModule(data_dir=str(data_dir))
    assert used(dm)[:2] == (CIFAR10.mean, CIFAR10.std)  # before it is configured: the dataset's
    dm.configure_input(pretrained)
    assert used(dm) == (SIGNED_UNIT.mean, SIGNED_UNIT.std, ([0.5] * 3, [0.5] * 3))  # recorded
    dm = CIFAR10DataModule(data_dir=str(data_dir))
    dm.configure_input(InputSpec("image"))  # a backbone trained from scratch
    assert used(dm)[:2] == (CIFAR10.mean, CIFAR10.std)
    dm = CIFAR10DataModule(data_dir=str(data_dir), mean=IMAGENET.mean, std=IMAGENET.std)
    dm.configure_input(pretrained)  # the user's choice stands
    assert used(dm)[:2] == (IMAGENET.mean, IMAGENET.std)
    with pytest.raises(SFTError, match="give both or neither"):
        CIFAR10DataModule(data_dir=str(data_dir), mean=IMAGENET.mean)


def test_modalities_are_checked_only_where_declared(data_dir) -> None:
    class Mine(SFTDataModule):  # a user's datamodule that declares no modality
        pass

    Mine().configure_input(InputSpec("text"))
    CIFAR10DataModule(data_dir=str(data_dir)).configure_input(InputSpec(None))  # own backbone


def test_a_users_datamodule_predicts_the_split_sft_eval_scores() -> None:
    """sft-eval's predictions of a user's datamodule that defines only the loaders Lightning
    asks for (was: `predict_dataloader` must be implemented)."""

    class Mine(SFTDataModule):
        def val_dataloader(self):
            return "validation loader"

        def test_dataloader(self):
            return "test loader"

    assert Mine().predict_dataloader() == "test loader"
    unlabelled = Mine()
    unlabelled.has_labelled_test = False
    assert unlabelled.predict_dataloader() == "validation loader"


def test_a_text_backbone_on_image_data_is_one_clear_line(data_dir) -> None:
    with pytest.raises(SFTError, match="takes text inputs but CIFAR10DataModule gives images"):
        CIFAR10DataModule(data_dir=str(data_dir)).configure_input(InputSpec("text"))


def test_on_after_batch_transfer_uses_trainer_state(few: CIFAR10DataModule) -> None:
    x, y = _images(), torch.arange(8)
    plain = to_float_normalized(x, CIFAR10_MEAN, CIFAR10_STD)
    assert few.trainer is None
    assert torch.equal(few.on_after_batch_transfer((x, y), 0)[0], plain)
    try:
        few.trainer = SimpleNamespace(
            training=False, overfit_batches=0, precision_plugin=Precision()
        )
        assert torch.equal(few.on_after_batch_transfer((x, y), 0)[0], plain)
        few.trainer = SimpleNamespace(
            training=True, overfit_batches=0, precision_plugin=Precision()
        )
        torch.manual_seed(0)
        assert not torch.equal(few.on_after_batch_transfer((x, y), 0)[0], plain)
        # debug=overfit: the same batches every epoch, so no augmentation
        few.trainer = SimpleNamespace(
            training=True, overfit_batches=3, precision_plugin=Precision()
        )
        assert torch.equal(few.on_after_batch_transfer((x, y), 0)[0], plain)
    finally:
        few.trainer = None


# ---------------------------------------------------------------- loaders


def _with_ids(dm: CIFAR10DataModule) -> CIFAR10DataModule:
    """Swap the training images for their indices, so batches show which samples they hold."""
    n = len(dm.train_data)
    dm.train_data = TensorBatchDataset(torch.arange(n), dm.train_data.tensors[1])
    return dm


def test_train_loader_yields_every_index_once_per_epoch(few: CIFAR10DataModule) -> None:
    real = few.train_data
    try:
        loader = _with_ids(few).train_dataloader()
        epochs = [torch.cat([ids for ids, _ in loader]) for _ in range(2)]
        for ids in epochs:
            assert sorted(ids.tolist()) == list(range(250))
        assert not torch.equal(epochs[0], epochs[1])  # reshuffled each epoch
        assert not torch.equal(epochs[0], torch.arange(250))
    finally:
        few.train_data = real


def test_one_fetch_per_batch(few: CIFAR10DataModule, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"items": 0, "item": 0}
    real_items = TensorBatchDataset.__getitems__

    def items(self, indices):
        calls["items"] += 1
        return real_items(self, indices)

    def item(self, index):
        calls["item"] += 1
        raise AssertionError("per-sample __getitem__ must not be used")

    monkeypatch.setattr(TensorBatchDataset, "__getitems__", items)
    monkeypatch.setattr(TensorBatchDataset, "__getitem__", item)
    loader = few.train_dataloader()
    batches = list(loader)
    assert calls == {"items": len(batches), "item": 0} and len(batches) == 8  # 250 / 32
    images, labels = few.train_data.tensors
    x, y = batches[0]
    # Each sample of a batch is a stored image with its own label.
    where = (x[:, None] == images[None]).flatten(2).all(2).float().argmax(1)
    assert torch.equal(images[where], x) and torch.equal(labels[where], y)


def test_distributed_sampler_splits_disjointly(few: CIFAR10DataModule) -> None:
    real = few.train_data
    try:
        loader = _with_ids(few).train_dataloader()
        per_rank = []
        for rank in (0, 1):
            # What Lightning's DDP strategy does: same dataset/collate, DistributedSampler in.
            sampler = DistributedSampler(
                loader.dataset, num_replicas=2, rank=rank, shuffle=True, seed=0
            )
            dist = DataLoader(
                loader.dataset,
                batch_size=loader.batch_size,
                sampler=sampler,
                drop_last=loader.drop_last,
                collate_fn=loader.collate_fn,
                num_workers=loader.num_workers,
            )
            per_rank.append(torch.cat([ids for ids, _ in dist]).tolist())
        assert len(per_rank[0]) == len(per_rank[1]) == 125
        assert not set(per_rank[0]) & set(per_rank[1])
        assert sorted(per_rank[0] + per_rank[1]) == list(range(250))
    finally:
        few.train_data = real


def test_drop_last_loader_and_eval_loaders(few: CIFAR10DataModule) -> None:
    assert len(few.val_dataloader().dataset) == 5000
    assert not isinstance(few.val_dataloader().sampler, torch.utils.data.RandomSampler)
    probe = few.probe_dataloader()
    ys = torch.cat([y for _, y in probe])
    assert torch.equal(ys, few.train_data.tensors[1])  # fixed order, nothing dropped
    assert torch.equal(torch.cat([y for _, y in probe]), ys)


# ---------------------------------------------------------------- user mistakes


def test_missing_dir_without_download_names_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    dm = CIFAR10DataModule(str(missing), download=False)
    with pytest.raises(SFTError, match=re.escape(str(missing / "cifar-10-batches-py"))):
        dm.prepare_data()
    with pytest.raises(SFTError, match="nowhere"):
        dm.setup("fit")


def test_failed_download_names_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A closed local port: fails at once whether or not this machine has internet.
    monkeypatch.setattr(cifar10_mod, "URL", "http://127.0.0.1:9/cifar-10-python.tar.gz")
    dm = CIFAR10DataModule(str(tmp_path / "dl" / "data"), download=True)
    with pytest.raises(SFTError, match=r"download.*failed.*SFT_DATA_DIR") as err:
        dm.prepare_data()
    assert str(tmp_path / "dl" / "data" / "cifar-10-batches-py") in str(err.value)
    assert "\n" not in str(err.value)
    # the folders the download made for itself go with it; one that was there stays
    assert not (tmp_path / "dl").exists()
    (tmp_path / "kept").mkdir()
    with pytest.raises(SFTError, match="failed"):
        CIFAR10DataModule(str(tmp_path / "kept"), download=True).prepare_data()
    assert (tmp_path / "kept").is_dir()


def test_batch_larger_than_train_subset_raises() -> None:
    dm = CIFAR10DataModule(str(_require_cifar()), samples_per_class=5, batch_size=64)
    with pytest.raises(SFTError, match=r"batch_size=64.*50 samples"):
        dm.setup("fit")


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [({"batch_size": 0}, "batch_size"), ({"val_size": 0}, "val_size"), ({"std": (1, 0, 1)}, "std")],
)
def test_bad_arguments_raise(kwargs: dict, key: str) -> None:
    with pytest.raises(SFTError, match=key):
        CIFAR10DataModule("unused", **kwargs)


# ---------------------------------------------------------------- image folders


def _tree(root: Path, split: str, classes: dict[str, int]) -> None:
    for i, (name, count) in enumerate(classes.items()):
        (root / split / name).mkdir(parents=True)
        for j in range(count):
            color = (40 * i, 20 * j, 255 - 40 * i)
            Image.new("RGB", (20 + j, 30), color).save(root / split / name / f"{j}.jpg")


def test_a_class_folder_spelled_in_another_unicode_form_is_named_as_such(tmp_path: Path) -> None:
    """`val/café` written on macOS (e + combining accent) against `train/café` (one character):
    the error listed two lists that look the same."""
    import unicodedata

    cafe = "caf\u00e9"
    _tree(tmp_path, "train", {cafe: 3, "tea": 3})
    _tree(tmp_path, "val", {unicodedata.normalize("NFD", cafe): 1, "tea": 1})
    dm = ImageFolderDataModule(str(tmp_path), image_size=16, batch_size=4, num_workers=0)
    with pytest.raises(SFTError, match="spelled as training classes but in another Unicode form"):
        dm.setup("fit")


def test_a_crop_padding_as_large_as_the_images_is_refused(tmp_path: Path) -> None:
    """data.crop_padding=100 around 16 px images was accepted: 97 % of the crops held padding
    only. It is checked at the side the images are decoded to."""
    _tree(tmp_path, "train", {"ant": 4, "bee": 4})
    for padding, refused in ((15, False), (16, True)):
        dm = ImageFolderDataModule(
            str(tmp_path), image_size=16, batch_size=2, num_workers=0, crop_padding=padding
        )
        dm.setup("fit")  # sft-eval's validation of such a run reads its data still
        if refused:
            with pytest.raises(SFTError) as info:
                dm.train_dataloader()
            assert str(info.value) == (
                "data.crop_padding=16 must be below the image side, 16 px: a random crop of the "
                "padded image could hold padding only (CIFAR-10's recipe: 4 at 32 px)"
            )
        else:
            dm.train_dataloader()


def test_image_folder_tiny_tree(tmp_path: Path) -> None:
    _tree(tmp_path, "train", {"ant": 4, "bee": 4, "cat": 4})
    _tree(tmp_path, "test", {"bee": 2, "cat": 1})
    dm = ImageFolderDataModule(str(tmp_path), image_size=16, batch_size=4, num_workers=0)
    dm.setup()
    assert dm.class_names == ["ant", "bee", "cat"] and dm.num_classes == 3
    # No val/ folder: 25% of each class carved off (1 of 4), the rest trains.
    assert len(dm.val_data) == 3 and len(dm.train_data) == 9
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 16, 16) and x.dtype == torch.uint8 and y.dtype == torch.int64
    xf, _ = dm.transform_batch((x, y), train=True)
    assert xf.shape == (4, 3, 16, 16) and xf.dtype == torch.float32
    test_labels = torch.cat([y for _, y in dm.test_dataloader()])
    assert test_labels.tolist() == [1, 1, 2]  # train's mapping, not test's own


def test_ddp_ranks_score_each_validation_and_test_image_once(tmp_path: Path) -> None:
    """Under DDP (trainer=ddp_sim) Lightning's DistributedSampler padded 7 images to 8 for 2
    ranks, and the repeated one counted twice in val/acc and test/acc."""
    _tree(tmp_path, "train", {"ant": 4, "bee": 4})
    _tree(tmp_path, "val", {"ant": 4, "bee": 3})
    _tree(tmp_path, "test", {"ant": 4, "bee": 3})
    dm = ImageFolderDataModule(str(tmp_path), image_size=16, batch_size=2, num_workers=0)
    dm.setup()
    seen = {"val": [], "test": []}
    for rank in (0, 1):
        dm.trainer = SimpleNamespace(distributed_sampler_kwargs={"num_replicas": 2, "rank": rank})
        for split, loader in (("val", dm.val_dataloader()), ("test", dm.test_dataloader())):
            assert isinstance(loader.sampler, torch.utils.data.DistributedSampler)  # kept
            seen[split] += list(loader.sampler)
    assert sorted(seen["val"]) == list(range(7)) and sorted(seen["test"]) == list(range(7))
    dm.trainer = None  # one process: no sampler of sft's
    assert not isinstance(dm.val_dataloader().sampler, torch.utils.data.DistributedSampler)
    # a split smaller than the ranks: Lightning's padding, or a rank would get no example
    dm.val_data = torch.utils.data.Subset(dm.val_data, [0])
    dm.trainer = SimpleNamespace(distributed_sampler_kwargs={"num_replicas": 2, "rank": 1})
    assert not isinstance(dm.val_dataloader().sampler, torch.utils.data.DistributedSampler)


def test_image_folder_val_size_holds_out_that_many_stratified(tmp_path: Path) -> None:
    """data.val_size (what the CIFAR-10 experiments set) carves about that many training images,
    from every class, when there is no val/ folder; as many as the folder holds is an error."""
    _tree(tmp_path, "train", {"ant": 8, "bee": 8, "cat": 4})
    dm = ImageFolderDataModule(
        str(tmp_path), image_size=16, val_size=5, batch_size=4, num_workers=0
    )
    dm.setup("fit")
    val_labels = sorted(dm.val_data.dataset.targets[i] for i in dm.val_data.indices)
    assert val_labels == [0, 0, 1, 1, 2] and len(dm.train_data) == 15
    with pytest.raises(SFTError, match=r"data\.val_size=20 is not smaller than the 20 images"):
        ImageFolderDataModule(str(tmp_path), val_size=20, num_workers=0).setup("fit")
    with pytest.raises(SFTError, match=r"data\.val_size must be an integer"):
        ImageFolderDataModule(str(tmp_path), val_size=0.2, num_workers=0)


def test_a_carve_of_many_small_classes_beyond_val_size_is_warned_about(
    tmp_path: Path, caplog
) -> None:
    """One image of each class validates at least: 12 classes of 3 images and data.val_size=2
    validated on 12 of the 36, a third of them, said in an info line only."""
    _tree(tmp_path, "train", {f"c{i:02d}": 3 for i in range(12)})
    dm = ImageFolderDataModule(
        str(tmp_path), image_size=16, val_size=2, batch_size=4, num_workers=0
    )
    with logs_warning(caplog, r"data\.val_size=2 asks about 2 validation images of .*, and 12 "):
        dm.setup("fit")
    assert len(dm.val_data) == 12


def test_a_class_of_one_image_stays_in_training(tmp_path: Path, caplog) -> None:
    """Without val/, the stratified carve took at least one image of every class, so a class
    of one image went whole to validation and never trained (was: without a word)."""
    _tree(tmp_path, "train", {"ant": 10, "bee": 10, "rare": 1})
    dm = ImageFolderDataModule(str(tmp_path), image_size=16, batch_size=4, num_workers=0)
    dm.setup("fit")
    targets = dm.train_data.dataset.targets
    assert sorted(targets[i] for i in dm.train_data.indices) == [0] * 9 + [1] * 9 + [2]
    assert sorted(targets[i] for i in dm.val_data.indices) == [0, 1]
    # a class whose only image is left out as undecodable: a warning names it
    (tmp_path / "train" / "rare" / "0.jpg").write_bytes(b"not an image")
    dm = ImageFolderDataModule(
        str(tmp_path), image_size=16, batch_size=4, num_workers=0, skip_bad_files=True
    )
    with logs_warning(caplog, r"no training examples of 1 of the 3 classes \(rare\)"):
        dm.setup("fit")
    # no class with two images: nothing to validate on
    _tree(tmp_path / "few", "train", {"ant": 1, "bee": 1})
    few = ImageFolderDataModule(str(tmp_path / "few"), image_size=16, batch_size=1, num_workers=0)
    with pytest.raises(SFTError, match=r"too small to carve .* \(no class has 2 images\)"):
        few.setup("fit")


@pytest.mark.parametrize(
    ("folders", "warned"),
    [
        (["1", "2", "10"], "(1, 10, 2): output i (sft-predict's pred) is the i-th of them"),
        (["1", "2", "3"], "(1, 2, 3): output i"),
        (["0", "1", "2"], None),  # output i is folder i
        (["ant", "1", "2"], None),
    ],
)
def test_class_folders_named_by_numbers_other_than_their_outputs_are_warned(
    tmp_path: Path, caplog, folders, warned
) -> None:
    """Class folders 1, 2, 10 are classes 0, 2, 1 (sorted as text, as torchvision sorts them):
    sft-predict's pred 1 was folder 10, without a word."""
    _tree(tmp_path, "train", dict.fromkeys(folders, 4))
    dm = ImageFolderDataModule(str(tmp_path), image_size=16, batch_size=4, num_workers=0)
    with caplog.at_level(logging.WARNING):
        dm.setup("fit")
    numbered = [
        r.getMessage() for r in caplog.records if "class folders are numbers" in r.getMessage()
    ]
    if warned is None:
        assert not numbered
    else:
        assert len(numbered) == 1 and warned in numbered[0], numbered
        assert numbered[0].endswith("(leading zeros, 01 02 10, sort them as numbers)") == (
            "10" in folders
        )


@pytest.mark.parametrize(
    ("setting", "line"),
    [
        (
            {"mean": [123.7, 116.3, 103.5], "std": [0.2, 0.2, 0.2]},
            "data.mean=[123.7, 116.3, 103.5]: pixels are scaled to [0, 1] before they are "
            "normalised, so give the mean on that scale too (these / 255: [0.485, 0.456, 0.406])",
        ),
        ({"mean": [0.5, 0.5, 0.5], "std": [60, 60, 60]}, "data.std=[60.0, 60.0, 60.0]: pixels"),
    ],
)
def test_a_mean_or_std_on_the_0_255_scale_is_one_line(tmp_path: Path, setting, line) -> None:
    """Normalising [0, 1] pixels with 0-255 statistics made every input about -2: a run at
    chance (test/acc 0.5 of 2 classes), without a word."""
    with pytest.raises(SFTError) as err:
        ImageFolderDataModule(str(tmp_path), image_size=16, **setting)
    assert str(err.value).startswith(line), err.value


def test_a_val_size_beside_a_val_folder_is_said_unused(tmp_path: Path, caplog) -> None:
    """data.val_size with a val/ folder: the folder is validated on and val_size was ignored,
    without a word; data.val_dir=null carves it."""
    _tree(tmp_path, "train", {"ant": 6, "bee": 6})
    _tree(tmp_path, "val", {"ant": 2, "bee": 2})
    dm = ImageFolderDataModule(str(tmp_path), image_size=16, batch_size=2, val_size=4)
    with logs_warning(caplog, r"data.val_size=4 is not used: the run validates on the folder "):
        dm.setup("fit")
    assert len(dm.val_data) == 4 and len(dm.train_data) == 12
    carved = ImageFolderDataModule(
        str(tmp_path), image_size=16, batch_size=2, val_size=4, val_dir=None
    )
    carved.setup("fit")
    assert len(carved.val_data) == 4 and len(carved.train_data) == 8


def test_a_val_or_test_folder_without_some_classes_is_named(tmp_path: Path, caplog) -> None:
    """val/ and test/ may lack classes (a rare class with no held-out image), but their scores
    then say nothing about those classes (was: without a word); folders with every class are
    silent."""
    _tree(tmp_path, "train", {"ant": 3, "bee": 3, "cat": 3})
    _tree(tmp_path, "val", {"ant": 1, "bee": 1})
    _tree(tmp_path, "test", {"bee": 1, "cat": 1})
    (tmp_path / "test" / "ant").mkdir()  # a class folder without images
    dm = ImageFolderDataModule(str(tmp_path), image_size=16, batch_size=2, num_workers=0)
    with caplog.at_level(logging.WARNING):
        dm.setup("fit")
        dm.setup("test")
    warned = logged_warnings(caplog)
    assert [m.replace(str(tmp_path), "<root>") for m in warned] == [
        "<root>/val: no validation examples of 1 of the 3 classes (cat); its scores say nothing "
        "about them",
        "<root>/test: no test examples of 1 of the 3 classes (ant); its scores say nothing "
        "about them",
    ]
    caplog.clear()
    _tree(tmp_path / "full", "train", {"ant": 2, "bee": 2})
    _tree(tmp_path / "full", "val", {"ant": 1, "bee": 1})
    full = ImageFolderDataModule(str(tmp_path / "full"), image_size=16, batch_size=2, num_workers=0)
    with caplog.at_level(logging.WARNING):
        full.setup("fit")
    assert not caplog.records


def test_image_folder_mistakes(tmp_path: Path) -> None:
    with pytest.raises(SFTError, match="does not exist"):
        ImageFolderDataModule(str(tmp_path / "none"), num_workers=0).setup("fit")
    (tmp_path / "train").mkdir()
    with pytest.raises(SFTError, match="no class folders"):
        ImageFolderDataModule(str(tmp_path), num_workers=0).setup("fit")
    (tmp_path / "train" / "a").mkdir()
    with pytest.raises(SFTError, match=re.escape(str(tmp_path / "train"))):
        ImageFolderDataModule(str(tmp_path), num_workers=0).setup("fit")
    # which class folder, and what counts as an image (was: torchvision's "Found no valid file
    # for the classes a")
    _tree(tmp_path, "train", {"b": 2})
    (tmp_path / "train" / "a" / "notes.txt").write_text("to do")
    with pytest.raises(
        SFTError,
        match=r"train: the class folder\(s\) a hold no image files \(extensions: \.jpg, .*\); "
        r"add images or remove the folder\(s\)$",
    ):
        ImageFolderDataModule(str(tmp_path), num_workers=0).setup("fit")
    # unlabelled images in test/ (was: no word of how to leave the split out, or predict them)
    _tree(tmp_path / "flat", "train", {"a": 2, "b": 2})
    _tree(tmp_path / "flat", "loose", {"a": 2})
    (tmp_path / "flat" / "loose" / "a").rename(tmp_path / "flat" / "test")
    flat = ImageFolderDataModule(str(tmp_path / "flat"), image_size=16, num_workers=0)
    with pytest.raises(SFTError, match=r"test has no class folders; expected .* \(its images have "
                       r"no labels: data\.test_dir=null leaves this split out, and sft-predict "
                       r"inputs=.*test predicts them\)$"):  # fmt: skip
        flat.setup("test")
    # an image beside an empty class folder (was: "holds no image files", no word of it)
    (tmp_path / "flat" / "test" / "a").mkdir()
    with pytest.raises(SFTError, match=r"test holds no image files in its class folders .*; "
                       r"0\.jpg, 1\.jpg lie\(s\) beside them, in no class: images go in "):  # fmt: skip
        flat.setup("test")
    _tree(tmp_path / "x", "train", {"a": 2, "b": 2})
    _tree(tmp_path / "x", "test", {"zebra": 1})
    dm = ImageFolderDataModule(str(tmp_path / "x"), batch_size=1, num_workers=0)
    with pytest.raises(SFTError, match="zebra"):
        dm.setup("test")


def test_image_folder_finds_undecodable_files_before_training(tmp_path: Path, caplog) -> None:
    """A garbage file and a truncated JPEG: one error naming them, or (skip_bad_files) a
    warning and a dataset without them; never a crash mid-epoch."""
    _tree(tmp_path, "train", {"ant": 4, "bee": 4})
    (tmp_path / "train" / "ant" / "garbage.jpg").write_bytes(b"not an image at all")
    good = (tmp_path / "train" / "bee" / "0.jpg").read_bytes()
    (tmp_path / "train" / "bee" / "cut.jpg").write_bytes(good[: len(good) // 2])
    with pytest.raises(
        SFTError, match=r"2 of 10 images under .* cannot be decoded: .*garbage\.jpg"
    ):
        ImageFolderDataModule(str(tmp_path), image_size=16, batch_size=2, num_workers=0).setup(
            "fit"
        )
    dm = ImageFolderDataModule(
        str(tmp_path), image_size=16, batch_size=2, num_workers=0, skip_bad_files=True
    )
    with logs_warning(caplog, "2 of 10 images"):
        dm.setup("fit")
    assert len(dm.train_data) + len(dm.val_data) == 8
    for loader in (dm.train_dataloader(), dm.val_dataloader()):
        assert sum(len(y) for _, y in loader) > 0  # every remaining file decodes


def test_every_undecodable_image_left_out_is_named(tmp_path: Path, caplog) -> None:
    """skip_bad_files=true with more bad files than the warning names: those past its first
    three were named nowhere, and left out without a word."""
    _tree(tmp_path, "train", {"ant": 6, "bee": 6})
    bad = [tmp_path / "train" / "ant" / f"bad{i}.jpg" for i in range(5)]
    for path in bad:
        path.write_bytes(b"not an image")
    dm = ImageFolderDataModule(
        str(tmp_path), image_size=16, batch_size=2, num_workers=0, skip_bad_files=True
    )
    with caplog.at_level(logging.INFO, logger="sft"):
        dm.setup("fit")
    for path in bad:
        assert str(path) in caplog.text, path
    assert len(dm.train_data) + len(dm.val_data) == 12


@pytest.mark.parametrize("workers", [0, 1])
@pytest.mark.parametrize(
    ("change", "ending"),
    [
        ("deleted", ": no such file (deleted or moved since the images were listed)"),
        # was: PIL's UnidentifiedImageError, with the worker's traceback
        (
            "overwritten",
            " cannot be decoded (UnidentifiedImageError: cannot identify image file); it could "
            "be when the images were listed: was it changed since?",
        ),
    ],
)
def test_an_image_changed_during_training_is_one_line(
    tmp_path: Path, capsys, workers, change, ending
) -> None:
    """An image deleted or overwritten after the run listed the folder: FileNotFoundError or
    PIL's error, and a traceback mid-training (from a DataLoader worker: the worker's
    traceback as the message)."""
    from sft.errors import report_user_errors

    _tree(tmp_path, "train", {"ant": 4, "bee": 4})
    dm = ImageFolderDataModule(str(tmp_path), image_size=16, batch_size=2, num_workers=workers)
    dm.setup("fit")
    for image in (tmp_path / "train" / "ant").iterdir():
        image.unlink() if change == "deleted" else image.write_text("garbage")
    with pytest.raises(SystemExit):
        report_user_errors(lambda: list(dm.train_dataloader()))
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'train' / 'ant'}/") and err.count("\n") == 1, err
    assert err.endswith(f"{ending}\n"), err


def test_an_empty_image_file_is_named_as_empty(tmp_path: Path) -> None:
    """A zero-byte .jpg (an interrupted copy): "an empty file (0 bytes)" (was: PIL's
    "UnidentifiedImageError: cannot identify image file", as for a file of another format)."""
    _tree(tmp_path, "train", {"ant": 4, "bee": 4})
    (tmp_path / "train" / "ant" / "empty.jpg").write_bytes(b"")
    with pytest.raises(
        SFTError,
        match=r"1 of 9 images under .* cannot be decoded: .*empty\.jpg \(an empty file \(0 bytes\)\);",
    ):
        ImageFolderDataModule(str(tmp_path), image_size=16, batch_size=2, num_workers=0).setup(
            "fit"
        )


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_a_split_of_only_undecodable_images_is_an_error(tmp_path: Path, split: str) -> None:
    """skip_bad_files=true on a split whose every image is bad: an empty training set was a
    ValueError traceback (or a batch-size hint), an empty val/ a run "completed" without
    validation, an empty test/ an IndexError in sft-eval."""
    _tree(tmp_path, "train", {"ant": 4, "bee": 4})
    _tree(tmp_path, "val", {"ant": 1, "bee": 1})
    _tree(tmp_path, "test", {"ant": 1, "bee": 1})
    for image in (tmp_path / split).rglob("*.jpg"):
        image.write_bytes(b"not an image")
    count = 8 if split == "train" else 2
    for skip in (True, False):  # without: not the advice to skip them all
        dm = ImageFolderDataModule(
            str(tmp_path), image_size=16, batch_size=2, num_workers=0, skip_bad_files=skip
        )
        with pytest.raises(SFTError) as info:
            dm.setup("test" if split == "test" else "fit")
        message = str(info.value)
        assert message.startswith(
            f"none of the {count} images under {tmp_path / split} can be decoded: "
        )
        assert message.endswith("data.skip_bad_files=true would leave no images in this split")


def test_image_folder_checks_the_test_folder_before_training(tmp_path: Path) -> None:
    """sft-train tests after fitting: an undecodable test image ended a finished training run
    (was: found only at setup("test"), after fit)."""
    _tree(tmp_path, "train", {"ant": 4, "bee": 4})
    _tree(tmp_path, "test", {"ant": 1, "bee": 1})
    (tmp_path / "test" / "bee" / "bad.jpg").write_bytes(b"not an image")
    dm = ImageFolderDataModule(str(tmp_path), image_size=16, batch_size=2, num_workers=0)
    with pytest.raises(SFTError, match=r"1 of 3 images under .*test cannot be decoded"):
        dm.setup("fit")
    # sft-train test=false: the test folder is not read (was: decoded, and this run refused)
    dm = ImageFolderDataModule(str(tmp_path), image_size=16, batch_size=2, num_workers=0)
    dm.test_wanted = False
    dm.setup("fit")
    assert dm.test_data is None and dm.train_data is not None


def test_image_folder_names_the_files_it_leaves_out(tmp_path: Path, caplog) -> None:
    """ImageFolder skips an image outside a class folder and a file without an image extension
    without a word (was: silently); the file system's hidden files are not the user's data."""
    _tree(tmp_path, "train", {"ant": 4, "bee": 4})
    Image.new("RGB", (20, 20)).save(tmp_path / "train" / "stray.png")
    (tmp_path / "train" / "ant" / "notes.txt").write_text("where these came from")
    (tmp_path / "train" / "bee" / ".DS_Store").write_bytes(b"\0")
    # what Jupyter and macOS leave: no class, and no undecodable image (was: a class
    # '.ipynb_checkpoints', and the AppleDouble file an undecodable image)
    (tmp_path / "train" / ".ipynb_checkpoints").mkdir()
    Image.new("RGB", (20, 20)).save(tmp_path / "train" / ".ipynb_checkpoints" / "copy.png")
    (tmp_path / "train" / "ant" / "._0.jpg").write_bytes(b"\0\5\26\7 resource fork")
    # the folder macOS adds to its zip files (was: "the class folder(s) __MACOSX hold no
    # image files")
    (tmp_path / "train" / "__MACOSX" / "ant").mkdir(parents=True)
    (tmp_path / "train" / "__MACOSX" / "ant" / "._0.jpg").write_bytes(b"\0\5\26\7 fork")
    dm = ImageFolderDataModule(str(tmp_path), image_size=16, batch_size=2, num_workers=0)
    with caplog.at_level(logging.WARNING, logger="sft.data.image_files"):
        dm.setup("fit")
    assert dm.class_names == ["ant", "bee"]
    train = tmp_path / "train"
    assert [
        r.getMessage().split(" (images:")[0]
        for r in caplog.records
        if r.name == "sft.data.image_files"
    ] == [
        f"2 files under {train} not used: {train / 'ant' / 'notes.txt'} (extension .txt not read); "
        f"{train / 'stray.png'} (not in a class folder)"
    ]
    assert len(dm.train_data) + len(dm.val_data) == 8


def test_one_class_folder_is_named(tmp_path: Path) -> None:
    """Was: "data.batch_size=8 is larger than the training subset", then, with a smaller batch,
    the class count naming neither the class nor the folder."""
    _tree(tmp_path, "train", {"ant": 8})
    dm = ImageFolderDataModule(str(tmp_path), image_size=16, batch_size=8, num_workers=0)
    with pytest.raises(SFTError, match=r"train has one class folder \(ant\): a classifier needs"):
        dm.setup("fit")


def test_a_folder_link_back_into_its_own_path_is_refused(tmp_path: Path) -> None:
    """`ln -s .. train/dog/up`: followed, every image above it came back ~40 times under dog/
    (1435 images of a 35-image tree, cats labelled dog). It is named before anything is read;
    a link to a folder elsewhere still counts, as in ImageFolder."""
    _tree(tmp_path, "train", {"cat": 3, "dog": 3})
    _tree(tmp_path / "elsewhere", "train", {"dog": 2})
    (tmp_path / "train" / "dog" / "more").symlink_to(tmp_path / "elsewhere" / "train" / "dog")
    dm = ImageFolderDataModule(str(tmp_path), image_size=16, batch_size=2, num_workers=0)
    dm.setup("fit")
    assert len(dm.train_data) + len(dm.val_data) == 8
    up = tmp_path / "train" / "dog" / "up"
    up.symlink_to("..")
    message = (
        f"{up} links to {tmp_path / 'train'}, a folder on its own path: following it would "
        "list those images again without end; remove the link"
    )
    with pytest.raises(SFTError) as err:
        ImageFolderDataModule(str(tmp_path), image_size=16, batch_size=2, num_workers=0).setup()
    assert str(err.value) == message
    # sft-predict's folder of inputs likewise
    with pytest.raises(SFTError) as err:
        read_images(tmp_path / "train")
    assert str(err.value) == message
    # a link above the folder leads back into it: named itself (was: its train/ inside)
    up.unlink()
    up.symlink_to("../..")
    with pytest.raises(
        SFTError, match=f"^{re.escape(str(up))} links to {re.escape(str(tmp_path))},"
    ):
        read_images(tmp_path / "train")
    up.unlink()
    # in a hidden folder: ImageFolder walks it; sft-predict reads no hidden folder
    hidden = tmp_path / "train" / "cat" / ".thumbs" / "up"
    hidden.parent.mkdir()
    hidden.symlink_to("../..")
    with pytest.raises(SFTError, match=f"^{re.escape(str(hidden))} links to "):
        ImageFolderDataModule(str(tmp_path), image_size=16, batch_size=2, num_workers=0).setup()
    assert len(read_images(tmp_path / "train").paths) == 8


def test_an_image_file_a_link_makes_appear_twice_is_named(tmp_path: Path, caplog) -> None:
    """`ln -s ../train val`, `ln -s cat train/kitty`: the same image files validated what they
    trained on, or trained under two labels, without a word (was: silently)."""
    _tree(tmp_path, "train", {"cat": 3, "dog": 3})
    (tmp_path / "val").symlink_to("train")
    dm = ImageFolderDataModule(str(tmp_path), image_size=16, batch_size=2, num_workers=0)
    with logs_warning(caplog, r"^6 of the 6 images under .*val are files of the training folder"):
        dm.setup("fit")
    (tmp_path / "val").unlink()
    _tree(tmp_path, "val", {"cat": 1, "dog": 1})
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "dog").symlink_to(tmp_path / "train" / "dog")
    (tmp_path / "train" / "kitty").symlink_to("cat")
    dm = ImageFolderDataModule(str(tmp_path), image_size=16, batch_size=2, num_workers=0)
    with caplog.at_level(logging.WARNING):
        dm.setup("fit")
    kitty = re.escape(str(tmp_path / "train" / "kitty" / "0.jpg"))
    warned = logged_warnings(caplog)
    warned = [m for m in warned if "no validation examples" not in m and "no test ex" not in m]
    cat = re.escape(str(tmp_path / "train" / "cat" / "0.jpg"))
    assert re.match(
        rf"3 images under .*train are files it already holds .*e\.g\. {kitty} is a link to "
        rf"{cat}\)",
        warned[-2],
    )
    assert re.match(
        r"3 of the 3 images under .*test are files of the training folder .*: testing", warned[-1]
    )
    # a link whose path sorts first is still the one named a link (was: the file it links to)
    (tmp_path / "train" / "kitty").unlink()
    (tmp_path / "train" / "cat" / "a_dog.jpg").symlink_to(tmp_path / "train" / "dog" / "0.jpg")
    caplog.clear()
    dm = ImageFolderDataModule(str(tmp_path), image_size=16, batch_size=2, num_workers=0)
    with caplog.at_level(logging.WARNING):
        dm.setup("fit")
    link = re.escape(str(tmp_path / "train" / "cat" / "a_dog.jpg"))
    dog = re.escape(str(tmp_path / "train" / "dog" / "0.jpg"))
    assert any(
        re.match(
            rf"1 image under .* is a file it already holds through a link \(e\.g\. {link} is a "
            rf"link to {dog}\)",
            m,
        )
        for m in logged_warnings(caplog)
    )
    (tmp_path / "train" / "cat" / "a_dog.jpg").unlink()
    # copies are other files: nothing to say
    caplog.clear()
    (tmp_path / "test" / "dog").unlink()
    _tree(tmp_path, "test", {"cat": 1, "dog": 2})
    dm = ImageFolderDataModule(str(tmp_path), image_size=16, batch_size=2, num_workers=0)
    with caplog.at_level(logging.WARNING):
        dm.setup("fit")
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]
    # data.test_dir=val: testing the images the best checkpoint is chosen on (was: not a word)
    dm = ImageFolderDataModule(
        str(tmp_path), image_size=16, batch_size=2, num_workers=0, test_dir="val"
    )
    with logs_warning(
        caplog,
        r"^2 of the 2 images under .*val are files of the validation folder \(e\.g\. .*\): "
        "testing scores the images the best checkpoint is chosen on$",
    ):
        dm.setup("fit")


def test_a_split_folder_that_is_not_there_is_named(tmp_path: Path, caplog) -> None:
    """`data.val_dir=vall` (a typo) validated on a carve of the training images, and a
    `validation/` folder was never read, with an info line only (was: exit 0)."""
    _tree(tmp_path, "train", {"cat": 3, "dog": 3})
    _tree(tmp_path, "validation", {"cat": 1, "dog": 1})
    for key in ("val_dir", "test_dir"):
        dm = ImageFolderDataModule(
            str(tmp_path), image_size=16, batch_size=2, num_workers=0, **{key: "vall"}
        )
        with pytest.raises(
            SFTError,
            match=rf"^data\.{key}=vall: no folder .*vall \(folders in .*: train, validation\)",
        ):
            dm.setup("fit")
    dm = ImageFolderDataModule(str(tmp_path), image_size=16, batch_size=2, num_workers=0)
    with logs_warning(
        caplog, r"^no folder .*val \(data\.val_dir=val\), but .* holds validation/, which no split"
    ):
        dm.setup("fit")
    dm = ImageFolderDataModule(
        str(tmp_path), image_size=16, batch_size=2, num_workers=0, val_dir="validation"
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        dm.setup("fit")
    assert len(dm.val_data) == 2 and not caplog.records  # test/ is optional
    dm = ImageFolderDataModule(  # the same folder by its absolute path (was: called unread)
        str(tmp_path),
        image_size=16,
        batch_size=2,
        num_workers=0,
        val_dir=str(tmp_path / "validation"),
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        dm.setup("fit")
    assert len(dm.val_data) == 2 and not caplog.records
    # folders not named like a split, and one a split reads in part, are no one's business
    (tmp_path / "validation").rename(tmp_path / "lost+found")
    (tmp_path / "images").mkdir()
    (tmp_path / "train").rename(tmp_path / "images" / "train")
    dm = ImageFolderDataModule(
        str(tmp_path), image_size=16, batch_size=2, num_workers=0, train_dir="images/train"
    )
    with caplog.at_level(logging.WARNING):
        dm.setup("fit")
    assert not caplog.records


def test_a_photo_is_decoded_the_way_up_its_exif_orientation_says(tmp_path: Path) -> None:
    """A camera's JPEG stored sideways with an EXIF Orientation tag (6: turn 90 degrees
    clockwise to view) is decoded as a viewer shows it (was: sideways, in training, sft-eval,
    sft-predict and the export's parity check)."""
    stored = np.zeros((32, 64), dtype=np.uint8)
    stored[:, :32] = 255  # white on the left as stored: on top once turned
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).convert("RGB").save(tmp_path / "photo.jpg", exif=exif, quality=95)
    decoded = ImageDecoder(8)(tmp_path / "photo.jpg").float().mean(dim=(0, 2))  # per row
    assert decoded[:3].min() > 200 and decoded[-3:].max() < 50, decoded
    # reading the tag must not hide a file that does not decode (a PNG's EXIF needs its pixels)
    Image.fromarray(stored).save(tmp_path / "broken.png")
    data = bytearray((tmp_path / "broken.png").read_bytes())
    at = data.index(b"IDAT") + 8
    data[at : at + 16] = bytes(16)
    (tmp_path / "broken.png").write_bytes(bytes(data))
    with pytest.raises(SFTError, match=r"broken\.png cannot be decoded \(OSError: "):
        ImageDecoder(8)(tmp_path / "broken.png")


def test_images_of_more_than_8_bits(tmp_path: Path) -> None:
    """A 16-bit greyscale PNG decodes as its 8-bit version (was: clipped at 255, nearly
    white); 32-bit pixels, whose range nothing tells, are named before training."""
    ramp = np.linspace(0, 65535, 64 * 64).round().astype(np.uint16).reshape(64, 64)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    Image.fromarray((ramp // 257).astype(np.uint8)).save(tmp_path / "flat.png")
    decode = ImageDecoder(32)
    deep, flat = decode(tmp_path / "deep.png"), decode(tmp_path / "flat.png")
    assert (deep.int() - flat.int()).abs().max() <= 1
    # a 16-bit PGM, which PIL reads as 32-bit integers (mode I) scaled to 0..65535 (was:
    # refused as "32-bit integer pixels")
    header = b"P5 64 64 65535\n"
    (tmp_path / "deep.pgm").write_bytes(header + ramp.astype(">u2").tobytes())
    assert (decode(tmp_path / "deep.pgm").int() - flat.int()).abs().max() <= 1
    assert undecodable([tmp_path / "deep.pgm"], 32) == []  # the check when listed

    _tree(tmp_path, "train", {"ant": 3, "bee": 3})
    float_image = Image.fromarray(np.full((8, 8), 0.5, dtype=np.float32))
    float_image.save(tmp_path / "train" / "bee" / "depth.tiff")
    dm = ImageFolderDataModule(str(tmp_path), image_size=16, batch_size=2, num_workers=0)
    with pytest.raises(SFTError, match=r"1 of 7 images .*depth\.tiff \(ValueError: 32-bit float"):
        dm.setup("fit")


def test_a_palette_image_with_transparency_decodes_without_a_warning(tmp_path: Path) -> None:
    """PNG icons and screenshots in palette mode with transparency: PIL's "Palette images with
    Transparency expressed in bytes should be converted to RGBA images" was printed for each."""
    import warnings

    rgba = np.random.default_rng(0).integers(0, 256, (20, 20, 4), dtype=np.uint8)
    Image.fromarray(rgba).quantize(4).save(tmp_path / "icon.png")
    with Image.open(tmp_path / "icon.png") as image:
        assert image.mode == "P" and isinstance(image.info["transparency"], bytes)
        expected = torch.from_numpy(np.asarray(image.convert("RGBA"))[..., :3].copy())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        decoded = ImageDecoder(20)(tmp_path / "icon.png")
    assert torch.equal(decoded, expected.permute(2, 0, 1))


def test_image_folder_on_cifar_slice_matches_pickles(tmp_path: Path) -> None:
    _require_cifar()
    if not IMAGES_DIR.is_dir():
        pytest.skip(f"{IMAGES_DIR} absent (prepare.py --folder writes it)")
    with open(CIFAR_DIR / "data_batch_1", "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    names = [n.decode() for n in batch[b"filenames"][:12]]
    for name in names:  # "<class>_<file>.jpg": link the originals into a small tree
        cls, fname = name.split("_", 1)
        (tmp_path / "train" / cls).mkdir(parents=True, exist_ok=True)
        (tmp_path / "train" / cls / fname).symlink_to(IMAGES_DIR / "train" / cls / fname)
    dm = ImageFolderDataModule(
        str(tmp_path), image_size=32, batch_size=2, num_workers=2, val_fraction=0.01
    )
    dm.setup("fit")
    assert dm.class_names == sorted({n.split("_", 1)[0] for n in names})
    full = dm.train_data.dataset
    images = torch.stack([full[i][0] for i in range(len(full))])
    pickled = torch.as_tensor(batch[b"data"][:12]).view(12, 3, 32, 32)
    order = sorted(range(12), key=lambda i: (names[i].split("_", 1)[0], names[i]))
    assert torch.equal(images, pickled[order])  # same decode, resize at 32 is a no-op
    x, _ = next(iter(dm.val_dataloader()))
    assert x.shape[1:] == (3, 32, 32) and x.dtype == torch.uint8


@pytest.mark.parametrize(
    ("backbone", "expected"),
    [
        ({"name": "efficientnet_lite0", "input_size": 128}, 128),
        ({"name": "resnet18", "cifar_stem": True}, 32),
        ({"name": "mobilenetv2"}, 224),
        ({"name": "timm", "model_name": "resnet18.a1_in1k"}, 224),
        ({"name": "timm", "model_name": "vit_small_patch16_384.augreg_in21k_ft_in1k"}, 384),
    ],
)
def test_an_image_folder_is_decoded_at_the_size_the_backbone_takes(tmp_path, backbone, expected):
    """data=image_folder decoded every image at 32 px (CIFAR's) whatever the model: a user's
    photos were shrunk to 32x32, then enlarged again to the backbone's input_size."""
    _tree(tmp_path, "train", {"ant": 4, "bee": 4})
    overrides = ["data=image_folder", f"data.data_dir={tmp_path}", "data.batch_size=2"]
    cfg = compose_config("train", [*overrides, "data.num_workers=0"], tmp_path)
    dm = instantiate(cfg.data)
    dm.configure_input(resolve_input_spec(backbone))
    dm.setup("fit")
    assert dm.image_size == dm.hparams.image_size == expected  # checkpoints record it
    x, _ = next(iter(dm.train_dataloader()))
    assert x.shape[-2:] == (expected, expected)
    # a size given is kept, and without a backbone's word it is ImageNet models' 224
    given = ImageFolderDataModule(str(tmp_path), image_size=48, num_workers=0)
    given.configure_input(resolve_input_spec(backbone))
    assert given.image_size == 48
    assert ImageFolderDataModule(str(tmp_path), num_workers=0).image_size == 224


def test_split_folders_beside_the_classes_are_splits_not_classes(tmp_path, caplog):
    """The Kaggle layout (`data.train_dir=.`: the class folders right under data_dir) with val/
    and test/ beside them read val and test as two more classes, warned that their images were
    training images, and advised model.num_classes=4."""
    _tree(tmp_path, ".", {"ant": 4, "bee": 4})
    _tree(tmp_path, "val", {"ant": 2, "bee": 1})
    _tree(tmp_path, "test", {"ant": 1, "bee": 2})
    dm = ImageFolderDataModule(
        str(tmp_path), image_size=16, train_dir=".", batch_size=2, num_workers=0
    )
    assert dm.known_class_names() == ["ant", "bee"]
    with caplog.at_level(logging.WARNING):
        dm.setup("fit")
    assert dm.class_names == ["ant", "bee"]
    assert (len(dm.train_data), len(dm.val_data), len(dm.test_data)) == (8, 3, 3)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_sft_eval_of_a_carved_validation_reads_the_folder_by_the_models_class_names(tmp_path):
    """sft-eval of a folder without test/ (its carved validation) took the folder's classes by
    position: with a class renamed, three classes were scored against other classes' outputs,
    with only a warning. A test folder was already read by name."""
    _tree(tmp_path / "some", "train", {"bee": 4, "cat": 4})
    dm = ImageFolderDataModule(str(tmp_path / "some"), image_size=16, num_workers=0)
    dm.score_with(["ant", "bee", "cat"])
    dm.setup("validate")
    assert dm.class_names == ["ant", "bee", "cat"]
    assert {dm.class_names[int(y)] for _, y in dm.val_data} == {"bee", "cat"}  # by name

    _tree(tmp_path / "other", "train", {"bee": 4, "zzz": 4})
    dm = ImageFolderDataModule(str(tmp_path / "other"), image_size=16, num_workers=0)
    dm.score_with(["ant", "bee", "cat"])
    with pytest.raises(SFTError, match=r"has class folders \['zzz'\] that the model does not have"):
        dm.setup("validate")


def test_sft_eval_of_a_validation_folder_needs_no_training_folder(tmp_path):
    """A folder of val/<class>/ alone (no train/, no test/): sft-eval asked for train/ and spoke
    of a carved validation; with train/ there it decoded every training image first."""
    _tree(tmp_path, "val", {"bee": 2, "cat": 3})
    dm = ImageFolderDataModule(str(tmp_path), image_size=16, num_workers=0)
    dm.score_with(["ant", "bee", "cat"])
    dm.setup("validate")
    dm.setup("predict")
    assert dm.class_names == ["ant", "bee", "cat"] and dm.train_data is None
    assert sorted(dm.class_names[int(y)] for _, y in dm.val_data) == ["bee"] * 2 + ["cat"] * 3
    assert dm.predicted_ids() == [f"val/bee/{i}.jpg" for i in range(2)] + [
        f"val/cat/{i}.jpg" for i in range(3)
    ]


def test_a_carved_validation_that_lacks_a_class_is_named(tmp_path, caplog):
    """A class of one image keeps it for training: the carved validation had none of it, and
    nothing said so (a val/ folder missing a class was already named)."""
    _tree(tmp_path, "train", {"ant": 4, "bee": 4, "cat": 1})
    dm = ImageFolderDataModule(str(tmp_path), image_size=16, batch_size=2, num_workers=0)
    with caplog.at_level(logging.WARNING):
        dm.setup("fit")
    assert (
        f"the validation carved from {tmp_path / 'train'}: no validation examples of 1 of the 3 "
        "classes (cat); its scores say nothing about them"
    ) in caplog.messages


def test_a_broken_image_link_names_where_it_points(tmp_path):
    """Was: '(FileNotFoundError: [Errno 2] No such file or directory:)', the path cut out."""
    _tree(tmp_path, "train", {"ant": 3, "bee": 3})
    (tmp_path / "train" / "ant" / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    dm = ImageFolderDataModule(str(tmp_path), image_size=16, batch_size=2, num_workers=0)
    with pytest.raises(SFTError, match=rf"gone.jpg \(a link to {tmp_path / 'nowhere.jpg'}, which"):
        dm.setup("fit")
