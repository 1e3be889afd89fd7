"""Hydra callback: `summary.csv` and `summary.md` in a multirun's sweep directory.

One row per job, read from the jobs' `result.json` files (found anywhere under the sweep
directory, so any sweeper's job layout works: basic grid, Optuna trial numbers, ...) and from
`.not_run/` (jobs that failed before training while their directory keeps an earlier run's
record: refused because that run is in their way, or e.g. a re-run whose last.ckpt no longer
loads): job, status (completed, pruned, failed or interrupted), overrides, the optimized metric, test metrics, epochs,
wall time, error, best marker.
Refreshed after every job (a sweep that crashes keeps a partial summary) and at the end, where
failed jobs make the command exit 1 with one `error:` line.
"""

import csv
import io
import logging
import math
import re
import signal
import sys
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sft.errors import SFTError, TrainingInterrupted, report_user_errors
from sft.runs.directories import sweep_hint
from sft.runs.result import (
    COMPLETED,
    FAILED,
    INTERRUPTED,
    NOT_RUN_DIR,
    PRUNED,
    RESULT_FILE,
    SCORES_FILE,
    UNFINISHED,
    RunResult,
    command_task,
    not_run_record,
    one_line_error,
    overrides_key,
    record_file,
    run_overrides,
)
from sft.utils.config import MULTIRUN_RECORD, direction_mode
from sft.utils.config import metric_mode as named_mode
from sft.utils.io import atomic_write_text
from sft.utils.overrides import override_key
from sft.utils.signals import ctrl_c_deferred

log = logging.getLogger(__name__)

SUMMARY_CSV = "summary.csv"
SUMMARY_MD = "summary.md"
NOT_RUN = " (not run)"


def _job_sort_key(job: str) -> tuple[int, str]:
    """By job number ("3", "3 (not run)"), then the other names."""
    number = re.match(r"\d+", job)
    return (int(number.group()), job) if number else (sys.maxsize, job)


def read_results(sweep_dir: str | Path, not_run: bool = False) -> list[tuple[str, RunResult]]:
    """(job, result) for every job's record under `sweep_dir` (`record_files`; job = its
    directory there);
    with `not_run`, also for every job that failed before training while its directory keeps
    an earlier run's record (job = `<number> (not run)`)."""
    found = []
    for path, job in record_files(Path(sweep_dir), not_run):
        try:
            found.append((job, RunResult.read(path)))
        except SFTError as e:  # hand-edited: the other jobs are still summarised
            log.warning(f"{e}: left out of the summary")
    return sorted(found, key=lambda item: _job_sort_key(item[0]))


def record_files(sweep_dir: Path, not_run: bool = True) -> list[tuple[Path, str]]:
    """(file, job) for every record under `sweep_dir`: `<job>/result.json` (`scores.json` in
    an sft-eval sweep); with `not_run`, also `.not_run/<n>.json` (job `<n> (not run)`). A
    record inside a job's folder (`sft-eval hydra.run.dir=<job>/eval`) is not a job's."""
    found = sorted(
        (p for name in (RESULT_FILE, SCORES_FILE) for p in sweep_dir.rglob(name)),
        key=lambda p: len(p.parts),
    )
    jobs: set[Path] = set()
    for path in found:
        if not any(parent in jobs for parent in path.parents):
            jobs.add(path.parent)
    records = [(p, p.parent.relative_to(sweep_dir).as_posix()) for p in found if p.parent in jobs]
    if not_run:
        records += [(p, f"{p.stem}{NOT_RUN}") for p in (sweep_dir / NOT_RUN_DIR).glob("*.json")]
    return records


def metric_mode(metric: str, mode: str | None = None) -> str:
    """ "min" or "max": `mode` when given, else min for losses and max for everything else."""
    if mode is not None:
        if mode not in ("min", "max"):
            raise SFTError(
                f"hydra.callbacks.sweep_summary.mode must be min, max or null, not {mode!r}"
            )
        return mode
    return named_mode(metric)


def optimized_metric(results: list[tuple[str, RunResult]]) -> str | None:
    """The metric the sweep optimises: the jobs' `optimized_metric` (the most common one)."""
    names = [r.optimized_metric for _, r in results if r.optimized_metric]
    return max(sorted(set(names)), key=names.count) if names else None


def sweep_mode(hydra_cfg: DictConfig, mode: str | None) -> str | None:
    """`mode` (hydra.callbacks.sweep_summary.mode), else the way a sweeper that has one ranks
    (the Optuna sweeper's hydra.sweeper.direction, which a search may set otherwise than its
    metric's name says: was, summary.md's best job another than Optuna's best trial), else None
    (by the metric's name)."""
    if mode is not None:
        return mode
    try:
        direction = OmegaConf.select(hydra_cfg, "sweeper.direction")
    except OmegaConfBaseException:  # an interpolation outside the job's config
        return None
    return direction_mode(direction)


def summary_rows(results: list[tuple[str, RunResult]], mode: str | None = None) -> list[dict]:
    """The table: one dict per job, columns in display order; the best completed job marked.
    Beside the optimized metric: the test metrics, and every metric of an sft-eval job (the
    split it scored: validation's without a labelled test split)."""
    optimized = optimized_metric(results)
    test_metrics = sorted(
        {m for _, r in results for m in r.metrics if m.startswith("test/") or r.task == "eval"},
        key=lambda m: (not m.endswith("/acc"), m),
    )

    def value(result: RunResult, metric: str | None) -> float | None:
        v = result.metrics.get(metric) if metric else None
        return v if isinstance(v, int | float) and math.isfinite(v) else None

    best_job = None
    if optimized is not None:
        direction = metric_mode(optimized, mode)
        # a pruned job is not a candidate, as for Optuna's best trial: it stopped early
        scored = [
            (value(r, optimized), job)
            for job, r in results
            if r.status == COMPLETED and value(r, optimized) is not None
        ]
        if scored:
            pick = max if direction == "max" else min
            best_job = pick(scored, key=lambda s: s[0])[1]

    trained = any(r.task != "eval" for _, r in results)  # sft-eval's jobs train no epochs
    rows = []
    for job, r in results:
        row: dict[str, Any] = {"job": job, "status": r.status, "overrides": list(r.overrides)}
        if optimized is not None:
            row[optimized] = value(r, optimized)
        for metric in test_metrics:
            if metric != optimized:
                row[metric] = value(r, metric)
        if trained:
            row["epochs"] = r.epochs
        row.update(
            wall_time_s=r.wall_time_s,
            error=r.error or "",
            best="best" if job == best_job else "",
        )
        rows.append(row)
    return rows


def superseded(sweep_dir: Path, results: list[tuple[str, RunResult]]) -> set[str]:
    """The jobs whose directory's record a `(not run)` record of the same job (same directory,
    same overrides) supersedes: that job failed before training when the sweep ran again, and
    its directory keeps the earlier record. Both are listed; the job counts once, as failed.
    A directory is where its record lies now (the sweep may have moved since it was written)."""
    not_run = {
        (Path(r.output_dir).resolve(), overrides_key(r.overrides))
        for job, r in results
        if job.endswith(NOT_RUN)
    }
    return {
        job
        for job, r in results
        if not job.endswith(NOT_RUN)
        and ((sweep_dir / job).resolve(), overrides_key(r.overrides)) in not_run
    }


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    return " ".join(value) if isinstance(value, list) else value


def _csv_text(rows: list[dict]) -> str:
    out = io.StringIO()
    columns = list(rows[0]) if rows else ["job", "status"]
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_cell(v) for k, v in row.items()})
    return out.getvalue()


def _md_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return " ".join(value).replace("|", "\\|")
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value).replace("|", "\\|")


def searched_keys(sweep_dir: Path) -> set[str]:
    """The keys a sweep varies, as its multirun.yaml records them: its sweep overrides
    (`seed=0,1`, `model.lr=interval(...)`) and a search's space (`hydra.sweeper.params`)."""
    record = sweep_dir / MULTIRUN_RECORD
    if not record.is_file():
        return set()
    try:
        hydra = OmegaConf.load(record).hydra
        typed = OmegaConf.to_container(hydra.overrides.task, resolve=False)
        overrides = OverridesParser.create().parse_overrides([str(o) for o in typed])
        params = hydra.sweeper.get("params") or {}
    except (OSError, ValueError, OmegaConfBaseException, HydraException):
        return set()  # a record this cannot read: every shared override is said once
    swept = {override_key(o.get_key_element()) for o in overrides if o.is_sweep_override()}
    return swept | {override_key(str(key)) for key in params}


def _md_text(
    sweep_dir: Path,
    rows: list[dict],
    jobs: list[dict],
    metric: str | None,
    mode: str | None,
    stopped: tuple[str, str | None] | None = None,
) -> str:
    """`rows`: the table; `jobs`: the rows the counts are of (`write_summary`); `stopped`: the
    job an interrupt stopped the sweep in, and how to continue it."""
    failed = sum(job["status"] == FAILED for job in jobs)
    pruned = sum(job["status"] == PRUNED for job in jobs)
    interrupted = sum(job["status"] == INTERRUPTED for job in jobs)
    lines = [
        "# Sweep summary",
        "",
        f"`{sweep_dir}`: {len(jobs)} job{'' if len(jobs) == 1 else 's'}, "
        f"{len(jobs) - failed - pruned - interrupted} completed, "
        + (f"{pruned} pruned, " if pruned else "")
        + (f"{interrupted} interrupted, " if interrupted else "")
        + f"{failed} failed"
        + (
            " (listed as well: the earlier record of each job that did not run)."
            if len(jobs) < len(rows)
            else "."
        ),
    ]
    if stopped is not None:
        job, hint = stopped
        lines.append(
            f"The sweep was interrupted in job {job}: jobs it had not started are not listed"
            + (f"; {hint}" if hint else ".")
        )
    # the table shows what differs between jobs; what they share is said once, but for the
    # keys the sweep varies (a search whose trials so far drew one value)
    first = rows[0]["overrides"] if rows else []
    varied = searched_keys(Path(sweep_dir))
    common = [
        o
        for o in first
        if all(o in row["overrides"] for row in rows) and override_key(o) not in varied
    ]
    if len(rows) > 1 and common:
        lines.append(f"Overrides of every job: `{' '.join(common)}`")
        rows = [
            {**row, "overrides": [o for o in row["overrides"] if o not in common]} for row in rows
        ]
    best = next((row for row in rows if row["best"]), None)
    if best is not None and metric is not None:
        lines.append(
            f"Best: job {best['job']} ({metric} = {_md_cell(best[metric])}, "
            f"{metric_mode(metric, mode)}imised)."
        )
    elif unranked_line := unranked(jobs, metric):
        lines.append(unranked_line)
    if rows:
        columns = list(rows[0])
        lines += [
            "",
            "| " + " | ".join(columns) + " |",
            "|" + "---|" * len(columns),
            *("| " + " | ".join(_md_cell(row[c]) for c in columns) + " |" for row in rows),
        ]
    return "\n".join(lines) + "\n"


def unranked(jobs: list[dict], metric: str | None) -> str | None:
    """Why no job is the best of a sweep of completed jobs, when none is; else None."""
    if metric is None or any(job["best"] for job in jobs):
        return None
    if not any(job["status"] == COMPLETED for job in jobs):
        return None
    return (
        f"No completed job logged a finite {metric}: no job is ranked (did training end before "
        "the first validation? see trainer.val_check_interval, trainer.max_steps)."
    )


def write_summary(
    sweep_dir: str | Path, mode: str | None = None, stopped: tuple[str, str | None] | None = None
) -> list[dict]:
    """Write `summary.csv` and `summary.md` in `sweep_dir` (atomically); return the rows of
    the jobs, one each: a job that did not run again is its `(not run)` row, not also the
    earlier record its directory keeps (which the files list). `stopped`: the job an interrupt
    stopped the sweep in, and how to continue it."""
    sweep_dir = Path(sweep_dir)
    results = read_results(sweep_dir, not_run=True)
    rows = summary_rows(results, mode)
    earlier = superseded(sweep_dir, results)
    jobs = [row for row in rows if row["job"] not in earlier]
    atomic_write_text(sweep_dir / SUMMARY_CSV, _csv_text(rows))
    atomic_write_text(
        sweep_dir / SUMMARY_MD,
        _md_text(sweep_dir, rows, jobs, optimized_metric(results), mode, stopped),
    )
    return jobs


def mtime_ns(path: Path) -> int | None:
    """When `path` was last written; None if it is not there."""
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


def record_times(sweep_dir: Path) -> dict[Path, int]:
    """Each record under `sweep_dir` and when it was last written (its file's mtime, which
    the file system sets: no clock of a remote job's machine is compared)."""
    times = {path: mtime_ns(path) for path, _ in record_files(sweep_dir)}
    return {path: time for path, time in times.items() if time is not None}  # not removed


def write_summary_of_stopped_sweep(hydra_cfg: DictConfig, hint: str | None) -> None:
    """For a job that stops its sweep (Ctrl-C, SIGTERM): the summary its SweepSummary callback
    writes after every job, with the `hint` on how to continue the sweep. Hydra calls
    callbacks only for a job that returns or raises an Exception, so summary.md was left from
    the job before (or never written)."""
    target = f"{SweepSummary.__module__}.{SweepSummary.__qualname__}"
    for callback in (hydra_cfg.get("callbacks") or {}).values():
        if callback.get("_target_") != target:
            continue
        try:
            stopped = (str(hydra_cfg.job.num), hint)
            write_summary(hydra_cfg.sweep.dir, sweep_mode(hydra_cfg, callback.get("mode")), stopped)
        except (OSError, SFTError) as e:  # the interrupt is what the job reports
            log.warning(f"the sweep summary could not be written: {e}")
        else:
            log.info(f"Sweep summary: {Path(hydra_cfg.sweep.dir) / SUMMARY_MD}")


def stop_of_a_sweep_job(hydra_cfg: DictConfig, stop: BaseException) -> BaseException:
    """A sweep's job stopped by a signal (`stop`: KeyboardInterrupt, TrainingInterrupted):
    summary.md written with how to continue the sweep, and what the job raises: `stop`, or for
    a stop that said nothing (Ctrl-C outside fit and test, a bare "interrupted (Ctrl-C)" at the
    console: the training code loading, the data or model being set up) a line with that
    hint."""
    hint = sweep_hint()
    with ctrl_c_deferred("the sweep summary"):
        write_summary_of_stopped_sweep(hydra_cfg, hint)
    if isinstance(stop, KeyboardInterrupt):
        signum, name = signal.SIGINT, "SIGINT (Ctrl-C)"
    elif isinstance(stop, TrainingInterrupted) and stop.message is None:
        signum = stop.code - 128
        name = signal.Signals(signum).name
    else:
        return stop
    return TrainingInterrupted(f"interrupted by {name}" + (f"; {hint}" if hint else ""), signum)


class SweepSummary(Callback):
    """Configured under `hydra.callbacks` (conf/hydra/default.yaml).

    mode: how the best job is picked on the optimized metric: "max", "min", or null (min when
    the metric's name says loss, else max).
    """

    def __init__(self, mode: str | None = None) -> None:
        # checked here, as Hydra makes its callbacks: one line, not Hydra's report of a failed
        # instantiation
        report_user_errors(lambda: metric_mode("", mode))
        self.mode = mode
        self.records_before: dict[Path, int] = {}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # the records the sweep folder holds already: their failures are not this run's (an
        # Optuna study continued never runs a failed trial again, so it failed every later run)
        self.records_before = record_times(Path(config.hydra.sweep.dir))

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        job_dir = Path(config.hydra.runtime.output_dir)
        record = None
        if job_return.status == JobStatus.FAILED:
            record = self.unrecorded_failure(config, job_dir)
        if record is not None:
            # the task failed before sft.jobs.train.train_job could record it (e.g. another task
            # function, or a Ray worker lost)
            try:
                job_return.return_value  # noqa: B018 (a failed job's return_value raises its error)
            except Exception as exc:
                record.parent.mkdir(parents=True, exist_ok=True)
                RunResult(
                    status=FAILED,
                    task=command_task(config.hydra),
                    output_dir=str(job_dir),
                    overrides=run_overrides(job_return.overrides or []),
                    error=one_line_error(exc),
                ).write(record)
        write_summary(config.hydra.sweep.dir, sweep_mode(config.hydra, self.mode))

    def unrecorded_failure(self, config: DictConfig, job_dir: Path) -> Path | None:
        """Where a failed job that left no record of this run is recorded: its result.json if it
        has none; `.not_run/<n>.json` beside an earlier run's record left as it was (a Ray worker
        lost in a sweep run again: the summary and the exit status count it); None when the job
        recorded its failure."""
        record = job_dir / record_file(command_task(config.hydra))
        if not record.exists():
            return record
        not_run = not_run_record(config.hydra.sweep.dir, config.hydra.job.num)
        before = self.records_before
        unchanged = record in before and before[record] == mtime_ns(record)
        if unchanged and before.get(not_run) == mtime_ns(not_run):
            return not_run
        return None

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = write_summary(sweep_dir, sweep_mode(config.hydra, self.mode))
        failed = [row["job"] for row in rows if row["status"] in UNFINISHED]
        before = self.records_before
        rewritten = {
            job for path, job in record_files(sweep_dir) if mtime_ns(path) != before.get(path)
        }
        failed_now = [job for job in failed if job in rewritten]
        log.info(f"Sweep summary: {sweep_dir / SUMMARY_MD}")
        if unranked_line := unranked(rows, optimized_metric(read_results(sweep_dir))):
            log.warning(unranked_line)
        if failed_now:
            print(
                f"error: {len(failed_now)} of {len(rows)} jobs {_ended(rows, failed_now)}: see "
                f"{sweep_dir / SUMMARY_MD}",
                file=sys.stderr,
            )
            # SystemExit passes through Hydra's callback guard (it only catches Exception)
            raise SystemExit(1)
        if failed:
            log.warning(
                f"{len(failed)} of {len(rows)} jobs {_ended(rows, failed)} in earlier runs of "
                f"this sweep (jobs {', '.join(failed)}): see {sweep_dir / SUMMARY_MD}"
            )


def _ended(rows: list[dict], jobs: list[str]) -> str:
    """How the unfinished `jobs` ended: "failed", "were interrupted" or both."""
    statuses = {row["status"] for row in rows if row["job"] in jobs}
    if statuses == {INTERRUPTED}:
        return "were interrupted"
    return "failed or were interrupted" if INTERRUPTED in statuses else "failed"
