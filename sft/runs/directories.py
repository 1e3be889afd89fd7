"""Which directory a run writes to, and where a run directory keeps its last checkpoint.

`resume=null` (default): a fresh run in `<experiment dir>/<timestamp>` (the `hydra.run.dir` of
conf/hydra/default.yaml); when that directory already exists (two runs started in the same
second) it gets a suffix `_1`, `_2`, ...: an existing run directory is never written into.
`resume=auto`: the newest run directory of the experiment holding `checkpoints/last.ckpt`, or a
fresh one when there is none. `resume=<run dir>`: that directory. A resumed run keeps the
original's `.hydra/` and records its own config in `.hydra/resumed_<timestamp>/`.

Hydra creates the run directory from `hydra.run.dir` after its callbacks' `on_run_start`, so
`RunDirectory` (a Hydra callback, conf/hydra/default.yaml) makes this choice there and writes it
into `hydra.run.dir` and `hydra.output_subdir`. A `hydra.run.dir=` given on the command line is
used as it is. Multirun jobs get their own numbered directories from the sweep (`hydra.sweep`).
"""

from __future__ import annotations

import logging
import os
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict, read_write

from sft.errors import RunInTheWay, SFTError, report_user_errors
from sft.runs.lock import hold, holder, release
from sft.runs.result import (
    RESULT_FILE,
    SCORES_FILE,
    RunResult,
    command_task,
    differing_continued_overrides,
    differing_overrides,
    overrides_key,
    record_file,
    recorded_overrides,
    run_overrides,
    same_overrides,
    started_overrides,
)
from sft.utils.config import (
    MULTIRUN_RECORD,
    as_written,
    config_dir_arguments,
    config_subdir,
    hydra_path,
    hydra_quoted,
)
from sft.utils.ddp_ranks import is_job_rank, is_rank_process
from sft.utils.io import expand_home, file_in_the_way, remove_unfinished_writes
from sft.utils.logs import first_few
from sft.utils.overrides import override_key

if TYPE_CHECKING:
    from lightning.pytorch import Trainer

log = logging.getLogger(__name__)

LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"


def last_checkpoint(run_dir: str | Path) -> Path:
    """Where a run directory's newest full training state is saved (it may not exist yet)."""
    return Path(run_dir) / LAST_CHECKPOINT


def trainer_last_checkpoint(trainer: Trainer) -> Path:
    """Where `trainer` saves last.ckpt: in its checkpoint callbacks' folder (conf/callbacks:
    `<run dir>/checkpoints`), else in `<default_root_dir>/checkpoints` as Lightning does."""
    # imported here: this module serves Hydra's run callbacks, which load before a job needs
    # Lightning (a mistaken ckpt_path= is then said without its import)
    from lightning.pytorch.callbacks import ModelCheckpoint

    for callback in trainer.callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.dirpath:
            return Path(callback.dirpath) / LAST_CHECKPOINT.name
    return last_checkpoint(trainer.default_root_dir)


# settings a continued run changes to train for longer or shorter: not what tells runs apart
RUN_LENGTH = ("trainer.max_epochs", "trainer.max_steps", "trainer.max_time")


def _same_settings(run_dir: Path, overrides: Sequence[str]) -> bool | None:
    """Whether the run of `run_dir` was given `overrides`' settings, its length aside (from its
    result.json, else the overrides Hydra recorded as it started: a run killed before it wrote
    one); None where neither can be read."""
    try:
        recorded = recorded_overrides(run_dir / RESULT_FILE) or started_overrides(run_dir)
    except SFTError:
        recorded = None
    if recorded is None:
        return None
    now, then = ([o for o in x if override_key(o) not in RUN_LENGTH] for x in (overrides, recorded))
    return differing_continued_overrides(now, then) == ([], [])


def latest_resumable_run(
    experiment_dir: str | Path, overrides: Sequence[str] | None = None
) -> Path | None:
    """The run directory under `experiment_dir` whose last.ckpt was written most recently; given
    the command's `overrides`, the newest of the runs given the same settings (its length
    aside: trainer.max_epochs=... continues a run for longer) where there is one (was: the
    newest whatever its settings, e.g. a run of another learning rate interrupted later; it
    then continued with this command's, with a warning)."""
    candidates = list(Path(experiment_dir).glob(f"*/{LAST_CHECKPOINT.as_posix()}"))
    runs = [p.parents[1] for p in sorted(candidates, key=lambda p: -p.stat().st_mtime)]
    if not runs or overrides is None:
        return runs[0] if runs else None
    for newer, run in enumerate(runs):
        if _same_settings(run, overrides):
            if newer:
                log.info(
                    f"resume=auto: {run}, the newest run with this command's settings ({newer} "
                    f"newer {'run has' if newer == 1 else 'runs have'} other settings or no "
                    "readable record of them)"
                )
            return run
    return runs[0]


def reserve_fresh_dir(base: str | Path) -> Path:
    """Create and return `base`, or `base_1`, `base_2`, ... when it exists (atomic: mkdir)."""
    base = Path(base)
    base.parent.mkdir(parents=True, exist_ok=True)
    for n in range(10_000):
        candidate = base if n == 0 else base.with_name(f"{base.name}_{n}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise SFTError(f"could not find a free run directory next to {base}")


def choose_run_dir(
    resume: str | None, fresh: str | Path, overrides: Sequence[str] | None = None
) -> Path:
    """The directory of a run whose fresh directory would be `fresh` (see the module docstring;
    `overrides`: the command's, which resume=auto prefers a run of). SFTError for a `resume=`
    path that is not a directory, before any directory is made."""
    fresh = Path(fresh)
    found = None
    if resume == "auto":
        found = latest_resumable_run(fresh.parent, overrides)
    elif resume is not None:
        found = resumed_run_dir(resume)
    return (found if found is not None else reserve_fresh_dir(fresh)).resolve()


def resumed_run_dir(resume: str) -> Path:
    """The run directory `resume=<path>` names; SFTError when it is not one (refused here, before
    Hydra writes its config and log into a folder that holds no run)."""
    if not str(resume).strip():  # `resume=$RUN` with the variable unset: not this folder
        raise SFTError("resume= is empty: give a run directory, or auto")
    run_dir = expand_home(str(resume))
    if run_dir.is_file():
        in_run = run_dir.parent.name == "checkpoints"  # <run>/checkpoints/last.ckpt
        if not in_run:  # (was: told that ckpt_path= would start a run from config_resolved.yaml)
            raise SFTError(f"resume={resume} is a file: resume= takes a run directory")
        raise SFTError(
            f"resume={resume} is a file: resume={run_dir.parent.parent} continues the run that "
            f"holds it; ckpt_path={resume} starts a new run from it"
        )
    if not run_dir.is_dir():
        raise SFTError(f"resume={resume}: no such run directory")
    if not os.access(run_dir, os.W_OK | os.X_OK):  # (was: Hydra's traceback opening its log)
        raise SFTError(f"resume={resume}: this user may not write in {run_dir}")
    # (was, for a run before its first checkpoint: "last.ckpt does not exist"; the ranks of a
    # DDP run resumed run in the directory its first rank holds)
    if not is_rank_process() and (who := holder(run_dir)):
        raise SFTError(
            f"resume={resume}: {run_dir} is in use by an sft run or sweep still running ({who}): "
            "wait for it to end, then resume it"
        )
    last = last_checkpoint(run_dir)
    if last.is_symlink() and not last.exists():
        raise SFTError(
            f"resume={resume}: {last} is a link to {os.readlink(last)}, which is not there"
        )
    if not last.is_file():
        raise SFTError(
            f"resume={resume}: {last} does not exist, nothing to resume from{_no_run_hint(run_dir)}"
        )
    return run_dir


def _no_run_hint(run_dir: Path) -> str:
    """What a folder without last.ckpt given to resume= is instead: a run's checkpoints
    folder, a sweep's or an sft-eval's directory, or a run with other checkpoints, which
    start a new run (was: "does not exist" alone)."""
    if run_dir.name == "checkpoints":  # (was: ".../checkpoints/checkpoints/last.ckpt")
        return f" (resume={run_dir.parent}: the run that holds this folder)"
    if (run_dir / MULTIRUN_RECORD).is_file():
        return (
            f" ({run_dir} is a sweep's: re-run the sweep with hydra.sweep.dir={run_dir}, whose "
            f"jobs continue from their own last.ckpt, or resume one job: resume={run_dir}/<job>)"
        )
    if (run_dir / SCORES_FILE).is_file():
        return f" ({run_dir} is an sft-eval run's: it trained nothing)"
    saved = [(t, p) for p in last_checkpoint(run_dir).parent.glob("*.ckpt") if (t := _mtime(p))]
    if saved:
        return f" (ckpt_path={max(saved)[1]}, its newest checkpoint, starts a new run from it)"
    return ""


def _mtime(path: Path) -> float | None:
    """When the file `path` was written; None for a folder, a dangling link or one unreadable."""
    try:
        return path.stat().st_mtime if path.is_file() else None
    except OSError:
        return None


def _overridden(key: str, hydra_cfg: DictConfig) -> bool:
    """Whether the command line sets `key` (a hydra.* override)."""
    # as written: `hydra.sweep.subdir=${hydra.job.num}` resolved here raised, which turned off
    # this callback's checks without a word (only Hydra's UserWarning)
    return any(
        o.split("=", 1)[0].lstrip("+~") == key for o in as_written(hydra_cfg.overrides.hydra)
    )


# the commands that read a trained checkpoint, each in a run directory of its own
COMMANDS_AFTER_TRAINING = ("eval", "predict", "export")
# what a run leaves in its directory that a new run there would replace: sft's checkpoints,
# and (`retry=False`) Lightning's own (without sft's callbacks, in the logger's folder, e.g.
# tensorboard/checkpoints/) and its record (all a run without checkpoints leaves)
RUN_FILES = {
    f"{LAST_CHECKPOINT.parent}/*.ckpt": ("checkpoints", True),
    f"*/{LAST_CHECKPOINT.parent}/*.ckpt": ("checkpoints", False),
    RESULT_FILE: ("record", False),
}


# what sft-eval, sft-predict and sft-export leave in their run directories
OTHER_COMMANDS_RESULTS = ("predictions.*", "export")


def check_nothing_to_overwrite(output_dir: Path, retry: bool = False) -> None:
    """A new run in a directory that holds a run (a `hydra.run.dir=` given twice) would replace
    it: RunInTheWay instead. `retry`: a sweep job run again in its own directory (its record
    there is its own), which may replace what it wrote before, except sft's checkpoints
    (without last.ckpt to continue from). A record of a run that failed before logging a metric
    holds nothing to keep."""
    setting = "hydra.sweep.dir" if retry else "hydra.run.dir"
    others = [f for pattern in OTHER_COMMANDS_RESULTS for f in sorted(output_dir.glob(pattern))]
    if others and not retry:
        # (was: trained there, its config_resolved.yaml and TensorBoard replaced or mixed in)
        raise RunInTheWay(
            f"{output_dir} holds another command's results ({others[0]}): give this run "
            f"another {setting}"
        )
    for pattern, (what, always) in RUN_FILES.items():
        if retry and not always:
            continue
        written = [
            f
            for f in sorted(output_dir.glob(pattern))
            if f.name != RESULT_FILE or _worth_keeping(f)
        ]
        if written:
            resumable = last_checkpoint(output_dir).is_file() and not retry
            raise RunInTheWay(
                f"{output_dir} already holds a run's {what} ({written[0]}"
                + (f", but no {LAST_CHECKPOINT} to continue from" if retry else "")
                + "): "
                + (f"continue that run with resume={output_dir}, or " if resumable else "")
                + f"give this run another {setting}"
            )


def check_not_a_training_run(output_dir: Path, command: str) -> None:
    """The `hydra.run.dir` of sft-eval, sft-predict or sft-export (`command`): SFTError for a
    directory that holds a training run (its checkpoints or record), before Hydra writes there
    (was: the run's config_resolved.yaml replaced by the eval's, its TensorBoard given the
    eval's events; predictions and exports mixed in with a `.hydra/resumed_<time>/` of theirs,
    as if the run had been resumed). An eval's own directory holds neither: one that failed may
    be run again (its predictions.csv is never replaced), one that scored may not (was: its
    scores replaced once its predictions.csv was moved)."""
    for pattern in RUN_FILES:
        written = sorted(output_dir.glob(pattern))
        if written:
            raise SFTError(
                f"{output_dir} holds a training run ({written[0]}): give sft-{command} another "
                "hydra.run.dir (a run's files are never replaced)"
            )
    scores = output_dir / SCORES_FILE
    if scores.is_file() and _worth_keeping(scores):
        raise SFTError(
            f"{output_dir} holds an evaluation's scores ({scores}): give sft-{command} another "
            "hydra.run.dir (results already written are never replaced)"
        )


def _worth_keeping(record: Path) -> bool:
    try:
        return RunResult.read(record).worth_keeping()
    except SFTError:  # not sft's record: kept
        return True


def check_can_be_made(run_dir: Path, setting: str) -> None:
    """SFTError when a file stands where the run directory or a folder above it would be (was:
    a NotADirectoryError traceback from Hydra making it)."""
    if "${" in str(run_dir):  # (was: omegaconf's InterpolationKeyError traceback, a folder left)
        raise SFTError(
            f"{run_dir}: a folder whose path holds '${{' cannot be a run's (Hydra reads it as an "
            f"interpolation in the configs it writes there); give another paths.log_dir (or "
            f"{setting})"
        )
    blocking = file_in_the_way(run_dir)
    if blocking is not None:
        raise SFTError(
            f"{blocking} is a file, not a folder: the run directory {run_dir} cannot be made; "
            f"give another paths.log_dir (or {setting})"
        )
    why = folder_not_made_why(run_dir)
    if why is not None:  # (was: Hydra's traceback of the OSError it met making it)
        raise SFTError(
            f"the run directory {run_dir} cannot be made: {why}; give another paths.log_dir "
            f"(or {setting})"
        )


def folder_not_made_why(folder: Path) -> str | None:
    """Why `folder` could not be made, found without making anything (a refused run leaves no
    folder): the nearest path above it (or itself) that is there is a link to nothing or a
    loop, or a folder this process may not write in. None when nothing is in the way."""
    for path in (folder, *folder.parents):
        if path.is_symlink() and not path.exists():
            return f"{path}: a link to {os.readlink(path)}, which leads to no folder"
        if path.exists():
            if path.is_dir() and not os.access(path, os.W_OK | os.X_OK):
                return f"{path}: this user may not write in it"
            return None
    return None


def is_grid(hydra_cfg: DictConfig) -> bool:
    """Whether the multirun is a grid of Hydra's basic sweeper, which runs every job whatever
    they return (a search, e.g. Optuna's, optimises the value each job returns)."""
    sweeper = str(OmegaConf.select(hydra_cfg, "sweeper._target_", default=""))
    return sweeper == f"{BasicSweeper.__module__}.{BasicSweeper.__name__}"


def grid_jobs(config: DictConfig) -> list[list[str]] | None:
    """The overrides of each job of a grid sweep (Hydra's basic sweeper: its `params`, then the
    command line's), in job-number order; None for other sweepers (Optuna samples its trials)."""
    if not is_grid(config.hydra):
        return None
    params = OmegaConf.select(config, "hydra.sweeper.params", default=None) or {}
    # the params resolved, as Hydra's sweeper gets them; the command line's as written, as
    # Hydra hands them to the jobs
    lines = [f"{k}={v}" for k, v in params.items()] + as_written(config.hydra.overrides.task)
    # Hydra's own split of a grid into jobs (a private module: the sweeper exposes no other)
    parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
    batches = BasicSweeper.split_arguments(parser.parse_overrides(lines), None)
    return [job for batch in batches for job in batch]


def check_jobs_already_there(sweep_dir: Path, config: DictConfig) -> None:
    """A grid re-run into its hydra.sweep.dir continues its jobs from their last.ckpt; a job
    directory holding a job of other overrides (another grid in that directory), a sweep
    directory of another sweeper (an Optuna study into a grid's) or of another command (an
    sft-eval sweep into sft-train's) is refused here, before any job runs (was: the job refused
    alone after Hydra had written its config over the other job's, and the sweep reported
    success)."""
    earlier = sweep_dir / MULTIRUN_RECORD  # the sweep run there before
    if earlier.is_file():
        sweeper = str(OmegaConf.select(config, "hydra.sweeper._target_", default=""))
        ran = str(OmegaConf.load(earlier).hydra.sweeper.get("_target_", ""))
        if ran and ran != sweeper:
            raise SFTError(
                f"hydra.sweep.dir={sweep_dir} holds a sweep of another sweeper "
                f"({ran.rpartition('.')[2]}; this one is {sweeper.rpartition('.')[2]}): give this "
                "sweep a new hydra.sweep.dir"
            )
    jobs = grid_jobs(config) if sweep_dir.is_dir() else None
    task = command_task(config.hydra)
    record = record_file(task)  # an eval sweep's: scores.json
    other = record_file("train" if task == "eval" else "eval")
    for num in range(len(jobs or [])):
        if (sweep_dir / str(num) / other).is_file():
            # another command's sweep: its jobs are no record of this one's
            raise SFTError(
                f"hydra.sweep.dir={sweep_dir} holds a sweep of another command "
                f"({sweep_dir / str(num) / other}): give this sweep a new hydra.sweep.dir"
            )
    records = [recorded_overrides(sweep_dir / str(num) / record) for num in range(len(jobs or []))]
    for num, overrides in enumerate(jobs or []):
        recorded = records[num]
        planned = run_overrides(overrides)
        if recorded is not None and not same_overrides(recorded, planned):
            _refuse_renumbered_jobs(sweep_dir, [run_overrides(j) for j in jobs], records)
            ran, would = differing_overrides(recorded, planned)
            raise SFTError(
                f"hydra.sweep.dir={sweep_dir} holds another sweep: its job {num} ran "
                f"{' '.join(ran) or 'no other overrides'}, this sweep's job {num} would run "
                f"{' '.join(would) or 'no other overrides'} (the rest alike); give this sweep a "
                "new hydra.sweep.dir (a sweep re-run into its directory continues it only with the "
                "same overrides)"
            )


def _refuse_renumbered_jobs(
    sweep_dir: Path, planned: list[list[str]], records: list[list[str] | None]
) -> None:
    """SFTError when the directory holds this grid's jobs, each under another number: Hydra
    numbers a grid's jobs by the order of its swept keys on the command line. Jobs without a
    record (an interrupted grid's) are not compared."""
    planned_keys = set(map(overrides_key, planned))
    if not all(overrides_key(r) in planned_keys for r in records if r is not None):
        return
    earlier = sweep_overrides(sweep_dir)
    raise SFTError(
        f"hydra.sweep.dir={sweep_dir} holds this sweep's jobs under other numbers (Hydra "
        "numbers a grid's jobs by the order of its swept keys): give the swept keys in their "
        "first order to continue them"
        + (f" ({sweep_dir / MULTIRUN_RECORD}: {' '.join(earlier)})" if earlier else "")
    )


def sweep_overrides(sweep_dir: Path, with_hydra: bool = False) -> list[str] | None:
    """The overrides a sweep was started with, as its multirun.yaml records them and its user
    typed them; None without that record. `with_hydra`: its `hydra` overrides first (the
    sweeper chosen and its settings: a study's name, trials, ...), but not hydra.sweep.dir or
    Hydra's own hydra.mode."""
    record = sweep_dir / MULTIRUN_RECORD
    if not record.is_file():
        return None
    # as typed: an interpolation in an override (`m_${hydra:job.num}`) is not resolved
    overrides = OmegaConf.to_container(OmegaConf.load(record).hydra.overrides, resolve=False)
    hydra = [
        str(o)
        for o in (overrides["hydra"] if with_hydra else [])
        if not str(o).startswith(("hydra.sweep.dir=", "hydra.mode="))
    ]
    return [*hydra, *run_overrides(overrides["task"])]


def sweep_hint() -> str | None:
    """In a multirun job: how to continue its sweep, with the command (`-m`, the sweep's
    overrides as its multirun.yaml records them, its hydra.sweep.dir); None outside one. A
    grid's jobs continue from their last.ckpt; a search asks new trials (its sweeper told the
    interrupted one failed)."""
    if not HydraConfig.initialized():  # DDP's spawned ranks, code that calls train() itself
        return None
    hydra_cfg = HydraConfig.get()
    if getattr(hydra_cfg, "mode", None) != RunMode.MULTIRUN:
        return None
    if command_task(hydra_cfg) == "eval":  # its jobs have no last.ckpt to continue from
        return None
    sweep_dir = Path(hydra_cfg.sweep.dir).absolute()
    # with the sweeper's settings: a study continued without them was a new study in the old
    # one's job directories
    overrides = sweep_overrides(sweep_dir, with_hydra=True)
    if overrides is None:
        return None
    command = ["sft-train", *config_dir_arguments(), "-m", *overrides]
    command = shlex.join([*command, f"hydra.sweep.dir={hydra_path(str(sweep_dir))}"])
    if hydra_cfg.runtime.choices.get("hydra/sweeper", "basic") != "basic":
        return (
            # the command last, as the grid's: pasted, a note after it was a shell syntax error
            "continue the search (it adds hydra.sweeper.n_trials new trials; an interrupted "
            f"trial is not run again, but for an enqueued one) with: {command}"
        )
    return f"continue the sweep (each job from its last.ckpt) with: {command}"


def check_run_name(name: Any) -> None:
    """`name` is a folder under `paths.log_dir/<task>/` (conf/hydra): SFTError for one that
    would put the run elsewhere (was: `name=../../x` wrote outside paths.log_dir; `name=` or
    `name=.` among the experiments' folders). None: a config without the key (a user's)."""
    if name is None:
        return
    if isinstance(name, ListConfig | DictConfig | list | dict):  # (was: a folder named ['a'])
        raise SFTError(f"name={name}: a run's name is one folder name, not a list or mapping")
    parts = Path(str(name)).parts  # none for "" and "."
    if ".." in parts or not parts:
        raise SFTError(
            f"name={name}: a run's name is a folder under paths.log_dir/<task>/, "
            + ("without '..'" if parts else "not empty or '.'")
            + "; to write runs elsewhere set paths.log_dir (or hydra.run.dir)"
        )


def refuse_resume_in_multirun(resume: str) -> None:
    raise SFTError(
        f"resume={resume} continues a single run, not the jobs of a multirun (-m): resume a "
        "job's directory as a single run, or re-run the sweep into its hydra.sweep.dir, "
        "whose jobs continue from their own last.ckpt"
    )


def hold_run_dir(run_dir: Path) -> None:
    """Mark a single run's directory in use (sft.runs.lock); SFTError where another process
    uses it: a run in it, or the sweep whose job directory it is."""
    sweep = run_dir.parent
    who = holder(sweep) if (sweep / MULTIRUN_RECORD).is_file() else None
    if who:
        raise SFTError(
            f"{run_dir} is a job of a sweep still running ({who}): wait for the sweep to end"
        )
    hold(run_dir, "hydra.run.dir")


def _named_by_time(sweep: DictConfig) -> bool:
    """The sweep directory's setting, as configured, names it by the time (`${now:...}`)."""
    return "${now:" in str(OmegaConf.to_container(sweep, resolve=False).get("dir"))


class RunDirectory(Callback):
    """Hydra callback: settles `hydra.run.dir` and `hydra.output_subdir` of a single run, and
    refuses `resume=` in a multirun before its sweep directory is made. A run's or sweep's
    directory is marked in use while it runs (sft.runs.lock)."""

    def __init__(self) -> None:
        self._held: Path | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        report_user_errors(lambda: check_run_name(config.get("name")))
        resume = OmegaConf.select(config, "resume", default=None)
        if resume is not None:
            report_user_errors(lambda: refuse_resume_in_multirun(resume))
        given = str(OmegaConf.select(config, "hydra.sweep.dir"))
        # (was: a folder named ~ in the working directory)
        home_expanded = os.path.expanduser(given) != given
        sweep_dir = expand_home(given)
        report_user_errors(lambda: check_can_be_made(sweep_dir, "hydra.sweep.dir"))
        default_dir = not _overridden("hydra.sweep.dir", config.hydra)
        # a directory named by the second it starts in (the default): a sweep started in the
        # same second as another of the experiment's (a script starting several) takes the next
        # free name, <time>_1, as a single run does (was: refused, the other sweep's directory
        # being in use). One named otherwise, by a config (an Optuna search's, which the same
        # command continues), is used as named; so is the first node's by the others of a
        # sweep started by hand on each node.
        reserved = default_dir and _named_by_time(config.hydra.sweep) and not is_rank_process()
        if reserved:
            sweep_dir = report_user_errors(lambda: reserve_fresh_dir(sweep_dir))
        if home_expanded or default_dir:
            with read_write(config.hydra):
                config.hydra.sweep.dir = str(sweep_dir)
            # Each job's config is composed again with its overrides (Hydra's load_sweep_config),
            # and ${name} in the default sweep directory became each job's: a sweep over
            # experiments wrote one sweep directory per experiment, and the summary of this one
            # listed no job (exit 0, every job failed). Its hydra overrides carry over to every
            # job: the directory resolved here is theirs.
            with read_write(config.hydra), open_dict(config.hydra):
                config.hydra.overrides.hydra.append(
                    f"hydra.sweep.dir={hydra_quoted(str(sweep_dir))}"
                )
        if not _overridden("hydra.sweep.subdir", config.hydra):
            report_user_errors(lambda: check_jobs_already_there(sweep_dir, config))
        if not is_rank_process():  # a sweep started by hand on each node: the first holds it
            report_user_errors(lambda: hold(sweep_dir, "hydra.sweep.dir", made=reserved))
            self._held = sweep_dir

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._release()

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._release()

    def _release(self) -> None:
        if self._held is not None:
            release(self._held)
            self._held = None

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        report_user_errors(lambda: check_run_name(config.get("name")))
        hydra_cfg = config.hydra
        # `~` is the home folder, as elsewhere (was: a folder named ~ in the working directory)
        given = expand_home(str(OmegaConf.select(config, "hydra.run.dir")))
        report_user_errors(lambda: check_can_be_made(given, "hydra.run.dir"))
        resume = OmegaConf.select(config, "resume", default=None)
        if _overridden("hydra.run.dir", hydra_cfg):
            chosen = given  # the user's directory, as given
            # sft-train's (conf/train.yaml has `resume`); refused here, before Hydra writes its
            # config and log there
            if is_job_rank():
                pass  # a DDP rank of a multirun job, in the directory its job checked
            elif "resume" in config and (
                resume is None or (resume == "auto" and not last_checkpoint(given).is_file())
            ):
                # resume=auto there without last.ckpt starts afresh: over a run without one
                # (a best checkpoint, a record) as a new run would (was: written over)
                report_user_errors(lambda: check_nothing_to_overwrite(given))
            elif (job := OmegaConf.select(hydra_cfg, "job.name")) in COMMANDS_AFTER_TRAINING:
                # (job.name: the entry point's module; task_name is debug with +debug=...)
                report_user_errors(lambda: check_not_a_training_run(given, job))
        else:
            # one error line and exit 1 here: Hydra would print its own report, after making
            # a run directory for a run that cannot start
            overrides = run_overrides(as_written(hydra_cfg.overrides.task))
            chosen = report_user_errors(lambda: choose_run_dir(resume, given, overrides))
        if not is_rank_process():
            report_user_errors(lambda: hold_run_dir(chosen))
            self._held = chosen
            # held: no other run writes there now
            if removed := remove_unfinished_writes(chosen / "checkpoints"):
                log.info(
                    f"removed {len(removed)} unfinished checkpoint file(s) of a run killed "
                    f"while saving: {first_few([p.name for p in removed], 3)}"
                )
        with read_write(hydra_cfg), open_dict(hydra_cfg):
            hydra_cfg.run.dir = str(chosen)
            if not _overridden("hydra.output_subdir", hydra_cfg):  # e.g. null: DDP ranks > 0
                # a run replacing one that failed before logging takes its place in .hydra/
                # too (sft-compare labels a run by .hydra/overrides.yaml); a resumed one
                # continues it, whose command stays (was: written over when the run it
                # continues had logged no metric, as an interrupted ddp_spawn run has not)
                record = chosen / RESULT_FILE
                replaces = resume is None and record.is_file() and not _worth_keeping(record)
                hydra_cfg.output_subdir = ".hydra" if replaces else config_subdir(str(chosen))
