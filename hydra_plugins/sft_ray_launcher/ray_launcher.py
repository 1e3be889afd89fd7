"""Run a multirun's jobs as Ray tasks: each job is `hydra.core.utils.run_job` in a Ray worker,
with the resources it declares; the sweep waits for all of them.

Job directories, `result.json`, the sweep summary and TensorBoard logs are those of the basic
launcher: the job runs the same task function through Hydra's `run_job`, which calls the sweep's
callbacks (sft.runs.sweep_summary) in the worker. A job whose worker dies (killed, out of
memory) is recorded as failed here and the others go on.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import (
    JobReturn,
    JobStatus,
    configure_log,
    filter_overrides,
    run_job,
    setup_globals,
)
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from sft.errors import StoppedJob, TrainingInterrupted, stop_of_jobs
from sft.utils.signals import is_second_ctrl_c, signal_handlers

log = logging.getLogger(__name__)


def _run_job(
    hydra_context: HydraContext,
    sweep_config: DictConfig,
    task_function: TaskFunction,
    singleton_state: dict[Any, Any],
) -> JobReturn | StoppedJob:
    """In the Ray worker: Hydra's state as the driver has it, then the job; a job a signal
    stopped (the driver's, through ray.cancel) returns its interrupt."""
    setup_globals()
    Singleton.set_state(singleton_state)
    try:
        return run_job(
            hydra_context=hydra_context,
            task_function=task_function,
            config=sweep_config,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )
    except (KeyboardInterrupt, TrainingInterrupted) as stop:
        return StoppedJob(stop)


@contextmanager
def signals_stop_jobs(refs: list[Any]) -> Iterator[list[int]]:
    """While the driver waits for the jobs: SIGINT or SIGTERM asks every job to stop
    (`ray.cancel`, which a job takes as Ctrl-C: it finishes its batch and saves last.ckpt),
    a second Ctrl-C asks again (a job then stops at once), and the driver waits on; yields the
    signals received. Ray's workers are not in the terminal's process group: Ctrl-C reached
    none of them and Ray's shutdown killed them unsaved, without a record; SIGTERM met Ray's
    own handler, which aborted the driver."""
    import ray

    received: list[int] = []
    received_at = 0.0

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal received_at
        first = received[0] if received else None
        received.append(signum)
        if first is not None and not is_second_ctrl_c(signum, first, received_at):
            return  # the first delivered twice, or a SIGTERM after it
        name = signal.Signals(signum).name
        if first is None:
            received_at = time.monotonic()
            log.warning(f"received {name}: every job stops after its batch and saves last.ckpt")
        else:
            log.warning(f"received {name} again: every job stops at once")
        for ref in refs:
            ray.cancel(ref)  # a finished job's: nothing

    with signal_handlers({signal.SIGINT: handler, signal.SIGTERM: handler}):
        yield received


class RayLauncher(Launcher):
    def __init__(
        self,
        address: str | None = None,
        cpus_per_job: float = 1,
        gpus_per_job: float = 0,
        max_retries: int = 0,
        init: dict[str, Any] | None = None,
    ) -> None:
        self.address = address
        self.resources = {"num_cpus": cpus_per_job, "num_gpus": gpus_per_job}
        self.max_retries = max_retries
        self.init = dict(init or {})
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        import ray  # late: importing Ray takes seconds, and only this launcher needs it

        assert self.config is not None and self.hydra_context is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if not ray.is_initialized():
            if self.address is None:
                # A local instance's workers inherit this. Ray nices workers to 15 so that its
                # driver stays responsive; here the workers are the sweep's jobs and the driver
                # only waits, so niced jobs would yield the CPU to anything else on the machine.
                os.environ.setdefault("RAY_worker_niceness", "0")
            init = OmegaConf.to_container(OmegaConf.create(self.init), resolve=True)
            ray.init(address=self.address, **init)
        log.info(
            f"Ray launcher: {len(job_overrides)} jobs, {self.resources} each, on "
            f"{ray.cluster_resources()}; sweep output dir: {sweep_dir}"
        )
        remote = ray.remote(max_retries=self.max_retries, **self.resources)(_run_job)
        configs: list[tuple[DictConfig, list[str]]] = []
        refs: list[Any] = []
        with signals_stop_jobs(refs) as received:
            for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
                if received:  # a stop came while the jobs were submitted: no more of them
                    break
                log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
                sweep_config = self.hydra_context.config_loader.load_sweep_config(
                    self.config, list(overrides)
                )
                with open_dict(sweep_config):
                    sweep_config.hydra.job.id = f"ray_{idx}"
                    sweep_config.hydra.job.num = idx
                configs.append((sweep_config, list(overrides)))
                refs.append(
                    remote.remote(
                        self.hydra_context, sweep_config, self.task_function, Singleton.get_state()
                    )
                )
            pending = list(refs)
            while pending:  # in steps, so that the signal handler runs while it waits
                _, pending = ray.wait(pending, num_returns=len(pending), timeout=1.0)
        results: dict[int, JobReturn | StoppedJob] = {}  # by job number
        for (sweep_config, overrides), ref in zip(configs, refs, strict=True):
            num = int(sweep_config.hydra.job.num)
            try:
                results[num] = ray.get(ref)
            except ray.exceptions.TaskCancelledError as exc:
                if not received:
                    results[num] = self._lost_job(sweep_config, overrides, exc)
                # else a job the stop cancelled before it started: not run, not recorded
            except ray.exceptions.RayError as exc:  # the job ended outside run_job
                results[num] = self._lost_job(sweep_config, overrides, exc)
        stop = stop_of_jobs(results, received)
        if stop is not None:
            # Ray's workers' last log lines reach this console now, not after the stop's line
            ray.shutdown()
            raise stop
        return list(results.values())

    def _lost_job(
        self, sweep_config: DictConfig, overrides: list[str], exc: Exception
    ) -> JobReturn:
        """A job Ray could not run to its end (its worker died, or it failed before Hydra's
        run_job): recorded as failed by the sweep's callbacks (result.json, the summary), as the
        worker would have; returned without a value, as sft-train returns a failed job, so the
        sweeper goes on with the other jobs."""
        reason = " ".join(str(exc).split())[:300]
        log.error(
            f"job {sweep_config.hydra.job.num} failed in Ray ({type(exc).__name__}): {reason}"
        )
        output_dir = Path(str(sweep_config.hydra.sweep.dir)) / str(sweep_config.hydra.sweep.subdir)
        with open_dict(sweep_config):
            sweep_config.hydra.runtime.output_dir = str(output_dir.resolve())
        hydra_cfg = OmegaConf.create({"hydra": sweep_config.hydra})
        failed = JobReturn(overrides=overrides, hydra_cfg=hydra_cfg, status=JobStatus.FAILED)
        failed.return_value = exc
        self.hydra_context.callbacks.on_job_end(config=sweep_config, job_return=failed)
        result = JobReturn(overrides=overrides, hydra_cfg=hydra_cfg, status=JobStatus.COMPLETED)
        result.return_value = None
        return result
