"""Checkpoint files: atomic saves, safe loads, and one read per resume.

Lightning's TorchCheckpointIO writes through an fsspec transaction, which on a local disk moves a
temp file into place but does not fsync it: after a crash or power loss the new name can point
at an empty or partial file. `AtomicCheckpointIO` saves with `atomic_torch_save`
instead. Loads are always `weights_only`. `hand_over` gives Lightning a checkpoint read already.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import torch
from lightning.fabric.plugins import CheckpointIO
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.strategies import Strategy

from sft.contracts import MODEL_TARGET, TRAINED_PRECISION
from sft.errors import SFTError
from sft.utils.io import atomic_write, check_checkpoint_file


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """`torch.save(obj, path)` that either fully replaces `path` or leaves it as it was."""
    atomic_write(path, lambda f: torch.save(obj, f))


def load_weights_only(path: str | Path | BinaryIO, mmap: bool = False) -> Any:
    """`torch.load(path, weights_only=True)` on the CPU (`path`: or a file open for reading), without torch's warnings about a
    TorchScript archive or a pickle protocol above 2: the errors sft raises for them say so.
    `mmap`: tensors are read when used (a checkpoint's counters alone, not its weights)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "'torch.load' received a zip file that looks like")
        warnings.filterwarnings("ignore", "Detected pickle protocol")
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """`torch.load(weights_only=True)` with one clear error for a missing or unreadable file."""
    path = check_checkpoint_file(path)
    try:
        checkpoint = load_weights_only(path)
    except PermissionError:  # a file this user may not read: said so (was: "corrupt")
        raise
    except Exception as exc:
        exported = (
            "a TorchScript model (e.g. sft-export's model.pt)"
            if "TorchScript archive" in str(exc)
            else "an ONNX model (e.g. sft-export's model.onnx)"
            if Path(path).suffix.lower() == ".onnx"  # (was: "corrupt or not a checkpoint")
            else None
        )
        if exported:
            raise SFTError(
                f"checkpoint {path}: {exported}, not a training checkpoint: give the run's "
                "checkpoints/last.ckpt (or another .ckpt)"
            ) from exc
        reason = load_failure(exc)
        why = (
            # a whole file holding an object sft never loads (e.g. Hydra's DictConfig in the
            # hparams of a model class of the user's): not a broken file
            "it holds objects other than tensors and plain values, which sft does not load "
            "(never unpickling code from a file); a model's hparams must be plain values"
            if "Unsupported global" in reason
            else SAVE_AT_DEFAULT_PROTOCOL
            if saved_at_protocol_4_or_5(reason)
            else "the file is corrupt or not a checkpoint"
        )
        raise SFTError(f"checkpoint {path}: cannot be read ({reason}); {why}") from exc
    if not isinstance(checkpoint, dict) or "hyper_parameters" not in checkpoint:
        raise SFTError(f"checkpoint {path}: not an sft training checkpoint (no hyper_parameters)")
    check_no_interpolations(checkpoint, path)
    return checkpoint


def setting_paths(node: Any, where: str) -> Iterator[tuple[str, Any]]:
    """(the key's path, the value) of every leaf value in a checkpoint's nested settings."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from setting_paths(value, f"{where}.{key}")
    elif isinstance(node, list | tuple):
        for i, value in enumerate(node):
            yield from setting_paths(value, f"{where}[{i}]")
    else:
        yield where, node


def checkpoint_settings(checkpoint: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    """Every setting `checkpoint` records that a command may put into a run's config, with its
    path: the model's and the datamodule's settings, their classes, the precision it trained
    at."""
    yield from setting_paths(checkpoint.get("hyper_parameters"), "model")
    yield from setting_paths(checkpoint.get("datamodule_hyper_parameters"), "data")
    yield "datamodule_target", checkpoint.get("datamodule_target")
    yield MODEL_TARGET, checkpoint.get(MODEL_TARGET)
    yield TRAINED_PRECISION, checkpoint.get(TRAINED_PRECISION)


def check_no_interpolations(checkpoint: Mapping[str, Any], path: str | Path) -> None:
    """SFTError for an interpolation (`${...}`) in any of `checkpoint`'s settings. Settings are
    saved resolved: one was put there by hand, and a run whose config took it in (sft-eval's
    precision, a continued run's pixel statistics) would resolve it, which can build whatever
    it names (`${oc.create:{_target_:...}}`). Every read of a checkpoint checks this."""
    for where, value in checkpoint_settings(checkpoint):
        if isinstance(value, str) and "${" in value:
            raise SFTError(
                f"checkpoint {path}: {where}={value[:60]!r} is an interpolation, which sft "
                "would resolve as it builds (settings are saved resolved): refused, as "
                "resolving it could build whatever it names"
            )


# torch's weights-only unpickler reads pickle protocols 2 (torch.save's default) and 3: a file
# saved with `pickle_protocol=4` or 5 (their FRAME opcode, 149) is whole but refused
SAVE_AT_DEFAULT_PROTOCOL = (
    "it was saved with pickle protocol 4 or 5, which a weights-only load does not read; save "
    "it again with torch.save's default pickle_protocol"
)


def saved_at_protocol_4_or_5(reason: str) -> bool:
    """Whether `load_failure`'s `reason` is the refusal of a file pickled at protocol 4 or 5."""
    return "Unsupported operand 149" in reason


def load_failure(exc: Exception) -> str:
    """The informative part of torch.load's error (its weights-only message is a page long and
    suggests weights_only=False, which we never do)."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        detail = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation")[0]
        return f"a weights-only load refuses it: {' '.join(detail.split())}"
    first = " ".join(text.split(". ")[0].split())
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO whose local saves are atomic (remote paths keep Lightning's way)."""

    def save_checkpoint(
        self,
        checkpoint: dict[str, Any],
        path: str | os.PathLike,
        storage_options: Any | None = None,
    ) -> None:
        protocol = get_filesystem(path).protocol
        local = "file" in (protocol if isinstance(protocol, tuple) else (protocol,))
        if storage_options is not None or not local:
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        atomic_torch_save(checkpoint, path)


class _HandedOver(CheckpointIO):
    """The strategy's own checkpoint plugin, for one load: of `path`, that load returns the
    checkpoint the caller has read and checked already (a new run's record dropped, a moved
    run's paths followed; torchtune's "read once, hand the dict on"), then the plugin is put
    back. Any plugin is wrapped (was: the handover went to AtomicCheckpointIO only, so with
    trainer.plugins of one's own Lightning read the file as written, those checks undone).
    Lightning's _WrappingCheckpointIO is private, hence a plain CheckpointIO."""

    def __init__(self, strategy: Strategy, path: str | os.PathLike, checkpoint: dict) -> None:
        super().__init__()
        self._strategy, self._plugin = strategy, strategy.checkpoint_io
        self._path, self._checkpoint = os.path.abspath(path), checkpoint

    def load_checkpoint(self, path: str | os.PathLike, **kwargs: Any) -> dict[str, Any]:
        self._strategy.checkpoint_io = self._plugin
        if os.path.abspath(path) == self._path:
            return self._checkpoint
        return self._plugin.load_checkpoint(path, **kwargs)

    def save_checkpoint(self, *args: Any, **kwargs: Any) -> None:
        self._plugin.save_checkpoint(*args, **kwargs)

    def remove_checkpoint(self, path: str | os.PathLike) -> None:
        self._plugin.remove_checkpoint(path)

    def teardown(self) -> None:
        self._plugin.teardown()


def hand_over(strategy: Strategy, path: str | os.PathLike, checkpoint: dict[str, Any]) -> None:
    """Have `strategy`'s next load of `path` (trainer.fit(ckpt_path=path)) return `checkpoint`
    instead of reading the file again."""
    # a strategy that takes its own plugins only (XLA's) reads the file
    with contextlib.suppress(TypeError):
        strategy.checkpoint_io = _HandedOver(strategy, path, checkpoint)
