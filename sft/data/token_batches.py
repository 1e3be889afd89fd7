"""Tokenised rows as a torch Dataset, and the collator that pads them into model batches."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from sft.data.token_cache import TokenizedSplit


class TokenDataset(Dataset):
    """Rows `indices` (default: all) of a tokenised split, as features for the collator."""

    def __init__(self, split: TokenizedSplit, indices: Sequence[int] | None = None) -> None:
        self.split = split
        self.indices = None if indices is None else torch.as_tensor(indices, dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.split) if self.indices is None else self.indices.numel()

    def source_lines(self) -> list[int]:
        """Each example's line in its file (row of an HF split), in order."""
        lines = self.split.lines if self.indices is None else self.split.lines[self.indices]
        return lines.tolist()

    def _row(self, i: int) -> int:
        return i if self.indices is None else int(self.indices[i])

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.split.example(self._row(i))

    @property
    def lengths(self) -> torch.Tensor:
        lengths = self.split.lengths
        return lengths if self.indices is None else lengths[self.indices]

    @property
    def labels(self) -> torch.Tensor:
        labels = self.split.labels
        return labels if self.indices is None else labels[self.indices]


class TokenBatchCollator:
    """HF's `DataCollatorWithPadding` (pads to the longest row of the batch, adds
    `attention_mask`), asked for numpy and turned into int64 torch tensors: transformers 5's
    own torch conversion walks every token in Python first and costs ~2.5x the whole collation."""

    def __init__(self, tokenizer: Any, pad_to_multiple_of: int | None = None) -> None:
        from transformers import DataCollatorWithPadding

        self.pad = DataCollatorWithPadding(
            tokenizer, pad_to_multiple_of=pad_to_multiple_of, return_tensors="np"
        )

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(v).to(torch.int64) for k, v in self.pad(features).items()}
