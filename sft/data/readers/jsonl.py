"""JSON lines: one JSON object per line, its keys the columns."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sft.data.readers.columns import COLUMN_HINT, check_columns
from sft.data.readers.examples import UNLABELLED, TextExamples
from sft.data.readers.files import FileReader, check_file, read_lines
from sft.data.readers.labels import LabelMap
from sft.errors import SFTError
from sft.utils.logs import first_few


def any_record_has(path: Path, key: str) -> bool:
    """Whether a record of a JSONL file has `key` (whether it has labels, before reading it)."""
    return any(key in record for _, _, record in json_records(path)[0])


def json_records(path: Path) -> tuple[list[tuple[int, str, dict[str, Any]]], list[int]]:
    """(number, where, record) of each record of a JSON Lines file, or of a file that is one
    JSON array of objects (what `sft-predict format=json` writes, and json.dump of a list: was
    refused); the blank lines between JSON Lines records (left out). `where` names the line, or
    the array's record, counted from 1."""
    check_file(path)
    lines = list(read_lines(path))
    start = next((raw.lstrip() for _, raw in lines if raw.strip()), "")
    if start.startswith("["):
        records = _json(path, "".join(raw for _, raw in lines), "")
        if not isinstance(records, list):
            raise SFTError(f"{path}: not valid JSON Lines, nor a JSON array of objects")
        return [
            (i, f"record {i}", _object(path, f"record {i}", r)) for i, r in enumerate(records, 1)
        ], []
    blank = [line for line, raw in lines if not raw.strip()]
    last = max((line for line, raw in lines if raw.strip()), default=0)
    records = [
        (line, f"line {line}", _object(path, f"line {line}", _json(path, raw, f"line {line}")))
        for line, raw in lines
        if raw.strip()
    ]
    # those after the last record are the file's end (an editor's extra newline): no word
    return records, [line for line in blank if line < last]


def _json(path: Path, text: str, where: str) -> Any:
    at = f"{path}, {where}" if where else str(path)
    try:
        return json.loads(text, object_pairs_hook=lambda pairs: _no_key_twice(at, pairs))
    except json.JSONDecodeError as e:
        hint = "" if where else f", at line {e.lineno}"
        raise SFTError(f"{at}: not valid JSON ({e.msg}{hint})") from None


def _no_key_twice(where: str, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A record's keys, each once: json keeps the last of a key written twice (was: silently)."""
    record = dict(pairs)
    if len(record) < len(pairs):
        twice = next(k for i, (k, _) in enumerate(pairs) if k in dict(pairs[:i]))
        raise SFTError(f"{where}: the key {twice!r} is written twice in one record")
    return record


def _object(path: Path, where: str, record: Any) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise SFTError(f"{path}, {where}: expected a JSON object, got {type(record).__name__}")
    return record


def _as_written(value: Any) -> Any:
    """A whole-number label as the text a CSV/TSV cell would hold, so that it is looked up in
    data.label_names by name first, as there (names ["1", "2", "3"]: 1 is "1", not position 1);
    true/false as the names "true"/"false" (was: refused, with no name that matched them)."""
    if isinstance(value, bool):  # JSON's true/false: the names "true", "false"
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value) if isinstance(value, int) else value


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
    """One JSON object per line (or a JSON array of them); blank lines are left out, with a
    warning. Without `need_labels`, a file in which
    no record has the label key is unlabelled (one that some records lack is an error naming the
    first), and so is a record labelled -1 (`datasets`' `to_json` of a test split,
    `LabelMap.marks_unlabelled`). With `id_columns`, `ids` holds each record's value (as text) of
    the first of them it has."""
    out = TextExamples(pairs=[] if pair_column else None, ids=[] if id_columns else None)
    records, blank = json_records(path)
    if blank:  # (was: left out without a word, where TSV/CSV warn)
        lines = "line" if len(blank) == 1 else "lines"
        out.warnings.append(f"{len(blank)} blank {lines} left out ({lines} {first_few(blank, 5)})")
    labelled = need_labels or any(label_column in record for _, _, record in records)
    for line, at, record in records:
        where = f"{path}, {at}"
        wanted = [text_column, pair_column, label_column if labelled else None]
        check_columns(where, wanted, list(record), hint)
        for column in (text_column, pair_column):
            if column is not None and record[column] is None:
                # pandas' to_json writes a missing text as null: an empty text, as an empty
                # TSV/CSV cell is (warned about where empty texts are)
                record[column] = ""
            if column is not None and not isinstance(record[column], str):
                raise SFTError(
                    f"{where}: {column!r} must be a string, got {type(record[column]).__name__}"
                )
        value = _as_written(record[label_column]) if labelled else None
        if not labelled or (not need_labels and label_map.marks_unlabelled(value)):
            label = UNLABELLED
        else:
            label = label_map(value, where)
        pair = record[pair_column] if pair_column else None
        id_key = next((c for c in id_columns if c in record), None)
        # {"id": null} has no id
        ident = str(record[id_key]) if id_key and record[id_key] is not None else None
        out.add(record[text_column], label, line, pair, ident)
    return out


class JsonlReader(FileReader):
    """Splits as JSONL files; keys `data.text_column` (and `data.text_pair_column`),
    `data.label_column`."""

    source = "jsonl"

    def read(self, role: str) -> TextExamples:
        label_column, need = self.label_mode(role)
        s = self.settings
        return read_jsonl(
            self.path(role),
            s.text_column,
            s.text_pair_column,
            label_column,
            self.label_map(),
            need,
        )

    def labels_present(self, role: str) -> bool:
        has_key = any_record_has(self.path(role), self.settings.label_column)
        return has_key and super().labels_present(role)
