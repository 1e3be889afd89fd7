"""Resuming: which checkpoint a run continues from, read once and handed to whoever needs it.

`resume=` picks the run directory (sft/runs/directories.py); here its `last.ckpt` (or the
`ckpt_path=` a new run starts from) is read once, checked against the model before training,
and handed to Lightning through the checkpoint plugin, torchtune's `setup()` way. TensorBoard
continues at the checkpoint's step. What a checkpoint restores beyond Lightning's own state
(RNGs, the train loader's position) is `sft.callbacks.exact_resume`.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher
from lightning.pytorch.trainer.states import TrainerFn
from omegaconf import DictConfig, open_dict

from sft.contracts import LOGGED_METRICS, REGULARIZER_STATE, VAL_ACC_BEST
from sft.errors import RunInTheWay, SFTError
from sft.hub import local_or_hub_name
from sft.runs.directories import (
    LAST_CHECKPOINT,
    check_nothing_to_overwrite,
    last_checkpoint,
    refuse_resume_in_multirun,
    resumed_run_dir,
    trainer_last_checkpoint,
)
from sft.runs.result import (
    COMPLETED,
    RESULT_FILE,
    RunResult,
    differing_continued_overrides,
    recorded_overrides,
    run_overrides,
    same_overrides,
)
from sft.utils.checkpoint_io import (
    SAVE_AT_DEFAULT_PROTOCOL,
    check_no_interpolations,
    hand_over,
    load_failure,
    load_weights_only,
    read_checkpoint,
    saved_at_protocol_4_or_5,
)
from sft.utils.config import CONFIG_FILE, task_overrides
from sft.utils.ddp_ranks import is_job_rank
from sft.utils.io import atomic_write, checkpoint_path, unused_name

log = logging.getLogger(__name__)


@dataclass
class ResumePoint:
    """The checkpoint a fit starts from, and its contents (read once, until handed over)."""

    path: Path
    checkpoint: dict[str, Any]
    # True when the run continues in the directory that wrote the checkpoint (resume=, or a
    # requeued multirun job), so its TensorBoard curves continue too; False for ckpt_path=
    continues_run: bool = True

    @property
    def step(self) -> int:
        return int(self.checkpoint.get("global_step", 0))

    def hand_to(self, trainer: Trainer) -> str:
        """Give the contents to `trainer`'s checkpoint plugin, which `trainer.fit(ckpt_path=...)`
        then loads instead of the file, and drop them here (a model's and optimizer's state
        is not held twice while training); returns the path for `ckpt_path`."""
        hand_over(trainer.strategy, self.path, self.checkpoint)
        self.checkpoint = {}
        return str(self.path)


def resume_point(cfg: DictConfig) -> ResumePoint | None:
    """The checkpoint `trainer.fit` starts from (`ckpt_path`, or the run's last.ckpt with
    `resume`), read, logging what is resumed; SFTError for a `resume=` that cannot be honoured
    or a file that cannot be read."""
    resume = cfg.get("resume")
    if resume is None:
        output_dir = Path(cfg.paths.output_dir)
        own_record = check_job_record(output_dir)
        # a requeued job continues from its own last.ckpt, also when it started from ckpt_path
        requeued = requeued_job_point(output_dir)
        if requeued is not None:
            return requeued
        if not is_job_rank():  # a rank of a multirun job: in the directory its job checked
            check_nothing_to_overwrite(output_dir, retry=own_record)
        if own_record:
            set_aside_earlier_logs(cfg.get("logger"), output_dir)
        if cfg.get("ckpt_path") is not None:  # an empty ckpt_path= too: not a fresh run
            path = checkpoint_path(cfg.ckpt_path)
            checkpoint = read_checkpoint(path)
            next_epoch_from_its_first_batch(checkpoint)
            # check_training_left: by sft-train, once the model is checked against it
            return ResumePoint(path, as_new_run(checkpoint), continues_run=False)
        return None
    if cfg.get("ckpt_path") is not None:
        checkpoint_path(cfg.ckpt_path)  # an empty ckpt_path= (an unset $CKPT) is said as such
        raise SFTError(
            "set resume= (continue a run in its directory) or ckpt_path= (start a new run from a "
            "checkpoint), not both"
        )
    if _in_multirun():  # a launcher that skipped RunDirectory's check
        refuse_resume_in_multirun(resume)
    output_dir = Path(cfg.paths.output_dir)
    last = last_checkpoint(output_dir)
    # resumed_run_dir: an error for a folder without last.ckpt
    if resume != "auto" and resumed_run_dir(resume).resolve() != output_dir.resolve():
        raise SFTError(
            f"resume={resume} but this run writes to {output_dir} (hydra.run.dir or "
            "paths.output_dir overridden?): drop that override to resume"
        )
    if not last.is_file():
        log.info(
            f"resume=auto: no run to continue has {LAST_CHECKPOINT}: starting fresh in {output_dir}"
        )
        return None
    warn_other_overrides(output_dir)
    return _continue_from(last, f"resuming {output_dir} from ")


def warn_other_overrides(output_dir: Path) -> None:
    """A resumed run continues with this command's settings: a warning names the overrides
    that differ from those its result.json records (was: `resume=auto` with other overrides
    continued the latest run without a word)."""
    recorded = recorded_overrides(output_dir / RESULT_FILE)
    if recorded is None:
        return
    # by setting, not as written (was: `then none` for a value given again, and a sweep's job
    # `then model.lr_head=0.01` for `now model.lr_head=1e-2`)
    now, then = differing_continued_overrides(run_overrides(task_overrides()), recorded)
    if not now and not then:
        return
    log.warning(
        f"resuming {output_dir} with other overrides than it ran with ({output_dir / RESULT_FILE}): "
        f"now {' '.join(now) or 'none'}; then {' '.join(then) or 'none'}; the rest of the run has "
        "this command's settings"
    )


# callbacks whose state names checkpoint files of the run (ModelCheckpoint and its subclasses)
CHECKPOINT_CALLBACKS = ("ModelCheckpoint", "LastCheckpoint")
# callbacks whose state describes the run that wrote a checkpoint: its best checkpoint (a file
# in that run's directory) and its early-stopping record
# GracefulInterrupt: a stop decision the interrupted run checkpointed (early stopping's), which
# a new run's own early stopping makes afresh (kept, it trained nothing)
RUN_RECORD_CALLBACKS = (*CHECKPOINT_CALLBACKS, "EarlyStopping", "GracefulInterrupt")
# model settings a resumed run may change, each group with what a change means: (key, its
# value in a checkpoint saved before the key existed) pairs
CHANGEABLE_SETTINGS = (
    # a checkpoint from before model.fast_dropout trained with torch's dropout
    ((("fast_dropout", False),), "its dropout masks continue from another random stream"),
    # e.g. a run started before the text configs' L2-SP default became the decoupled pull
    (
        (("regularizer", None), ("reg_lambda", None), ("reg_decoupled", False), ("reg_every", 1)),
        "the rest of the run is regularised by this run's; set them as the checkpoint has them "
        "to continue as it was",
    ),
)


def check_training_left(
    path: Path, checkpoint: dict[str, Any], trainer: Any, continued: bool = False
) -> None:
    """A new run from `checkpoint` (`ckpt_path=`) continues its loop: one whose epochs or steps
    already reach trainer.max_epochs / max_steps would train nothing (was: reported as a
    completed run). A run continued in its directory (`continued`, `resume=`) may end where it
    stands (its own budget: a finished run kept), not before (was: nothing trained, exit status
    0, and its result.json rewritten with the lower budget beside its higher steps)."""
    epochs = trained_epochs(checkpoint)
    steps = checkpoint.get("global_step")
    max_epochs, max_steps = trainer.get("max_epochs"), trainer.get("max_steps")

    def ends_by(limit: Any, done: Any) -> bool:
        if not (isinstance(limit, int) and isinstance(done, int) and limit >= 0):
            return False
        return limit < done if continued else limit <= done

    reached = None
    if ends_by(max_epochs, epochs):
        reached = f"trainer.max_epochs={max_epochs}"
    elif ends_by(max_steps, steps):
        reached = f"trainer.max_steps={max_steps}"
    if not reached:
        return
    trained = f"{epochs} epoch{'s' * (epochs != 1)}" if isinstance(epochs, int) else "its"
    trained += f" ({steps} step{'s' * (steps != 1)})"
    if continued:
        raise SFTError(
            f"{path} has trained {trained}, past {reached}: a run is continued to a budget of "
            "at least what it has trained (its own budget leaves it as it is)"
        )
    raise SFTError(
        f"ckpt_path={path} has trained {trained}, which reaches {reached}: the run from it "
        f"would train nothing; raise {reached.split('=')[0]} (it counts the checkpoint's epochs "
        "and steps too)"
    )


def trained_epochs(checkpoint: dict[str, Any]) -> int | None:
    """The epochs `checkpoint`'s fit has trained (processed, as a run from it counts them);
    None for a checkpoint without Lightning's loop state."""
    fit_loop = (checkpoint.get("loops") or {}).get("fit_loop") or {}
    epoch = (fit_loop.get("epoch_progress") or {}).get("current") or {}
    epochs = epoch.get("processed")
    # an epoch whose last batch was done before it counted as processed (a save at a validation
    # inside the epoch loop, e.g. val_check_interval=0.25's last) is done too, as Lightning's
    # FitLoop.reset counts it on restart
    last_batch = (fit_loop.get("epoch_loop.batch_progress") or {}).get("is_last_batch")
    if isinstance(epochs, int) and epoch.get("started", 0) > epochs and last_batch:
        epochs += 1
    return epochs if isinstance(epochs, int) else None


def as_new_run(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's contents for a new run (`ckpt_path=`): the weights, optimizer and loop
    state continue, the record of the best checkpoint and score starts afresh. Kept, a new run
    that never beat the old best tested (and reported) the old run's best file."""
    callbacks = checkpoint.get("callbacks", {})
    checkpoint["callbacks"] = {
        key: state for key, state in callbacks.items() if not key.startswith(RUN_RECORD_CALLBACKS)
    }
    checkpoint.pop(VAL_ACC_BEST, None)
    return checkpoint


def _in_multirun() -> bool:
    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:  # not a Hydra job
        return False


def check_job_record(output_dir: Path) -> bool:
    """Whether the directory's result.json records this multirun job (a retry of it); False
    outside a multirun or without a record. Checked with or without last.ckpt: a record of
    another job (a sweep directory reused for another grid, jobs given one directory) is never
    replaced, RunInTheWay instead (a study's job without checkpoints has only its record)."""
    if not _in_multirun():
        return False
    previous = output_dir / RESULT_FILE
    recorded = recorded_overrides(previous)
    if recorded is None:
        return False
    if not same_overrides(recorded, run_overrides(task_overrides())):
        raise RunInTheWay(
            f"{output_dir} holds a run of another job ({previous}: overrides "
            f"{' '.join(recorded)}); give this sweep a new hydra.sweep.dir (and each job its own "
            "directory: hydra.sweep.subdir)"
        )
    return True


def finished_job(output_dir: Path) -> RunResult | None:
    """A sweep's job run again whose directory records it as completed but holds no last.ckpt
    (a study's: they save no checkpoints), or only one from before it completed (a study job
    stopped by a signal, which saved one, then continued to its end without saving again): its
    record, which stands instead of a run from the start, or from that checkpoint (a re-run
    study trained its finished jobs again, hours for a large one; a job whose last.ckpt is its
    end trains no further either). None for every other job."""
    if not check_job_record(output_dir):
        return None
    try:
        record = RunResult.read(output_dir / RESULT_FILE)
    except SFTError:  # not readable as a whole: the job runs again, replacing it
        return None
    if record.status != COMPLETED:
        return None
    last = last_checkpoint(output_dir)
    earlier = ""
    if last.is_file():
        try:
            step = load_weights_only(last, mmap=True).get("global_step")
        except Exception:  # not readable here: the job's resume says why
            return None
        if not (isinstance(step, int) and isinstance(record.steps, int) and step < record.steps):
            return None
        # (was: continued from it at every run of the sweep, its steps trained again)
        earlier = f"; its {LAST_CHECKPOINT} (step {step}) is from before the run completed"
    log.info(
        f"{output_dir} holds this job's completed run ({RESULT_FILE}, {record.steps} steps): "
        f"kept, not trained again{earlier} (move its {RESULT_FILE} away to train it again)"
    )
    return record


def requeued_job_point(output_dir: Path) -> ResumePoint | None:
    """A multirun job whose directory already holds last.ckpt was stopped there before: requeued
    by submitit after a time limit or preemption (sft.callbacks.graceful_interrupt), or its
    sweep re-run into the same directory. It continues from that checkpoint (check_job_record
    refused a directory of another job's)."""
    last = last_checkpoint(output_dir)
    if not _in_multirun() or not last.is_file():
        return None
    return _continue_from(
        last, f"{output_dir} holds {LAST_CHECKPOINT} (a requeued or re-run job): continuing from "
    )


def _continue_from(last: Path, saying: str) -> ResumePoint:
    """`last` (or the newest readable checkpoint beside it), read, logged after `saying`."""
    chosen, state = readable_checkpoint(last)
    log.info(f"{saying}{chosen} (epoch {state.get('epoch')}, step {state.get('global_step')})")
    check_no_interpolations(state, chosen)
    follow_moved_run(state, chosen)
    drop_records_of_files_elsewhere(state, chosen)
    next_epoch_from_its_first_batch(state)
    return ResumePoint(chosen, state)


def next_epoch_from_its_first_batch(checkpoint: dict[str, Any]) -> None:
    """A checkpoint written at an epoch's end (its last batch done, the epoch not yet counted
    completed: ModelCheckpoint's save after the epoch's validation, or max_steps reached at an
    epoch's last batch) resumes as after a completed epoch: the next one from its first batch.
    Lightning 2.6 does so for a run bounded by epochs; with max_steps set it ended the saved
    epoch a second time, counting it twice with no batch (a resumed run lost an epoch, or
    trained nothing and was recorded as completed). Written here as that path reads it: the
    epoch completed, no batch of the next one, the train loader's position not restored."""
    fit = (checkpoint.get("loops") or {}).get("fit_loop") or {}
    progress = fit.get("epoch_progress") or {}
    epochs = progress.get("current") or {}
    batches = fit.get("epoch_loop.batch_progress")
    processed = epochs.get("processed")
    ended = (
        isinstance(processed, int)
        and epochs.get("started") == processed
        and epochs.get("completed") == processed - 1
    )
    if not (ended and batches and batches.get("is_last_batch")):
        return
    for counts in (epochs, progress.get("total") or {}):
        counts["completed"] = counts.get("processed", counts.get("completed"))
    # `ready` stays: it says the epoch ended (exact_resume.epoch_finished); Lightning's restart
    # sets it to `completed`
    batches["current"].update(started=0, processed=0, completed=0)
    batches["is_last_batch"] = False
    (fit.get("state_dict") or {}).pop("combined_loader", None)


FILE_KEYS = ("best_model_path", "kth_best_model_path", "last_model_path")


def _files_named(state: dict[str, Any]) -> list[str]:
    """The checkpoint files a checkpoint callback's record names."""
    named = [state.get(k) for k in FILE_KEYS] + list(state.get("best_k_models") or {})
    return [p for p in named if isinstance(p, str) and p]


def drop_records_of_files_elsewhere(checkpoint: dict[str, Any], path: Path) -> None:
    """Drop, with a warning, a checkpoint callback's record that names a file outside its own
    folder (`dirpath`; `..` and links resolved). Lightning deletes the files such a record names
    as better ones are saved (`best_k_models`, the previous last), so an edited or crafted
    record would have a continued run delete a file anywhere (`<dirpath>/../../x`, a link out of
    the folder; was: deleted without a word). The best checkpoint is then chosen afresh."""
    callbacks = checkpoint.get("callbacks") or {}
    for key, state in list(callbacks.items()):
        if not isinstance(state, dict):
            continue
        folder = state.get("dirpath")
        outside = [f for f in _files_named(state) if not _inside(f, folder)]
        if outside:
            log.warning(
                f"checkpoint {path}: the record of {key.partition('{')[0]} names {outside[0]}, "
                f"which is not in its folder ({folder}): the record is not used, and the best "
                "checkpoint is chosen afresh from the validations to come"
            )
            del callbacks[key]


def _inside(file: str, folder: Any) -> bool:
    """Whether `file` is in `folder` (or a folder under it), as written and with links
    resolved."""
    if not isinstance(folder, str) or not folder:
        return False
    written = Path(os.path.normpath(file)).is_relative_to(os.path.normpath(folder))
    real = Path(os.path.realpath(os.path.dirname(file))).is_relative_to(os.path.realpath(folder))
    return written and real


def follow_moved_run(checkpoint: dict[str, Any], path: Path) -> None:
    """Point the checkpoint callbacks' record at the run directory `checkpoint` (read from
    `path`) is in now, when that directory was moved or copied since it was written.

    The record names files by absolute path. Lightning, finding another `dirpath`, keeps only
    `best_model_path` (the old run's file, or a missing one) and forgets the best score, so a
    worse later validation became the "best" that was tested. Where `path` was written is in the
    record of the callback that wrote it; every path under that run directory is read as the
    same path under the new one. A record whose files are not all there starts afresh, with a
    warning; folders outside the run directory (a dirpath set elsewhere) are left as they are."""
    callbacks = checkpoint.get("callbacks", {})
    records = {
        key: state
        for key, state in callbacks.items()
        if key.startswith(CHECKPOINT_CALLBACKS) and isinstance(state, dict)
    }
    written = next(
        (f for state in records.values() for f in _files_named(state) if Path(f).name == path.name),
        None,
    )
    if written is None:
        return
    # the run directories: the checkpoint's folder's parent, then and now
    before = os.path.dirname(os.path.dirname(written))
    here = os.path.dirname(os.path.realpath(path.parent))
    if before == here:
        return
    for key, state in records.items():
        if not state.get("dirpath") or not Path(state["dirpath"]).is_relative_to(before):
            continue
        best_k = {_moved(f, before, here): v for f, v in (state.get("best_k_models") or {}).items()}
        named = [*best_k, _moved(state.get("best_model_path") or "", before, here)]
        missing = [f for f in named if f and not os.path.isfile(f)]
        if missing:
            log.warning(
                f"this run was written in {before}; {missing[0]} is not there now: the best "
                "checkpoint is chosen afresh from the validations to come"
            )
            del callbacks[key]
            continue
        callbacks[key] = {
            **state,
            **{
                k: _moved(state[k], before, here)
                for k in FILE_KEYS
                if isinstance(state.get(k), str)
            },
            "best_k_models": best_k,
            "dirpath": _moved(state["dirpath"], before, here),
        }


def _read_training_state(path: Path) -> tuple[dict | None, str]:
    """The checkpoint's contents, or None and why it cannot be resumed from."""
    try:
        state = load_weights_only(path)
    except PermissionError:  # a whole file this user may not read: said as such, not set aside
        raise
    except Exception as exc:  # truncated, empty, not a zip archive, foreign pickle: unreadable
        reason = load_failure(exc)
        if saved_at_protocol_4_or_5(reason):
            reason += f"; {SAVE_AT_DEFAULT_PROTOCOL}"
        return None, reason
    if not (isinstance(state, dict) and "global_step" in state):
        return None, "not a training checkpoint: no global_step"
    return state, ""


def _moved(path: str, before: str, here: str) -> str:
    """`path`, a file under folder `before`, as the same file under `here`; others as they are."""
    if path and Path(path).is_relative_to(before):
        return os.path.join(here, os.path.relpath(path, before))
    return path


def readable_checkpoint(last: Path) -> tuple[Path, dict]:
    """`last` and its contents, or, when `last` cannot be read (a truncated copy, a full disk),
    the newest readable checkpoint beside it, saying so; `last` is kept, renamed
    `last.ckpt.unreadable` (`.unreadable.1`, ... beside an earlier one), so that training does
    not write over it, and that checkpoint is
    copied to `last`: a run that trains no further (finished) still has one to continue from
    next time. SFTError when none is."""
    state, why = _read_training_state(last)
    if state is not None:
        return last, state
    others = sorted(
        (p for p in last.parent.glob("*.ckpt") if p != last),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for candidate in others:
        state, _ = _read_training_state(candidate)
        if state is not None:
            kept = unused_name(last.with_name(last.name + ".unreadable"))
            last.rename(kept)  # (an earlier resume's is kept too: was renamed over)
            with candidate.open("rb") as source:  # whole, or not there
                atomic_write(last, lambda f: shutil.copyfileobj(source, f))
            log.warning(
                f"{last} cannot be read ({why}; kept as {kept.name}): resuming from "
                f"{candidate.name}, "
                f"the newest readable checkpoint of this run (copied to {last.name})"
            )
            return candidate, state
    raise SFTError(
        f"resume: {last} cannot be read ({why}) and the run has no other readable "
        f"checkpoint in {last.parent}; start a new run or restore the file"
    )


# where a job run again from the start in its directory puts its earlier part's logs
REPLACED_LOGS = ".replaced_logs"


def set_aside_earlier_logs(logger_cfg: DictConfig | None, output_dir: Path) -> None:
    """A sweep job run again from the start in its directory (it saved no last.ckpt: a study's)
    replaces its record; its earlier run's TensorBoard and CSV logs stayed beside the new ones,
    and sft-compare showed that run's best as this one's. They move to
    `<job dir>/.replaced_logs/<time>/` (sft-compare skips hidden folders), with the earlier
    run's config_resolved.yaml, so that the one in the job dir is this run's (was: this run's
    went to `.hydra/resumed_<time>/`, as a resumed run's)."""
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    earlier_config = output_dir / CONFIG_FILE
    if earlier_config.is_file():
        kept = output_dir / REPLACED_LOGS / stamp / CONFIG_FILE
        kept.parent.mkdir(parents=True, exist_ok=True)
        earlier_config.rename(kept)
    for entry in (logger_cfg or {}).values():
        folder = logger_folder(entry) if entry else None
        if folder is None or not folder.is_dir() or not any(folder.iterdir()):
            continue
        if not folder.resolve().is_relative_to(output_dir.resolve()):
            continue  # a folder the run shares with others: not this job's to move
        if folder.resolve() == output_dir.resolve():
            log.warning(
                f"{output_dir} runs again from the start; its earlier logs stay beside the new "
                f"ones: the logger {entry.get('_target_')} writes into the run folder itself"
            )
            continue
        moved = output_dir / REPLACED_LOGS / stamp / folder.name
        moved.parent.mkdir(parents=True, exist_ok=True)
        folder.rename(moved)
        log.info(f"{output_dir} runs again from the start: its earlier logs moved to {moved}")


def logger_folder(entry: DictConfig) -> Path | None:
    """The folder a Lightning logger's config writes its files under: `save_dir/name/version`
    (a numbered `version_N`; every version's when unset). None without a save_dir."""
    if not entry.get("save_dir"):
        return None
    folder = Path(str(entry.save_dir))
    if entry.get("name"):
        folder /= str(entry.name)
    version = entry.get("version")
    if isinstance(version, int):
        folder /= f"version_{version}"
    elif version:
        folder /= str(version)
    return folder


def continue_tensorboard(logger_cfg: DictConfig | None, step: int) -> None:
    """Make the TensorBoard loggers of a resumed run drop what the interrupted run logged after
    its checkpoint's `step` (SummaryWriter's `purge_step`), so steps continue without duplicates."""
    for entry in (logger_cfg or {}).values():
        if entry and str(entry.get("_target_", "")).endswith("TensorBoardLogger"):
            with open_dict(entry):
                entry.purge_step = step
            wait_to_sort_after(Path(entry.save_dir))


def purge_no_more(loggers: Iterable[Logger]) -> None:
    """After the fit: a TensorBoard logger's next SummaryWriter (the test's, in the processes
    ddp_spawn starts for it) purges nothing. Its `purge_step` marked the resumed step again in
    the test's event file, read last, and TensorBoard dropped every point the resumed fit
    logged after it (sft-compare showed no validation). Lightning keeps the writer's arguments
    in `_kwargs` only."""
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger._kwargs.pop("purge_step", None)


def continue_csv_logs(logger_cfg: DictConfig | None) -> None:
    """Give the CSV loggers of a resumed run whose folder holds the earlier part's logs their own
    `version_N` folder (Lightning's next version): in the same folder, Lightning's CSVLogger
    deletes the earlier metrics.csv and writes over its hparams.yaml."""
    for entry in (logger_cfg or {}).values():
        if entry and str(entry.get("_target_", "")).endswith("CSVLogger"):
            log_dir = Path(instantiate(entry).log_dir)  # no files yet: written when it logs
            if log_dir.is_dir() and any(log_dir.iterdir()):
                with open_dict(entry):
                    entry.version = None


def wait_to_sort_after(tensorboard_dir: Path) -> None:
    """TensorBoard reads a run's event files in name order, and a name starts with the second
    it was created in, then host and process id: a run resumed within the second its
    interrupted run started would sort before it and show its steps first. Wait (under a
    second) until a new file sorts last."""
    stamps = [
        int(parts[3])
        for f in tensorboard_dir.rglob("events.out.tfevents.*")
        if len(parts := f.name.split(".")) > 3 and parts[3].isdigit()
    ]
    if stamps:
        time.sleep(max(0.0, max(stamps) + 1 - time.time()))


def _backbone_setting(key: str) -> Any:
    """`key` of a model's backbone config; a local folder as its absolute path (checkpoints of
    earlier versions kept it as typed)."""

    def value_of(hparams: dict[str, Any]) -> Any:
        value = dict(hparams.get("backbone") or {}).get(key)
        return local_or_hub_name(value) if isinstance(value, str) else value

    return value_of


# model settings a resumed checkpoint must share with the run, named in the error (other
# differences show as weights that do not fit, or not at all: two encoders of one size, or a
# library's models of one architecture, have the same weight shapes)
SETUP_KEYS = (
    ("num_classes", lambda h: h.get("num_classes")),
    ("backbone.name", _backbone_setting("name")),
    ("backbone.model_name_or_path", _backbone_setting("model_name_or_path")),
    ("backbone.model_name", _backbone_setting("model_name")),
)


# adapter settings a continued run may change: the others shape the trained weights, the
# optimizer's groups (train_norms, bias) or the function itself (alpha scales B A)
CHANGEABLE_ADAPTER_SETTINGS = ("dropout", "save_only_trainable", "init_from")


def check_adapter_settings(
    path: Path, saved: dict[str, Any], current: dict[str, Any], same_layers: bool = False
) -> None:
    """One line naming the `adapter.*` settings that differ from the checkpoint's (was: a
    traceback from the optimizer's state, or a changed alpha continued without a word).
    `same_layers`: this run's adapters are in the checkpoint's layers, however
    `target_modules` names them (null, or the list of those layers)."""
    changeable = {*CHANGEABLE_ADAPTER_SETTINGS, *(("target_modules",) if same_layers else ())}
    keys = sorted({*saved, *current} - changeable)
    differ = [
        f"adapter.{k}={saved.get(k)!r} (this run: {current.get(k)!r})"
        for k in keys
        if not k.startswith("_") and saved.get(k) != current.get(k)
    ]
    if differ:
        raise SFTError(
            f"checkpoint {path} was trained with {', '.join(differ)}: continue it with the "
            "adapter settings it was trained with"
        )


def adapted_layers(state: Mapping[str, Any]) -> set[str]:
    """The layers holding LoRA adapters in a model's state dict (`<layer>.lora_A...`)."""
    return {key.partition(".lora_")[0] for key in state if ".lora_" in key}


def _built_by_create_backbone(hparams: dict[str, Any]) -> bool:
    """Whether the model's backbone is sft's `create_backbone`, which loads a checkpoint's
    backbone weights (`model.backbone.checkpoint`)."""
    target = dict(hparams.get("backbone") or {}).get("_target_", "")
    return str(target).endswith("create_backbone")


def check_resume_checkpoint(point: ResumePoint, model: torch.nn.Module) -> None:
    """Before `trainer.fit(ckpt_path=...)`: one clear line for a foreign checkpoint, or one
    trained with another setup (which model setting differs, else which weights)."""
    path, checkpoint = point.path, point.checkpoint
    if "hyper_parameters" not in checkpoint:
        raise SFTError(f"checkpoint {path}: not an sft training checkpoint (no hyper_parameters)")
    saved = dict(checkpoint["hyper_parameters"])
    current = dict(getattr(model, "hparams", {}))
    for key, value_of in SETUP_KEYS:
        if value_of(saved) != value_of(current):
            if point.continues_run:
                advice = "resume with the same model settings"
            else:
                advice = (
                    "ckpt_path= continues the whole model as it was; set the model settings it "
                    "was trained with"
                )
                # another task from its backbone is a new run from that (was: "resume", said
                # to a new run, without the way to it)
                if key == "num_classes" and _built_by_create_backbone(current):
                    advice += (
                        ", or start a new run from its backbone, with a new head, with "
                        f"+model.backbone.checkpoint={path} instead of ckpt_path="
                    )
            raise SFTError(
                f"checkpoint {path} was trained with model.{key}={value_of(saved)!r}, this run has "
                f"model.{key}={value_of(current)!r}: {advice}"
            )
    for keys, meaning in CHANGEABLE_SETTINGS:
        changed = [
            f"model.{key}={saved.get(key, default)!r} -> {current.get(key, default)!r}"
            for key, default in keys
            if saved.get(key, default) != current.get(key, default)
        ]
        if changed:
            log.warning(
                f"checkpoint {path} was trained with other settings ({', '.join(changed)}): "
                f"{meaning}"
            )
    if saved.get("adapter") and current.get("adapter"):
        same_layers = adapted_layers(model.state_dict()) == adapted_layers(
            checkpoint.get("state_dict", {})
        )
        check_adapter_settings(path, saved["adapter"], current["adapter"], same_layers)
    if saved.get("adapter") and not current.get("adapter"):
        settings = {k: v for k, v in saved["adapter"].items() if not k.startswith("_")}
        raise SFTError(
            f"checkpoint {path} was trained with adapters ({settings}): add adapter=lora, with "
            "the settings it was trained with"
            + (", and the base weights it names" if "base_weights" in checkpoint else "")
        )
    if current.get("adapter") and not saved.get("adapter"):
        # (was: "it lacks backbone...lora_A...", without saying why)
        raise SFTError(
            f"checkpoint {path} was trained without adapters, and this run adds them: "
            "ckpt_path= and resume= continue a training as it was"
            + (
                "; to train adapters on its weights, start a new run from its backbone with "
                f"+model.backbone.checkpoint={path} instead"
                if _built_by_create_backbone(current)
                else ""
            )
        )
    # another regulariser's reference weights are replaced on load (the model's
    # on_load_checkpoint): a change of regulariser is allowed, as warned above
    state = {k: v for k, v in model.state_dict().items() if not k.startswith(REGULARIZER_STATE)}
    weights = {
        k: v
        for k, v in checkpoint.get("state_dict", {}).items()
        if not k.startswith(REGULARIZER_STATE)
    }
    # a small checkpoint (adapter.save_only_trainable) leaves out the frozen base weights
    absent_by_design = (
        {n for n, p in model.named_parameters() if not p.requires_grad}
        if "base_weights" in checkpoint
        else set()
    )
    missing = [k for k in state if k not in weights and k not in absent_by_design]
    unexpected = [k for k in weights if k not in state]
    resized = [
        f"{k} {tuple(weights[k].shape)} vs {tuple(v.shape)}"
        for k, v in state.items()
        if k in weights and tuple(weights[k].shape) != tuple(v.shape)
    ]
    for what, keys in (
        ("lacks", missing),
        ("has extra", unexpected),
        ("has other shapes:", resized),
    ):
        if keys:
            raise SFTError(
                f"checkpoint {path} does not fit this run's model (another setup): it {what} "
                f"{', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
            )
    check_optimizer_groups(point, model, saved, current)


# model settings that decide which weights the optimizer holds, in which groups
GROUP_KEYS = (
    ("freeze_backbone", lambda h: h.get("freeze_backbone")),
    ("layer_decay", lambda h: h.get("layer_decay")),
    ("head.freeze_base", lambda h: dict(h.get("head") or {}).get("freeze_base")),
)


def check_optimizer_groups(
    point: ResumePoint, model: torch.nn.Module, saved: dict[str, Any], current: dict[str, Any]
) -> None:
    """One line where the checkpoint's optimizer holds other parameter groups than this run's
    (was: Lightning's "loaded state dict has a different number of parameter groups" traceback,
    after the run's record and config were rewritten: model.freeze_backbone=true on resume)."""
    states = point.checkpoint.get("optimizer_states") or []
    # the class whose configure_optimizers builds the optimizer: sft's, or a user's own
    builder = next(c for c in type(model).__mro__ if "configure_optimizers" in vars(c))
    if not states or "optimizer_groups" not in vars(builder):
        return
    changed = [
        f"model.{key}={value_of(saved)!r} -> {value_of(current)!r}"
        for key, value_of in GROUP_KEYS
        if value_of(saved) != value_of(current)
    ]
    then = [len(group["params"]) for group in states[0].get("param_groups", [])]
    now = [len(group["params"]) for group in model.optimizer_groups()]
    # other groups with the same settings: a callback's (Lightning's BackboneFinetuning adds
    # and removes groups itself), left to it
    if then == now or not changed:
        return
    raise SFTError(
        f"checkpoint {point.path}: its optimizer holds {len(then)} parameter groups of "
        f"{then} weights, this run's would hold {len(now)} of {now} ({', '.join(changed)})"
        + ": ckpt_path= and resume= continue the optimizer as it was; set the model settings "
        "the checkpoint was trained with"
        + (
            f", or start a new run from its backbone with +model.backbone.checkpoint={point.path}"
            if _built_by_create_backbone(current)
            else ""
        )
    )


def epochs_completed(trainer: Trainer) -> int:
    """The epochs a fit trained whole. Lightning counts an epoch it ended early (max_steps
    reached within it, early stopping at a validation within it) as completed: 20 steps of 7
    per epoch were recorded as 3 epochs (was). An epoch a stop interrupted is not counted."""
    epochs = trainer.fit_loop.epoch_progress.current
    batches = trainer.fit_loop.epoch_loop.batch_progress.current.completed
    total = trainer.num_training_batches
    ended_early = epochs.started == epochs.completed and 0 < batches < total != float("inf")
    return trainer.current_epoch - 1 if ended_early else trainer.current_epoch


# the key of the fit loop's state in what a ddp_spawn rank 0 sends the main process
SPAWNED_FIT_LOOP = "sft_fit_loop"
SPAWNED_EPOCH_BATCHES = "sft_epoch_batches"


class ProgressReturningLauncher(_MultiProcessingLauncher):
    """Lightning's ddp_spawn launcher, whose rank 0 also sends the main process its fit loop's
    progress. Lightning's sends its metrics only: the main process's trainer stayed at epoch 0,
    step 0, and a run without a last.ckpt to read them from (the label-efficiency studies') was
    recorded as 0 epochs and 0 steps."""

    def get_extra_results(self, trainer: Trainer) -> dict[str, Any]:
        extra = super().get_extra_results(trainer)
        if trainer.state.fn == TrainerFn.FITTING:
            extra[SPAWNED_FIT_LOOP] = trainer.fit_loop.state_dict()
            # an epoch's batches, which the main process never counted (inf): epochs_completed
            # took an epoch max_steps cut short for a whole one
            extra[SPAWNED_EPOCH_BATCHES] = trainer.fit_loop.max_batches
        return extra

    def update_main_process_results(self, trainer: Trainer, extra: dict[str, Any]) -> None:
        super().update_main_process_results(trainer, extra)
        if extra.get(SPAWNED_FIT_LOOP) is not None:
            trainer.fit_loop.load_state_dict(extra[SPAWNED_FIT_LOOP])
        if extra.get(SPAWNED_EPOCH_BATCHES) is not None:
            trainer.fit_loop.max_batches = extra[SPAWNED_EPOCH_BATCHES]


def return_spawned_progress(trainer: Trainer) -> None:
    """Under ddp_spawn (trainer=ddp_sim, trainer.strategy=ddp_spawn): the trainer's launcher,
    Lightning's, becomes a `ProgressReturningLauncher` (the same object: the strategy made it
    with its settings)."""
    launcher = trainer.strategy.launcher
    if type(launcher) is _MultiProcessingLauncher:
        launcher.__class__ = ProgressReturningLauncher


def recover_spawned_progress(trainer: Trainer) -> None:
    """Under `ddp_spawn` (trainer=ddp_sim) the ranks train in child processes, and Lightning
    hands the main process their weights and metrics, not their loop progress: its trainer
    stayed at epoch 0, step 0, so result.json recorded 0 epochs and the test that follows
    logged at step 0. Where rank 0 sent none (`ProgressReturningLauncher`: the ranks were
    stopped), the progress is read back from the last.ckpt the ranks wrote."""
    last = trainer_last_checkpoint(trainer)
    if trainer.global_step > 0 or not last.is_file():
        return
    try:
        state, _ = _read_training_state(last)  # unreadable: the record keeps the main's counts
    except PermissionError:
        state = None
    fit_loop = (state or {}).get("loops", {}).get("fit_loop")
    if fit_loop is None or state["global_step"] == 0:
        return
    trainer.fit_loop.load_state_dict(fit_loop)
    # and the metrics of when it was saved, for result.json (was: none, so an interrupted run
    # counted as one that failed before logging)
    logged = state.get(LOGGED_METRICS) or {}
    if not trainer.callback_metrics:
        trainer.callback_metrics.update({k: torch.tensor(v) for k, v in logged.items()})
    epochs = trainer.fit_loop.epoch_progress.current
    if not trainer.interrupted and epochs.completed < epochs.started:
        # saved at the last epoch's final validation (at its end, or within it with
        # val_check_interval < 1), before Lightning counted the epoch: the fit has finished it
        epochs.processed = epochs.completed = epochs.started
        # and the loggers' step (counted after the validation too): the test logs after it
        loop = trainer.fit_loop.epoch_loop
        loop._batches_that_stepped = max(loop._batches_that_stepped, trainer.global_step)
