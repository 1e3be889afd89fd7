"""CIFAR-10 held in memory as uint8 tensors, batched by one index per batch, augmented on device."""

from __future__ import annotations

import logging
import pickle
import socket
import tarfile
import urllib.error
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from sft.contracts import CIFAR10
from sft.data.base import (
    ImageDataModule,
    TensorBatchDataset,
    absolute_dir,
    check_batch_size,
    passthrough_collate,
)
from sft.data.resumable import split_loader
from sft.data.subsets import (
    check_few_label_args,
    few_label_indices,
    warn_classes_without_examples,
)
from sft.errors import SFTError
from sft.utils.config_types import number_list
from sft.utils.io import expand_home
from sft.utils.logs import rank_zero_warning

FOLDER = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
META_FILE = "batches.meta"
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
MD5 = "c58f30108f718f92721af3b95e74349a"
TRAIN_SIZE = 50_000
# Per socket operation; an unreachable host must not hang a run (or the test suite).
DOWNLOAD_TIMEOUT_S = 60.0
log = logging.getLogger(__name__)


def carve_validation(val_size: int, split_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(validation, training) positions in the 50k training images, sorted."""
    perm = torch.randperm(TRAIN_SIZE, generator=torch.Generator().manual_seed(split_seed))
    return perm[:val_size].sort().values, perm[val_size:].sort().values


def _get(d: dict, key: str):
    # The official pickles have bytes keys; tolerate str keys (re-pickled copies).
    return d[key.encode()] if key.encode() in d else d[key]


# what the CIFAR-10 pickles hold besides plain values: numpy arrays, and the bytes of a
# protocol-2 pickle written by Python 3
_CIFAR_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    # protocol 5 (pickle.HIGHEST_PROTOCOL): an array from its buffer
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _CIFARUnpickler(pickle.Unpickler):
    """pickle's Unpickler that builds only what CIFAR-10's files hold (was: pickle.load, so a
    crafted batch under a data_dir, which a checkpoint may name, ran any code as it loaded)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _CIFAR_GLOBALS:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which CIFAR-10 data does not")
        return super().find_class(module, name)


def _unpickle(path: Path) -> Any:
    with open(path, "rb") as f:
        return _CIFARUnpickler(f, encoding="bytes").load()


def load_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """One CIFAR python-format pickle -> images uint8 (N, 3, 32, 32), labels int64 (N,)."""
    try:
        d = _unpickle(path)
        data = torch.as_tensor(_get(d, "data"))
        labels = torch.as_tensor(list(_get(d, "labels")), dtype=torch.int64)
    except FileNotFoundError:
        raise SFTError(f"CIFAR-10 file {path} is missing") from None
    except PermissionError:  # said so (was: "damaged: delete it and prepare it again")
        raise
    except Exception as e:  # any unpickling/shape problem means a damaged file
        raise SFTError(
            f"CIFAR-10 file {path} is not a readable CIFAR python-format batch ({type(e).__name__}: "
            f"{e}); delete {path.parent} and prepare it again"
        ) from None
    n = labels.numel()
    if data.dtype != torch.uint8 or data.shape != (n, 3072) or n == 0:
        raise SFTError(
            f"CIFAR-10 file {path} holds data of shape {tuple(data.shape)} and dtype {data.dtype}, "
            f"expected ({n}, 3072) uint8"
        )
    if labels.min() < 0 or labels.max() > 9:
        raise SFTError(f"CIFAR-10 file {path} has labels outside 0..9")
    return data.view(n, 3, 32, 32), labels


def load_class_names(path: Path) -> list[str]:
    try:
        names = _get(_unpickle(path), "label_names")
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    except FileNotFoundError:
        raise SFTError(f"CIFAR-10 file {path} is missing") from None
    except Exception as e:
        raise SFTError(f"CIFAR-10 file {path} is not a readable batches.meta ({e})") from None
    if len(names) != 10:
        raise SFTError(f"CIFAR-10 file {path} lists {len(names)} class names, expected 10")
    return names


def _first_missing(path: Path) -> Path | None:
    """The outermost folder of `path` that does not exist yet (what creating it would add)."""
    missing = None
    for folder in (path, *path.parents):
        if folder.exists():
            return missing
        missing = folder
    return missing


def _remove_empty(folder: Path, outermost: Path) -> None:
    """`folder` and the folders above it up to `outermost`, each while empty: what a download
    made and nothing wrote in (another job's download into the same new folder is kept)."""
    for path in (folder, *folder.parents):
        try:
            path.rmdir()
        except OSError:  # not empty, or gone
            return
        if path == outermost:
            return


def download_cifar10(data_dir: Path) -> None:
    """Fetch and extract the official archive into `data_dir`; one-line SFTError on failure."""
    from torchvision.datasets.utils import download_and_extract_archive

    created = _first_missing(data_dir)
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        download_and_extract_archive(URL, str(data_dir), md5=MD5, remove_finished=True)
    except (urllib.error.URLError, OSError, RuntimeError, tarfile.TarError, EOFError) as e:
        if created is not None:  # no empty data dir left by a failure
            _remove_empty(data_dir, created)
        raise SFTError(
            f"CIFAR-10 not found at {data_dir / FOLDER} and downloading {URL} failed "
            f"({type(e).__name__}: {e}); put the python-format CIFAR-10 folder '{FOLDER}' under "
            "the data dir (or set SFT_DATA_DIR to a directory holding it)"
        ) from None
    finally:
        socket.setdefaulttimeout(old_timeout)


class CIFAR10DataModule(ImageDataModule):
    """CIFAR-10 from `data_dir/cifar-10-batches-py` (official python layout).

    Validation is `val_size` images carved from the 50k training images by a generator seeded
    with `split_seed` (identical on every rank, run and `seed`, so runs with different seeds are
    compared on the same validation set); the few-label subset (`train_fraction` or
    `samples_per_class`) is drawn from the remaining training images. Each split is one uint8
    tensor (N, 3, 32, 32) plus int64 labels; loaders run in the main process (num_workers=0)
    because a batch is a single tensor index.
    """

    dataset_normalization = CIFAR10
    image_size = 32

    def __init__(
        self,
        data_dir: str,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        val_size: int = 5000,
        seed: int | None = 0,
        split_seed: int = 0,
        train_fraction: float | None = None,
        samples_per_class: int | None = None,
        augment: bool = True,
        crop_padding: int = 4,
        hflip: bool = True,
        crop_scale: Sequence[float] | None = None,
        crop_ratio: Sequence[float] = (3 / 4, 4 / 3),
        rand_augment: int | None = None,
        random_erasing: float = 0.0,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        download: bool = True,
        drop_last: bool = True,
    ) -> None:
        super().__init__()
        data_dir = absolute_dir(data_dir)
        check_batch_size("batch_size", batch_size)
        if eval_batch_size is not None:
            check_batch_size("eval_batch_size", eval_batch_size)
        if isinstance(val_size, bool) or not isinstance(val_size, int):
            raise SFTError(f"data.val_size must be an integer, got {val_size!r}")
        if not 0 < val_size < TRAIN_SIZE:
            raise SFTError(f"data.val_size must be in 1..{TRAIN_SIZE - 1}, got {val_size}")
        check_few_label_args(train_fraction, samples_per_class)
        crop_scale, crop_ratio = number_list(crop_scale), number_list(crop_ratio)
        # the statistics used, as plain lists, so hparams round-trip through yaml
        mean, std = self._init_transform(
            augment,
            crop_padding,
            hflip,
            mean,
            std,
            crop_scale=crop_scale,
            crop_ratio=crop_ratio,
            rand_augment=rand_augment,
            random_erasing=random_erasing,
            mixup_alpha=mixup_alpha,
            cutmix_alpha=cutmix_alpha,
        )
        # logger=False: train.py logs the whole run config once
        self.save_hyperparameters(logger=False)

        self.data_dir = expand_home(data_dir)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.val_size = val_size
        # seed=null (an unseeded run) still draws one few-label subset, as text data does
        self.seed = 0 if seed is None else seed
        self.split_seed = split_seed
        self.train_fraction = train_fraction
        self.samples_per_class = samples_per_class
        self.download = download
        self.drop_last = drop_last
        self.train_data: TensorBatchDataset | None = None
        self.val_data: TensorBatchDataset | None = None
        self.test_data: TensorBatchDataset | None = None

    @property
    def folder(self) -> Path:
        return self.data_dir / FOLDER

    def prepare_data(self) -> None:
        # Lightning runs this on one process per node before setup(): the only place to download.
        if self.folder.is_dir():
            return
        if not self.download:
            raise SFTError(
                f"CIFAR-10 not found: expected the folder {self.folder} (python-format batches); "
                "set data.download=true, or point data_dir / SFT_DATA_DIR at a directory holding "
                f"'{FOLDER}'"
            )
        download_cifar10(self.data_dir)

    def setup(self, stage: str | None = None) -> None:
        self.prepare_data()  # no-op once the folder exists; covers use outside a Trainer
        self.class_names = load_class_names(self.folder / META_FILE)
        self.num_classes = len(self.class_names)
        if stage in (None, "fit", "validate") and self.val_data is None:
            self._setup_train_val()
        if stage in (None, "test", "predict") and self.test_data is None:
            self.test_data = TensorBatchDataset(*load_batch(self.folder / TEST_FILE))

    def _setup_train_val(self) -> None:
        parts = [load_batch(self.folder / name) for name in TRAIN_FILES]
        images = torch.cat([p[0] for p in parts])
        labels = torch.cat([p[1] for p in parts])
        del parts
        if images.shape[0] != TRAIN_SIZE:
            raise SFTError(
                f"CIFAR-10 training batches in {self.folder} hold {images.shape[0]} "
                f"images, expected {TRAIN_SIZE}"
            )
        val_idx, train_idx = carve_validation(self.val_size, self.split_seed)
        keep = few_label_indices(
            labels[train_idx], self.train_fraction, self.samples_per_class, seed=self.seed
        )
        train_idx = train_idx[torch.as_tensor(keep, dtype=torch.int64)]
        self.check_train_batch(len(train_idx), str(self.folder))
        # a large data.val_size, or a few-label subset, may leave classes of no training images
        # (was: no word)
        where = str(self.folder)
        warn_classes_without_examples(labels[train_idx], self.class_names, where)
        warn_classes_without_examples(labels[val_idx], self.class_names, where, "validation")
        self.train_indices = train_idx  # positions in the 50k training set, for inspection
        self.val_indices = val_idx
        self.train_data = TensorBatchDataset(
            *(t.index_select(0, train_idx) for t in (images, labels))
        )
        self.val_data = TensorBatchDataset(*(t.index_select(0, val_idx) for t in (images, labels)))

    def state_dict(self) -> dict[str, int]:
        return {"val_size": self.val_size, "split_seed": self.split_seed}

    def load_state_dict(self, state_dict: Mapping[str, int]) -> None:
        """A warning when this validation holds images the checkpoint's run did not hold out
        (data.val_size or split_seed changed since; was: none, and a new run from a checkpoint
        trained with val_size=500 validated on 88 of its 200 training images with
        val_size=20000 split_seed=1)."""
        size, seed = state_dict.get("val_size"), state_dict.get("split_seed")
        val_idx = getattr(self, "val_indices", None)
        if val_idx is None or size is None or seed is None:
            return  # validation not carved here (sft-eval of the test batch)
        held_out = set(carve_validation(size, seed)[0].tolist())
        exposed = sum(i not in held_out for i in val_idx.tolist())
        if exposed:
            rank_zero_warning(
                log,
                f"{exposed} of the {len(val_idx)} validation images were not held out by the "
                f"checkpoint's run (data.val_size={size} data.split_seed={seed} there, "
                f"{self.val_size} and {self.split_seed} here): this validation can score images "
                f"the model trained on; set data.val_size={size} data.split_seed={seed}",
            )

    def _loader(self, data: TensorBatchDataset | None, split: str, **kwargs) -> DataLoader:
        if data is None:
            raise RuntimeError(f"CIFAR10DataModule: call setup() before the {split} dataloader")
        return split_loader(data, split, num_workers=0, collate_fn=passthrough_collate, **kwargs)
