"""Optuna pruning for a trial that runs as its own job: report the monitored metric after every
validation and stop training when the study's pruner says so.

The sft_optuna sweeper (hydra_plugins/sft_optuna_sweeper) adds this callback to each trial's
job; the job may run in another process, so everything comes through the study's storage.
optuna-integration's PyTorchLightningPruningCallback needs the live `Trial` object and raises
TrialPruned out of `fit`, which would make the job a failure; here a pruned trial stops like an
early-stopped run (its metrics and checkpoints are kept) and is marked for the sweeper, which
tells Optuna it was PRUNED.
"""

import logging
import math
import warnings
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)

# study user attribute: the pruner's config (`_target_` + arguments), set by the sweeper
PRUNER_CONFIG = "sft_pruner"
# trial user attribute: the validation step at which the trial was pruned
PRUNED_AT_STEP = "pruned_at_step"
# `journal:///<path>`: Optuna's JournalStorage on a file (safe for trials in parallel processes)
JOURNAL_SCHEME = "journal://"


def open_storage(spec: str) -> Any:
    """The Optuna storage `spec` names: `journal:///<file>` (JournalStorage with a file backend:
    file locks make it safe for trials running at once on one machine or a shared file
    system), or any URL Optuna takes (an RDB such as `sqlite:///...` or `postgresql://...`).
    The sweeper and every trial's job open it alike."""
    import optuna  # late: only trials of a sweep pay for the import

    if spec.startswith(JOURNAL_SCHEME):
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(spec[len(JOURNAL_SCHEME) :]))
    return optuna.storages.get_storage(spec)


class OptunaPruning(Callback):
    """Report `monitor` to trial `trial_number` of study `study_name` in `storage` after each
    validation (step = validations so far: the epoch when validating once per epoch) and stop
    training when the trial should be pruned. Rank 0 talks to the storage; all ranks stop."""

    # the run's setting `monitor` comes from (sft.callbacks.monitored_metrics names it)
    monitor_setting = "optimized_metric"

    def __init__(self, storage: str, study_name: str, trial_number: int, monitor: str) -> None:
        self.storage = storage
        self.study_name = study_name
        self.trial_number = trial_number
        self.monitor = monitor
        self.trial: Any = None  # optuna.trial.Trial, on rank 0
        self.validations = 0
        # the validation after which the trial was pruned (every rank): the run's record says so
        self.pruned_at: int | None = None

    def _ids(self, storage: Any) -> tuple[int, int]:
        """The storage's ids of this callback's study and trial."""
        study_id = storage.get_study_id_from_name(self.study_name)
        return study_id, storage.get_trial_id_from_study_id_trial_number(
            study_id, self.trial_number
        )

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or not trainer.is_global_zero or self.trial is not None:
            return
        import optuna  # late: only trials of a sweep pay for the import

        storage = open_storage(self.storage)
        study_id, trial_id = self._ids(storage)
        pruner_config = storage.get_study_user_attrs(study_id).get(PRUNER_CONFIG)
        pruner = instantiate(pruner_config) if pruner_config else optuna.pruners.NopPruner()
        study = optuna.load_study(study_name=self.study_name, storage=storage, pruner=pruner)
        self.trial = optuna.trial.Trial(study, trial_id)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        step = self.validations
        self.validations += 1
        prune = False
        if trainer.is_global_zero:
            prune = self._report(trainer, step)
        prune = trainer.strategy.broadcast(prune, src=0)
        if prune:
            trainer.should_stop = True
            # a pruned trial stops at once: Lightning's min_epochs/min_steps (conf/trainer has
            # min_epochs: 1) would keep training it to the end of its first epoch, where a
            # search validating several times per epoch has nothing left to save
            trainer.fit_loop.min_epochs = 0
            trainer.fit_loop.epoch_loop.min_steps = None
            self.pruned_at = step

    def pruned(self) -> bool:
        """Whether the pruner stopped this trial. Under ddp_spawn the ranks trained in child
        processes and this process's callback never saw the trial: rank 0's mark in the
        storage says so."""
        if self.pruned_at is not None or self.trial is not None:
            return self.pruned_at is not None
        try:
            storage = open_storage(self.storage)
            _, trial_id = self._ids(storage)
            return PRUNED_AT_STEP in storage.get_trial_user_attrs(trial_id)
        except Exception as e:  # asked while recording the run: its own error goes first
            log.warning(f"Optuna pruning: the trial's state could not be read ({e}): not pruned")
            return False

    def _report(self, trainer: L.Trainer, step: int) -> bool:
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            log.warning(
                f"Optuna pruning: metric {self.monitor!r} not logged "
                f"(have {sorted(trainer.callback_metrics)}); nothing reported"
            )
            return False
        value = float(value)
        self.trial.report(value, step)
        with warnings.catch_warnings():
            # the percentile pruners' np.nanmin over earlier trials that all diverged at this
            # step: numpy's warning, printed raw, where the pruner's answer is right (prune)
            warnings.filterwarnings("ignore", "All-NaN slice", RuntimeWarning)
            if not self.trial.should_prune():
                return False
        self.trial.set_user_attr(PRUNED_AT_STEP, step)
        shown = value if math.isfinite(value) else str(value)
        log.info(
            f"Optuna trial {self.trial_number} pruned at validation {step} "
            f"({self.monitor}={shown}): stopping training"
        )
        return True
