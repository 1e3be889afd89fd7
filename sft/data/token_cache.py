"""Tokenise a split once with a fast tokenizer and keep the token ids on disk.

A cache file `<cache_dir>/<name>-<key>.pt` holds one split: all token ids as one flat int32
tensor plus int64 offsets (ragged rows without per-row Python objects), int64 labels, int64
source line numbers (for error messages) and, when the tokenizer has them, int8 token type ids.
The key hashes everything that changes the tensors: the source content and reader options (the
reader's `cache_key`), the tokenizer's serialized pipeline and `max_length`. Files are written
atomically (`sft.utils.io`), so a killed run leaves no half file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sft.data.readers.examples import TextExamples
from sft.data.tokenize import count_cut, cut_note, encode_texts
from sft.errors import SFTError
from sft.hub import load_pretrained, resolve_model_name
from sft.utils.checkpoint_io import atomic_torch_save, load_failure, load_weights_only
from sft.utils.config import work_root
from sft.utils.io import expand_home

log = logging.getLogger(__name__)

# Bump when the file layout, the tokenisation call or the reading of files changes: old files
# then miss (2: class names that are numbers take labels as names only; 3: a CSV record is
# numbered by its first line, a one-column file's empty texts are rows; 4: the reader's
# warnings are kept, and said on a hit too; 5: with the count of texts cut at max_length; 6: the
# warning on CSV-quoted texts in a file read without quoting, and -1 test labels as unlabelled;
# 7: the warning on blank lines of a one-column file; 8: a Hugging Face ClassLabel read by its
# names, null texts empty, JSON arrays, JSONL blank lines warned about and keys written twice;
# 9: the cache key kept in the file).
CACHE_VERSION = 9
# Rows per tokenizer call: bounds the Python lists alive at once on large user files.
TOKENIZE_CHUNK = 8192


def default_cache_dir() -> Path:
    """Where token caches go without `data.cache_dir`: the configs' default,
    `${paths.cache_dir}/tokens` (conf/paths/default.yaml: $SFT_CACHE_DIR, else .cache/ under
    the checkout or the current directory), so code and configs share one cache."""
    return Path(os.environ.get("SFT_CACHE_DIR") or Path(work_root()) / ".cache") / "tokens"


@dataclass
class TokenizedSplit:
    """Ragged token rows: row i is `input_ids[offsets[i]:offsets[i + 1]]`."""

    input_ids: torch.Tensor  # int32, all rows concatenated
    offsets: torch.Tensor  # int64, n + 1
    labels: torch.Tensor  # int64, n; -1 = unlabelled
    lines: torch.Tensor  # int64, n: source line (file) or row (HF) of each example, for errors
    token_type_ids: torch.Tensor | None = None  # int8, aligned with input_ids
    warnings: list[str] = field(default_factory=list)  # the reader's (TextExamples.warnings)

    def __len__(self) -> int:
        return self.labels.numel()

    @property
    def lengths(self) -> torch.Tensor:
        return self.offsets.diff()

    def example(self, i: int) -> dict[str, Any]:
        """Row i as the features `DataCollatorWithPadding` pads (lists of ints)."""
        start, end = self.offsets[i : i + 2].tolist()
        row = {"input_ids": self.input_ids[start:end].tolist()}
        if self.token_type_ids is not None:
            row["token_type_ids"] = self.token_type_ids[start:end].tolist()
        row["labels"] = self.labels[i].item()
        return row

    def state(self) -> dict[str, Any]:
        state = {
            "version": CACHE_VERSION,
            "input_ids": self.input_ids,
            "offsets": self.offsets,
            "labels": self.labels,
            "lines": self.lines,
            "warnings": self.warnings,
        }
        if self.token_type_ids is not None:
            state["token_type_ids"] = self.token_type_ids
        return state

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> TokenizedSplit:
        if state.get("version") != CACHE_VERSION:
            raise ValueError(f"cache version {state.get('version')} != {CACHE_VERSION}")
        split = cls(
            state["input_ids"],
            state["offsets"],
            state["labels"],
            state["lines"],
            state.get("token_type_ids"),
            list(state["warnings"]),
        )
        if split.offsets.numel() != len(split) + 1 or split.offsets[-1] != split.input_ids.numel():
            raise ValueError("offsets do not match the token ids")
        return split


# files a tokenizer is read from (one of them suffices), besides SentencePiece's *.model
TOKENIZER_FILES = frozenset(("tokenizer.json", "vocab.txt", "vocab.json"))


def load_tokenizer(name: str, trust_remote_code: bool = False) -> Any:
    """The fast tokenizer of `name` (an alias such as 'minilm', a hub id or a local folder)."""
    from transformers import AutoTokenizer

    # load_pretrained: a local copy first, then one quick hub check (no retries offline)
    tokenizer = load_pretrained(
        AutoTokenizer.from_pretrained,
        name,
        "tokenizer",
        use_fast=True,
        trust_remote_code=trust_remote_code,
    )
    # a local model folder without tokenizer files loads as an empty tokenizer (transformers 5):
    # every word would become [UNK] and training would run on nothing, without a sign
    if len(tokenizer) <= len(set(tokenizer.all_special_ids)):
        where = expand_home(resolve_model_name(name))
        files = sorted(
            p.name for p in where.glob("*") if p.name in TOKENIZER_FILES or p.suffix == ".model"
        )
        holds = (
            f"its files there ({', '.join(files)}) hold none"
            if files
            else f"{where} holds no tokenizer files (tokenizer.json, vocab.txt, ...)"
        )
        raise SFTError(
            f"tokenizer {name!r} has no vocabulary beyond its {len(tokenizer)} special tokens: "
            f"{holds}. Save the tokenizer there (tokenizer.save_pretrained of a tokenizer that "
            "has one), or name the model's tokenizer with data.tokenizer="
        )
    if not getattr(tokenizer, "is_fast", False):
        raise SFTError(
            f"tokenizer {name!r} has no fast (Rust `tokenizers`) version; the text datamodule "
            "needs one (its serialized form keys the token cache)"
        )
    if tokenizer.pad_token is None:
        raise SFTError(
            f"tokenizer {name!r} has no padding token, which batches of texts of different "
            "lengths need (a decoder's tokenizer, such as GPT-2's?): sft fine-tunes encoders "
            "(BERT, RoBERTa, DeBERTa, ...) with their own tokenizers; for this model, save its "
            "tokenizer with one (tokenizer.pad_token = tokenizer.eos_token; save_pretrained) "
            "and name that folder with data.tokenizer="
        )
    # the backbones pool the first token (cls) or the real tokens at their positions (mean):
    # both take padding at the end, whatever side the tokenizer was saved with
    tokenizer.padding_side = "right"
    return tokenizer


def tokenizer_digest(tokenizer: Any) -> str:
    """Identity of the tokenization pipeline (vocab, normalizer, special tokens, post-processor).

    Truncation and padding are call-time state that transformers sets on the backend, so they
    are left out: the same tokenizer must hash the same before and after a call.
    """
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    spec.pop("truncation", None)
    spec.pop("padding", None)
    spec["model_input_names"] = list(tokenizer.model_input_names)
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def cache_key(parts: Mapping[str, Any]) -> str:
    """A short hash of JSON-able `parts` (sorted keys: dict order does not matter)."""
    text = json.dumps({"version": CACHE_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def tokenize(tokenizer: Any, examples: TextExamples, max_length: int) -> TokenizedSplit:
    """Token ids of every example, truncated to `max_length` (pairs: longest first)."""
    ids: list[np.ndarray] = []
    types: list[np.ndarray] = []
    lengths: list[int] = []
    cut = 0
    for start in range(0, len(examples), TOKENIZE_CHUNK):
        end = start + TOKENIZE_CHUNK
        pairs = examples.pairs[start:end] if examples.pairs is not None else None
        enc = encode_texts(tokenizer, examples.texts[start:end], pairs, max_length)
        rows = enc["input_ids"]
        cut += count_cut(enc)
        lengths.extend(map(len, rows))
        count = sum(map(len, rows))
        ids.append(np.fromiter(chain.from_iterable(rows), dtype=np.int32, count=count))
        if "token_type_ids" in enc:
            rows = enc["token_type_ids"]
            types.append(np.fromiter(chain.from_iterable(rows), dtype=np.int8, count=count))
    offsets = torch.zeros(len(lengths) + 1, dtype=torch.int64)
    offsets[1:] = torch.tensor(lengths, dtype=torch.int64).cumsum(0)
    flat = torch.from_numpy(np.concatenate(ids)) if ids else torch.zeros(0, dtype=torch.int32)
    return TokenizedSplit(
        input_ids=flat,
        offsets=offsets,
        labels=torch.tensor(examples.labels, dtype=torch.int64),
        lines=torch.tensor(examples.lines, dtype=torch.int64),
        token_type_ids=torch.from_numpy(np.concatenate(types)) if types else None,
        warnings=list(examples.warnings)
        + ([cut_note(cut, len(lengths), max_length, examples.pairs is not None)] if cut else []),
    )


def save_split(split: TokenizedSplit, path: Path, key: str) -> None:
    """Atomic: readers see the old file, no file, or the whole new one (also when ranks on
    several hosts share one cache folder). `key`: the cache key, kept in the file too."""
    atomic_torch_save({**split.state(), "key": key}, path)


def _foreign_owner(status: os.stat_result) -> int | None:
    """The owner of a file of `status` where it is neither this user nor root; None otherwise,
    and where the system has no file owners."""
    if not hasattr(os, "getuid"):
        return None
    return status.st_uid if status.st_uid not in (os.getuid(), 0) else None


def cache_path(cache_dir: Path, name: str, key: str) -> Path:
    """`<cache_dir>/<name>-<key>.pt`; where that is a link or another user's file, this user's
    own `<name>-<key>-uid<N>.pt`, with a warning: whoever owns a cache file can change the labels
    and tokens a run trains on, which nothing in it would show (was: read, whoever wrote it, in
    a cache folder others can write to; and rewritten by each user in turn)."""
    path = cache_dir / f"{name}-{key}.pt"
    try:
        status = path.lstat()
    except OSError:  # none yet (or unreadable: said when it is read)
        return path
    if stat.S_ISLNK(status.st_mode):
        why = "is a link"
    elif (owner := _foreign_owner(status)) is not None:
        why = f"belongs to another user (uid {owner})"
    else:
        return path
    own = path.with_name(f"{name}-{key}-uid{os.getuid()}.pt")
    log.warning(
        f"tokens: cache file {path} {why}, who could have changed its labels or tokens: not "
        f"read; this user's cache of it is {own.name}"
    )
    return own


def load_split(path: Path, key: str) -> TokenizedSplit | None:
    """The cached split of `key`, or None when absent, unreadable, a link, another user's or of
    another key (a file renamed): it is then rebuilt."""
    # opened once, without following a link, and its owner read from the open file: no file
    # swapped in between the check and the read
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return None
    except OSError as e:
        log.warning(f"tokens: cache file {path} cannot be opened ({e}); tokenizing again")
        return None
    with os.fdopen(fd, "rb") as file:
        owner = _foreign_owner(os.fstat(file.fileno()))
        if owner is not None:
            log.warning(
                f"tokens: cache file {path} belongs to another user (uid {owner}), who could "
                "have changed its labels or tokens: not read; tokenizing again"
            )
            return None
        try:
            state = load_weights_only(file)
            split = TokenizedSplit.from_state(state)
        except Exception as e:
            # not torch's whole message: it advises loading the file unsafely, or filing an issue
            log.warning(
                f"tokens: cache file {path} is unreadable ({load_failure(e)}); tokenizing again"
            )
            return None
    if state.get("key") != key:
        log.warning(f"tokens: cache file {path} holds another split's tokens; tokenizing again")
        return None
    return split


def cached_tokenize(
    cache_dir: Path,
    name: str,
    key_parts: Mapping[str, Any],
    read: Callable[[], TextExamples],
    tokenizer: Any,
    max_length: int,
) -> tuple[TokenizedSplit, Path, bool]:
    """(split, cache file, hit): load `<cache_dir>/<name>-<key>.pt`, else read + tokenise + save.

    `key_parts` must identify the source content and every reader option; the tokenizer
    digest and `max_length` are added here.
    """
    key = cache_key(
        {**key_parts, "tokenizer": tokenizer_digest(tokenizer), "max_length": max_length}
    )
    path = cache_path(cache_dir, name, key)
    split = load_split(path, key)
    if split is not None:
        log.info(f"tokens: cache hit {path}")
        return split, path, True
    split = tokenize(tokenizer, read(), max_length)
    try:
        save_split(split, path, key)
    except (OSError, SFTError) as e:  # a read-only or full cache costs time, not correctness
        log.warning(f"tokens: could not write the cache {path} ({e}); set data.cache_dir")
    else:
        log.info(f"tokens: cache miss, tokenised {len(split)} examples -> {path}")
    return split, path, False
