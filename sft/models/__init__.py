from sft.models.classifier import SFTClassifier
from sft.models.heads import FusedHead
from sft.models.loading import datamodule_from_checkpoint, load_classifier

__all__ = ["FusedHead", "SFTClassifier", "datamodule_from_checkpoint", "load_classifier"]
