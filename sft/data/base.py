"""Base datamodule and the in-memory batch dataset the datamodules share."""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Sized
from typing import Any, ClassVar

import lightning as L
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset, Sampler

from sft.contracts import InputSpec, Modality, Normalization, check_class_indices
from sft.data.augment import BatchAugmentation, ImageBatchTransform
from sft.data.image_decode import ImageDecoder
from sft.data.resumable import ResumableRandomSampler
from sft.errors import SFTError
from sft.utils.io import expand_home
from sft.utils.logs import first_few


class SFTDataModule(L.LightningDataModule):
    """Base of all sft datamodules: implements `sft.contracts.ClassificationData`.

    After `setup(stage)`: `num_classes` and `class_names`. Loaders yield raw `(x, y)` batches
    (y int64; images still uint8); `transform_batch` turns them into model inputs on the device,
    which Lightning triggers through `on_after_batch_transfer`. A LightningModule that overrides
    `on_after_batch_transfer` itself takes precedence over this hook, so it must not.
    """

    # what the loaders yield; None: not declared (a user's datamodule), not checked
    modality: ClassVar[Modality | None] = None
    # settings of the machine a run trained on, not of the trained model: a checkpoint's data
    # is rebuilt with this machine's defaults for them (sft-eval, sft-predict, sft-export)
    machine_settings: ClassVar[tuple[str, ...]] = ()
    num_classes: int
    class_names: list[str]
    # False when the test split has no labels (sft-train then skips testing, sft-eval scores
    # and predicts validation), or when the run does not read it (`test_wanted`)
    has_labelled_test: bool = True
    # False when the run does not test (sft-train test=false): fitting reads no test split (was:
    # tokenised or decoded for nothing, and an HF dataset without one refused)
    test_wanted: bool = True
    # the classes of the model the data is scored with (`score_with`); None: the data's own
    model_class_names: list[str] | None = None
    # set in `setup` when the labels themselves suggest the fix for a class count the model
    # does not match (integer labels counted from 1: name them); None: nothing to add
    class_count_hint: str | None = None
    # the last `log_splits` line said
    _splits_logged: str | None = None
    # sft's datamodules set them in `setup` (None: not read)
    train_data: Dataset | None = None
    val_data: Dataset | None = None
    test_data: Dataset | None = None

    def score_with(self, class_names: Sequence[str]) -> None:
        """Score a model of these classes (sft-eval, with the checkpoint's): the scored split
        (the labelled test split, else validation) is then read without the training split
        where the datamodule can, so a new labelled file or folder is scored without the data
        the model was trained on."""
        self.model_class_names = [str(n) for n in class_names]

    def rebuild_info(self) -> dict[str, Any]:
        cls = type(self)
        return {
            "datamodule_target": f"{cls.__module__}.{cls.__qualname__}",
            "class_names": [str(n) for n in self.class_names],
        }

    def known_class_names(self) -> list[str] | None:
        """The class names when the configuration or a folder listing tells them, before
        `setup` reads any data (None: known after `setup`). Checked against a checkpoint's on
        every rank of a run that trains on from one, so it must be cheap."""
        return None

    # set by configure_input: a datamodule built in a user's own script may be set up without
    # it, and SFTClassifier says so (it prepares images by its own statistics and size)
    input_configured = False

    def configure_input(self, spec: InputSpec) -> None:
        """Adopt what the model's backbone expects (sft.contracts), before `setup`: the entry
        points call it with `model.input_spec`. Here: the modalities must match, where both
        are known."""
        self.input_configured = True
        if (
            spec.modality is not None
            and self.modality is not None
            and spec.modality != self.modality
        ):
            raise SFTError(modality_mismatch(spec.modality, type(self).__name__, self.modality))

    def eval_sampler(self, data: Dataset | None) -> Sampler | None:
        """Under DDP, this rank's share of a validation/test split with every example once
        (Lightning's own DistributedSampler pads the split to a multiple of the ranks with
        repeats, which val/acc, test/acc and the best checkpoint's choice then counted twice);
        None on one process, and for a split smaller than the ranks (Lightning's padding then).
        The ranks' batch counts may differ by one. That is safe: DDP's forward syncs buffers
        only in the first forward after a training step, which every rank makes, and the
        metrics sync once, at the epoch's end."""
        trainer = self.trainer
        shard = (trainer.distributed_sampler_kwargs if trainer is not None else None) or {}
        replicas = shard.get("num_replicas", 1)
        if data is None or replicas <= 1 or len(data) < replicas:
            return None
        return UnrepeatedDistributedSampler(
            data, num_replicas=shard["num_replicas"], rank=shard["rank"], shuffle=False
        )

    def check_train_batch(self, train_size: int, where: str) -> None:
        """`check_train_batch` for this data's batch size, over the processes that share the
        training split (DDP: each trains on its share; was: the whole split checked, and a run
        of zero steps recorded as completed)."""
        trainer = self.trainer
        shard = (trainer.distributed_sampler_kwargs if trainer is not None else None) or {}
        processes = shard.get("num_replicas", 1)
        check_train_batch(self.batch_size, train_size, self.drop_last, where, processes)

    def log_splits(self, what: str, splits: Mapping[str, Sized | None]) -> None:
        """One info line: `what`, its classes and the size of each split read; said again
        only when a setup call read another split."""
        line = (
            f"{what}: {self.num_classes} classes ({first_few(self.class_names, 10)}); "
            + ", ".join(f"{role} {len(data)}" for role, data in splits.items() if data is not None)
        )
        if line != self._splits_logged:
            rank_zero_info(line)
            self._splits_logged = line

    def scored_data(self) -> Dataset | None:
        """The split sft-eval scores and predicts: the labelled test split, else validation."""
        return self.test_data if self.has_labelled_test else self.val_data

    def predicted_ids(self) -> list[str] | None:
        """What names each example of `predict_dataloader`, in order: predictions.csv's `id`
        (None: its position)."""
        return None

    def predict_dataloader(self) -> DataLoader:
        """What sft-eval predicts (predictions.csv, confusion matrix): the split it scores,
        the labelled test split, else validation, in order. Here the datamodule's own test or
        validation loader, so a user's datamodule needs no loader of its own for it."""
        return self.test_dataloader() if self.has_labelled_test else self.val_dataloader()

    def probe_dataloader(self) -> DataLoader:
        """The (few-label) training subset in fixed order, unshuffled, batches untransformed.

        For frozen-backbone features (linear-probe init): the caller moves each batch to the
        device and applies `transform_batch(batch, train=False)`.
        """
        raise SFTError(
            f"{type(self).__name__} has no probe_dataloader, which the linear probe "
            "(model.linear_probe) reads: define it (the training split in order, batches as the "
            "loaders yield them), or set model.linear_probe=null"
        )

    def transform_batch(self, batch: Any, train: bool) -> Any:
        """Batch on the device -> model inputs (augmentation only when `train`)."""
        raise SFTError(
            f"{type(self).__name__} has no transform_batch: define it (a loader's batch on the "
            "device -> the model's inputs; return it as it is when the loaders yield them)"
        )

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Every batch's labels are class indices (or -1, unlabelled, in predictions), checked on
        the CPU before the transfer (no device sync): a user's datamodule numbering its classes
        from 1 ended in cross_entropy's "Target 3 is out of bounds", or a device-side assert on
        a GPU."""
        labels = batch.get("labels") if isinstance(batch, Mapping) else None
        if isinstance(batch, list | tuple) and len(batch) == 2:
            labels = batch[1]
        n = getattr(self, "num_classes", None)
        if isinstance(labels, torch.Tensor) and labels.device.type == "cpu" and isinstance(n, int):
            # a scored batch's labels reach the loss: -1 too ("Target -1 is out of bounds")
            unlabelled = self.trainer is None or self.trainer.predicting
            check_class_indices(labels, n, type(self).__name__, unlabelled=unlabelled)
        return batch

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        trainer = self.trainer
        # overfit_batches (debug=overfit) must see the same inputs every epoch: no augmentation
        train = trainer is not None and trainer.training and not trainer.overfit_batches
        batch = self.transform_batch(batch, train=bool(train))
        # Lightning converts a batch to the run's float type (trainer.precision=64-true,
        # bf16-true) before this hook: the floats made here (images from uint8) get it too
        return trainer.precision_plugin.convert_input(batch) if trainer is not None else batch


# a model config of sft's for each kind of input, as an example
MODEL_FOR = {
    "text": "a text model such as model=minilm_fused",
    "image": "an image model such as model=effnet_lite0_fused",
}


def modality_mismatch(backbone_takes: Modality, datamodule: str, gives: Modality) -> str:
    """The line for a backbone paired with data of the other modality."""
    kind = f"{'an' if backbone_takes == 'image' else 'a'} {backbone_takes}"
    return (
        f"the model's backbone takes {backbone_takes} inputs but {datamodule} gives {gives}s: "
        f"pair {kind} backbone with {kind} datamodule "
        f"({gives} data: {MODEL_FOR.get(gives, f'a {gives} model')})"
    )


class ImageDataModule(SFTDataModule):
    """Loaders and batch transform shared by the image datamodules.

    Subclasses set `train_data`/`val_data`/`test_data`, `batch_size`, `eval_batch_size` and
    `drop_last`, call `_init_transform` in `__init__`, and define `_loader(data, split, **kw)`.
    Normalisation: the user's `mean`/`std` when given, else what the backbone's weights expect
    (`configure_input`), else the dataset's own statistics (`dataset_normalization`).
    """

    modality = "image"
    dataset_normalization: ClassVar[Normalization]
    image_size: int  # side of the square images the loaders yield (inference decodes to it)

    def image_decoder(self) -> ImageDecoder:
        """How an image file becomes this data's input square: sft-predict decodes files with
        it for a model trained on this data (arrays of one size: squashed to it)."""
        return ImageDecoder(self.image_size)

    def _init_transform(
        self,
        augment: bool,
        crop_padding: int,
        hflip: bool,
        mean: Sequence[float] | None,
        std: Sequence[float] | None,
        **more: Any,
    ) -> tuple[list[float], list[float]]:
        """Build `self.transform`; returns the (mean, std) it uses, as plain lists for hparams."""
        if (mean is None) != (std is None):
            raise SFTError(
                "data.mean and data.std: give both or neither (null: the statistics the "
                "backbone's weights expect)"
            )
        self._normalization_given = mean is not None
        if mean is None:
            mean, std = self.dataset_normalization.mean, self.dataset_normalization.std
        # `more`: BatchAugmentation's other settings (rand_augment, mixup_alpha, ...)
        augmentation = BatchAugmentation(augment, crop_padding, hflip, **more)
        self.transform = ImageBatchTransform(augmentation, mean, std)
        return list(self.transform.mean), list(self.transform.std)

    def configure_input(self, spec: InputSpec) -> None:
        super().configure_input(spec)
        if self._normalization_given or spec.normalization is None:
            return
        norm = spec.normalization
        self.transform = self.transform.normalized_by(norm.mean, norm.std)
        # checkpoints record the statistics used: sft-eval and sft-predict rebuild them as given
        self.hparams.mean, self.hparams.std = list(norm.mean), list(norm.std)

    def train_dataloader(self) -> DataLoader:
        # what trains only (sft-eval scores what trained with it), at the side the images are
        # decoded to, known by now (was: accepted, and at 100 px of padding around 16 px
        # images 97 % of the crops held padding only)
        augmentation = self.transform.augmentation
        padding = augmentation.crop_padding
        # (data.crop_scale's crop pads nothing)
        padded = augmentation.augment and augmentation.crop_scale is None
        if padded and padding >= self.image_size:
            raise SFTError(
                f"data.crop_padding={padding} must be below the image side, {self.image_size} "
                "px: a random crop of the padded image could hold padding only (CIFAR-10's "
                "recipe: 4 at 32 px)"
            )
        return self._loader(
            self.train_data,
            "train",
            batch_size=self.batch_size,
            # shuffles like shuffle=True, and a resumed epoch continues where it stopped
            sampler=ResumableRandomSampler(self.train_data),
            drop_last=self.drop_last,
        )

    def val_dataloader(self) -> DataLoader:
        return self._loader(
            self.val_data,
            "val",
            batch_size=self.eval_batch_size,
            sampler=self.eval_sampler(self.val_data),
        )

    def test_dataloader(self) -> DataLoader:
        return self._loader(
            self.test_data,
            "test",
            batch_size=self.eval_batch_size,
            sampler=self.eval_sampler(self.test_data),
        )

    def predict_dataloader(self) -> DataLoader:
        """The test split in order; validation where there is no labelled test split."""
        return self._loader(self.scored_data(), "predict", batch_size=self.eval_batch_size)

    def probe_dataloader(self) -> DataLoader:
        return self._loader(self.train_data, "probe", batch_size=self.eval_batch_size)

    def transform_batch(self, batch: Any, train: bool) -> Any:
        return self.transform(batch, train, getattr(self, "num_classes", None))


class TensorBatchDataset(Dataset):
    """Samples held as whole tensors; a batch is one fancy-index instead of B `__getitem__` calls.

    torch's map-style fetcher calls `dataset.__getitems__(indices)` once per batch when it exists
    and hands the result to `collate_fn`; use `passthrough_collate` with it. Any sampler (also
    Lightning's DistributedSampler) still works because it only produces the indices.
    """

    def __init__(self, *tensors: torch.Tensor) -> None:
        if not tensors or any(t.shape[0] != tensors[0].shape[0] for t in tensors):
            raise ValueError("TensorBatchDataset needs tensors with the same first dimension")
        self.tensors = tensors

    def __len__(self) -> int:
        return self.tensors[0].shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        return tuple(t[index] for t in self.tensors)

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, ...]:
        idx = torch.as_tensor(indices, dtype=torch.int64)
        # index_select copies whole rows (memcpy); t[idx] is ~20x slower on CPU for image rows.
        return tuple(t.index_select(0, idx) for t in self.tensors)


def absolute_dir(data_dir: Any) -> str:
    """`data.data_dir` as the checkpoint keeps it: absolute (a relative one, as typed, was
    looked up from wherever sft-eval or sft-predict ran later)."""
    return str(expand_home(str(data_dir)).absolute())


def passthrough_collate(batch: Any) -> Any:
    """`collate_fn` for `TensorBatchDataset`: the batch is already collated."""
    return batch


def check_batch_size(key: str, value: Any) -> int:
    """Raise SFTError unless `value` is an integer > 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise SFTError(f"data.{key} must be an integer > 0, got {value!r}")
    return value


def check_train_batch(
    batch_size: int, train_size: int, drop_last: bool, where: str, processes: int = 1
) -> None:
    """With drop_last a batch larger than the training set, or under DDP than one process's
    share of it (`processes`), would give zero training steps."""
    share = -(-train_size // processes)  # DistributedSampler's, rounded up
    if drop_last and batch_size > share:
        size = f"{train_size} samples" + (
            f", {share} per process over {processes} DDP processes" if processes > 1 else ""
        )
        raise SFTError(
            f"data.batch_size={batch_size} is larger than the training subset of {where} "
            f"({size}) and data.drop_last=true would drop every batch; "
            "lower data.batch_size, set data.drop_last=false or use more training samples"
        )
