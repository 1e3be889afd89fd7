"""The ranks Lightning's subprocess DDP launcher starts for a multirun job.

The launcher starts each rank > 0 by running the command line again with
`hydra.run.dir=<run dir> hydra.job.name=train_ddp_process_<n> hydra.output_subdir=null`
(lightning.fabric.strategies.launchers.subprocess_script). In a multirun (`-m`) that ran the
whole sweep again in every rank: a second sweep directory (of a new timestamp), and a rank that
joined its job with the next job's settings. Each multirun job tells its ranks what they join
(an environment variable they inherit), and a rank's command line becomes that job's, as a
single run in the job's directory.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from sft.utils.config import hydra_quoted

JOB_ENV = "SFT_DDP_JOB"
# what the launcher adds for a rank, kept (its hydra.run.dir is replaced by the job's directory)
LAUNCHER_SETTINGS = ("hydra.job.name=", "hydra.output_subdir=")
# what Lightning's launcher sets in the job's process for its ranks to meet (a port of its own)
LAUNCHER_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


@contextmanager
def ranks_join(run_dir: str, arguments: Sequence[str]) -> Iterator[None]:
    """Around a multirun job's training: what its DDP ranks run (`arguments`, as a single run in
    `run_dir`; `resume=<run_dir>` among them where the job continues its last.ckpt). After it,
    the environment is as before: the next job's ranks meet on a port of their own, and a later
    run of the process is not this job."""
    with launcher_environment_restored():
        os.environ[JOB_ENV] = json.dumps({"run_dir": run_dir, "arguments": list(arguments)})
        yield


@contextmanager
def launcher_environment_restored(also: Sequence[str] = ()) -> Iterator[None]:
    """The DDP launcher's variables (and a multirun job's, and those named in `also`) as they
    were before the block: a later run of this process, or a process it starts, meets on a
    free port of its own rather than the block's run's."""
    before = {name: os.environ.get(name) for name in (JOB_ENV, *LAUNCHER_ENV, *also)}
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# where launchers give a process its rank: Lightning's (LOCAL_RANK, NODE_RANK for a run started
# by hand on each node), torchrun's (RANK, GROUP_RANK), SLURM's
RANK_ENV = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID")


def is_rank_process() -> bool:
    """Whether this process is a DDP rank other than the first (of the run, or of its node): it
    runs in the directory of the run's first rank, which that rank holds (sft.runs.lock)."""
    return any(os.environ.get(name, "0") != "0" for name in RANK_ENV)


def is_job_rank() -> bool:
    """Whether this process is a DDP rank > 0 that Lightning started from a multirun job."""
    return JOB_ENV in os.environ and os.environ.get("LOCAL_RANK", "0") != "0"


def rank_command(argv: Sequence[str]) -> list[str] | None:
    """In a DDP rank > 0 that Lightning started from a multirun job (within `ranks_join`): that
    job's arguments as a single run in its directory, for the `argv` Lightning gave it (the
    sweep's); None in every other process."""
    if not is_job_rank():
        return None
    job = json.loads(os.environ[JOB_ENV])
    launcher = [arg for arg in argv if arg.startswith(LAUNCHER_SETTINGS)]
    # hydra.mode=RUN: also where the sweep was started by hydra.mode=MULTIRUN (a config's too)
    run = [f"hydra.run.dir={hydra_quoted(job['run_dir'])}", "hydra.mode=RUN"]
    return [*job["arguments"], *launcher, *run]
