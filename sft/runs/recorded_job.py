"""How a command's job ends, for sft-train and sft-eval alike: its record (result.json,
scores.json), and in a multirun a failing job that leaves the sweep going (its summary counts
it, and the sweep exits 1 at the end) while Ctrl-C or a signal stops the sweep."""

import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning_utilities.core.rank_zero import rank_zero_only

from sft.errors import TrainingInterrupted, find_user_error, report_user_errors
from sft.runs.result import RunRecorder, RunResult, one_line_error
from sft.runs.sweep_summary import stop_of_a_sweep_job
from sft.utils.logs import error_to_log_files, log_to_files
from sft.utils.signals import ctrl_c_deferred

log = logging.getLogger(__name__)


def run_recorded(
    job: Callable[[], Mapping[str, Any] | RunResult], recorder: RunRecorder
) -> dict[str, Any] | None:
    """Run `job` and record how it ended: completed with the metrics it returns (a RunResult it
    returns is a record that stands as it is: a finished sweep job run again), or failed or
    interrupted. The metrics recorded; a single run's user error is one `error:` line (exit
    status 1); a failing multirun job returns None, so the sweep goes on."""

    def recorded() -> dict[str, Any]:
        try:
            outcome = job()
        except BaseException as exc:
            stopping = isinstance(exc, KeyboardInterrupt | TrainingInterrupted)
            with ctrl_c_deferred("the run's record") if stopping else contextlib.nullcontext():
                recorder.failed(exc)
            raise
        if isinstance(outcome, RunResult):
            return outcome.metrics
        return recorder.completed(outcome).metrics

    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        try:
            return report_user_errors(recorded, logged=error_to_log_files)
        except Exception as exc:  # a bug, Hydra prints its traceback: so does the log file
            log_to_files(log, logging.ERROR, "the run failed", exc_info=exc)
            raise
    try:
        return recorded()
    except Exception as exc:
        if find_user_error(exc) is None:
            log.exception(f"Job {hydra_cfg.job.num} failed")  # the traceback, in the job's log
        else:
            # (a completed run's record that could not be written: the run has no error of its own)
            log.error(f"error: {recorder.result.error or one_line_error(exc)}")
        return None
    except (KeyboardInterrupt, TrainingInterrupted) as stop:  # the sweep stops
        if getattr(rank_zero_only, "rank", 0) == 0:  # once (a submitit DDP job's tasks all run it)
            said = stop_of_a_sweep_job(hydra_cfg, stop)
            if said is not stop:
                raise said from None
        raise
