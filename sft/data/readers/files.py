"""Text files under `data_dir`: existence checks with a hint, UTF-8 lines, content digests, and
the base class of the readers of such files."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sft.data.readers.base import TextReader
from sft.data.sources import SOURCES
from sft.errors import SFTError

# UTF-8 that also drops the byte-order mark spreadsheet programs put in front of a CSV header
ENCODING = "utf-8-sig"


def check_file(path: Path) -> None:
    """One line naming `path` (and what its folder holds) when it is not a file."""
    if path.is_dir():
        raise SFTError(f"text data file {path} is a folder, not a file: name a file")
    if not path.is_file():
        where = "does not exist" if not path.parent.is_dir() else "is missing"
        raise SFTError(f"text data file {path} {where}" + _dir_hint(path))


def _dir_hint(path: Path) -> str:
    if path.parent.is_dir():
        files = sorted(p.name for p in path.parent.iterdir())[:10]
        return f" (its folder holds: {', '.join(files) or 'nothing'})"
    # data.data_dir= is also how sft-eval/predict/export read a checkpoint's data where it is
    # now (was: a hint of those commands, with a `+` they do not need, in sft-train's line too);
    # they read the folder the checkpoint records, whatever SFT_DATA_DIR says
    get = SOURCES.get(path.parent.name)
    return f" (no folder {path.parent}; set data.data_dir (sft-train: or SFT_DATA_DIR)" + (
        f"; if it is to hold the packaged dataset, {get})" if get else ")"
    )


# the first bytes of compressed files a user may give as text
ARCHIVES = {
    "gzip": re.compile(rb"\x1f\x8b"),
    "zip": re.compile(rb"PK\x03\x04"),
    "bzip2": re.compile(rb"BZh[1-9]"),
    "xz": re.compile(rb"\xfd7zXZ\x00"),
}


# workbooks that are zip files: Excel, LibreOffice
SPREADSHEETS = (".xlsx", ".xlsm", ".ods")


def not_utf8(path: Path, error: UnicodeDecodeError) -> SFTError:
    """The error for a file that does not decode, naming its first undecodable line (the
    decoder's position is within a read-ahead block, not the file); a compressed file as such."""
    with open(path, "rb") as f:
        head = f.read(6)
        packed = next((name for name, magic in ARCHIVES.items() if magic.match(head)), None)
        if packed == "zip" and path.suffix.lower() in SPREADSHEETS:
            return SFTError(
                f"{path} is a spreadsheet workbook, not a text file: save it as CSV (UTF-8) and "
                "read that file"
            )
        if packed:
            return SFTError(
                f"{path} is {packed}-compressed: decompress it first (text files are read as "
                "they are)"
            )
        if head[:2] in (b"\xff\xfe", b"\xfe\xff"):  # the byte-order mark Windows editors write
            return SFTError(
                f"{path} is UTF-16 text (it starts with a UTF-16 byte-order mark): save it as "
                "UTF-8 (e.g. iconv -f UTF-16 -t UTF-8)"
            )
        f.seek(0)
        for number, raw in enumerate(f, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                return SFTError(
                    f"{path}, line {number}: not UTF-8 text ({e.reason} at byte {e.start} of the "
                    f"line: {raw[e.start : e.start + 4]!r}); save the file as UTF-8"
                )
    return SFTError(f"{path} is not UTF-8 text ({error}); save the file as UTF-8")


def read_lines(path: Path) -> Iterable[tuple[int, str]]:
    """(line number from 1, line) of a UTF-8 text file; one SFTError line when it is not UTF-8."""
    try:
        with open(path, encoding=ENCODING) as f:
            yield from enumerate(f, start=1)
    except UnicodeDecodeError as e:
        raise not_utf8(path, e) from None


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class FileReader(TextReader):
    """A source whose splits are files `<data_dir>/<split>`, identified by their bytes."""

    def path(self, role: str) -> Path:
        return self.settings.data_dir / self.settings.splits[role]

    def where(self, role: str) -> str:
        return str(self.path(role))

    def cache_name(self, role: str) -> str:
        return f"{self.settings.data_dir.name}-{role}"

    def content_key(self, role: str) -> dict[str, Any]:
        path = self.path(role)
        check_file(path)
        return {"sha256": file_digest(path)}
