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


def any_record_has(path: Path, key: str) -> bool:
    """Whether a record of a JSONL file has `key` (whether it has labels, before reading it)."""
    check_file(path)
    return any(
        key in _json_record(path, line, raw) for line, raw in read_lines(path) if raw.strip()
    )


# a file that is one JSON array (`[{...}, {...}]`), pretty-printed or on one line
ARRAY_HINT = (
    "a JSON array, not JSON Lines: sft reads one JSON object per line; write each record on "
    "its own line (e.g. jq -c '.[]' FILE > FILE.jsonl)"
)


def _json_record(path: Path, line: int, raw: str) -> dict[str, Any]:
    try:
        record = json.loads(raw)
    except json.JSONDecodeError as e:
        if (line == 1 and raw.strip() == "[") or raw.lstrip().startswith("[{"):
            raise SFTError(f"{path}, line {line}: {ARRAY_HINT}") from None
        raise SFTError(f"{path}, line {line}: not valid JSON ({e.msg})") from None
    if isinstance(record, list) and any(isinstance(r, dict) for r in record):
        raise SFTError(f"{path}, line {line}: {ARRAY_HINT}")
    if not isinstance(record, dict):
        raise SFTError(f"{path}, line {line}: expected a JSON object, got {type(record).__name__}")
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
    """One JSON object per line; blank lines are skipped. Without `need_labels`, a file in which
    no record has the label key is unlabelled (one that some records lack is an error naming the
    first), and so is a record labelled -1 (`datasets`' `to_json` of a test split,
    `LabelMap.marks_unlabelled`). With `id_columns`, `ids` holds each record's value (as text) of
    the first of them it has."""
    check_file(path)
    out = TextExamples(pairs=[] if pair_column else None, ids=[] if id_columns else None)
    records = [
        (line, _json_record(path, line, raw)) for line, raw in read_lines(path) if raw.strip()
    ]
    labelled = need_labels or any(label_column in record for _, record in records)
    for line, record in records:
        wanted = [text_column, pair_column, label_column if labelled else None]
        check_columns(f"{path}, line {line}", wanted, list(record), hint)
        for column in (text_column, pair_column):
            if column is not None and record[column] is None:
                # pandas' to_json writes a missing text as null: an empty text, as an empty
                # TSV/CSV cell is (warned about where empty texts are)
                record[column] = ""
            if column is not None and not isinstance(record[column], str):
                raise SFTError(
                    f"{path}, line {line}: {column!r} must be a string, got "
                    f"{type(record[column]).__name__}"
                )
        where = f"{path}, line {line}"
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
