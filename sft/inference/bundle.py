"""A checkpoint's model with what inference needs beside it: modality, class names, and the
datamodule that knows the input pipeline (tokenizer, image size and normalisation)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from sft.contracts import ClassificationData, Modality
from sft.data.image_decode import ImageDecoder
from sft.data.text import TextClassificationDataModule
from sft.data.tokenize import count_cut, cut_note, encode_texts
from sft.errors import SFTError
from sft.inference.model_inputs import check_text_pairs, warn_model_input_changes
from sft.models.classifier import SFTClassifier
from sft.models.loading import check_remote_code, datamodule_from_checkpoint, load_classifier
from sft.utils.checkpoint_io import read_checkpoint
from sft.utils.io import checkpoint_path

log = logging.getLogger(__name__)


@dataclass
class InferenceBundle:
    model: SFTClassifier
    datamodule: ClassificationData
    class_names: list[str]
    modality: Modality
    ckpt_path: Path
    # data.max_length as the model was trained (not changed with +data.max_length=)
    max_length_as_trained: bool = True
    # the backbone's settings as it trained (the model is rebuilt without loading its
    # pretrained weights, which the checkpoint holds): e.g. the base of a peft adapter export
    trained_backbone: dict[str, Any] = field(default_factory=dict)

    @property
    def image_size(self) -> int:
        """Side of the square images the model was trained on."""
        return int(self.datamodule.image_size)

    def image_decoder(self) -> ImageDecoder:
        """Image files decoded as the model's training images were (side, centre crop,
        interpolation); squashed to the side for a datamodule of one's own that does not say."""
        decoder = getattr(self.datamodule, "image_decoder", None)
        return decoder() if callable(decoder) else ImageDecoder(self.image_size)

    @property
    def mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        transform = self.datamodule.transform
        return tuple(transform.mean), tuple(transform.std)

    def image_inputs(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (or [0, 1] float) images -> the model's normalised float input (eval transform)."""
        labels = torch.zeros(images.shape[0], dtype=torch.int64)
        return self.datamodule.transform_batch((images, labels), train=False)[0]

    def tokenize(self, texts: list[str], pairs: list[str] | None = None) -> list[dict[str, Any]]:
        """Token ids per text, truncated as in training; `collate` pads a list of them."""
        dm = self.datamodule
        encoded = encode_texts(dm.tokenizer, texts, pairs, dm.max_length)
        if cut := count_cut(encoded):
            same = ", as in training" if self.max_length_as_trained else ""
            log.warning(f"{cut_note(cut, len(texts), dm.max_length, pairs is not None)}{same}")
        keys = list(encoded.keys())
        return [{k: encoded[k][i] for k in keys} for i in range(len(texts))]

    def collate(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return self.datamodule.collator(features)

    @torch.no_grad()
    def logits(self, inputs: Any) -> torch.Tensor:
        """Logits of the checkpoint model (on its device) for a prepared batch."""
        device = next(self.model.parameters()).device
        if isinstance(inputs, dict):
            inputs = {k: v.to(device) for k, v in inputs.items() if k != "labels"}
        else:
            inputs = inputs.to(device)
        return self.model(inputs).float()


def data_settings(cfg: DictConfig) -> dict[str, Any] | None:
    """The `+data.<key>=...` settings of an sft-predict / sft-export command line."""
    return OmegaConf.to_container(cfg.data, resolve=True) if cfg.get("data") else None


def load_bundle(
    ckpt_path: str | Path,
    device: str = "cpu",
    data: Mapping[str, Any] | None = None,
    trust_remote_code: bool = False,
) -> InferenceBundle:
    """Model (eval mode, on `device`), datamodule and class names of a training checkpoint;
    `data`: settings of the checkpoint's data to change (`+data.data_dir=...`: its files moved);
    `trust_remote_code`: a checkpoint trained with it may run its folders' code."""
    ckpt_path = checkpoint_path(ckpt_path)
    checkpoint = read_checkpoint(ckpt_path)
    check_remote_code(checkpoint, ckpt_path, trust_remote_code)
    model = load_classifier(ckpt_path, checkpoint).to(resolve_device(device))
    trained_data = checkpoint.get("datamodule_hyper_parameters", {})
    warn_model_input_changes(data or {}, trained_data)
    # as sft-eval (was: `+data.text_pair_column=` scored a single-text model on pairs, and a
    # pair model's `=null` exported it as a single-text one)
    check_text_pairs(data or {}, trained_data)
    datamodule = datamodule_from_checkpoint(ckpt_path, checkpoint=checkpoint, **(data or {}))
    datamodule.configure_input(model.input_spec)
    modality = model.input_spec.modality or datamodule.modality
    check_inference_inputs(datamodule, modality, ckpt_path)
    names = checkpoint.get("class_names") or _class_names_from_data(datamodule)
    if len(names) != model.hparams.num_classes:
        raise SFTError(
            f"checkpoint {ckpt_path}: {len(names)} class names for a "
            f"{model.hparams.num_classes}-class model"
        )
    trained_length = "max_length" not in (data or {})
    trained_backbone = dict(checkpoint["hyper_parameters"]["backbone"])
    return InferenceBundle(
        model, datamodule, list(names), modality, ckpt_path, trained_length, trained_backbone
    )


# what sft-predict and sft-export read of a datamodule to prepare inputs as in training, and
# the sft class that gives it
INFERENCE_INPUTS = {
    "image": (("image_size", "transform"), "sft.data.base.ImageDataModule"),
    "text": (("tokenizer", "max_length", "collator"), "sft.data.text.TextClassificationDataModule"),
}


def check_inference_inputs(
    datamodule: ClassificationData, modality: Modality | None, ckpt_path: Path
) -> None:
    """SFTError when the checkpoint's datamodule (a user's) does not say how inputs are prepared
    (was: AttributeError / TypeError tracebacks from sft-predict and sft-export)."""
    name = type(datamodule).__name__
    if modality is None:
        raise SFTError(
            f"checkpoint {ckpt_path}: neither its backbone (a _target_ of your own) nor its "
            f"datamodule {name} declares what the model takes (modality = 'image' or 'text'); "
            "sft-predict and sft-export prepare inputs as an sft datamodule does: derive it from "
            f"{INFERENCE_INPUTS['image'][1]} or {INFERENCE_INPUTS['text'][1]}"
        )
    needs, base = INFERENCE_INPUTS[modality]
    missing = [attr for attr in needs if not hasattr(datamodule, attr)]
    if missing:
        raise SFTError(
            f"checkpoint {ckpt_path}: its datamodule {name} has no {', '.join(missing)}, which "
            f"sft-predict and sft-export read to prepare {modality} inputs as in training; "
            f"derive it from {base}"
        )


def _class_names_from_data(datamodule: ClassificationData) -> list[str]:
    # Checkpoints written before they recorded class names: ask the data (reads the label set,
    # unless the text data names its labels).
    if isinstance(datamodule, TextClassificationDataModule) and datamodule.label_names:
        return [str(n) for n in datamodule.label_names]
    datamodule.setup("validate")
    return list(datamodule.class_names)


def resolve_device(device: str) -> torch.device:
    """`auto`: the GPU when there is one; else the torch device named."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise SFTError(
            f"device={device!r} is not a torch device (cpu, cuda, cuda:1, auto)"
        ) from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise SFTError(f"device={device!r}: no CUDA GPU is available here; use device=cpu")
    return resolved
