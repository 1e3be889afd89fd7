"""The one error for columns (table fields, JSON keys, HF dataset columns) that a split lacks
or names twice."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from sft.errors import SFTError

COLUMN_HINT = "set data.text_column / data.label_column"
PAIR_COLUMN_HINT = "set data.text_column / data.text_pair_column / data.label_column"


def check_columns(
    where: str | Path,
    wanted: Iterable[str | None],
    available: Sequence[str],
    hint: str = COLUMN_HINT,
    note: str = "",
) -> None:
    """One line naming the `wanted` columns (text, text pair, label; None: not wanted) missing
    from `available`; `note` ends it (what else the caller sees wrong)."""
    wanted = list(wanted)
    pair = wanted[1] if len(wanted) > 1 else None
    wanted = [c for c in wanted if c is not None]
    missing = [c for c in wanted if c not in available]
    if hint == COLUMN_HINT and pair in missing:  # was: a hint without the pair's setting
        hint = PAIR_COLUMN_HINT
    if missing:
        raise SFTError(
            f"{where}: no column {', '.join(map(repr, missing))}; available columns: "
            f"{', '.join(map(repr, available))} ({hint}){note}"
        )
    # a header naming a column twice: which of them is meant is the user's to say
    twice = next((c for c in wanted if list(available).count(c) > 1), None)
    if twice is not None:
        raise SFTError(
            f"{where}: the column {twice!r} appears {list(available).count(twice)} times; "
            "rename all but one"
        )
