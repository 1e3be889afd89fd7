"""SIGTERM / SIGINT during training: finish the current batch, save last.ckpt, exit with a hint;
submitit's time-limit / preemption signal: the same save, then submitit requeues the job.

Lightning 2.6 alone does not save on either: on SIGTERM it stops after the batch without a
checkpoint (and exits with status 0), on Ctrl-C it raises KeyboardInterrupt wherever the program
is, possibly half way through an optimizer step. Here the signals only set a flag; the stop
happens at the end of a training batch or of a validation run, the points where ModelCheckpoint
saves too (under `trainer.accumulate_grad_batches`, at an optimizer step: checkpoints hold no
gradients), so the checkpoint resumes exactly.

Under submitit (hydra/launcher=slurm_ddp, local_jobs), SLURM sends USR2 `signal_delay_s` before
the time limit (and on preemption); submitit's own handler would requeue the job at once, mid-
step, without a checkpoint. While training, that signal is caught here too: after the batch,
last.ckpt is saved and the signal is handed to submitit's handler, which requeues the job
(`max_num_timeout` times at most); the requeued job continues from last.ckpt in its directory
(sft.runs.resume).
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
from lightning.pytorch import Callback
from lightning.pytorch.strategies.launchers import _MultiProcessingLauncher
from torch import multiprocessing as mp
from torch.multiprocessing import ProcessExitedException

from sft.callbacks.early_stopping import EarlyStopping
from sft.callbacks.exact_resume import accumulating, validation_follows
from sft.callbacks.last_checkpoint import ranking_checkpoint
from sft.errors import TrainingInterrupted
from sft.runs.directories import sweep_hint, trainer_last_checkpoint
from sft.runs.resume import recover_spawned_progress
from sft.utils.checkpoint_io import load_weights_only
from sft.utils.config import RUN_START, config_dir_arguments, hydra_path, task_overrides
from sft.utils.instantiate import answers_ctrl_c
from sft.utils.overrides import as_typed
from sft.utils.signals import is_second_ctrl_c, signal_handlers, warn_in_handler

log = logging.getLogger(__name__)


def resume_command(run_dir: str, overrides: list[str]) -> str:
    """`sft-train <overrides> resume=<run_dir>`."""
    return shlex.join(["sft-train", *overrides, f"resume={hydra_path(run_dir)}"])


def how_to_continue(run_dir: str, overrides: list[str], sweep: str | None) -> str:
    """The end of an interrupted run's line: in a sweep's job, `sweep` (sweep_hint: the sweep
    run again); else resume= of this run (in a sweep it resumed that job alone, as a single
    run, and the rest of the grid was lost)."""
    return sweep or f"resume with: {resume_command(run_dir, overrides)}"


def requeue_signal() -> int | None:
    """The signal submitit requeues a job on (time limit, preemption), when running under it:
    $SUBMITIT_PREEMPT_SIGNAL, USR2 by default; None outside a submitit job."""
    if not any(k.startswith(("SUBMITIT_", "SLURM_JOB_ID")) for k in os.environ):
        return None
    name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
    return getattr(signal, f"SIG{name}", None)


class GracefulInterrupt(Callback):
    """Turn SIGTERM / SIGINT during `fit` into: save `last.ckpt`, log how to resume, exit with
    the signal's status (130, 143).

    A second Ctrl-C while waiting for the batch to end interrupts at once (no checkpoint).
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self._received: int | None = None
        self._received_at = 0.0  # time.monotonic() of _received
        self._previous: dict[int, Any] = {}
        self._handling_pid = os.getpid()  # the process the handlers were installed in
        # read here, in the process Hydra started: DDP's spawned ranks' hint lacked every override
        self._overrides = resume_arguments()
        self._sweep_hint = sweep_hint()
        # under ddp_spawn: the signal the main process got, shared with the ranks it spawned
        # (relayed_to_spawned_ranks); 0 while none
        self._relayed: Any = None
        # the stop came after early stopping (or another callback) had asked training to end:
        # checkpointed, so that the resumed run ends where this one would have
        self._should_stop = False
        # a signal came mid-way through a gradient accumulation, and the stop waits for its step
        self._waiting = False

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self._relayed is not None:  # unpickled in a rank that ddp_spawn started
            # Ctrl-C from here on stops after a batch: a rank's KeyboardInterrupt before the
            # training loop ended it with status 0 and no result, and the main process waited
            # for one forever (SIGTERM: from the sanity check, over Lightning's own handler)
            self._install_handlers(signal.SIGINT)

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if os.getpid() != self._handling_pid:
            # a DataLoader worker forked with this handler (Ctrl-C reaches the whole process
            # group): the main process stops the run; each worker said so too (was)
            return
        if is_second_ctrl_c(signum, self._received, self._received_at):
            raise KeyboardInterrupt
        if self._received is not None:
            return  # the first, delivered twice
        self._received, self._received_at = signum, time.monotonic()
        warn_in_handler(log, f"received {signal.Signals(signum).name}: stopping after this batch")

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._received, self._waiting = None, False

    def on_sanity_check_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning's own SIGTERM handler, in place from here, exits with status 0 and no
        # checkpoint; a signal during the sanity check stops the run after its first batch
        self._install_handlers()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._install_handlers()  # without a sanity check (num_sanity_val_steps=0)
        stopped_early = any(
            isinstance(c, EarlyStopping) and c.resumed_stop for c in trainer.callbacks
        )
        if self._should_stop and stopped_early:
            # early stopping's own stop: it decides, as configured now (a raised patience
            # trains on; was: ended here all the same)
            self._should_stop = False
        if self._should_stop:
            # Lightning checkpoints no `should_stop`: the resumed run trained on (another epoch
            # after a stop at an epoch's last validation) where the run it continues had ended
            self._should_stop = False
            trainer.should_stop = True
            log.info(
                "the interrupted run had been asked to end training (early stopping): "
                "the resumed run ends it where that run would have"
            )

    def state_dict(self) -> dict[str, Any]:
        return {"should_stop": True} if self._should_stop else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._should_stop = bool(state_dict.get("should_stop"))

    def _install_handlers(self, *only: int) -> None:
        self._handling_pid = os.getpid()
        requeue = requeue_signal()
        wanted = only or (*self.SIGNALS, *([requeue] if requeue else []))
        try:
            for signum in wanted:
                if signum not in self._previous:
                    self._previous[signum] = signal.signal(signum, self._handler)
        except ValueError:  # not the main thread: signals cannot be handled here
            self._restore_handlers()

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # a signal after the last batch's check (while the last checkpoints were saved, in
        # on_train_end: checkpoint callbacks come last) stops the run here (was: dropped, and a
        # sweep ran its next job and exited 0)
        try:
            self._stop_if_signalled(trainer)
        finally:
            self._restore_handlers()

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._restore_handlers()

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        # a validation due right after this batch runs first, and the stop comes at its end: a
        # checkpoint from before it resumed past it (Lightning counts it done), so early
        # stopping's and ModelCheckpoint's records missed that score and the run went another way
        if not validation_follows(trainer) and not self._accumulating(trainer):
            self._stop_if_signalled(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self._accumulating(trainer) or not self._signalled(trainer):
            return
        # the callbacks after this one (early stopping; the checkpoints, which Lightning puts
        # last) record this validation first: the stop skips their hook, and a resumed run
        # went on without its score
        for callback in trainer.callbacks[trainer.callbacks.index(self) + 1 :]:
            callback.on_validation_end(trainer, pl_module)
        self._stop(trainer)

    def _accumulating(self, trainer: L.Trainer) -> bool:
        """Whether the stop waits for the step of the gradient accumulation under way: a
        checkpoint holds no gradients, and a run resumed from mid-way through one stepped on the
        rest of its batches alone (was: not exact). Every DDP rank is at the same batch."""
        if not accumulating(trainer):
            return False
        if self._got() is not None and not self._waiting:
            self._waiting = True
            log.warning(
                "stopping after the last batch of this gradient accumulation "
                f"(trainer.accumulate_grad_batches={trainer.accumulate_grad_batches}), at its step"
            )
        return True

    def _stop_if_signalled(self, trainer: L.Trainer) -> None:
        if self._signalled(trainer):
            self._stop(trainer)

    def _saved_line(self, trainer: L.Trainer, name: str, path: Path) -> str:
        """`interrupted by <name> at epoch E step S: saved <path>; <how to continue>`."""
        how = how_to_continue(trainer.default_root_dir, self._overrides, self._sweep_hint)
        return (
            f"interrupted by {name} at epoch {trainer.current_epoch} step {trainer.global_step}: "
            f"saved {path}; {how}"
        )

    def _got(self) -> int | None:
        """The signal this rank got, itself or relayed by ddp_spawn's main process."""
        relayed = self._relayed.value if self._relayed is not None else 0
        return self._received or relayed or None

    def _signalled(self, trainer: L.Trainer) -> bool:
        """Whether a signal came, to this rank or another (every DDP rank must stop, and save,
        together, whichever of them got it)."""
        return trainer.strategy.reduce_boolean_decision(self._got() is not None, all=False)

    def _stop(self, trainer: L.Trainer) -> None:
        """Save last.ckpt, say so (rank 0), and end the run with the signal's status."""
        received = self._got()
        path = trainer_last_checkpoint(trainer)
        self._should_stop = trainer.should_stop
        trainer.save_checkpoint(path, weights_only=False)
        requeue = requeue_signal()
        # whichever rank got submitit's signal first, every rank hands it on: global rank 0's
        # submitit handler requeues the job and exits; on the other ranks it returns, and they
        # stop below
        if requeue is not None and trainer.strategy.reduce_boolean_decision(
            received == requeue, all=False
        ):
            handler = self._previous.get(requeue)
            self._restore_handlers()
            log.warning(f"saved {path}: handing {signal.Signals(requeue).name} to submitit")
            if callable(handler):
                handler(requeue, None)
        # a DDP rank that got no signal itself stops for another's (a cluster's SIGTERM, most
        # likely): said as "a signal", with SIGTERM's status
        name = signal.Signals(received).name if received else "a signal"
        status = received or signal.SIGTERM
        message = self._saved_line(trainer, name, path)
        # said once, by rank 0 (was: by every rank); a spawned rank's by the main process
        if not trainer.is_global_zero or self._relayed is not None:
            raise TrainingInterrupted(None, status)
        log.warning(message)
        raise TrainingInterrupted(message, status)


@contextmanager
def relayed_to_spawned_ranks(trainer: L.Trainer) -> Iterator[None]:
    """Around `trainer.fit` in the process Hydra started. Under ddp_spawn (trainer=ddp_sim) the
    ranks train in processes it spawned, and it only waits for them: SIGTERM sent to it alone
    (`kill`, `timeout`, `docker stop`) ended it at once, its ranks lost every checkpoint and
    no record was written; Ctrl-C sent to it alone was passed over by the ranks, which trained
    to the end while it said "nothing to save". Here a signal it gets is shared with its
    ranks' GracefulInterrupt, which stop after the batch and save as in one process (a group's
    Ctrl-C reaches them too: shared, not sent again, or it would be their second); a second
    Ctrl-C stops at once. The ranks' exit with a signal's status becomes this process's
    TrainingInterrupted, its line said from the last.ckpt they wrote."""
    callbacks = [c for c in trainer.callbacks if isinstance(c, GracefulInterrupt)]
    launcher = trainer.strategy.launcher
    if not callbacks or not isinstance(launcher, _MultiProcessingLauncher):
        yield
        return
    relayed = mp.get_context(launcher._start_method).Value("i", 0)
    received_at = 0.0

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal received_at
        if is_second_ctrl_c(signum, relayed.value or None, received_at):
            raise KeyboardInterrupt
        if relayed.value:
            return  # the first, delivered twice
        relayed.value, received_at = signum, time.monotonic()
        for callback in callbacks:  # a second Ctrl-C's line says it was one
            callback._received = signum
        warn_in_handler(
            log, f"received {signal.Signals(signum).name}: the ranks stop after this batch"
        )

    for callback in callbacks:
        callback._relayed = relayed
    try:
        with signal_handlers(dict.fromkeys(GracefulInterrupt.SIGNALS, handler)):
            yield
            if relayed.value:
                # it came after the ranks' last check (their on_fit_end), and they finished:
                # the run stops here, as one process does in its on_fit_end (was: passed over,
                # and the test ran, or a sweep's next job)
                raise _stopped_ranks(trainer, relayed.value, callbacks[0], trained=True)
    except ProcessExitedException as exc:
        statuses = {128 + s: s for s in GracefulInterrupt.SIGNALS}
        signum = statuses.get(exc.exit_code) or relayed.value
        if not signum:
            raise
        raise _stopped_ranks(trainer, signum, callbacks[0]) from None
    finally:
        for callback in callbacks:
            callback._relayed = None


def _stopped_ranks(
    trainer: L.Trainer, signum: int, callback: GracefulInterrupt, trained: bool = False
) -> TrainingInterrupted:
    """The line of ddp_spawn ranks stopped by `signum`: what they saved, read back. `trained`:
    they had finished training when it came."""
    recover_spawned_progress(trainer)  # the epoch and step of the last.ckpt the ranks wrote
    name, path = signal.Signals(signum).name, trainer_last_checkpoint(trainer)
    then = f"; {callback._sweep_hint}" if callback._sweep_hint else ""
    if trained and not path.is_file():  # a run without last checkpoints (callbacks=...)
        message = f"interrupted by {name} after training ended, before the test{then}"
    elif trainer.global_step == 0 or not path.is_file():
        message = f"interrupted by {name} before the first training step: nothing to save{then}"
    else:
        message = callback._saved_line(trainer, name, path)
    log.warning(message)
    return TrainingInterrupted(message, signum)


def resume_arguments() -> list[str]:
    """The run's arguments for its resume command: the user's --config-dir, and the overrides
    but ckpt_path= (it started the run, and resume= refuses it). Read in the process Hydra
    started (DDP's spawned ranks have no Hydra config)."""
    # as typed: without the `++` sft puts before Trainer arguments (was: `++trainer.x=` in the
    # hint for `trainer.x=` typed)
    overrides = [o for o in as_typed(task_overrides()) if not o.startswith(RUN_START)]
    return [*config_dir_arguments(), *overrides]


@contextmanager
def interrupt_explained(trainer: L.Trainer, overrides: list[str]) -> Iterator[None]:
    """Around `trainer.fit` and `trainer.test`: Ctrl-C outside GracefulInterrupt's window (data
    setup, the linear probe, a second Ctrl-C, the test) makes Lightning exit with status 1 and
    no word of what was kept; say it in one line instead, with Ctrl-C's status (130). SIGTERM
    there (a cluster's preemption) stops the run the same way, with its own status (143; was:
    the process killed, without a word or a record of the run)."""
    sweep = sweep_hint()
    terminated: list[int] = []  # the SIGTERM received, if one was

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        if terminated:
            return  # the same one delivered twice (`timeout`: to the process, then its group)
        terminated.append(signum)
        raise KeyboardInterrupt  # Lightning's way out of fit and test, as for Ctrl-C

    # under SLURM, submitit passes SIGTERM over on purpose (SLURM sends it to a job it requeues)
    handlers = {} if os.environ.get("SLURM_JOB_ID") else {signal.SIGTERM: on_sigterm}
    try:
        with signal_handlers(handlers):
            yield
    except SystemExit as exc:
        # Lightning answers KeyboardInterrupt in fit/test with sys.exit(1), raised while it
        # handles it; other exits pass (TrainingInterrupted, which said its own line; submitit's
        # exit after it requeued a job)
        if not answers_ctrl_c(exc):
            raise
        signum = signal.SIGTERM if terminated else signal.SIGINT
        name = signal.Signals(signum).name
        message = f"interrupted by {name} {_what_was_kept(trainer, overrides, sweep)}"
        if not trainer.is_global_zero:
            raise TrainingInterrupted(None, signum) from None
        log.warning(message)
        raise TrainingInterrupted(message, signum) from None


def _what_was_kept(trainer: L.Trainer, overrides: list[str], sweep: str | None) -> str:
    # a sweep's job: how to continue the sweep, whatever was kept (the sweep stops here)
    then = f"; {how_to_continue(trainer.default_root_dir, overrides, sweep)}" if sweep else ""
    if trainer.testing:
        best = getattr(ranking_checkpoint(trainer), "best_model_path", "")
        if not best:
            return f"during the test (training had finished; the run saved no checkpoint){then}"
        evaluate = shlex.join(["sft-eval", f"ckpt_path={hydra_path(best)}"])
        return f"during the test (training had finished): test with {evaluate}{then}"
    if isinstance(trainer.strategy.launcher, _MultiProcessingLauncher):
        recover_spawned_progress(trainer)  # ddp_spawn: the ranks' progress, not this process's
    last = trainer_last_checkpoint(trainer)
    if trainer.global_step == 0:
        if last.is_file():  # a resumed run's (or requeued job's), before it was restored
            how = how_to_continue(trainer.default_root_dir, overrides, sweep)
            return f"before training continued: {last} is kept as it was; {how}"
        return f"before the first training step: nothing to save{then}"
    second = any(
        isinstance(c, GracefulInterrupt) and c._received is not None for c in trainer.callbacks
    )
    why = (
        "at once (a second Ctrl-C)"
        if second
        else "at once (callbacks.graceful_interrupt, which saves first, is not in this run)"
    )
    where = f"at epoch {trainer.current_epoch} step {trainer.global_step}, {why}"
    if not last.is_file():
        return f"{where}: nothing saved{then}"
    how = how_to_continue(trainer.default_root_dir, overrides, sweep)
    return f"{where}: {kept_step(last, trainer.global_step)}; {how}"


def kept_step(last: Path, step: int) -> str:
    """What `last` (a run stopped at once at `step`) holds: this step where the first signal's
    save ended before the second came (was: "an earlier step" always)."""
    try:
        saved = load_weights_only(last, mmap=True)["global_step"]
    except Exception:  # not readable as a checkpoint here: what it holds is not said
        return f"not saved; {last} holds an earlier step"
    if saved == step:
        return f"{last} holds this step"
    return f"not saved; {last} holds step {saved}, an earlier one"
