"""Users' inputs for sft-predict: text lines, TSV/CSV/JSONL tables, image files or folders.

Every reader keeps an id per input (the `index` column when the table has one, else the line
number; the path for images) so predictions can be joined back to their source.
"""

from __future__ import annotations

import io
import logging
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS

from sft.data.image_files import is_image, visible_files, warn_left_out
from sft.data.readers.examples import TextExamples
from sft.data.readers.files import ENCODING, read_lines
from sft.data.readers.jsonl import read_jsonl
from sft.data.readers.labels import LabelMap
from sft.data.readers.table import QUOTING, CsvReader, TsvReader, read_delimited
from sft.data.sst_trees import detokenize, parse_tree
from sft.errors import SFTError
from sft.utils.logs import first_few

TEXT_SUFFIXES = (".txt", ".tsv", ".csv", ".jsonl", ".json")
# JSON Lines: `datasets`' Dataset.to_json writes them to a .json file by default
JSONL_SUFFIXES = (".jsonl", ".json")
# inputs=- reads texts from standard input, one per line (`... | sft-predict inputs=-`)
STDIN = Path("-")
ID_COLUMNS = ("index", "id", "idx")
COLUMN_HINT = "set text_column=... / text_pair_column=..."

log = logging.getLogger(__name__)


@dataclass
class TextInputs:
    ids: list[str]
    texts: list[str]
    pairs: list[str] | None = None
    source: Path | None = None
    # the table had an `index` column (GLUE test files do): ids are those indices
    has_index: bool = False

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class ImageInputs:
    ids: list[str]
    # image files, or images decoded already (PIL's, given from Python)
    paths: list[Path | Image.Image]

    def __len__(self) -> int:
        return len(self.paths)


def is_text_stream(path: Path) -> bool:
    """Standard input (`-`) or a pipe (`/dev/stdin`, `<(...)`): texts, one per line."""
    return path == STDIN or (path.exists() and not path.is_file() and not path.is_dir())


def input_kind(path: Path) -> str:
    """'text' or 'image': what a file or folder holds, by its name; SFTError when neither."""
    if path.is_dir():
        return "image"
    if is_text_stream(path):
        return "text"
    if not path.is_file():
        raise SFTError(f"inputs={path}: no such file or folder")
    if is_image(path):
        return "image"
    if path.suffix.lower() in TEXT_SUFFIXES:
        return "text"
    raise SFTError(
        f"inputs={path}: unknown kind of file; expected text ({', '.join(TEXT_SUFFIXES)}), an "
        f"image ({', '.join(IMG_EXTENSIONS)}) or a folder of images"
    )


def read_images(path: Path) -> ImageInputs:
    """One image file, or every image under a folder (recursive, sorted); ids are the paths
    relative to that folder."""
    if path.is_file():
        return ImageInputs([str(path)], [path])
    every_file = visible_files(path)
    files = [p for p in every_file if is_image(p)]
    if not files:
        raise SFTError(
            f"inputs={path}: the folder holds no image files ({', '.join(IMG_EXTENSIONS)})"
        )
    warn_left_out(path, files, class_folders=False, files=every_file)
    return ImageInputs([str(p.relative_to(path)) for p in files], files)


def read_texts(
    path: Path,
    text_column: str,
    pair_column: str | None = None,
    quoting: str | None = None,
) -> TextInputs:
    """Texts of a .txt (one per non-blank line), .tsv/.csv (a header row) or .jsonl file, or
    of standard input or a pipe (one per non-blank line)."""
    if path.suffix.lower() == ".txt" or is_text_stream(path):
        if pair_column:
            raise SFTError(
                f"inputs={path}: this model classifies sentence pairs; give a TSV/CSV/JSONL file "
                f"with columns {text_column!r} and {pair_column!r}"
            )
        out = TextInputs([], [], source=path)
        blank = []
        for line, raw in _text_lines(path):
            text = raw.rstrip("\r\n")
            if text.strip():
                out.ids.append(str(line))
                out.texts.append(text)
            else:
                blank.append(line)
        if blank and out.texts:
            lines = "line" if len(blank) == 1 else "lines"
            log.warning(
                f"inputs={path}: {len(blank)} blank {lines} left out ({lines} "
                f"{first_few(blank, 5)}); the "
                "predictions' ids are the texts' line numbers"
            )
        sentences = sst_tree_sentences(out.texts)
        if sentences is not None:
            log.info(
                f"inputs={path}: SST trees; predicting each tree's sentence, as training reads "
                "it (the trees' labels are not used)"
            )
            out.texts = sentences
    else:
        table = _read_table(path, text_column, pair_column, quoting)
        for warning in table.warnings:
            log.warning(f"{path}, {warning}")
        own = _own_ids(path, table)
        ids = own or [str(n) for n in table.lines]
        out = TextInputs(ids, table.texts, table.pairs, path, has_index=own is not None)
        warn_empty_texts(path, table.texts, table.pairs, table.lines)
    if not out.texts:
        raise SFTError(f"inputs={path}: holds no texts")
    return out


def sst_tree_sentences(texts: list[str]) -> list[str] | None:
    """The sentences of SST PTB trees (`(3 (2 It) (4 ...))`, the format of data=sst5's files),
    as training reads them; None unless every text is such a tree. (Read as plain texts, the
    trees were predicted as written, their gold labels in them.)"""
    if not texts or not all(t.lstrip().startswith("(") for t in texts):
        return None
    try:
        trees = [parse_tree(t) for t in texts]
    except ValueError:
        return None
    # every word a leaf of its own, every label a sentiment (0..4): not a text that parses as a
    # tree, such as `(10 out of 10)` or `(2 weeks later)`
    for tree in trees:
        leaves = {start for _, start, end in tree.nodes if end - start == 1}
        labels = {label for label, _, _ in tree.nodes}
        if leaves != set(range(len(tree.words))) or not labels <= set(range(5)):
            return None
    return [detokenize(tree.words) for tree in trees]


def _text_lines(path: Path) -> Iterable[tuple[int, str]]:
    """(line number from 1, line) of a text file, or of standard input (`-`)."""
    if path == STDIN:
        return _stdin_lines()
    return read_lines(path)


def _stdin_lines() -> Iterable[tuple[int, str]]:
    """Standard input's lines decoded as a file's are: UTF-8, a byte-order mark dropped, one
    line naming the first that does not decode (Python's own decoding of a piped stdin lets
    such bytes through, and the tokenizer failed on them with a traceback)."""
    stream = getattr(sys.stdin, "buffer", None)
    if stream is None:  # replaced by a text stream (an embedding program, tests)
        yield from enumerate(sys.stdin, start=1)
        return
    number = 0
    for raw in stream:
        try:
            text = raw.decode(ENCODING if number == 0 else "utf-8")
        except UnicodeDecodeError as e:
            raise SFTError(
                f"inputs=-, line {number + 1}: not UTF-8 text ({e.reason} at byte {e.start} of "
                f"the line: {raw[e.start : e.start + 4]!r}); give UTF-8 text"
            ) from None
        # its lines as a file's are read: a lone \r ends one too (was: kept inside the text,
        # so the same bytes gave a file fewer predictions piped in, and other ids)
        for line in io.StringIO(text, newline=None):
            number += 1
            yield number, line


def warn_empty_texts(
    source: Path, texts: list[str], pairs: list[str] | None, rows: list, row: str = "line"
) -> None:
    """A warning naming the `rows` (a file's line numbers; sft.api's input positions, `row`
    "input") whose text is empty or whitespace-only (as training warns): they are predicted,
    from the special tokens alone, so their row stays in the output."""
    empty = [
        at
        for at, text, pair in zip(rows, texts, pairs or [None] * len(texts), strict=True)
        if not text.strip() or (pair is not None and not pair.strip())
    ]
    if empty:
        named = row if len(empty) == 1 else f"{row}s"
        what, of = (
            ("pairs have an empty or whitespace-only text", "of one text or none")
            if pairs
            else ("texts are empty or whitespace-only", "of no words")
        )
        log.warning(
            f"inputs={source}: {len(empty)} of {len(texts)} {what} "
            f"({named} {first_few(empty, 5)}); their predictions are {of}"
        )


def _own_ids(path: Path, table: TextExamples) -> list[str] | None:
    """The table's own ids (its index/id/idx values), or None to number the inputs by line:
    when no row has one, or some lack one (mixing the two would give ids that collide, e.g. a
    record with id 3 and the record on line 3). A warning names the first row without."""
    missing = [line for i, line in zip(table.ids, table.lines, strict=True) if not i]
    if len(missing) == len(table.ids):
        return None
    if missing:
        log.warning(
            f"inputs={path}, line {missing[0]}: no {'/'.join(ID_COLUMNS)} value, which other "
            f"rows have; the predictions' ids are the {len(table.ids)} line numbers instead"
        )
        return None
    repeated = [i for i, n in Counter(table.ids).items() if n > 1]
    if repeated:
        log.warning(
            f"inputs={path}: {len(repeated)} id(s) occur more than once (first: "
            f"{repeated[0]!r}); predictions with those ids cannot be told apart by id"
        )
    return table.ids


def _read_table(
    path: Path, text_column: str, pair_column: str | None, quoting: str | None
) -> TextExamples:
    """A .tsv/.csv/.jsonl file as unlabelled examples, by the datamodule's readers."""
    columns = dict(
        text_column=text_column,
        pair_column=pair_column,
        label_column=None,
        label_map=LabelMap(None),
        need_labels=False,
        id_columns=ID_COLUMNS,
        hint=COLUMN_HINT,
    )
    if path.suffix.lower() in JSONL_SUFFIXES:
        return read_jsonl(path, **columns)
    # the datamodule's delimiter and default quoting for the format
    table = TsvReader if path.suffix.lower() == ".tsv" else CsvReader
    quoting = quoting or table.default_quoting
    if quoting not in QUOTING:
        raise SFTError(f"quoting must be none or minimal, got {quoting!r}")
    # (was: a comma file named .tsv got the column hint alone)
    return read_delimited(
        path, table.delimiter, quoting, **columns, quoting_key="quoting", kind_by_suffix=True
    )
