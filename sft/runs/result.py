"""`result.json`: how one `sft-train` run ended, written atomically in its run directory
(`scores.json`, the same record, for an `sft-eval` run: what reads a training run's record
leaves it alone).

Every run (single or multirun job, completed or failed) writes one; the sweep summary
(`sft.runs.sweep_summary`), `sft-compare` and the study reports and sweepers read them. Fields:
task (the command: train, eval), status ("completed" | "failed" | "interrupted": stopped by
Ctrl-C or a signal, resumable from its last.ckpt where it saved one | "pruned": an Optuna trial
its pruner stopped), error (one line or null), overrides (the job's task overrides), metrics
(final float metrics), optimized_metric, epochs (completed), steps, wall_time_s, output_dir,
started_at and ended_at.
"""

import contextlib
import json
import logging
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Lightning's own decorator, whose rank Lightning sets when it loads; without loading Lightning
# (sft-compare, a sweep's driver)
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import OverrideParseException
from hydra.types import RunMode
from lightning_utilities.core.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from sft.errors import (
    RunInTheWay,
    SFTError,
    TrainingInterrupted,
    find_user_error,
    first_line,
    worker_message,
)
from sft.utils.config import task_overrides
from sft.utils.io import atomic_write_text
from sft.utils.overrides import as_typed, override_key

log = logging.getLogger(__name__)

RESULT_FILE = "result.json"
# sft-eval's record: its own name, so that what reads a training run's result.json (resume, a
# sweep run again, sft-compare, the run-folder checks) never takes an evaluation for one
SCORES_FILE = "scores.json"
START_FROM = "ckpt_path"  # the setting of a new run started from another's checkpoint
COMPLETED = "completed"
FAILED = "failed"
# stopped by Ctrl-C or a signal (SIGTERM, a cluster's preemption): not a crash; resume= continues
# it from the last.ckpt it saved
INTERRUPTED = "interrupted"
PRUNED = "pruned"
UNFINISHED = (FAILED, INTERRUPTED)
TEST_PREFIX = "test/"
# in a sweep directory: the records of jobs that failed before training while their own
# directory holds an earlier run's record, which stays (a job refused because that run is in its
# way, a re-run job whose last.ckpt no longer loads, ...): `<job number>.json`, for the sweep
# summary
NOT_RUN_DIR = ".not_run"
# how the Optuna sweeper adds its pruning callback (sft.callbacks.optuna_pruning) to each trial's
# command line: its own bookkeeping, left out of the overrides a run reports
PRUNING_OVERRIDE = "++callbacks.optuna_pruning"


def run_overrides(overrides: Sequence[str]) -> list[str]:
    """A job's overrides as result.json and sweep summaries report them: as the user typed
    them, without what a sweeper adds for its own bookkeeping (Optuna's pruning callback)."""
    return [o for o in as_typed(overrides) if not o.startswith(f"{PRUNING_OVERRIDE}=")]


def overrides_key(overrides: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """Runs given the same settings have one key: in any order (Hydra applies a command line's
    overrides of different keys alike in any order) and however written (`override_settings`;
    was: as written, so a job's record written by its resume alone matched no planned job)."""
    return tuple(sorted((k, repr(v)) for k, (v, _) in override_settings(overrides).items()))


def override_settings(overrides: Sequence[str]) -> dict[str, tuple[Any, str]]:
    """What `overrides` set, key by key as Hydra applies them (the last of a key wins): each
    key's value (typed: 1 and 1.0 are a count and a fraction of batches to Lightning) and the
    override that set it. Written alike or not, the same setting is one: `model.lr_head=1e-2`
    and `=0.01`, `pretrained=False` and `=false`, `+x=1` and `x=1`, `~key` and `~key=null`.
    resume= is left out: where a run continues, not what it is (a sweep's job resumed as a
    single run records it)."""
    parser = OverridesParser.create()
    settings: dict[str, tuple[Any, str]] = {}
    for line in overrides:
        try:
            (override,) = parser.parse_overrides([line])
        except OverrideParseException:
            settings[line] = (line, line)  # compared as written
            continue
        key = override.key_or_group + (f"@{override.package}" if override.package else "")
        if key == "resume":
            continue
        # a delete and a set of one key: the later wins, as Hydra applies them
        if override.is_delete():
            settings.pop(key, None)
            settings[f"~{key}"] = (None, line)
        else:
            settings.pop(f"~{key}", None)
            settings[key] = (_typed(override.value()), line)
    return settings


def _typed(value: Any) -> Any:
    """`value` with its type, comparable with `==` (NaN too; a dict's keys in any order)."""
    if isinstance(value, dict):
        return tuple(sorted((str(k), _typed(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(_typed(v) for v in value)
    if isinstance(value, float) and math.isnan(value):
        return ("float", "nan")
    return (type(value).__name__, value)


def differing_overrides(a: Sequence[str], b: Sequence[str]) -> tuple[list[str], list[str]]:
    """The overrides of `a` and of `b` that set a setting otherwise than the other (or that the
    other leaves unset), as written."""
    settings = [override_settings(o) for o in (a, b)]
    unset = (object(), "")
    keys = sorted(
        k
        for k in {*settings[0], *settings[1]}
        if settings[0].get(k, unset)[0] != settings[1].get(k, unset)[0]
    )
    first, second = ([s[k][1] for k in keys if k in s] for s in settings)
    return first, second


def differing_continued_overrides(
    now: Sequence[str], recorded: Sequence[str]
) -> tuple[list[str], list[str]]:
    """`differing_overrides` of a continued run and its record, where each started from
    (ckpt_path=) aside: a resumed run's command leaves it out, its record keeps it (and a sweep
    job's overrides have it, the resume command of its DDP ranks not)."""
    return differing_overrides(
        *([o for o in x if override_key(o) != START_FROM] for x in (now, recorded))
    )


def same_overrides(a: Sequence[str], b: Sequence[str]) -> bool:
    """Whether two runs were given the same settings, in any order and however written."""
    return differing_overrides(a, b) == ([], [])


def one_line_error(exc: BaseException) -> str:
    """The user error's message, or `Type: message` of a bug's root cause, on one line."""
    user_error = find_user_error(exc)
    if user_error is not None:
        text = worker_message(str(user_error))
    elif isinstance(exc, KeyboardInterrupt):
        text = "interrupted by SIGINT (Ctrl-C)"
    elif isinstance(exc, TrainingInterrupted):
        text = str(exc)  # the line it said (callbacks.graceful_interrupt)
    else:
        # Hydra's InstantiationException (and others) wrap the error that says what went wrong
        while exc.__cause__ is not None:
            exc = exc.__cause__
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return " ".join(text.split()) or type(exc).__name__


def record_file(task: str) -> str:
    """The name of a run's record: result.json, scores.json for an sft-eval run."""
    return SCORES_FILE if task == "eval" else RESULT_FILE


def command_task(hydra_cfg: DictConfig) -> str:
    """The command a Hydra job runs: "eval" for sft-eval's (Hydra names its job after the
    entry point's module), else "train"."""
    return "eval" if OmegaConf.select(hydra_cfg, "job.name") == "eval" else "train"


def not_run_record(sweep_dir: str | Path, job_num: int) -> Path:
    """Where a sweep's job records a failure that leaves its directory's earlier record as it
    was: `<sweep dir>/.not_run/<job number>.json`."""
    return Path(sweep_dir, NOT_RUN_DIR, f"{job_num}.json")


@dataclass
class RunResult:
    status: str
    # the command: "train", or "eval" (the metrics it scored a checkpoint with); records
    # written before it was kept are sft-train's
    task: str = "train"
    error: str | None = None
    overrides: list[str] = field(default_factory=list)
    metrics: dict[str, float | None] = field(default_factory=dict)
    optimized_metric: str | None = None
    epochs: int = 0
    # optimizer steps trained (null in records written before it was kept: sft-compare then
    # counts the steps the run logged, fewer for a run interrupted between its logging steps)
    steps: int | None = None
    wall_time_s: float = 0.0
    output_dir: str = ""
    # when the run started and ended (Unix time): parallel jobs of a sweep overlap
    started_at: float = 0.0
    ended_at: float = 0.0

    @classmethod
    def read(cls, path: str | Path) -> "RunResult":
        """The record in `path`; SFTError naming the file when it is not one (e.g. hand-edited)."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise SFTError(f"{path}: not a run record (invalid JSON: {e})") from None
        wrong = "a JSON object" if not isinstance(data, dict) else _misshapen(data)
        if wrong:
            raise SFTError(f"{path}: not a run record (expected {wrong}); sft-train writes it")
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in known})

    def worth_keeping(self) -> bool:
        """Whether the record holds results: not a run that failed before logging a metric."""
        return self.status not in UNFINISHED or bool(self.metrics)

    def write(self, path: Path | None = None) -> Path | None:
        """Into `path`, by default the run directory's result.json; on the global rank 0 only."""
        # a process that never loaded Lightning (a Ray or submitit sweep's driver recording a
        # lost job) is no DDP rank: its rank is unset, which the decorator would refuse
        if getattr(rank_zero_only, "rank", 0) != 0:
            return None
        path = path or Path(self.output_dir) / record_file(self.task)
        atomic_write_text(path, json.dumps(asdict(self), indent=2) + "\n")
        return path


# what a record's fields must hold (JSON's names for them), beyond the dataclass's own typing
NUMBER = (int, float)
SHAPES = {
    "status": (str, "a string"),
    "overrides": (list, "an array"),
    "metrics": (dict, "an object"),
    "epochs": (int, "an integer"),
    "steps": ((int, type(None)), "an integer or null"),
    "wall_time_s": (NUMBER, "a number"),
    "started_at": (NUMBER, "a number"),
}


def _misshapen(data: dict[str, Any]) -> str | None:
    """What a record's fields should be, for the first that is not; None when all are."""
    for key, (kind, name) in SHAPES.items():
        value = data.get(key, 0 if kind in (int, NUMBER) else None)
        if not isinstance(value, kind) or isinstance(value, bool):
            return f"{key!r} as {name}"
    bad = [k for k, v in data["metrics"].items() if v is not None and not isinstance(v, NUMBER)]
    return f"'metrics' of numbers or null ({bad[0]!r} is not)" if bad else None


def _finite(metrics: Mapping[str, Any]) -> dict[str, float | None]:
    """Metrics as JSON numbers: JSON has no NaN/inf, a diverged metric is recorded as null."""
    return {k: (float(v) if math.isfinite(float(v)) else None) for k, v in metrics.items()}


def recorded_overrides(path: Path) -> list[str] | None:
    """The overrides of the run recorded in result.json `path`; None without one, or with one
    that is not a record (hand-edited: warned about, and nothing is checked against it)."""
    try:
        return RunResult.read(path).overrides if path.is_file() else None
    except SFTError as e:
        log.warning(f"{e}: not checked against it")
        return None


def started_overrides(run_dir: Path) -> list[str] | None:
    """The overrides Hydra recorded as the run started (`.hydra/overrides.yaml`, its first
    part's: a run killed before it wrote result.json has this record only), unresolved (a
    sweeper's may hold ${hydra:...}); None without the file; SFTError saying why one cannot be
    read (hand-edited, a YAML tag OmegaConf refuses, not a list)."""
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return None
    try:
        overrides = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception as e:
        raise SFTError(f"{path} cannot be read ({first_line(e)})") from e
    if not isinstance(overrides, list):
        raise SFTError(f"{path} cannot be read (not a list)")
    return [str(o) for o in overrides]


# the lists of the recorders made while sft.api runs a command in this process
_WATCHERS: list[list["RunRecorder"]] = []


@contextlib.contextmanager
def recorders_made() -> Iterator[list["RunRecorder"]]:
    """The RunRecorders made meanwhile in this process (sft.api: the record of the run it ran)."""
    made: list[RunRecorder] = []
    _WATCHERS.append(made)
    try:
        yield made
    finally:
        _WATCHERS.remove(made)


class RunRecorder:
    """Times a run and writes its `result.json` when it completes or fails. `not_run_to`: where
    a multirun job records a failure before training that must not replace its directory's
    record (`<sweep dir>/.not_run/<job>.json`)."""

    def __init__(
        self,
        output_dir: str | Path,
        overrides: list[str],
        optimized_metric: str | None,
        not_run_to: Path | None = None,
        task: str = "train",
    ):
        self.not_run_to = not_run_to
        if not_run_to is not None:  # this job's failure in an earlier run of the sweep
            not_run_to.unlink(missing_ok=True)
        self.result = RunResult(
            status=FAILED,
            task=task,
            output_dir=str(Path(output_dir).resolve()),
            overrides=list(overrides),
            optimized_metric=optimized_metric,
        )
        self._start = time.monotonic()
        self.result.started_at = round(time.time(), 3)
        self._fit_started = False
        self._continues = False
        self._pruned = False
        self.finished = False  # its record written as the run ended
        self.exception: BaseException | None = None  # what ended a failed or stopped run
        for made in _WATCHERS:
            made.append(self)

    def continues_earlier_run(self) -> None:
        """The run continues the one that wrote its directory's result.json (resume=, a requeued
        or re-run multirun job): that record's metrics and time carry over."""
        self._continues = True

    def fit_started(self) -> None:
        """From here a failure is recorded over the directory's result.json. Before (a refused
        resume, a run directory given twice) a result.json already there is an earlier run's,
        and it is kept."""
        self._fit_started = True

    def set_progress(
        self, epochs: int, steps: int, metrics: Mapping[str, Any], pruned: bool = False
    ) -> None:
        """The epochs a fit completed, its optimizer steps and the metrics it logged; a run that
        fails later (in its test, or interrupted) keeps them in its result.json. `pruned`: an
        Optuna pruner stopped the fit; the run completes as pruned."""
        self.result.epochs = int(epochs)
        self.result.steps = int(steps)
        self.result.metrics = _finite(metrics)
        self._pruned = pruned

    def scored_checkpoint(self, epochs: int | None, steps: int | None) -> None:
        """An sft-eval record's epochs and steps: those the checkpoint it scores had trained
        (was: 0 epochs and no steps, the scoring run's own)."""
        self.result.epochs = epochs or 0
        self.result.steps = steps

    def check_logged(self, metrics: Mapping[str, Any]) -> None:
        """A sweep's job returns its optimized_metric for the sweeper to optimise: SFTError
        when it is NaN or infinite (unless the pruner stopped the trial: Optuna's pruners prune
        a NaN), or naming the metrics the run logged when it is not one of them (a continued
        run's is also what its earlier part logged)."""
        name = self.result.optimized_metric
        if not self._pruned and name in metrics and not math.isfinite(float(metrics[name])):
            # Optuna fails such a completed trial ("nan is not acceptable"); so does its record
            raise SFTError(
                f"optimized_metric={name} is {float(metrics[name])} (the run diverged): the "
                "search cannot rank it"
            )
        if unlogged := self.unlogged_metric(metrics):
            raise SFTError(
                f"{unlogged}: the sweep gets no value from it; set optimized_metric to a metric "
                "the run logs"
            )

    def unlogged_metric(self, metrics: Mapping[str, Any]) -> str | None:
        """ "optimized_metric=<name> was not logged by this run (it logged: ...)" when the run
        (or, continued, its earlier part) did not log it; else None."""
        name = self.result.optimized_metric
        earlier = self._earlier() if self._continues else None
        if not name or name in metrics or (earlier is not None and name in earlier.metrics):
            return None
        return (
            f"optimized_metric={name} was not logged by this run (it logged: "
            f"{', '.join(sorted(metrics)) or 'nothing'})"
        )

    def completed(self, metrics: Mapping[str, Any]) -> RunResult:
        self.result.metrics = _finite(metrics)
        return self._finish(PRUNED if self._pruned else COMPLETED, None)

    def _earlier(self) -> RunResult | None:
        """The result.json the run's earlier part wrote (a resumed run), if readable."""
        path = Path(self.result.output_dir) / record_file(self.result.task)
        try:
            return RunResult.read(path) if path.is_file() else None
        except (OSError, SFTError) as e:  # unreadable: nothing to keep, and it is replaced
            log.warning(f"{e}: the earlier part's record is not kept")
            return None

    def failed(self, exc: BaseException) -> RunResult:
        self.exception = exc  # sft.api raises it again, past Hydra's exit status
        refused = isinstance(find_user_error(exc), RunInTheWay)
        stopped = isinstance(exc, KeyboardInterrupt | TrainingInterrupted)
        return self._finish(INTERRUPTED if stopped else FAILED, one_line_error(exc), refused)

    def _finish(self, status: str, error: str | None, refused: bool = False) -> RunResult:
        self.finished = True
        self.result.status, self.result.error = status, error
        self.result.wall_time_s = round(time.monotonic() - self._start, 3)
        self.result.ended_at = round(time.time(), 3)
        earlier = None if refused else self._earlier()
        if refused or (
            status in UNFINISHED
            and not self._fit_started
            and earlier is not None
            and earlier.worth_keeping()
        ):
            # the directory's record is an earlier run's and stays (the run in the way of a
            # refusal, or one a failure before training must not replace, e.g. a resume refused
            # for its settings): a sweep job's failure goes to the sweep directory, for its
            # summary
            if self.not_run_to is not None:
                try:
                    self.result.write(self.not_run_to)
                except (OSError, SFTError) as e:  # the failure itself is the error to report
                    log.warning(f"the failure could not be recorded in {self.not_run_to}: {e}")
            return self.result
        if earlier is not None and self._continues:
            # A continued run reports only what it logged itself (a finished run resumed
            # validates nothing): what it did not log again stays as the earlier part recorded
            # it, its epochs do not go back (a finished run resumed is at the epoch its
            # checkpoint was saved in), and its time is the parts' together. A part that trained
            # further may test another best checkpoint: the earlier part's test metrics do not
            # carry over (else a test failing now would leave them beside the new validation's).
            trained = any(not k.startswith(TEST_PREFIX) for k in self.result.metrics)
            kept = {
                k: v
                for k, v in earlier.metrics.items()
                if not (trained and k.startswith(TEST_PREFIX))
            }
            self.result.metrics = {**kept, **self.result.metrics}
            self.result.epochs = max(self.result.epochs, earlier.epochs)
            parts = [n for n in (self.result.steps, earlier.steps) if n is not None]
            self.result.steps = max(parts) if parts else None
            self.result.wall_time_s = round(earlier.wall_time_s + self.result.wall_time_s, 3)
            self.result.started_at = earlier.started_at or self.result.started_at
            if not any(override_key(o) == START_FROM for o in self.result.overrides):
                # a resumed run continues from its own last.ckpt; where its first part started
                # (sft-compare labels it by this record) stays in it
                started = [o for o in earlier.overrides if override_key(o) == START_FROM]
                self.result.overrides += started
        try:
            self.result.write()
        except (OSError, SFTError) as e:  # (SFTError: atomic_write's full disk)
            if status not in UNFINISHED:
                raise
            # the failure itself is the error to report (was: replaced by this one, e.g. the
            # open-file limit a run's DataLoader workers reached, or the full disk that failed
            # sft-eval's predictions.csv, with no record either way)
            log.warning(f"the failure could not be recorded in {self.result.output_dir}: {e}")
        return self.result


def earlier_test_metrics(run_dir: str | Path, overrides: Sequence[str]) -> dict[str, float]:
    """The test metrics of the completed run whose record `run_dir` holds, where it was given
    the same settings as `overrides` (`differing_continued_overrides`); empty otherwise (no
    readable record, not completed, not tested, other settings)."""
    path = Path(run_dir) / RESULT_FILE
    try:
        earlier = RunResult.read(path) if path.is_file() else None
    except (OSError, SFTError):
        return {}
    if earlier is None or earlier.status != COMPLETED:
        return {}
    if differing_continued_overrides(overrides, earlier.overrides) != ([], []):
        return {}
    return {
        k: v
        for k, v in earlier.metrics.items()
        if k.startswith(TEST_PREFIX) and isinstance(v, int | float)
    }


def job_recorder(cfg: DictConfig) -> RunRecorder:
    """The recorder of the sft-train or sft-eval job Hydra runs now (in its run directory; a
    sweep's job records a failure before training in the sweep directory). Made before torch
    and Lightning load, so that Ctrl-C while they do is recorded too (was: a run directory
    without a record)."""
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    return RunRecorder(
        hydra_cfg.runtime.output_dir,
        run_overrides(task_overrides()),
        cfg.get("optimized_metric"),
        not_run_record(hydra_cfg.sweep.dir, hydra_cfg.job.num) if multirun else None,
        task=command_task(hydra_cfg),
    )
