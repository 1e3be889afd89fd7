"""Datamodules: in-memory / image-folder loading, few-label subsets, batched on-device augmentation."""

from sft.data.base import SFTDataModule
from sft.data.cifar10 import CIFAR10DataModule
from sft.data.image_folder import ImageFolderDataModule
from sft.data.subsets import few_label_indices

__all__ = ["CIFAR10DataModule", "ImageFolderDataModule", "SFTDataModule", "few_label_indices"]
