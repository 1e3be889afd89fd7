"""A user's datamodule as README's "Your own configs and code" lists it: SFTDataModule with its
loaders, probe_dataloader and transform_batch, and no more (no modality, image size or
normalisation)."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset

from sft.data.base import SFTDataModule


class RandomImages(SFTDataModule):
    def __init__(self, batch_size: int = 8) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
        self.batch_size = batch_size
        self.num_classes, self.class_names = 2, ["a", "b"]

    def setup(self, stage: str | None = None) -> None:
        g = torch.Generator().manual_seed(0)
        images = torch.rand(32, 3, 32, 32, generator=g)
        labels = torch.arange(32) % 2
        self.train_data = self.val_data = self.test_data = TensorDataset(images, labels)

    def _loader(self, data: Any, shuffle: bool = False) -> DataLoader:
        return DataLoader(data, batch_size=self.batch_size, shuffle=shuffle)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_data, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_data)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_data)

    def probe_dataloader(self) -> DataLoader:
        return self._loader(self.train_data)

    def transform_batch(self, batch: Any, train: bool) -> Any:
        return batch
