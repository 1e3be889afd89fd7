"""Lightning's EarlyStopping, continued as configured when a run resumes."""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import early_stopping

log = logging.getLogger(__name__)


# named as Lightning's: its checkpoint state key is the class name, so checkpoints saved with
# Lightning's callback resume with this one and back
class EarlyStopping(early_stopping.EarlyStopping):
    """Lightning's EarlyStopping with two changes when a run continues from a checkpoint:

    - the configured `patience` holds (Lightning's `load_state_dict` restores the checkpoint's:
      a run resumed with a larger patience stopped after the old one, though its log and config
      said otherwise);
    - a run it had ended stays ended (Lightning checkpoints no `should_stop`: a sweep run again
      trained its early-stopped jobs on to their next validation, changing their records).
      A run stopped for lack of improvement trains on when resumed with a larger patience.
    """

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        patience = self.patience
        super().load_state_dict(state_dict)
        self.patience = patience

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        reason = self.stopping_reason
        if reason == early_stopping.EarlyStoppingReason.NOT_STOPPED:
            return
        if reason == early_stopping.EarlyStoppingReason.PATIENCE_EXHAUSTED:
            if self.wait_count < self.patience:
                return
            why = f"{self.monitor} did not improve in its last {self.wait_count} validations"
            how = f"raise callbacks.early_stopping.patience (now {self.patience}) to train on"
        else:  # a threshold, or a non-finite metric: said in Lightning's words
            why = str(self.stopping_reason_message).removesuffix(" Signaling Trainer to stop.")
            how = "leave early stopping out (callbacks.early_stopping=null) to train on"
        trainer.should_stop = True
        log.info(f"early stopping had ended the run this one continues ({why}): {how}")
