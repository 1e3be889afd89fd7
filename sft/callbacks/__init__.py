from sft.callbacks.backbone_unfreeze import BackboneUnfreeze
from sft.callbacks.early_stopping import EarlyStopping
from sft.callbacks.exact_resume import ExactResume
from sft.callbacks.graceful_interrupt import GracefulInterrupt
from sft.callbacks.last_checkpoint import LastCheckpoint
from sft.callbacks.metric_lines import MetricLines
from sft.callbacks.nonfinite_loss import StopOnNonFiniteLoss
from sft.callbacks.validate_at_last_step import ValidateAtLastStep

__all__ = [
    "BackboneUnfreeze",
    "EarlyStopping",
    "ExactResume",
    "GracefulInterrupt",
    "LastCheckpoint",
    "MetricLines",
    "StopOnNonFiniteLoss",
    "ValidateAtLastStep",
]
