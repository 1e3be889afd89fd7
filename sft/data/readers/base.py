"""The interface of a text reader: one class per `data.source` (sft.data.readers registers them).

A reader turns a split (train/val/test) into `TextExamples`, says what identifies that split's
content for the token cache, and whether a split has labels, so that the datamodule never asks
which source it reads.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from sft.data.readers.examples import TextExamples
from sft.data.readers.labels import LabelMap
from sft.errors import SFTError


@dataclass(frozen=True)
class ReaderSettings:
    """The data.* keys that every source is read with; a source's own keys (data.quoting,
    data.binary, ...) go to its reader's constructor."""

    data_dir: Path
    splits: Mapping[str, str | None]  # role (train/val/test) -> file name or HF split name
    text_column: str
    text_pair_column: str | None
    label_column: str
    label_names: list[str] | None
    # the test split: True labelled, False unlabelled, None labelled when it has labels
    test_labelled: bool | None
    trust_remote_code: bool


class TextReader(ABC):
    """Reads the splits of one `data.source`."""

    source: ClassVar[str]  # its data.source value
    options: ClassVar[tuple[str, ...]] = ()  # data.* keys of this source only: constructor kwargs
    row_kind: ClassVar[str] = "lines"  # what `TextExamples.lines` count, for messages
    # appended to "the <role> split has no examples" (why a split can end up empty)
    empty_split_note: str = ""

    def __init__(self, settings: ReaderSettings) -> None:
        self.settings = settings
        LabelMap(settings.label_names)  # distinct, non-empty
        self._labels_present: dict[str, bool] = {}  # by role: a split read to tell is read once
        _check_distinct_columns(settings)

    @abstractmethod
    def where(self, role: str) -> str:
        """The split `role` for messages: its file, or the HF dataset and split."""

    @abstractmethod
    def read(self, role: str) -> TextExamples:
        """The examples of split `role`, in source order."""

    @abstractmethod
    def cache_name(self, role: str) -> str:
        """The readable stem of the split's token-cache file (its key follows)."""

    @abstractmethod
    def content_key(self, role: str) -> dict[str, Any]:
        """What identifies the split's content (a file digest, a dataset fingerprint)."""

    def label_map(self) -> LabelMap:
        return LabelMap(self.settings.label_names)

    def label_mode(self, role: str) -> tuple[str | None, bool]:
        """(label column to read, labels required) of split `role`."""
        test_labelled = self.settings.test_labelled
        if role != "test" or test_labelled:
            return self.settings.label_column, True
        if test_labelled is False:
            return None, False
        return self.settings.label_column, False  # auto: labelled if the column is there

    def options_key(self, role: str) -> dict[str, Any]:
        """The reader options that change split `role`'s examples: here its columns."""
        label_column, need = self.label_mode(role)
        s = self.settings
        return {
            "text": s.text_column,
            "pair": s.text_pair_column,
            "label": label_column,
            "need": need,
        }

    def cache_key(self, role: str) -> dict[str, Any]:
        """Everything besides tokenizer and max_length that changes split `role`'s tensors."""
        parts = {"source": self.source, "labels": self.label_map().names}
        return {**parts, **self.options_key(role), **self.content_key(role)}

    def has_labels(self, role: str) -> bool:
        """Whether split `role` is labelled; known without tokenising it."""
        label_column, need = self.label_mode(role)
        if need or label_column is None:
            return need
        if role not in self._labels_present:
            self._labels_present[role] = self.labels_present(role)
        return self._labels_present[role]

    def labels_present(self, role: str) -> bool:
        """Whether a split whose labels are optional has them (a label column of -1s, as
        GLUE's test splits have, holds none). Here: read it and look; readers that can tell
        from less (no label column in a header) do so."""
        return self.read(role).labelled


def _check_distinct_columns(settings: ReaderSettings) -> None:
    """One column cannot be two things (was: a pair of the same text twice, read silently, or
    "label 'good' is not in the label set" for the text column taken as labels)."""
    keys = (
        ("data.text_column", settings.text_column, "texts"),
        ("data.text_pair_column", settings.text_pair_column, "second texts"),
        ("data.label_column", settings.label_column, "labels"),
    )
    seen: dict[str, str] = {}
    for key, column, holds in keys:
        if column is None:
            continue
        if column in seen:
            raise SFTError(
                f"{key}={column} is also {seen[column]}: one column cannot be both; give "
                f"{key} the column that holds the {holds}"
            )
        seen[column] = key
