"""`result.json`: how one `sft-train` run ended, written atomically in its run directory.

Every run (single or multirun job, completed or failed) writes one; the sweep summary
(`sft.runs.sweep_summary`), `sft-compare` and the study reports and sweepers read them. Fields: status ("completed" | "failed"),
error (one line or null), overrides (the job's task overrides), metrics (final float metrics),
optimized_metric, epochs (completed), wall_time_s, output_dir, started_at and ended_at.
"""

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_only

from sft.errors import find_user_error
from sft.utils.cli import as_typed
from sft.utils.io import atomic_write_text

RESULT_FILE = "result.json"
COMPLETED = "completed"
FAILED = "failed"
# how the Optuna sweeper adds its pruning callback (sft.callbacks.optuna_pruning) to each trial's
# command line: its own bookkeeping, left out of the overrides a run reports
PRUNING_OVERRIDE = "++callbacks.optuna_pruning"


def run_overrides(overrides: Sequence[str]) -> list[str]:
    """A job's overrides as result.json and sweep summaries report them: as the user typed
    them, without what a sweeper adds for its own bookkeeping (Optuna's pruning callback)."""
    return [o for o in as_typed(overrides) if not o.startswith(f"{PRUNING_OVERRIDE}=")]


def one_line_error(exc: BaseException) -> str:
    """The user error's message, or `Type: message` of a bug's root cause, on one line."""
    user_error = find_user_error(exc)
    if user_error is not None:
        text = str(user_error)
    else:
        # Hydra's InstantiationException (and others) wrap the error that says what went wrong
        while exc.__cause__ is not None:
            exc = exc.__cause__
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return " ".join(text.split()) or type(exc).__name__


@dataclass
class RunResult:
    status: str
    error: str | None = None
    overrides: list[str] = field(default_factory=list)
    metrics: dict[str, float | None] = field(default_factory=dict)
    optimized_metric: str | None = None
    epochs: int = 0
    wall_time_s: float = 0.0
    output_dir: str = ""
    # when the run started and ended (Unix time): parallel jobs of a sweep overlap
    started_at: float = 0.0
    ended_at: float = 0.0

    @classmethod
    def read(cls, path: str | Path) -> "RunResult":
        data: dict[str, Any] = json.loads(Path(path).read_text())
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in known})

    @rank_zero_only
    def write(self) -> Path:
        path = Path(self.output_dir) / RESULT_FILE
        atomic_write_text(path, json.dumps(asdict(self), indent=2) + "\n")
        return path


class RunRecorder:
    """Times a run and writes its `result.json` when it completes or fails."""

    def __init__(self, output_dir: str | Path, overrides: list[str], optimized_metric: str | None):
        self.result = RunResult(
            status=FAILED,
            output_dir=str(Path(output_dir).resolve()),
            overrides=list(overrides),
            optimized_metric=optimized_metric,
        )
        self._start = time.monotonic()
        self.result.started_at = round(time.time(), 3)
        self._fit_started = False
        self._continues = False

    def continues_earlier_run(self) -> None:
        """The run continues the one that wrote its directory's result.json (resume=, a requeued
        or re-run multirun job): that record's metrics and time carry over."""
        self._continues = True

    def fit_started(self) -> None:
        """From here a failure is recorded over the directory's result.json. Before (a refused
        resume, a run directory given twice) a result.json already there is an earlier run's,
        and it is kept."""
        self._fit_started = True

    def set_epochs(self, epochs: int) -> None:
        self.result.epochs = int(epochs)

    def completed(self, metrics: dict[str, float]) -> RunResult:
        # JSON has no NaN/inf: a diverged metric is recorded as null
        self.result.metrics = {
            k: (float(v) if math.isfinite(float(v)) else None) for k, v in metrics.items()
        }
        return self._finish(COMPLETED, None)

    def _earlier(self) -> RunResult | None:
        """The result.json the run's earlier part wrote (a resumed run), if readable."""
        path = Path(self.result.output_dir) / RESULT_FILE
        try:
            return RunResult.read(path) if path.is_file() else None
        except (OSError, ValueError, TypeError):  # unreadable: nothing to keep
            return None

    def failed(self, exc: BaseException) -> RunResult:
        return self._finish(FAILED, one_line_error(exc))

    def _finish(self, status: str, error: str | None) -> RunResult:
        self.result.status, self.result.error = status, error
        self.result.wall_time_s = round(time.monotonic() - self._start, 3)
        self.result.ended_at = round(time.time(), 3)
        earlier = self._earlier()
        if status == FAILED and not self._fit_started and earlier is not None:
            return self.result
        if earlier is not None and self._continues:
            # A continued run reports only what it logged itself (a finished run resumed
            # validates nothing): what it did not log again stays as the earlier part recorded
            # it, and its time is the parts' together.
            if status == COMPLETED:
                self.result.metrics = {**earlier.metrics, **self.result.metrics}
            self.result.wall_time_s = round(earlier.wall_time_s + self.result.wall_time_s, 3)
            self.result.started_at = earlier.started_at or self.result.started_at
        self.result.write()
        return self.result
