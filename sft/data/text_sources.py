"""Readers of labelled text: delimited files (TSV/CSV), JSONL, SST PTB trees, HF `datasets`.

Every reader returns `TextExamples` (columns, file order). User mistakes become one-line
SFTErrors that name the file and line, so a bad row in a 100k-line file is found at once.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sft.errors import SFTError

UNLABELLED = -1
SST5_NAMES = ["very negative", "negative", "neutral", "positive", "very positive"]
BINARY_NAMES = ["negative", "positive"]
QUOTING = {"none": csv.QUOTE_NONE, "minimal": csv.QUOTE_MINIMAL}
# UTF-8 that also drops the byte-order mark spreadsheet programs put in front of a CSV header
ENCODING = "utf-8-sig"
COLUMN_HINT = "set data.text_column / data.label_column"


@dataclass
class TextExamples:
    """One split as columns: `pairs` is None for single-sentence data; label -1 = unlabelled."""

    texts: list[str] = field(default_factory=list)
    pairs: list[str] | None = None
    labels: list[int] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)  # source line of each example (errors)
    # with `id_columns`: the row's value of the first of them it has, else None (sft-predict)
    ids: list[str | None] | None = None

    def __len__(self) -> int:
        return len(self.texts)

    def add(
        self, text: str, label: int, line: int, pair: str | None = None, ident: str | None = None
    ) -> None:
        """Append one example to every column, so the columns stay aligned."""
        self.texts.append(text)
        if self.pairs is not None:
            self.pairs.append(pair)
        if self.ids is not None:
            self.ids.append(ident)
        self.labels.append(label)
        self.lines.append(line)

    @property
    def labelled(self) -> bool:
        return any(label != UNLABELLED for label in self.labels)


class LabelMap:
    """Raw label values -> class indices.

    With `names`, a value is a name (exact match) or an integer index into `names`; without,
    it must be an integer >= 0 (the class count is inferred from the training split).
    """

    def __init__(self, names: Sequence[str] | None) -> None:
        self.names = [str(n) for n in names] if names is not None else None
        if self.names is not None and (not self.names or len(set(self.names)) != len(self.names)):
            raise SFTError(f"data.label_names must be distinct and non-empty, got {self.names}")
        self._index = {n: i for i, n in enumerate(self.names or [])}

    def allowed(self) -> str:
        if self.names is None:
            return "integers >= 0"
        return f"{self.names} or 0..{len(self.names) - 1}"

    def __call__(self, value: Any, where: str) -> int:
        if isinstance(value, str):
            value = value.strip()
            if value in self._index:
                return self._index[value]
        index = _as_int(value)
        n = len(self.names) if self.names is not None else None
        if index is None or index < 0 or (n is not None and index >= n):
            raise SFTError(f"{where}: label {value!r} is not in the label set ({self.allowed()})")
        return index


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value):
        return int(value)
    return None


def check_file(path: Path) -> None:
    """One line naming `path` (and what its folder holds) when it is not a file."""
    if not path.is_file():
        where = "does not exist" if not path.parent.is_dir() else "is missing"
        raise SFTError(f"text data file {path} {where}" + _dir_hint(path))


def _dir_hint(path: Path) -> str:
    if path.parent.is_dir():
        files = sorted(p.name for p in path.parent.iterdir())[:10]
        return f" (its folder holds: {', '.join(files) or 'nothing'})"
    return f" (no folder {path.parent}; set data.data_dir or SFT_DATA_DIR)"


def _missing_columns(
    where: str | Path,
    wanted: Iterable[str | None],
    available: Sequence[str],
    hint: str = COLUMN_HINT,
) -> None:
    missing = [c for c in wanted if c is not None and c not in available]
    if missing:
        raise SFTError(
            f"{where}: no column {', '.join(map(repr, missing))}; available columns: "
            f"{', '.join(map(repr, available))} ({hint})"
        )


def _lines(path: Path) -> Iterable[tuple[int, str]]:
    try:
        with open(path, encoding=ENCODING) as f:
            yield from enumerate(f, start=1)
    except UnicodeDecodeError as e:
        raise SFTError(f"{path} is not UTF-8 text ({e})") from None


# ---- delimited files ------------------------------------------------------------------------
def read_header(path: Path, delimiter: str, quoting: str) -> list[str]:
    """The column names of a delimited file (its first row)."""
    check_file(path)
    try:
        with open(path, encoding=ENCODING, newline="") as f:
            row = next(csv.reader(f, delimiter=delimiter, quoting=QUOTING[quoting]), None)
    except (UnicodeDecodeError, csv.Error) as e:
        raise SFTError(f"{path}, line 1: unreadable header ({e})") from None
    if not row:
        raise SFTError(f"{path} is empty: expected a header row naming the columns")
    return [c.strip() for c in row]


def read_delimited(
    path: Path,
    delimiter: str,
    quoting: str,
    text_column: str,
    pair_column: str | None,
    label_column: str | None,
    label_map: LabelMap,
    need_labels: bool,
    id_columns: Sequence[str] = (),
    hint: str = COLUMN_HINT,
) -> TextExamples:
    """A TSV/CSV with a header. `quoting="none"` (GLUE style) keeps `"` as a plain character.

    A file without the label column is unlabelled (labels -1) unless `need_labels`. With
    `id_columns`, `ids` holds each row's value of the first of them in the header.
    """
    header = read_header(path, delimiter, quoting)
    if need_labels or label_column in header:
        _missing_columns(path, [text_column, pair_column, label_column], header, hint)
        label_at = header.index(label_column) if label_column else None
    else:
        _missing_columns(path, [text_column, pair_column], header, hint)
        label_at = None
    text_at = header.index(text_column)
    pair_at = header.index(pair_column) if pair_column else None
    id_at = next((header.index(c) for c in id_columns if c in header), None)
    out = TextExamples(pairs=[] if pair_column else None, ids=[] if id_columns else None)
    kind = "tab" if delimiter == "\t" else repr(delimiter)
    try:
        with open(path, encoding=ENCODING, newline="") as f:
            reader = csv.reader(f, delimiter=delimiter, quoting=QUOTING[quoting], strict=True)
            next(reader)
            for row in reader:
                line = reader.line_num
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue  # blank line
                if len(row) != len(header):
                    raise SFTError(
                        f"{path}, line {line}: expected {len(header)} {kind}-separated fields "
                        f"({', '.join(header)}), got {len(row)}"
                    )
                label = (
                    UNLABELLED
                    if label_at is None
                    else label_map(row[label_at], f"{path}, line {line}")
                )
                pair = row[pair_at] if pair_at is not None else None
                out.add(row[text_at], label, line, pair, row[id_at] if id_at is not None else None)
    except csv.Error as e:
        raise SFTError(f"{path}, line {reader.line_num}: malformed row ({e})") from None
    except UnicodeDecodeError as e:
        raise SFTError(f"{path} is not UTF-8 text ({e})") from None
    return out


# ---- JSON lines ---------------------------------------------------------------------------
def jsonl_keys(path: Path) -> list[str]:
    """The keys of the first record of a JSONL file (for `has_labelled_test` before setup)."""
    check_file(path)
    for line, raw in _lines(path):
        if raw.strip():
            return list(_json_record(path, line, raw))
    return []


def _json_record(path: Path, line: int, raw: str) -> dict[str, Any]:
    try:
        record = json.loads(raw)
    except json.JSONDecodeError as e:
        raise SFTError(f"{path}, line {line}: not valid JSON ({e.msg})") from None
    if not isinstance(record, dict):
        raise SFTError(f"{path}, line {line}: expected a JSON object, got {type(record).__name__}")
    return record


def read_jsonl(
    path: Path,
    text_column: str,
    pair_column: str | None,
    label_column: str | None,
    label_map: LabelMap,
    need_labels: bool,
    id_columns: Sequence[str] = (),
    hint: str = COLUMN_HINT,
) -> TextExamples:
    """One JSON object per line; blank lines are skipped. Without `need_labels`, a file whose
    first record has no label key is unlabelled. With `id_columns`, `ids` holds each record's
    value (as text) of the first of them it has."""
    check_file(path)
    out = TextExamples(pairs=[] if pair_column else None, ids=[] if id_columns else None)
    labelled: bool | None = None
    for line, raw in _lines(path):
        if not raw.strip():
            continue
        record = _json_record(path, line, raw)
        if labelled is None:
            labelled = need_labels or label_column in record
        wanted = [text_column, pair_column, label_column if labelled else None]
        _missing_columns(f"{path}, line {line}", wanted, list(record), hint)
        for column in (text_column, pair_column):
            if column is not None and not isinstance(record[column], str):
                raise SFTError(
                    f"{path}, line {line}: {column!r} must be a string, got "
                    f"{type(record[column]).__name__}"
                )
        where = f"{path}, line {line}"
        label = label_map(record[label_column], where) if labelled else UNLABELLED
        pair = record[pair_column] if pair_column else None
        id_key = next((c for c in id_columns if c in record), None)
        ident = str(record[id_key]) if id_key is not None else None
        out.add(record[text_column], label, line, pair, ident)
    return out


# ---- SST PTB trees --------------------------------------------------------------------------
_TREE_TOKEN = re.compile(r"\(|\)|[^\s()]+")
# PTB escapes in the SST trees; `` and '' are the tokenised double quotes.
_PTB_ESCAPES = {
    "-LRB-": "(",
    "-RRB-": ")",
    "-LSB-": "[",
    "-RSB-": "]",
    "-LCB-": "{",
    "-RCB-": "}",
    "``": '"',
    "''": '"',
    "`": "'",
}
# Tokens glued to the previous / the next word when the tree's words are joined (after
# unescaping; the quotes by their PTB form, which tells opening from closing).
_NO_SPACE_BEFORE = {".", ",", ";", ":", "!", "?", "%", "...", ")", "]", "}", "''", "n't", "'"}
_NO_SPACE_AFTER = {"(", "[", "{", "``", "`", "$", "#"}


def detokenize(words: Sequence[str]) -> str:
    """PTB tokens -> plain text: unescape brackets, quotes, `\\/` and `\\*`; glue punctuation
    and clitics (`it 's` -> `it's`) the way the raw sentence was written, since pretrained
    tokenizers saw raw text (for WordPiece the result barely differs; for BPE it does)."""
    out: list[str] = []
    glue_next = False
    for word in words:
        text = _PTB_ESCAPES.get(word, word).replace("\\/", "/").replace("\\*", "*")
        form = word if word in ("``", "''", "`") else text
        glue = glue_next or form in _NO_SPACE_BEFORE or word.startswith("'")
        if out and not glue:
            out.append(" ")
        out.append(text)
        glue_next = form in _NO_SPACE_AFTER
    return "".join(out)


@dataclass
class Tree:
    """Leaves and every node as (label, first leaf, end leaf); the root is the last node."""

    words: list[str]
    nodes: list[tuple[int, int, int]]


def parse_tree(text: str) -> Tree:
    """One PTB tree like `(3 (2 (2 The) (2 Rock)) (4 ...))`; ValueError when malformed."""
    words: list[str] = []
    nodes: list[tuple[int, int, int]] = []
    open_nodes: list[tuple[int, int]] = []
    expect_label = closed = False
    for tok in _TREE_TOKEN.findall(text):
        if closed:
            raise ValueError(f"text after the end of the tree: {tok!r}")
        if tok == "(":
            if expect_label:
                raise ValueError("'(' where a label was expected")
            expect_label = True
        elif tok == ")":
            if expect_label or not open_nodes:
                raise ValueError("unbalanced ')'")
            label, start = open_nodes.pop()
            if start == len(words):
                raise ValueError("a node without words")
            nodes.append((label, start, len(words)))
            closed = not open_nodes
        elif expect_label:
            if not tok.isdigit():
                raise ValueError(f"expected a sentiment label 0..4, got {tok!r}")
            open_nodes.append((int(tok), len(words)))
            expect_label = False
        elif not open_nodes:
            raise ValueError(f"word {tok!r} outside the tree")
        else:
            words.append(tok)
    if not closed:
        raise ValueError("unbalanced '(' or no tree")
    return Tree(words, nodes)


def read_sst_trees(path: Path, binary: bool, phrases: bool) -> TextExamples:
    """SST PTB trees, one per line. Root label 0..4 = SST-5 class; `binary` drops 2 (neutral)
    and maps 0,1 -> 0 and 3,4 -> 1. `phrases` adds every labelled sub-phrase of every tree
    (SST's phrase-level supervision), each distinct phrase text once (first occurrence: in SST
    a phrase has one label wherever it occurs); sentences come first in each tree's block."""
    check_file(path)
    out = TextExamples()
    seen: set[str] = set()
    for line, raw in _lines(path):
        if not raw.strip():
            continue
        try:
            tree = parse_tree(raw)
        except ValueError as e:
            raise SFTError(f"{path}, line {line}: not a PTB sentiment tree ({e})") from None
        nodes = tree.nodes[::-1] if phrases else tree.nodes[-1:]  # root first
        for label, start, end in nodes:
            if label > 4:
                raise SFTError(f"{path}, line {line}: label {label} is not in the label set (0..4)")
            if binary and label == 2:
                continue
            text = detokenize(tree.words[start:end])
            if phrases:
                if text in seen:
                    continue
                seen.add(text)
            out.add(text, int(label >= 3) if binary else label, line)
    return out


# ---- Hugging Face datasets ------------------------------------------------------------------
def load_hf_split(name: str, config: str | None, split: str, trust_remote_code: bool) -> Any:
    """`datasets.load_dataset(name, config, split=split)`; one line when it cannot be had
    (typically offline and not in the local datasets cache)."""
    import datasets

    kwargs = {"trust_remote_code": True} if trust_remote_code else {}
    try:
        return datasets.load_dataset(name, config, split=split, **kwargs)
    except Exception as e:  # offline, unknown name/split, ...: all are the user's to fix
        reason = " ".join(str(e).split())[:200]
        raise SFTError(
            f"could not load Hugging Face dataset {name!r}"
            + (f" ({config!r})" if config else "")
            + f" split {split!r} ({type(e).__name__}: {reason}); offline it must already be in "
            "the local datasets cache (load it once with network access), or export it to a "
            "TSV/CSV/JSONL file and use data=text_files"
        ) from None


def hf_label_names(dataset: Any, label_column: str | None) -> list[str] | None:
    """Class names of a `ClassLabel` label column, if it is one."""
    feature = dataset.features.get(label_column) if label_column else None
    return list(feature.names) if getattr(feature, "names", None) else None


def read_hf_split(
    dataset: Any,
    where: str,
    text_column: str,
    pair_column: str | None,
    label_column: str | None,
    label_map: LabelMap,
    need_labels: bool,
) -> TextExamples:
    """Columns of a loaded HF split. Negative labels (GLUE test splits use -1) = unlabelled."""
    columns = list(dataset.column_names)
    labelled = need_labels or label_column in columns
    wanted = [text_column, pair_column, label_column if labelled else None]
    _missing_columns(where, wanted, columns)
    out = TextExamples(
        texts=[str(t) for t in dataset[text_column]],
        pairs=[str(t) for t in dataset[pair_column]] if pair_column else None,
    )
    out.lines = list(range(len(out.texts)))
    if not labelled:
        out.labels = [UNLABELLED] * len(out.texts)
        return out
    raw = dataset[label_column]
    for i, value in enumerate(raw):
        index = _as_int(value)
        if index is not None and index < 0 and not need_labels:
            out.labels.append(UNLABELLED)
        else:
            out.labels.append(label_map(value, f"{where}, row {i}"))
    return out
