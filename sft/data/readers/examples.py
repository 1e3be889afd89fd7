"""`TextExamples`: what every text reader returns, one split as aligned columns in file order."""

from __future__ import annotations

from dataclasses import dataclass, field

UNLABELLED = -1


@dataclass
class TextExamples:
    """One split as columns: `pairs` is None for single-sentence data; label -1 = unlabelled."""

    texts: list[str] = field(default_factory=list)
    pairs: list[str] | None = None
    labels: list[int] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)  # source line (row) of each example (errors)
    # with `id_columns`: the row's value of the first of them it has, else None (sft-predict)
    ids: list[str | None] | None = None
    # what the reader found doubtful in the file ("lines 3-7: ..."; the file is named where
    # they are said): said each time the split is used, also when its tokens come from the
    # cache (which skips the reader, and may serve a copy of the file elsewhere)
    warnings: list[str] = field(default_factory=list)

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
