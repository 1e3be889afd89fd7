"""Datamodules: in-memory / image-folder loading, few-label subsets, batched on-device augmentation;
text classification with cached token ids and length-grouped batches."""

from sft.data.base import SFTDataModule
from sft.data.cifar10 import CIFAR10DataModule
from sft.data.image_folder import ImageFolderDataModule
from sft.data.length_grouped import LengthGroupedSampler
from sft.data.subsets import few_label_indices
from sft.data.text import TextClassificationDataModule

__all__ = [
    "CIFAR10DataModule",
    "ImageFolderDataModule",
    "LengthGroupedSampler",
    "SFTDataModule",
    "TextClassificationDataModule",
    "few_label_indices",
]
