"""The contracts between data and model, in one place that imports neither.

- `InputSpec`: what a backbone takes. The backbone owns it (timm's `resolve_model_data_config`):
  `SFTClassifier.input_spec` gives the modality and, for image weights, the normalisation they
  were trained with; the entry points hand it to the datamodule (`configure_input`) before
  setup. A backbone trained from scratch expects no statistics: the datamodule then uses its
  dataset's own.
- The pixel statistics sft knows, each set written once.
- `ClassificationData`: what the model and the entry points use of a datamodule
  (`sft.data.base.SFTDataModule` implements it).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from torch.utils.data import DataLoader

from sft.errors import SFTError

Modality = Literal["image", "text"]
# checkpoint key: the best validation accuracy of the run so far (the model saves and restores
# it; a new run from a checkpoint, `ckpt_path=`, starts its own)
VAL_ACC_BEST = "val_acc_best"
# checkpoint key: the metrics logged when it was saved (a ddp_spawn run's main process, which
# its stopped ranks send none, records an interrupted run's metrics from its last.ckpt)
LOGGED_METRICS = "logged_metrics"
# checkpoint key: the trainer precision the checkpoint was trained at (sft-eval's auto keeps a
# full-precision run's)
TRAINED_PRECISION = "trained_precision"
# checkpoint key: the model's class (`module.Class`)
MODEL_TARGET = "model_target"
# the state_dict prefix of SFTClassifier's regulariser (its reference weights, L2-SP's θ₀)
REGULARIZER_STATE = "regularizer."
# checkpoint key: the digest of a text model's tokenizer (a datamodule's rebuild_info)
TOKENIZER_DIGEST = "tokenizer_digest"


@dataclass(frozen=True)
class Normalization:
    """Per-RGB-channel mean and std on a 0..1 pixel scale: inputs are `(x - mean) / std`."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]


# torchvision's and most ImageNet weights
IMAGENET = Normalization((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
# pixels to [-1, 1]: TensorFlow-trained weights (EfficientNet-Lite)
SIGNED_UNIT = Normalization((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
# the CIFAR-10 training images
CIFAR10 = Normalization((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))


@dataclass(frozen=True)
class InputSpec:
    """modality: what the backbone's forward takes (images, or the tokenizer's tensors); None
    when unknown (a backbone of the user's own `_target_`).
    normalization: the statistics its weights expect; None when it trains from scratch.
    image_size: images: the side it takes (its `input_size`, else the one its family is built
    for: 224, or 32 for a CIFAR stem); a datamodule not given one decodes to it. None: unknown.
    tokenizer_digest: for a trained text model, which tokenizer its token ids come from.
    max_positions: text: the longest token sequence its position table holds (None: no limit,
    or unknown); a datamodule set to longer sequences is refused.
    """

    modality: Modality | None
    normalization: Normalization | None = None
    image_size: int | None = None
    # text: the digest of the tokenizer a checkpoint's model was trained with
    # (sft.data.token_cache.tokenizer_digest); None when not known
    tokenizer_digest: str | None = None
    max_positions: int | None = None


@runtime_checkable
class ClassificationData(Protocol):
    """A datamodule sft can train, evaluate and rebuild from a checkpoint.

    `num_classes` and `class_names` are known after `setup`. Loaders yield untransformed
    batches; `transform_batch` turns them into model inputs on the device (augmenting only when
    `train`). `probe_dataloader` serves the training subset in fixed order for linear-probe
    features. `rebuild_info` is what a checkpoint stores to rebuild the datamodule and label
    outputs without it (`datamodule_target`, `class_names`).
    """

    modality: Modality | None
    num_classes: int
    class_names: list[str]
    has_labelled_test: bool

    def configure_input(self, spec: InputSpec) -> None: ...

    def probe_dataloader(self) -> DataLoader: ...

    def transform_batch(self, batch: Any, train: bool) -> Any: ...

    def rebuild_info(self) -> dict[str, Any]: ...


# what the class names, counts and switches are only after `setup`: the methods are there before
SET_IN_SETUP = ("num_classes", "class_names")


def datamodule_gaps(datamodule: object, set_up: bool = True) -> list[str]:
    """The members of ClassificationData that `datamodule` lacks (`set_up`: also those set in
    `setup`); [] for a complete one."""
    members = [
        *ClassificationData.__annotations__,
        *(n for n, v in vars(ClassificationData).items() if callable(v) and not n.startswith("_")),
    ]
    return [m for m in members if not hasattr(datamodule, m) and (set_up or m not in SET_IN_SETUP)]


def not_a_datamodule(datamodule: object, gaps: list[str]) -> str:
    """The line for a datamodule missing `gaps` (was: "not an sft datamodule: derive it from
    SFTDataModule" for one that did, but set no class_names)."""
    return (
        f"{type(datamodule).__name__} is not an sft datamodule: it has no {', '.join(gaps)}; "
        "derive it from sft.data.base.SFTDataModule (or implement "
        "sft.contracts.ClassificationData), and set num_classes and class_names in its setup"
    )


def unrecorded_settings(cls: type, recorded: Mapping[str, Any] | None) -> list[str]:
    """The settings (__init__ parameters) of a datamodule class when it `recorded` none of them
    (no `self.save_hyperparameters()`): sft-eval and sft-predict rebuild it from a checkpoint
    with their defaults, not the run's values. [] when it recorded some or takes none."""
    if recorded:
        return []
    skipped = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    parameters = inspect.signature(cls.__init__).parameters.values()
    return [p.name for p in parameters if p.name != "self" and p.kind not in skipped]


def check_class_indices(
    labels: torch.Tensor, num_classes: int, owner: str, unlabelled: bool = False
) -> None:
    """SFTError naming `owner` when `labels` are not int64 class indices 0..num_classes-1 (with
    `unlabelled`: -1 too): a user's datamodule numbering its classes from 1 ended in
    cross_entropy's "Target 3 is out of bounds", or a device-side assert on a GPU; int32
    labels (numpy's, pandas') in its dtype error, a traceback."""
    # cross_entropy takes these two ("expected target dtype to be Long or Byte")
    if labels.dtype not in (torch.int64, torch.uint8):
        raise SFTError(
            f"{owner} gives labels of dtype {labels.dtype}: labels are int64 class indices "
            "(torch.long; e.g. torch.as_tensor(y, dtype=torch.long))"
        )
    if not labels.numel():
        return
    low, high = int(labels.min()), int(labels.max())
    if low >= (-1 if unlabelled else 0) and high < num_classes:
        return
    raise SFTError(
        f"{owner} gives labels {low}..{high} for {num_classes} classes: labels are class "
        f"indices 0..{num_classes - 1}" + (" (-1: unlabelled)" if unlabelled else "")
    )
