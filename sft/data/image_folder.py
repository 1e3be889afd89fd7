"""Users' image trees `root/<split>/<class>/*.jpg`: decode + resize per sample in workers,
augment per batch on the device (the same augmentation code as CIFAR-10)."""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import unicodedata
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from numbers import Real
from pathlib import Path

import torch
from lightning.pytorch.utilities import rank_zero_info
from lightning_utilities.core.rank_zero import rank_zero_only
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS

from sft.contracts import IMAGENET, InputSpec
from sft.data.base import ImageDataModule, absolute_dir, check_batch_size
from sft.data.image_decode import (
    DECODE_ERRORS,
    CropShare,
    ImageDecoder,
    Interpolation,
    check_mode,
    decode_error_text,
    quiet_large_image_warning,
)
from sft.data.image_files import (
    FileId,
    file_ids,
    is_hidden,
    is_image,
    visible_files,
    visible_image,
    warn_files_of_training,
    warn_left_out,
    warn_repeated_files,
    warn_shared_files,
)
from sft.data.resumable import split_loader
from sft.data.subsets import (
    check_few_label_args,
    few_label_indices,
    holdout_indices,
    warn_classes_without_examples,
)
from sft.errors import SFTError
from sft.utils.config_types import check_value, number_list
from sft.utils.hardware import usable_cpus
from sft.utils.io import expand_home
from sft.utils.logs import first_few, rank_zero_warning

log = logging.getLogger(__name__)
# the image side without data.image_size or a backbone that names one: ImageNet models'
DEFAULT_IMAGE_SIZE = 224

# folder names that hold a split by convention (validation/, dev/, testing/...): an unread one
# is worth a word when that split's folder is missing; other folders at the root (lost+found/,
# unlabeled/) are not
SPLIT_LIKE = {
    key: re.compile(rf"({names})([-_ ]\w*|\d*)$", re.I)
    for key, names in (
        ("val_dir", "val|valid|validation|dev|eval|evaluation"),
        ("test_dir", "test|testing|eval|evaluation"),
    )
}


def _top_folder(root: Path, folder: str) -> str | None:
    """The folder directly under `root` that `folder` (relative to it, or absolute) lies in."""
    try:
        return Path(os.path.abspath(root / folder)).relative_to(os.path.abspath(root)).parts[0]
    except (ValueError, IndexError):  # outside root, or root itself
        return None


class _MappedImageFolder(ImageFolder):
    """ImageFolder that can be told the class-to-index mapping (val/test reuse train's)."""

    def __init__(
        self,
        root: str,
        decode: ImageDecoder,
        class_to_idx: dict[str, int] | None,
        allow_empty: bool,
        not_classes: Sequence[str] = (),
    ):
        self._fixed_class_to_idx = class_to_idx
        self._not_classes = not_classes
        super().__init__(
            root,
            loader=decode,
            is_valid_file=functools.partial(visible_image, root),
            allow_empty=allow_empty,
        )

    def find_classes(self, directory):
        if self._fixed_class_to_idx is None:
            # hidden folders (.ipynb_checkpoints) are no class: torchvision takes every folder
            classes = class_folders(Path(directory), self._not_classes)
            return classes, {name: i for i, name in enumerate(classes)}
        mapping = self._fixed_class_to_idx
        return sorted(mapping, key=mapping.get), dict(mapping)


def class_folders(path: Path, not_classes: Sequence[str] = ()) -> list[str]:
    """The class folders of a split folder, sorted; hidden ones are not classes, nor the
    `not_classes` (other splits' folders inside the training folder: data.train_dir=.)."""
    return sorted(
        e.name
        for e in path.iterdir()
        if e.is_dir() and not is_hidden(e.name) and e.name not in not_classes
    )


def _decode_error(path: str, size: int) -> str | None:
    """Why `path` cannot be decoded as an image (None: it can). JPEGs decode at a reduced scale
    (`draft`), which reads every block of the file at a fraction of the cost of a full decode."""
    try:
        with Image.open(path) as img:
            check_mode(img)
            img.draft("RGB", (size, size))
            img.load()
    except DECODE_ERRORS as err:
        if isinstance(err, PermissionError):  # said so (was: PIL's error, as if not an image)
            return "this user may not read it"
        if isinstance(err, FileNotFoundError) and os.path.islink(path):
            return f"a link to {os.readlink(path)}, which does not exist"
        if os.path.isfile(path) and os.path.getsize(path) == 0:  # PIL: "cannot identify"
            return "an empty file (0 bytes)"
        why = decode_error_text(err, path)
        return f"{type(err).__name__}: {why[:160]}" if why else type(err).__name__
    return None


def warn_numbered_classes(classes: Sequence[str], where: Path) -> None:
    """A warning for class folders named by numbers other than their outputs' positions
    (`1, 10, 2`: sorted as text, as torchvision's ImageFolder sorts them): the model's output
    0 (sft-predict's `pred`) is folder 1 (was: no word; a `pred` read as the folder's number
    was another class)."""
    if not all(c.isdecimal() for c in classes) or [int(c) for c in classes] == list(
        range(len(classes))
    ):
        return
    in_text_order = [int(c) for c in classes] != sorted(int(c) for c in classes)
    rank_zero_warning(
        log,
        f"{where}: the class folders are numbers, in the model's output order ("
        f"{first_few(classes, 10)}): output i (sft-predict's pred) is the i-th of them, not the "
        "folder named i; pred_name names the folder"
        + (" (leading zeros, 01 02 10, sort them as numbers)" if in_text_order else ""),
    )


def undecodable(paths: Sequence[str | Path], size: int) -> list[tuple[str, str]]:
    """(path, why) of each image file that cannot be decoded, in order."""
    paths = [str(p) for p in paths]
    quiet_large_image_warning()
    # PIL releases the GIL while decoding: threads use every core
    with ThreadPoolExecutor(max_workers=usable_cpus()) as pool:
        errors = list(pool.map(lambda p: _decode_error(p, size), paths, chunksize=64))
    return [(p, e) for p, e in zip(paths, errors, strict=True) if e is not None]


NAMED_IN_MESSAGE = 3


def first_bad(bad: list[tuple[str, str]]) -> str:
    """The first undecodable files of `undecodable`, each with why."""
    return first_few((f"{p} ({e})" for p, e in bad), NAMED_IN_MESSAGE, sep="; ")


@rank_zero_only  # every DDP rank reads the data; one list
def name_the_others(logger: logging.Logger, bad: list[tuple[str, str]]) -> None:
    """The files left out (skip_bad_files) past the first few the warning names, one line each
    in the run's log (were: named nowhere)."""
    for path, why in bad[NAMED_IN_MESSAGE:]:
        logger.info(f"also left out, as it cannot be decoded: {path} ({why})")


def check_images(ds: ImageFolder, size: int, skip_bad_files: bool) -> None:
    """Decode every image of `ds` once before training, so that a bad file cannot stop a run
    mid-epoch: one error naming the first bad files and their count, or, with `skip_bad_files`,
    a warning with the count and the files left out of `ds`."""
    paths = [p for p, _ in ds.samples]
    bad = undecodable(paths, size)
    if not bad:
        return
    message = (
        f"{len(bad)} of {len(paths)} images under {ds.root} cannot be decoded: {first_bad(bad)}"
    )
    if len(bad) == len(paths):  # was: a traceback, a run without validation, or a wrong hint
        raise SFTError(
            f"none of the {len(paths)} images under {ds.root} can be decoded: {first_bad(bad)}; "
            "data.skip_bad_files=true would leave no images in this split"
        )
    if not skip_bad_files:
        raise SFTError(f"{message}; remove them or set data.skip_bad_files=true to leave them out")
    bad_paths = {p for p, _ in bad}
    ds.samples = [s for s in ds.samples if s[0] not in bad_paths]
    ds.imgs = ds.samples
    ds.targets = [t for _, t in ds.samples]
    rank_zero_warning(log, f"{message}; data.skip_bad_files=true: left out")
    name_the_others(log, bad)


def open_image_folder(
    path: Path,
    decode: ImageDecoder,
    class_to_idx: dict[str, int] | None = None,
    key: str = "data.train_dir",
    classes_of: str = "the training folder",
    not_classes: Sequence[str] = (),
) -> _MappedImageFolder:
    """One split folder (the setting `key` names it) as a dataset; user mistakes in the tree
    become one-line SFTErrors. `classes_of`: what `class_to_idx` are the classes of;
    `not_classes`: folders in it that are other splits, left out."""
    if not path.is_dir():
        raise SFTError(f"image folder {path} does not exist; expected {path}/<class>/<images>")
    classes = class_folders(path, not_classes)
    if not classes:
        unlabelled = class_to_idx is not None and any(
            is_image(p) and not is_hidden(p.name) for p in path.iterdir()
        )
        raise SFTError(
            f"image folder {path} has no class folders; expected {path}/<class>/<images>"
            + (
                f" (its images have no labels: {key}=null leaves this split out, and "
                f"sft-predict inputs={path} predicts them)"
                if unlabelled
                else ""
            )
        )
    if class_to_idx is not None:
        unknown = sorted(set(classes) - set(class_to_idx))
        if unknown:
            nfc = {unicodedata.normalize("NFC", name) for name in class_to_idx}
            # looks the same, is another string: é as one character or as e + accent (macOS)
            why = (
                "; they are spelled as training classes but in another Unicode form (é as one "
                "character or as e + accent, as macOS writes names): rename them to match"
                if any(unicodedata.normalize("NFC", name) in nfc for name in unknown)
                else ""
            )
            raise SFTError(
                f"image folder {path} has class folders {unknown} that {classes_of} does not "
                f"have (its classes: {sorted(class_to_idx)}){why}"
            )
    # first: a link loop would make ImageFolder walk without end (hidden folders too)
    files = [
        f
        for f in visible_files(path, walk_hidden=True)
        if Path(f).relative_to(path).parts[0] not in not_classes
    ]
    try:
        # Train must have images in every class; val/test may lack some classes.
        ds = _MappedImageFolder(
            str(path), decode, class_to_idx, class_to_idx is not None, not_classes
        )
    except FileNotFoundError as e:
        # ImageFolder's "Found no valid file for the classes x": which folders, and what counts
        used = {Path(p).relative_to(path).parts[0] for p in files if visible_image(path, p)}
        empty = [c for c in classes if c not in used]
        if not empty:
            raise SFTError(f"image folder {path}: {e}".strip()) from None
        if denied := [c for c in empty if not os.access(path / c, os.R_OK | os.X_OK)]:
            # ImageFolder's walk passes over a folder it may not read (was: "hold no images")
            raise SFTError(
                f"image folder {path}: this user may not read the class folder(s) "
                f"{', '.join(denied)}; give it access"
            ) from None
        raise SFTError(
            f"image folder {path}: the class folder(s) {', '.join(empty)} hold no image files "
            f"(extensions: {', '.join(IMG_EXTENSIONS)}); add images or remove the folder(s)"
        ) from None
    if len(ds) == 0:
        # images beside the class folders belong to none (was: "holds no image files", for a
        # folder that held some, and the warning naming them never came)
        loose = [
            f for f in files if len(Path(f).relative_to(path).parts) == 1 and is_image(Path(f))
        ]
        raise SFTError(
            f"image folder {path} holds no image files in its class folders (extensions: "
            f"{', '.join(IMG_EXTENSIONS)})"
            + (
                f"; {first_few((Path(f).name for f in loose), 3)} lie(s) beside them, in no "
                f"class: images go in {path}/<class>/"
                if loose
                else ""
            )
        )
    warn_left_out(path, (p for p, _ in ds.samples), class_folders=True, files=files)
    return ds


# state_dict keys: the training folder a validation set was carved from, and the carve's digest
VAL_CARVE_FOLDER = "val_carved_from"
VAL_CARVE_DIGEST = "val_carve_digest"


class ImageFolderDataModule(ImageDataModule):
    """`data_dir/{train_dir,val_dir,test_dir}/<class>/*` image trees.

    Every image is decoded and resized to `image_size` x `image_size` uint8 in the DataLoader
    workers (None: the side the model's backbone takes, `configure_input`, else 224);
    crop/flip/normalise run per batch on the device (`transform_batch`). Class names
    are the training folder's class folders (sorted); val/test use the training mapping. When
    `val_dir` is None or does not exist, a class-stratified `val_fraction` of the training
    images (seeded by `split_seed`, not the run's `seed`) is the validation set, or about
    `val_size` images when that is given (the CIFAR-10 experiments set it, so they run on a
    folder too). The few-label subset is drawn after that carve. Without statistics from the
    user or the backbone, images are normalised with ImageNet's (photos of the same kind, for
    the usual folder).
    """

    # the training machine's worker count: sft-eval/-predict use the data config's value
    machine_settings = ("num_workers",)

    dataset_normalization = IMAGENET

    def __init__(
        self,
        data_dir: str,
        image_size: int | None = None,
        crop_pct: CropShare = None,
        interpolation: Interpolation = "bilinear",
        train_dir: str = "train",
        val_dir: str | None = "val",
        test_dir: str | None = "test",
        val_fraction: float = 0.1,
        val_size: int | None = None,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 2,
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
        drop_last: bool = True,
        skip_bad_files: bool = False,
    ) -> None:
        super().__init__()
        data_dir = absolute_dir(data_dir)
        if image_size is not None:
            check_batch_size("image_size", image_size)
        # as from a config (checked against these annotations before the run): a datamodule
        # built in Python gets the same line
        check_value(crop_pct, CropShare, "data.crop_pct")
        check_value(interpolation, Interpolation, "data.interpolation")
        check_batch_size("batch_size", batch_size)
        if eval_batch_size is not None:
            check_batch_size("eval_batch_size", eval_batch_size)
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise SFTError(f"data.num_workers must be an integer >= 0, got {num_workers!r}")
        if (
            isinstance(val_fraction, bool)
            or not isinstance(val_fraction, Real)
            or not 0 < val_fraction < 1
        ):
            raise SFTError(f"data.val_fraction must be a number in (0, 1), got {val_fraction!r}")
        if val_size is not None and (
            isinstance(val_size, bool) or not isinstance(val_size, int) or val_size < 1
        ):
            raise SFTError(f"data.val_size must be an integer >= 1 or null, got {val_size!r}")
        check_few_label_args(train_fraction, samples_per_class)
        crop_scale, crop_ratio = number_list(crop_scale), number_list(crop_ratio)
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

        self.root = expand_home(data_dir)
        self._image_size_given = image_size is not None
        self.image_size = image_size or DEFAULT_IMAGE_SIZE
        self.hparams.image_size = self.image_size  # checkpoints record the size decoded to
        self.train_dir, self.val_dir, self.test_dir = train_dir, val_dir, test_dir
        self.val_fraction = float(val_fraction)
        self.val_size = val_size
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        # seed=null (an unseeded run) still draws one few-label subset, as text data does
        self.seed = 0 if seed is None else seed
        self.split_seed = split_seed
        self.train_fraction = train_fraction
        self.samples_per_class = samples_per_class
        self.drop_last = drop_last
        self.skip_bad_files = skip_bad_files
        self.crop_pct = None if crop_pct is None else float(crop_pct)
        self.interpolation = interpolation
        # PIL decode -> resize -> uint8 CHW tensor, per sample in the workers.
        self.decode = self.image_decoder()
        self.train_data: Dataset | None = None
        self.val_data: Dataset | None = None
        self.test_data: Dataset | None = None
        # the training images' files, until val and test are checked against them
        self._training_files: set[FileId] = set()
        self._val_files: set[FileId] = set()  # a validation folder's (test is checked against)
        # {training folder, digest of the images carved from it for validation}; empty with a
        # validation folder. Checkpoints keep it (`state_dict`): evaluating or resuming after
        # the folder changed would validate on another carve, which can hold trained images
        self._val_carve: dict[str, str] = {}

    def configure_input(self, spec: InputSpec) -> None:
        """Also decode to the side the backbone takes when data.image_size is not given (was:
        32 px, CIFAR's, for any folder: photos shrunk, then enlarged again by the model)."""
        super().configure_input(spec)
        if self._image_size_given or spec.image_size is None:
            return
        self.image_size = self.hparams.image_size = int(spec.image_size)
        self.decode = self.image_decoder()
        rank_zero_info(
            f"data.image_size=null: images are decoded at {self.image_size}x{self.image_size}, "
            "the size the model's backbone takes"
        )

    def image_decoder(self) -> ImageDecoder:
        """How this data's images become the model's input squares (sft-predict's too)."""
        return ImageDecoder(self.image_size, self.crop_pct, self.interpolation)

    @property
    def has_labelled_test(self) -> bool:
        """Whether the test folder exists (README: `test/` is optional); its images are
        labelled by their class folders."""
        return self.test_dir is not None and (self.root / self.test_dir).is_dir()

    def setup(self, stage: str | None = None) -> None:
        if (
            self.model_class_names is not None
            and stage in ("test", "predict")
            and self.has_labelled_test
        ):
            # sft-eval of a test folder: the model's classes; the training folder is not read
            self._set_classes(self.model_class_names)
        elif (
            self.model_class_names is not None
            and stage in ("validate", "predict")
            and self._val_path() is not None
        ):
            # sft-eval of a validation folder, the same way (was: the training folder required,
            # and all of its images decoded first)
            if self.val_data is None:
                self._set_classes(self.model_class_names)
                self.val_data = self._open_val_folder(self._val_path(), "the model")
        elif self.train_data is None:
            self._setup_train_val()
        if stage in (None, "fit"):
            self.check_train_batch(len(self.train_indices), str(self.train_path))
        # without a test folder, only an explicit test is an error: predictions are of val.
        # Before fit too: a bad test image would otherwise end sft-train after its training
        wants_test = stage == "test" or (
            (stage == "predict" or (stage in (None, "fit") and self.test_wanted))
            and self.has_labelled_test
        )
        if wants_test and self.test_data is None:
            if self.test_dir is None:
                raise SFTError("data.test_dir is null: this image-folder dataset has no test split")
            self.test_data = open_image_folder(
                self.root / self.test_dir,
                self.decode,
                self.class_to_idx,
                "data.test_dir",
                "the training folder" if self.model_class_names is None else "the model",
            )
            check_images(self.test_data, self.image_size, self.skip_bad_files)
            tested = [p for p, _ in self.test_data.samples]
            test_root = self.root / self.test_dir
            ids = file_ids(tested)  # once: one stat per file adds up on a network file system
            warn_shared_files(
                tested,
                ids,
                test_root,
                self._training_files,
                "the training folder",
                "testing scores images the model trains on",
            )
            warn_shared_files(
                tested,
                ids,
                test_root,
                self._val_files,
                "the validation folder",
                "testing scores the images the best checkpoint is chosen on",
            )
            warn_classes_without_examples(
                self.test_data.targets, self.class_names, str(self.root / self.test_dir), "test"
            )
        # every split is checked: not kept (nor pickled to ranks)
        self._training_files, self._val_files = set(), set()
        splits = {"train": self.train_data, "val": self.val_data, "test": self.test_data}
        self.log_splits(f"image folder {self.root}", splits)

    def known_class_names(self) -> list[str] | None:
        if not self.train_path.is_dir():
            return None
        return class_folders(self.train_path, self._splits_in_training_folder())

    def _splits_in_training_folder(self) -> list[str]:
        """The val/test folders that are folders of the training folder (data.train_dir=. with
        the classes beside val/ and test/): splits, not classes."""
        inside = []
        for name in (self.val_dir, self.test_dir):
            folder = self.root / name if name is not None else None
            if (
                folder is not None
                and folder.is_dir()
                and folder.parent.resolve() == self.train_path.resolve()
            ):
                inside.append(folder.name)
        return inside

    def predicted_ids(self) -> list[str]:
        """Each predicted image's path under data_dir (a carved validation image's is under
        the training folder)."""
        data = self.scored_data()
        if isinstance(data, Subset):
            paths = [data.dataset.samples[i][0] for i in data.indices]
        else:
            paths = [path for path, _ in data.samples]
        return [Path(os.path.relpath(path, self.root)).as_posix() for path in paths]

    def state_dict(self) -> dict[str, str]:
        return dict(self._val_carve)

    def load_state_dict(self, state_dict: Mapping[str, str]) -> None:
        """The checkpoint's run carved its validation images from the same training folder as
        this one: a warning when they are other images now (files added, removed or renamed)."""
        folder = state_dict.get(VAL_CARVE_FOLDER)
        if folder is None or folder != self._val_carve.get(VAL_CARVE_FOLDER):
            return  # a validation folder, or another training folder: nothing to compare
        if state_dict.get(VAL_CARVE_DIGEST) != self._val_carve.get(VAL_CARVE_DIGEST):
            advice = (
                "score a folder of other images instead (++data.test_dir=<folder under "
                "data.data_dir>)"
                if self.model_class_names is not None  # sft-eval
                else "put the folder back as it was, or give the run a validation folder "
                f"({self.root / str(self.val_dir)})"
            )
            rank_zero_warning(
                log,
                f"the images carved from {folder} for validation are not the ones the "
                "checkpoint's run validated on (the folder, or data.val_fraction, val_size or "
                "split_seed, changed since): this validation can hold images the model trained "
                f"on; {advice}",
            )

    @property
    def train_path(self) -> Path:
        return self.root / self.train_dir

    def _setup_train_val(self) -> None:
        train_path = self.train_path
        self._check_split_folders()  # before the info line below and before decoding images
        if not train_path.is_dir():  # before the info line: it would speak of a missing tree
            raise SFTError(self._no_training_folder())
        if not self.has_labelled_test:
            where = (
                "data.test_dir is null"
                if self.test_dir is None
                else f"no test folder {self.root / self.test_dir}"
            )
            rank_zero_info(
                f"{where}: sft-train skips testing; sft-eval scores and predicts validation"
            )
        splits_inside = self._splits_in_training_folder()
        if splits_inside:
            rank_zero_info(
                f"{', '.join(f'{name}/' for name in splits_inside)} under the training folder "
                f"{train_path}: read as splits, not as classes"
            )
        # sft-eval scoring the validation carved from a folder: the model's classes, by name
        # (was: the folder's own, scored by position with a warning when they were others)
        scoring = self.model_class_names is not None
        model_classes = {n: i for i, n in enumerate(self.model_class_names or [])}
        full = open_image_folder(
            train_path,
            self.decode,
            model_classes if scoring else None,
            classes_of="the model" if scoring else "the training folder",
            not_classes=splits_inside,
        )
        if len(full.classes) == 1:  # was: the batch size or the class count said first
            raise SFTError(
                f"image folder {train_path} has one class folder ({full.classes[0]}): a "
                "classifier needs at least two, one folder per class"
            )
        check_images(full, self.image_size, self.skip_bad_files)
        self._training_files = warn_repeated_files([p for p, _ in full.samples], train_path)
        self._set_classes(full.classes)
        warn_numbered_classes(full.classes, train_path)
        targets = torch.as_tensor(full.targets, dtype=torch.int64)

        val_path = self._val_path()
        if val_path is not None:
            if self.val_size is not None:  # (was: left unused without a word)
                rank_zero_warning(
                    log,
                    f"data.val_size={self.val_size} is not used: the run validates on the "
                    f"folder {val_path}; data.val_dir=null carves val_size training images "
                    "instead",
                )
            self.val_data = self._open_val_folder(val_path, "the training folder")
            self._val_files = warn_files_of_training(
                [p for p, _ in self.val_data.samples], val_path, self._training_files, "validation"
            )
            pool = torch.arange(len(full))
        else:
            setting, fraction = f"val_fraction={self.val_fraction}", self.val_fraction
            if self.val_size is not None:
                # as a fraction: the carve stays class-stratified (about val_size images)
                setting, fraction = f"val_size={self.val_size}", self.val_size / len(full)
                if fraction >= 1:
                    raise SFTError(
                        f"data.{setting} is not smaller than the {len(full)} images under "
                        f"{train_path}; lower it or add a '{self.val_dir}' folder"
                    )
            val_pos = holdout_indices(targets, fraction, seed=self.split_seed)
            is_val = torch.zeros(len(full), dtype=torch.bool)
            is_val[val_pos] = True
            pool = (~is_val).nonzero().flatten()
            if not val_pos:  # every class keeps its last image for training
                raise SFTError(
                    f"image folder {train_path} is too small to carve data.{setting} for "
                    f"validation (no class has 2 images); add images or a '{self.val_dir}' folder"
                )
            rank_zero_info(
                f"no validation folder; {len(val_pos)} of the {len(full)} images of {train_path} "
                f"validate (data.{setting})"
            )
            asked = max(1, round(fraction * len(full)))
            # twice as many, and 10 more (a tiny folder's few classes: no news); was: said in
            # the info line above only
            if len(val_pos) >= max(2 * asked, asked + 10):
                rank_zero_warning(
                    log,
                    f"data.{setting} asks about {asked} validation images of {train_path}, and "
                    f"{len(val_pos)} validate: the carve takes at least one image of every "
                    "class that has two or more, so many small classes give more; add a "
                    f"'{self.val_dir}' folder to validate on other images",
                )
            self.val_data = Subset(full, val_pos)
            # a class of one image keeps it for training (as a val/ folder's missing class is)
            warn_classes_without_examples(
                targets[val_pos],
                self.class_names,
                f"the validation carved from {train_path}",
                "validation",
            )
            carved = sorted(
                Path(full.samples[i][0]).relative_to(train_path).as_posix() for i in val_pos
            )
            self._val_carve = {
                VAL_CARVE_FOLDER: str(train_path.resolve()),
                VAL_CARVE_DIGEST: hashlib.sha256("\n".join(carved).encode()).hexdigest()[:20],
            }
        keep = few_label_indices(
            targets[pool], self.train_fraction, self.samples_per_class, seed=self.seed
        )
        self.train_indices = pool[torch.as_tensor(keep, dtype=torch.int64)].tolist()
        self.train_data = Subset(full, self.train_indices)
        warn_classes_without_examples(
            targets[self.train_indices], self.class_names, str(train_path)
        )

    def _val_path(self) -> Path | None:
        """The validation folder, when there is one (else validation is carved from training)."""
        path = self.root / self.val_dir if self.val_dir is not None else None
        return path if path is not None and path.is_dir() else None

    def _open_val_folder(self, path: Path, classes_of: str) -> _MappedImageFolder:
        """The validation folder as a dataset of this data's classes, its images checked."""
        data = open_image_folder(path, self.decode, self.class_to_idx, "data.val_dir", classes_of)
        check_images(data, self.image_size, self.skip_bad_files)
        warn_classes_without_examples(data.targets, self.class_names, str(path), "validation")
        return data

    def _no_training_folder(self) -> str:
        """Why the training folder is missing, and what the user likely meant."""
        train_path = self.train_path
        message = (
            f"image folder {train_path} does not exist; expected {train_path}/<class>/<images>"
        )
        if not self.root.is_dir():  # moved or misnamed (was, in sft-eval: "name a test folder
            # under it")
            return (
                f"image folder {self.root} (data.data_dir) does not exist; expected "
                f"{self.root}/{self.train_dir}/<class>/<images>"
            )
        if self.model_class_names is not None:  # sft-eval without a test folder
            return (
                f"{message}: sft-eval scores data.test_dir ({self.test_dir}), or without it "
                f"data.val_dir ({self.val_dir}), or without both the validation carved from the "
                "training images; name the folder of labelled images to score: "
                f"++data.test_dir=<its path under {self.root}>"
            )
        splits = {self.val_dir, self.test_dir, "val", "valid", "validation", "test"}
        if self.root.is_dir() and [c for c in class_folders(self.root) if c not in splits]:
            # the Kaggle layout: the class folders right under data_dir
            return f"{message}; if the folders under {self.root} are the classes: data.train_dir=."
        if self.root.is_dir() and any(
            is_image(p) and not is_hidden(p.name) for p in self.root.iterdir()
        ):
            return (
                f"{message}; {self.root} holds images itself, as a class folder does: "
                "data.data_dir is the folder that holds train/<class>/"
            )
        return message

    def _set_classes(self, names: list[str]) -> None:
        # by position, as torchvision's ImageFolder numbers the sorted class folders
        self.class_names = list(names)
        self.num_classes = len(self.class_names)
        self.class_to_idx = {name: i for i, name in enumerate(self.class_names)}

    def _check_split_folders(self) -> None:
        """`val/` and `test/` are optional, but a folder named otherwise (`data.val_dir=vall`)
        must exist: missing, the run validated on a carve of the training images and skipped
        testing, with an info line only. A folder under the root named like a split that no
        split reads (`validation/` next to `train/`) is named in a warning when a split folder is
        missing."""
        root, usual = self.root, {"val_dir": "val", "test_dir": "test"}
        if not root.is_dir():
            return  # the training folder's own error names it
        folders = sorted(e.name for e in root.iterdir() if e.is_dir() and not is_hidden(e.name))
        splits = {"val_dir": self.val_dir, "test_dir": self.test_dir}
        for key, name in splits.items():
            # `val/` is the default's name too
            named_otherwise = name is not None and os.path.normpath(name) != usual[key]
            if named_otherwise and not (root / name).is_dir():
                raise SFTError(
                    f"data.{key}={name}: no folder {root / name} (folders in {root}: "
                    f"{', '.join(folders)}); name one of them, or data.{key}=null for none"
                )
        reads = {_top_folder(root, d) for d in (self.train_dir, *splits.values()) if d}
        for key, name in splits.items():  # a split set to null is the user's choice: no word
            if name is None or (root / name).is_dir():
                continue
            unread = [f for f in folders if f not in reads and SPLIT_LIKE[key].match(f)]
            if unread:
                rank_zero_warning(
                    log,
                    f"no folder {root / name} (data.{key}={name}), but {root} holds "
                    f"{', '.join(f + '/' for f in unread)}, which no split reads: to use it, set "
                    f"data.{key} to its name",
                )

    def _loader(self, data: Dataset | None, split: str, **kwargs) -> DataLoader:
        if data is None:
            raise RuntimeError(f"ImageFolderDataModule: call setup() before the {split} dataloader")
        return split_loader(
            data,
            split,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            **kwargs,
        )
