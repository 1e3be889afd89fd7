"""Lightning's EarlyStopping, continued as configured when a run resumes."""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import early_stopping
from lightning.pytorch.utilities import rank_zero_only

log = logging.getLogger(__name__)

Reason = early_stopping.EarlyStoppingReason


# named as Lightning's: its checkpoint state key is the class name, so checkpoints saved with
# Lightning's callback resume with this one and back
class EarlyStopping(early_stopping.EarlyStopping):
    """Lightning's EarlyStopping with two changes when a run continues from a checkpoint:

    - the configured `patience` holds (Lightning's `load_state_dict` restores the checkpoint's:
      a run resumed with a larger patience stopped after the old one, though its log and config
      said otherwise);
    - a run it had ended stays ended, before the training loop starts, so nothing is trained or
      saved again (Lightning checkpoints no `should_stop`: a sweep run again trained its
      early-stopped jobs on to their next validation, changing their records). A run stopped
      for lack of improvement trains on when resumed with a larger patience, one stopped by a
      threshold when that threshold is unset.
    """

    # the checkpoint this run continues records a stop of this callback's (GracefulInterrupt
    # leaves that stop to it)
    resumed_stop = False

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        patience = self.patience
        super().load_state_dict(state_dict)
        self.patience = patience
        self.resumed_stop = self.stopping_reason != Reason.NOT_STOPPED

    def ended_the_run(self) -> bool:
        """Whether the checkpoint this run continues records a stop that this callback, as
        configured now, would make again."""
        reason = self.stopping_reason
        if reason == Reason.PATIENCE_EXHAUSTED:
            return self.wait_count >= self.patience
        if reason == Reason.STOPPING_THRESHOLD:
            return self.stopping_threshold is not None
        if reason == Reason.DIVERGENCE_THRESHOLD:
            return self.divergence_threshold is not None
        return reason == Reason.NON_FINITE_METRIC and self.check_finite

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # the checkpoint's state is restored by now (strategies that restore after their
        # setup: on_train_start below), and the fit loop is skipped, as at max_epochs
        self._end_if_ended(trainer)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._end_if_ended(trainer)

    def _end_if_ended(self, trainer: L.Trainer) -> None:
        if trainer.should_stop:
            return
        if not self.ended_the_run():
            # a stop no longer made as configured now: the run trains on, and its later
            # checkpoints record none (Lightning keeps the reason for good)
            self.stopping_reason, self.stopping_reason_message = Reason.NOT_STOPPED, None
            return
        trainer.should_stop = True
        setting = {
            Reason.PATIENCE_EXHAUSTED: f"raise callbacks.early_stopping.patience (now "
            f"{self.patience})",
            Reason.STOPPING_THRESHOLD: "set callbacks.early_stopping.stopping_threshold=null",
            Reason.DIVERGENCE_THRESHOLD: "set callbacks.early_stopping.divergence_threshold=null",
            Reason.NON_FINITE_METRIC: "set callbacks.early_stopping.check_finite=false",
        }[self.stopping_reason]
        if rank_zero_only.rank == 0:  # the run log (Lightning's rank_zero_info bypasses it)
            why = str(self.stopping_reason_message).removesuffix(" Signaling Trainer to stop.")
            log.info(
                f"early stopping had ended the run this one continues ({why}): it trains no "
                f"further; {setting} to train on"
            )
