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
        reason = load_failure(exc)
        raise SFTError(
            f"checkpoint {path}: cannot be read ({reason}); the file is corrupt or not a checkpoint"
        ) from exc
    if not isinstance(checkpoint, dict) or "hyper_parameters" not in checkpoint:
        raise SFTError(f"checkpoint {path}: not an sft training checkpoint (no hyper_parameters)")
    return checkpoint


def load_failure(exc: Exception) -> str:
    """The informative part of torch.load's error (its weights-only message is a page long and
    suggests weights_only=False, which we never do)."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        detail = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation")[0]
        return f"a weights-only load refuses it: {' '.join(detail.split())}"
    first = " ".join(text.split(". ")[0].split())
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def load_classifier(path: str | Path, checkpoint: dict[str, Any] | None = None) -> SFTClassifier:
    """The model of a training checkpoint, on CPU, in eval mode (`checkpoint`: the file's
    contents when the caller has read them already, so a large file is loaded once)."""
    checkpoint = checkpoint if checkpoint is not None else read_checkpoint(path)
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


def datamodule_from_checkpoint(
    path: str | Path, *, checkpoint: dict[str, Any] | None = None, **overrides: Any
) -> Any:
    """The datamodule a checkpoint was trained with, its hparams updated by `overrides`
    (`checkpoint`: the file's contents, as for `load_classifier`)."""
    checkpoint = checkpoint if checkpoint is not None else read_checkpoint(path)
    if "datamodule_target" not in checkpoint:
        raise SFTError(f"checkpoint {path}: records no datamodule; choose one with data=<name>")
    hparams = dict(checkpoint.get("datamodule_hyper_parameters", {}))
    hparams.update(overrides)
    return instantiate({"_target_": checkpoint["datamodule_target"], **hparams})


# model settings a resumed checkpoint must share with the run, named in the error (other
# differences show as weights that do not fit)
SETUP_KEYS = (
    ("num_classes", lambda h: h.get("num_classes")),
    ("backbone.name", lambda h: dict(h.get("backbone") or {}).get("name")),
)


def check_resume_checkpoint(path: str | Path, model: torch.nn.Module) -> None:
    """Before `trainer.fit(ckpt_path=...)`: one clear line for a missing, corrupt or foreign file,
    or one trained with another setup (which model setting differs, else which weights)."""
    checkpoint = read_checkpoint(path)
    saved = dict(checkpoint["hyper_parameters"])
    current = dict(getattr(model, "hparams", {}))
    for key, value_of in SETUP_KEYS:
        if value_of(saved) != value_of(current):
            raise SFTError(
                f"checkpoint {path} was trained with model.{key}={value_of(saved)!r}, this run has "
                f"model.{key}={value_of(current)!r}: resume with the same model settings"
            )
    state = model.state_dict()
    weights = checkpoint.get("state_dict", {})
    missing = [k for k in state if k not in weights]
    unexpected = [k for k in weights if k not in state]
    resized = [
        f"{k} {tuple(weights[k].shape)} vs {tuple(v.shape)}"
        for k, v in state.items()
        if k in weights and tuple(weights[k].shape) != tuple(v.shape)
    ]
    for what, keys in (
        ("lacks", missing),
        ("has extra", unexpected),
        ("has other shapes:", resized),
    ):
        if keys:
            raise SFTError(
                f"checkpoint {path} does not fit this run's model (another setup): it {what} "
                f"{', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
            )
