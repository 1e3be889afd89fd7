"""Raw label values (names or integers, as files and datasets hold them) -> class indices."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from sft.errors import SFTError

MAX_CLASSES = 2**31 - 1


class LabelMap:
    """Raw label values -> class indices.

    With `names`, a value is a name (exact match) or an integer index into `names`; without,
    it must be an integer >= 0 (the class count is inferred from the training split). Names that
    are whole numbers (star ratings `["1", "3", "5"]`) take names only: a `2` read as position 2
    was the class "5", silently (a Hugging Face `ClassLabel` column's positions are read as
    its names first, `read_hf_split`).
    """

    def __init__(self, names: Sequence[str] | None) -> None:
        self.names = [str(n) for n in names] if names is not None else None
        if self.names is not None and (not self.names or len(set(self.names)) != len(self.names)):
            raise SFTError(f"data.label_names must be distinct and non-empty, got {self.names}")
        self._index = {n: i for i, n in enumerate(self.names or [])}
        self._numbered = any(as_int(n) is not None for n in self.names or [])

    def allowed(self) -> str:
        if self.names is None:
            return "integers >= 0"
        if self._numbered:
            return f"{self.names}"
        return f"{self.names} or 0..{len(self.names) - 1}"

    def marks_unlabelled(self, value: Any) -> bool:
        """A negative whole number that is not a class name: how GLUE's and Hugging Face
        `datasets`' test splits mark a row without a label (-1); or an empty cell, as a test file
        with its label column left blank has (was: "the label is missing" for an unlabelled
        test file)."""
        if value is None or (isinstance(value, str) and not value.strip()):
            return True
        index = as_int(value)
        return index is not None and index < 0 and str(index) not in self._index

    def _same_but_case(self, value: Any) -> str:
        """`; did you mean 'positive'?` for `Positive`: names match exactly."""
        folded = {n.casefold(): n for n in self.names or []}
        name = folded.get(value.casefold()) if isinstance(value, str) else None
        return f"; did you mean {name!r}? (names match exactly, case included)" if name else ""

    def __call__(self, value: Any, where: str) -> int:
        if isinstance(value, list | dict):  # a JSON line's label given as a list or an object
            raise SFTError(
                f"{where}: label {value!r} is a {type(value).__name__}: expected one label, a "
                f"class index or name ({self.allowed()})"
            )
        if isinstance(value, str):
            value = value.strip()
            if value in self._index:
                return self._index[value]
        if value is None or value == "":  # an empty cell, a JSON null
            raise SFTError(f"{where}: the label is missing (expected {self.allowed()})")
        index = as_int(value)
        if self._numbered:
            name = str(index)  # "3.0", as spreadsheets write a label column, is the name "3"
            if index is None or name not in self._index:
                raise SFTError(
                    f"{where}: label {value!r} is not in the label set ({self.allowed()}); with "
                    "class names that are numbers, labels are read as names, not positions"
                )
            return self._index[name]
        n = len(self.names) if self.names is not None else None
        if index is None or index < 0 or (n is not None and index >= n):
            hint = (
                # a split that must be scored (sft-eval's named test file), read for labels
                "; a negative label (GLUE's test files' -1) marks an example without one, but "
                "this split is scored, so each example needs one: sft-predict predicts "
                f"unlabelled texts; if {index} is a class (labels such as -1/1), name the "
                f"classes, in the model's output order: 'data.label_names=[\"{index}\",...]'"
                if self.marks_unlabelled(value)
                else ""
            )
            if n is None and index is None and not isinstance(value, bool):
                hint = (
                    "; class indices are whole numbers"
                    if as_float(value) is not None
                    else "; text labels need the class names, in the model's output order: "
                    "data.label_names=[...]"
                )
            raise SFTError(
                f"{where}: label {value!r} is not in the label set ({self.allowed()})"
                + (hint or self._same_but_case(value))
            )
        if index > MAX_CLASSES:
            # without names the class count is the largest index + 1 (and the label tensors
            # overflow): no classifier has that many classes
            raise SFTError(f"{where}: label {value!r} is too large for a class index")
        return index


def as_int(value: Any) -> int | None:
    """`value` as an integer when it is one (an int, an integral float, or its digits), else
    None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    # "1.0": a whole number as spreadsheets and pandas write a label column (as JSON's 1.0)
    if isinstance(value, str) and re.fullmatch(r"[+-]?\d+(\.0*)?", value):
        return int(value.split(".")[0])
    return None


def as_float(value: Any) -> float | None:
    """`value` as a number when it reads as one (e.g. "1.5"), else None."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
