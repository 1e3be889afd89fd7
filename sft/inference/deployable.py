"""Self-contained inference modules built from a checkpoint model, for export.

They take the inputs a user has, not the training pipeline's: images as float (B, 3, S, S) in
[0, 1] at the training resolution (the normalisation is part of the module), text as the
tokenizer's `input_ids` + `attention_mask`. The fused head is folded into one Linear.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import torch
from torch import nn

from sft.errors import SFTError
from sft.inference.bundle import InferenceBundle
from sft.models.adapters import merge_adapters

log = logging.getLogger(__name__)


class DeployableImageClassifier(nn.Module):
    """images float (B, 3, S, S) in [0, 1] -> logits (B, num_classes)."""

    def __init__(
        self, backbone: nn.Module, head: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        # x / std - mean / std: the same arithmetic as training's `to_float_normalized`
        self.register_buffer("scale", 1.0 / std_t)
        self.register_buffer("shift", mean_t / std_t)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images * self.scale - self.shift))


class DeployableTextClassifier(nn.Module):
    """input_ids, attention_mask (B, T) int64 -> logits (B, num_classes)."""

    def __init__(self, encoder: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(input_ids=input_ids, attention_mask=attention_mask))


def folded_head(bundle: InferenceBundle) -> nn.Module:
    """The head as one Linear (FusedHead.fold); an MLP branch cannot fold and stays as it is."""
    head = bundle.model.head
    if hasattr(head, "fold"):
        try:
            return head.fold().cpu()
        except SFTError as exc:
            log.warning(f"{exc}: exporting the unfolded head")
    return copy.deepcopy(head).cpu()


def build_deployable(bundle: InferenceBundle) -> nn.Module:
    """The checkpoint model as a deployable module on CPU, in eval mode (a copy)."""
    # LoRA adapters folded into their layers: a plain backbone, outputs unchanged
    backbone = merge_adapters(copy.deepcopy(bundle.model.backbone).cpu())
    head = folded_head(bundle)
    if bundle.modality == "text":
        if bundle.datamodule.text_pair_column:  # a text model's datamodule: the text one
            raise SFTError(
                "sft-export's files take one text (input_ids + attention_mask): sentence-pair "
                "models are not exported; sft-predict predicts pairs from the checkpoint"
            )
        module: nn.Module = DeployableTextClassifier(backbone, head)
    else:
        mean, std = bundle.mean_std
        module = DeployableImageClassifier(backbone, head, mean, std)
    return module.eval()


def parity_inputs(bundle: InferenceBundle, count: int) -> tuple[torch.Tensor, ...]:
    """A few real inputs from the checkpoint's data, as the deployable module's arguments.

    Images come from the test split (else validation), texts from the validation split, in file
    order; a text batch is padded to its longest row, so the mask matters.
    """
    dm = bundle.datamodule
    if (score_with := getattr(dm, "score_with", None)) is not None:
        # the split read without the training data, as sft-eval reads it (was: a folder of
        # test images alone refused, "image folder .../train does not exist")
        score_with(bundle.class_names)
    if bundle.modality == "text":
        split = dm.load_split("val")
        features = [split.example(i) for i in range(min(count, len(split)))]
        for f in features:
            f.pop("labels", None)
        batch = bundle.collate(features)
        return batch["input_ids"], batch["attention_mask"]
    return (_sample_images(dm, count).float() / 255.0,)


def model_inputs(bundle: InferenceBundle, args: tuple[torch.Tensor, ...]) -> Any:
    """The checkpoint model's inputs (its own input pipeline) for deployable-module arguments."""
    if bundle.modality == "text":
        return {"input_ids": args[0], "attention_mask": args[1]}
    return bundle.image_inputs(args[0])


def forward_left_out(model: nn.Module) -> str | None:
    """What the deployable module leaves out of a model whose class overrides
    `SFTClassifier.forward` (a temperature, another pooling): it runs the backbone, then the
    head. None for SFTClassifier's own forward."""
    from sft.models.classifier import SFTClassifier  # the model package imports no inference

    if type(model).forward is SFTClassifier.forward:
        return None
    return (
        f"{type(model).__name__} overrides SFTClassifier.forward, and the exported module "
        "runs the backbone, then the head; sft-predict runs the checkpoint with its forward"
    )


def _sample_images(dm: Any, count: int) -> torch.Tensor:
    """The first `count` uint8 images of the test split, or of validation when there is none."""
    try:
        dm.setup("test")
        data = dm.test_data
    except SFTError:
        data = None
    if data is None:
        dm.setup("validate")
        data = dm.val_data
    images = [data[i][0] for i in range(min(count, len(data)))]
    return torch.stack([torch.as_tensor(im) for im in images])


def sub_batch(args: tuple[torch.Tensor, ...], modality: str) -> tuple[torch.Tensor, ...]:
    """Another batch and sequence size than the export example: checks the dynamic axes."""
    n = max(1, args[0].shape[0] // 2 - 1)
    if modality != "text":
        return tuple(a[:n] for a in args)
    input_ids, mask = (a[:n] for a in args)
    length = int(mask.sum(1).max())  # re-pad to this sub-batch's longest row
    return input_ids[:, :length], mask[:, :length]
