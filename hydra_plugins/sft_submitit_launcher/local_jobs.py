"""hydra-submitit-launcher's LocalLauncher, with Ctrl-C that stops the sweep as sft-train's other
launchers do: each job finishes its batch and saves last.ckpt (sft's GracefulInterrupt), and the
sweep ends with the interrupt's line and status (130; SIGTERM: 143) once every job has
stopped.

Why not the plugin's LocalLauncher as it is: Ctrl-C reaches the whole process group, and with it
each job's submitit controller (`python -m submitit.local._local`, the job's parent). The
controller answers its KeyboardInterrupt by sending the job SIGINT again and SIGKILL one second
later, which kills a job still finishing its batch or writing its checkpoint. A job that did stop
in time ends by its interrupt, a BaseException submitit does not send back, so the launcher
raised submitit's UncompletedJobError traceback and the sweep exited with status 1. Here the
controllers start with SIGINT ignored, the jobs take it as Ctrl-C again, and a stopped job sends
its interrupt back as its result.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Sequence
from types import FrameType
from typing import Any

from hydra.core.utils import JobReturn

from sft.errors import StoppedJob, TrainingInterrupted, stop_of_jobs
from sft.utils.signals import signal_handlers

try:
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher
except ImportError:  # no cluster extra: Hydra imports every plugin module, for every command
    LocalLauncher = None


def _stop(signum: int, frame: FrameType | None) -> None:
    raise TrainingInterrupted(None, signum)


if LocalLauncher is not None:

    class LocalJobsLauncher(LocalLauncher):
        def __call__(self, *args: Any, **kwargs: Any) -> JobReturn | StoppedJob:
            # in the job's process, started with SIGINT ignored (launch): Ctrl-C stops it
            # again; SIGTERM (which launch hands on) stops it outside training too, where
            # submitit's own handler only logged it ("Bypassing signal SIGTERM")
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, _stop)
            try:
                return super().__call__(*args, **kwargs)
            except (KeyboardInterrupt, TrainingInterrupted) as stop:
                return StoppedJob(stop)

        def launch(
            self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
        ) -> Sequence[JobReturn]:
            import psutil  # the cluster extra's; late: Hydra imports plugin modules at start

            terminated: list[int] = []

            def to_the_controllers(signum: int, frame: FrameType | None) -> None:
                terminated.append(signum)
                for controller in psutil.Process().children():  # one per job
                    with contextlib.suppress(psutil.NoSuchProcess):
                        controller.send_signal(signum)

            # An ignored signal stays ignored in the processes started meanwhile: the
            # controllers (and the jobs, until __call__). This process has nothing to do on
            # Ctrl-C but wait for the jobs, which get it from the terminal as their process
            # group's members. SIGTERM (`kill`, `timeout`) goes on to the controllers, which
            # hand it to their jobs: it ended this process alone, and the jobs trained on.
            handlers = {signal.SIGINT: signal.SIG_IGN, signal.SIGTERM: to_the_controllers}
            with signal_handlers(handlers):
                results = super().launch(job_overrides, initial_job_idx)
            by_number = dict(enumerate(results, start=initial_job_idx))
            stop = stop_of_jobs(by_number, terminated)
            if stop is not None:
                raise stop
            return results
