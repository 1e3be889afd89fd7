"""Rebuild an SFTClassifier (and its datamodule) from a checkpoint alone, loading it safely."""

from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate

from sft.models.classifier import SFTClassifier
from sft.utils.errors import SFTError


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """`torch.load(weights_only=True)` with one clear error for a missing or unreadable file."""
    path = Path(path)
    if not path.is_file():
        raise SFTError(f"checkpoint {path}: no such file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SFTError(
            f"checkpoint {path}: cannot be read ({reason}); the file is corrupt or not a checkpoint"
        ) from exc
    if not isinstance(checkpoint, dict) or "hyper_parameters" not in checkpoint:
        raise SFTError(f"checkpoint {path}: not an sft training checkpoint (no hyper_parameters)")
    return checkpoint


def load_classifier(path: str | Path) -> SFTClassifier:
    """The model of a training checkpoint, on CPU, in eval mode."""
    checkpoint = read_checkpoint(path)
    hparams = dict(checkpoint["hyper_parameters"])
    # The checkpoint holds the weights: skip downloading/reading the pretrained ones.
    backbone = dict(hparams["backbone"])
    backbone.update(
        {k: v for k, v in (("pretrained", False), ("checkpoint", None)) if k in backbone}
    )
    hparams["backbone"] = backbone
    model = SFTClassifier(**hparams)
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise SFTError(
            f"checkpoint {path}: weights do not fit the model it describes: {detail}"
        ) from exc
    return model.eval()


def datamodule_from_checkpoint(path: str | Path, **overrides: Any) -> Any:
    """The datamodule a checkpoint was trained with, its hparams updated by `overrides`."""
    checkpoint = read_checkpoint(path)
    if "datamodule_target" not in checkpoint:
        raise SFTError(f"checkpoint {path}: records no datamodule; choose one with data=<name>")
    hparams = dict(checkpoint.get("datamodule_hyper_parameters", {}))
    hparams.update(overrides)
    return instantiate({"_target_": checkpoint["datamodule_target"], **hparams})
