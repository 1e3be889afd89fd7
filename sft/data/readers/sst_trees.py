"""SST PTB tree files (one tree per line) as SST-5 or binary sentence (or phrase) examples."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sft.data.readers.base import ReaderSettings
from sft.data.readers.examples import TextExamples
from sft.data.readers.files import FileReader, check_file, read_lines
from sft.data.readers.labels import LabelMap
from sft.data.sst_trees import detokenize, parse_tree
from sft.errors import SFTError

SST5_NAMES = ["very negative", "negative", "neutral", "positive", "very positive"]
BINARY_NAMES = ["negative", "positive"]


def read_sst_trees(path: Path, binary: bool, phrases: bool) -> TextExamples:
    """SST PTB trees, one per line. Root label 0..4 = SST-5 class; `binary` drops 2 (neutral)
    and maps 0,1 -> 0 and 3,4 -> 1. `phrases` adds every labelled sub-phrase of every tree
    (SST's phrase-level supervision), each distinct phrase text once (first occurrence: in SST
    a phrase has one label wherever it occurs); sentences come first in each tree's block."""
    check_file(path)
    out = TextExamples()
    seen: set[str] = set()
    for line, raw in read_lines(path):
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


class SSTTreesReader(FileReader):
    """Splits as SST PTB tree files. Options `data.binary` (drop neutral, 2 classes) and
    `data.phrases` (the training split also yields every sub-phrase; the others stay
    sentence-level)."""

    source = "sst_trees"
    options = ("binary", "phrases")

    def __init__(
        self, settings: ReaderSettings, binary: bool = False, phrases: bool = False
    ) -> None:
        super().__init__(settings)
        if settings.text_pair_column:
            raise SFTError("data.source=sst_trees has no sentence pairs (text_pair_column)")
        names = settings.label_names
        expected = 2 if binary else 5
        if names is not None and len(names) != expected:
            raise SFTError(f"data.label_names: SST trees have {expected} classes, got {names}")
        self.binary, self.phrases = binary, phrases
        if binary:
            self.empty_split_note = " after dropping neutral (label 2) trees"

    def _phrases(self, role: str) -> bool:
        return self.phrases and role == "train"

    def label_map(self) -> LabelMap:
        return LabelMap(self.settings.label_names or (BINARY_NAMES if self.binary else SST5_NAMES))

    def read(self, role: str) -> TextExamples:
        return read_sst_trees(self.path(role), self.binary, self._phrases(role))

    def options_key(self, role: str) -> dict[str, Any]:
        return {"binary": self.binary, "phrases": self._phrases(role)}

    def labels_present(self, role: str) -> bool:
        return True  # every tree carries labels
