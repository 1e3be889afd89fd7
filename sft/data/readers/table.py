"""Delimited files with a header row: TSV (GLUE style, unquoted) and CSV (quoted fields)."""

from __future__ import annotations

import contextlib
import csv
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

from sft.data.readers.base import ReaderSettings
from sft.data.readers.columns import COLUMN_HINT, check_columns
from sft.data.readers.examples import UNLABELLED, TextExamples
from sft.data.readers.files import ENCODING, FileReader, check_file, not_utf8
from sft.data.readers.labels import LabelMap, as_float
from sft.errors import SFTError
from sft.utils.logs import first_few

QUOTING = {"none": csv.QUOTE_NONE, "minimal": csv.QUOTE_MINIMAL}
# (was: only the field count, of a row that looks whole in an editor that shows no \r)
STRAY_CR_HINT = (
    "; the file holds a carriage return (\\r) that no newline follows, which ends a line where "
    "it stands (pasted or scraped text?): remove them, e.g. tr -d '\\r'"
)


@contextlib.contextmanager
def any_field_size() -> Iterator[None]:
    """Fields of any length: Python's csv refuses one over 131,072 characters ("field larger
    than field limit"), a long document the tokenizer truncates anyway. The limit is the
    process's: set back after reading."""
    before = csv.field_size_limit(2**31 - 1)
    try:
        yield
    finally:
        csv.field_size_limit(before)


def read_header(path: Path, delimiter: str, quoting: str) -> list[str]:
    """The column names of a delimited file (its first row)."""
    check_file(path)
    try:
        with open(path, encoding=ENCODING, newline="") as f, any_field_size():
            row = next(csv.reader(f, delimiter=delimiter, quoting=QUOTING[quoting]), None)
    except UnicodeDecodeError as e:
        raise not_utf8(path, e) from None
    except csv.Error as e:
        raise SFTError(f"{path}, line 1: unreadable header ({e})") from None
    if not row:
        raise SFTError(f"{path} is empty: expected a header row naming the columns")
    return [c.strip() for c in row]


def _semicolon_hint(first_line: str) -> str | None:
    """A header read as one column that holds semicolons: spreadsheets in locales with a
    decimal comma write CSV with semicolons."""
    if first_line.startswith("{"):  # a JSON line, whose texts may hold semicolons
        return None
    if ";" in first_line and "\t" not in first_line and "," not in first_line:
        return "the file looks separated by ';': save it with commas (CSV) or tabs (TSV)"
    return None


def _other_format_hint(first_line: str, delimiter: str, by_suffix: bool) -> str | None:
    """`set data.source=<kind>` (`by_suffix`: name it .<kind>, sft-predict's way) when a header
    read as one column looks like another kind of file (JSON lines, or the other delimiter)."""
    if first_line.startswith("{"):
        kind = "jsonl"
    else:
        kind = next(
            (k for d, k in (("\t", "tsv"), (",", "csv")) if d != delimiter and d in first_line),
            None,
        )
    if kind is None:
        return None
    how = (
        f"give it a .{kind} suffix, which says how it is read"
        if by_suffix
        else (f"set data.source={kind}")
    )
    return f"the file looks like {kind}: {how}"


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
    quoting_key: str = "data.quoting",
    kind_by_suffix: bool = False,
) -> TextExamples:
    """A TSV/CSV with a header. `quoting="none"` (GLUE style) keeps `"` as a plain character.

    A file without the label column is unlabelled (labels -1) unless `need_labels`, and so is a
    row labelled -1 (a GLUE or `datasets` test split, `LabelMap.marks_unlabelled`). With
    `id_columns`, `ids` holds each row's value of the first of them in the header.
    `quoting_key`: the setting that the messages about quotes name; `kind_by_suffix`: the
    file's suffix says how it is read (sft-predict), not data.source.
    """
    header = read_header(path, delimiter, quoting)
    # one column, or a JSON object split at its commas: the file may be of another kind (the
    # data.source hint is the datamodule's; sft-predict reads by the file's suffix)
    if len(header) == 1 or header[0].startswith("{"):
        hint = (
            _semicolon_hint(header[0])
            or _other_format_hint(header[0], delimiter, kind_by_suffix)
            or hint
        )
    # a file without its header row: its first row's values were read as column names
    note = (
        "; the first row looks like data: the file needs a header row naming its columns"
        # a number, or a class name (word labels), read as a column's name
        if any(as_float(name) is not None or name in (label_map.names or ()) for name in header)
        else ""
    )
    if need_labels or label_column in header:
        check_columns(path, [text_column, pair_column, label_column], header, hint, note)
        label_at = header.index(label_column) if label_column else None
    else:
        check_columns(path, [text_column, pair_column], header, hint, note)
        label_at = None
    text_at = header.index(text_column)
    pair_at = header.index(pair_column) if pair_column else None
    id_at = next((header.index(c) for c in id_columns if c in header), None)
    out = TextExamples(pairs=[] if pair_column else None, ids=[] if id_columns else None)
    kind = "tab" if delimiter == "\t" else repr(delimiter)
    # (first, last line, later lines) of records whose fields span lines
    multiline: list[tuple[int, int, list[str]]] = []
    csv_quoted: list[int] = []  # lines whose texts look written by a CSV writer (quoting none)
    blank: list[int] = []  # blank lines of a one-column file, where they could be meant as texts
    between: list[int] = []  # blank lines between the rows of a file of several columns
    last_row = 0
    text_fields = [at for at in (text_at, pair_at) if at is not None]
    # the other columns' kind of value (_value_kind), the widest each row has shown
    kinds = {at: NUMBER for at in range(len(header)) if at not in text_fields}
    line = 0  # the last line read: none yet (a quote the header leaves open ends the file)
    try:
        with open(path, encoding=ENCODING, newline="") as f, any_field_size():
            reader = csv.reader(f, delimiter=delimiter, quoting=QUOTING[quoting], strict=True)
            next(reader)
            line = reader.line_num
            for row in reader:
                # a record's first line: ids and messages name it, as an editor shows the row
                line, last = line + 1, reader.line_num
                if last > line:
                    multiline.append((line, last, _later_lines(row)))
                # a blank line; in a one-column file `""` or spaces are an (empty) text
                if not row or (len(header) > 1 and len(row) == 1 and not row[0].strip()):
                    (blank if not row and len(header) == 1 else between).append(line)
                    line = last
                    continue
                last_row = line
                quoted = quoting == "none" and any(f.startswith('"') for f in row)
                if len(row) != len(header):
                    raise SFTError(
                        f"{path}, line {line}: expected {len(header)} {kind}-separated "
                        f"field{'s' if len(header) > 1 else ''} "
                        f"({', '.join(header)}), got {len(row)}"
                        + (
                            f"; a field in quotes holds a {kind}? {quoting_key}=minimal reads "
                            "quoted fields"
                            if quoted
                            else STRAY_CR_HINT
                            if _ends_in_a_lone_carriage_return(path, line)
                            else ""
                        )
                    )
                if quoted and any(_csv_quoted(row[at]) for at in text_fields):
                    csv_quoted.append(line)
                for at, widest in kinds.items():
                    kinds[at] = max(widest, _value_kind(row[at]))
                try:
                    label = (
                        UNLABELLED
                        if label_at is None
                        or (not need_labels and label_map.marks_unlabelled(row[label_at]))
                        else label_map(row[label_at], f"{path}, line {line}")
                    )
                except SFTError as e:
                    if not quoted:
                        raise
                    # a tab inside a quoted field moved the columns
                    raise SFTError(
                        f"{e}; does a field in quotes hold a {kind}? {quoting_key}=minimal reads "
                        "quoted fields"
                    ) from None
                pair = row[pair_at] if pair_at is not None else None
                out.add(row[text_at], label, line, pair, row[id_at] if id_at is not None else None)
                line = last
    except csv.Error as e:
        if "unexpected end of data" in str(e):  # a quote opened in the last record never closes
            raise SFTError(
                f"{path}, line {line + 1}: a quoted field that starts here is never closed "
                f'(its " has no closing "): add it, or set {quoting_key}=none if quotes are '
                "ordinary characters in this file"
            ) from None
        if "expected after" in str(e):  # text after a quote that closes a quoted field
            start, at = line + 1, reader.line_num
            where = f"line {at}" if at == start else f"lines {start}-{at}"
            raise SFTError(
                f'{path}, {where}: a quote (") closes a quoted field and text follows it'
                + (f" (is the quote that opens on line {start} left open?)" if at > start else "")
                + f'; inside quotes a " is written twice (""), or set {quoting_key}=none if '
                "quotes are ordinary characters in this file"
            ) from None
        raise SFTError(f"{path}, line {reader.line_num}: malformed row ({e})") from None
    except UnicodeDecodeError as e:
        raise not_utf8(path, e) from None
    if csv_quoted:
        out.warnings.append(
            f"the texts of {len(csv_quoted)} rows look written with CSV quoting, in quotes with "
            'their own quotes doubled (""), as pandas and spreadsheets write them (lines '
            f"{first_few(csv_quoted, 5)}): they are read as written, quotes included; "
            f"{quoting_key}=minimal reads them as a CSV reader does"
        )
    if blank:
        lines = "line" if len(blank) == 1 else "lines"
        empty = "a line of spaces" if quoting == "none" else '""'
        out.warnings.append(
            f"{len(blank)} blank {lines} left out ({lines} {first_few(blank, 5)}): a blank "
            f"line holds no text; an empty text is written {empty} (its row is kept)"
        )
    # those after the last row are the file's end (an editor's extra newline): no word
    between = [at for at in between if at < last_row]
    if between:
        lines = "line" if len(between) == 1 else "lines"
        out.warnings.append(
            f"{len(between)} blank {lines} between the rows left out ({lines} "
            f"{first_few(between, 5)})"
        )
    shaped = {at: widest for at, widest in kinds.items() if widest < FREE_TEXT}
    looks_like_row = _row_shape(delimiter, len(header), label_at, label_map, shaped)
    merged = [(a, b) for a, b, later in multiline if any(looks_like_row(x) for x in later)]
    if merged:
        first, last = merged[0]
        more = f" (and {len(merged) - 1} more records like it)" if len(merged) > 1 else ""
        out.warnings.append(
            f"lines {first}-{last}: one quoted field spans {last - first + 1} lines that "
            f'look like rows of this file{more}: if a quote (") is not closed there, those rows '
            f"were read as one text; check the quotes, or set {quoting_key}=none if quotes are "
            "ordinary characters in this file"
        )
    return out


# kinds of value, each narrower than the next: a number is a word too
NUMBER, WORD, FREE_TEXT = range(3)


def _value_kind(value: str) -> int:
    """NUMBER ("3", "0.5"), WORD (one word: "r17", "pos", a UUID) or FREE_TEXT."""
    value = value.strip()
    if as_float(value) is not None:
        return NUMBER
    return WORD if value and not any(c.isspace() for c in value) else FREE_TEXT


def _csv_quoted(field: str) -> bool:
    """A field as a CSV writer quotes a text holding quotes: in quotes, its own quotes doubled
    (read with quoting none, those quotes stay in the text)."""
    return len(field) > 2 and field[0] == field[-1] == '"' and '""' in field[1:-1]


def _later_lines(row: list[str]) -> list[str]:
    """The lines after the first of a record's fields (a field that spans several lines)."""
    return [part for field in row for part in field.splitlines()[1:]]


def _row_shape(
    delimiter: str,
    columns: int,
    label_at: int | None,
    label_map: LabelMap,
    shaped: dict[int, int],
) -> Callable[[str], bool]:
    """Whether a line inside a quoted field reads as a row of this file: as many fields as the
    header, values of the kind of their column in the `shaped` ones (numbers in a column of
    numbers, one word in a column of ids or names) and, with a label column, a known label
    there; rows read into one field past a quote that was not closed (a text's own line with
    a comma in it is not one)."""

    def looks_like_row(line: str) -> bool:
        fields = line.split(delimiter)
        if columns < 2 or len(fields) != columns:
            return False
        if any(_value_kind(fields[at]) > kind for at, kind in shaped.items()):
            return False
        if label_at is None:
            # without a label, or a column of numbers or words (an id), nothing tells a row
            # from a text's own line with the delimiter in it (was: warned of every such text)
            return bool(shaped)
        try:
            label_map(fields[label_at], "")
        except SFTError:
            return False
        return True

    return looks_like_row


class TableReader(FileReader):
    """Splits as delimited files with a header row; columns `data.text_column` (and
    `data.text_pair_column`), `data.label_column`. Option `data.quoting`: none or minimal,
    null for the format's own default."""

    options = ("quoting",)
    delimiter: ClassVar[str]
    default_quoting: ClassVar[str]

    def __init__(self, settings: ReaderSettings, quoting: str | None = None) -> None:
        super().__init__(settings)
        if quoting is not None and quoting not in QUOTING:
            raise SFTError(f"data.quoting must be none or minimal, got {quoting!r}")
        self.quoting = quoting or self.default_quoting

    def read(self, role: str) -> TextExamples:
        label_column, need = self.label_mode(role)
        s = self.settings
        return read_delimited(
            self.path(role),
            self.delimiter,
            self.quoting,
            s.text_column,
            s.text_pair_column,
            label_column,
            self.label_map(),
            need,
        )

    def options_key(self, role: str) -> dict[str, Any]:
        return {**super().options_key(role), "quoting": self.quoting}

    def labels_present(self, role: str) -> bool:
        header = read_header(self.path(role), self.delimiter, self.quoting)
        return self.settings.label_column in header and super().labels_present(role)


class TsvReader(TableReader):
    source = "tsv"
    delimiter = "\t"
    default_quoting = "none"  # GLUE TSVs: `"` is an ordinary character in a sentence


class CsvReader(TableReader):
    source = "csv"
    delimiter = ","
    default_quoting = "minimal"  # quoted fields, as spreadsheet programs write them


def _ends_in_a_lone_carriage_return(path: Path, line: int) -> bool:
    """Whether line `line` (as the csv reader counts them: a lone \r ends one too) of a file of
    newline-ended lines ends in a carriage return that no newline follows."""
    with open(path, encoding=ENCODING, newline="") as f:  # on an error's way only
        lines = f.readlines()
    ends_newline = any(physical.endswith("\n") for physical in lines)
    # the row's own line, or the one before it: a \r after a row's last field ends the row
    # there, and what follows it is read as the next row
    ends = [lines[n - 1] for n in (line, line - 1) if 0 < n <= len(lines)]
    return ends_newline and any(physical.endswith("\r") for physical in ends)
