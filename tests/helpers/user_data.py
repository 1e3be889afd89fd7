"""A user's datamodule as README's "Your own configs and code" lists it: SFTDataModule with its
loaders, probe_dataloader and transform_batch, and no more (no modality, image size or
normalisation)."""

from __future__ import annotations

from typing import Any

import lightning as L
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


class Plain(L.LightningDataModule):
    """A Lightning datamodule that is not an sft one."""

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(torch.rand(4, 3, 32, 32), torch.zeros(4).long()))


class NoClassNames(RandomImages):
    """Sets num_classes only."""

    def __init__(self) -> None:
        super().__init__()
        del self.class_names


class NoProbe(RandomImages):
    """The base class's probe_dataloader: none of its own."""

    probe_dataloader = SFTDataModule.probe_dataloader


class LabelsFrom5(RandomImages):
    """Labels 5 and 6 for two classes."""

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        images, labels = self.train_data.tensors
        self.train_data = self.val_data = self.test_data = TensorDataset(images, labels + 5)


class LateBadLabel(RandomImages):
    """In-range labels in the first batches, 5 in the last one (unshuffled splits)."""

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        images, _ = self.train_data.tensors
        labels = torch.tensor([0, 1] * 12 + [5] * 8)
        self.train_data = self.val_data = self.test_data = TensorDataset(images, labels)


class Int32Labels(RandomImages):
    """Labels as numpy and pandas give them: int32."""

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        images, labels = self.train_data.tensors
        self.train_data = self.val_data = self.test_data = TensorDataset(images, labels.int())


class FewClassNames(RandomImages):
    """Two classes, one name."""

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        self.class_names = ["a"]


class ForgetsItsSettings(RandomImages):
    """Takes settings but records none of them (no save_hyperparameters)."""

    def __init__(self, batch_size: int = 8, flip_labels: bool = False) -> None:
        SFTDataModule.__init__(self)
        self.batch_size, self.flip_labels = batch_size, flip_labels
        self.num_classes, self.class_names = 2, ["a", "b"]
