"""A validation after the optimizer step that reaches `trainer.max_steps`, wherever it falls."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch import Callback


class ValidateAtLastStep(Callback):
    """Validates on the final weights of a run that `trainer.max_steps` ends.

    Lightning counts `val_check_interval` in batches. Under `accumulate_grad_batches` an epoch's
    last batch steps early (with fewer batches), so the last step comes before
    `max_steps x accumulate_grad_batches` batches, and a study (conf/experiment/_fixed_steps)
    ended with no validation. A stop asked for at that step's batch end is one of Lightning's
    own reasons to validate there (`_should_check_val_fx`), once, before the run ends. Lightning
    honours no stop before `trainer.min_epochs` are done: the studies set it to 0.
    """

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if 0 <= trainer.max_steps <= trainer.global_step:
            trainer.should_stop = True
