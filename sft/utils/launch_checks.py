"""Hydra run settings and multirun launchers checked before the run folder is made: settings sft's
runs do not work with (paths.output_dir, hydra.job.chdir, ...), Ray jobs that could never start,
SLURM job shapes sbatch cannot take. Each raises OverrideMistake."""

import importlib.util
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.override_parser.types import Override
from omegaconf import DictConfig, ListConfig, OmegaConf

from sft.utils.overrides import SEARCH_SPACE, OverrideMistake

# what sizes a slurm_ddp job: its launcher's keys, which read the trainer's by default
SLURM_SHAPE = {
    "hydra.launcher.nodes": "trainer.num_nodes",
    "hydra.launcher.tasks_per_node": "trainer.devices",
    "hydra.launcher.gpus_per_node": "trainer.devices",
}


def check_run_settings(parsed: Sequence[Override], cfg: DictConfig, multirun: bool) -> None:
    """OverrideMistake for Hydra settings sft's runs do not work with, each of which went wrong
    without a word or with a traceback."""
    if any(o.key_or_group == "paths.output_dir" for o in parsed):
        # (was: checkpoints and TensorBoard there, the log and record in Hydra's folder)
        raise OverrideMistake(
            "paths.output_dir is the run's folder, which Hydra makes: set hydra.run.dir "
            "(hydra.sweep.dir with -m) instead"
        )
    recorded = [
        o.input_line for o in parsed if o.key_or_group.lstrip("+~").startswith("hydra.runtime.")
    ]
    if recorded:
        # (was: ignored without a word: Hydra sets hydra.runtime as it starts the run)
        raise OverrideMistake(
            f"{recorded[0]}: hydra.runtime is what Hydra records of the run it starts, not a "
            "setting: set hydra.run.dir (hydra.sweep.dir with -m) for the run's folder"
        )
    if OmegaConf.select(cfg, "hydra.job.chdir") is True:
        # (was: the checkout's paths, data and caches then resolved against the run's folder)
        raise OverrideMistake(
            "hydra.job.chdir=true: sft runs in the folder it is started from, where relative "
            "paths mean what they say; the run's folder is paths.output_dir"
        )
    file_handler = OmegaConf.select(cfg, "hydra.job_logging.handlers.file", default=None)
    # (`root: null`, hydra/job_logging=none: Hydra sets nothing up, so it reads no handler)
    sets_up = OmegaConf.select(cfg, "hydra.job_logging.root", default=None) is not None
    if sets_up and file_handler is not None and "class" not in file_handler:
        choice = OmegaConf.select(cfg, "hydra.runtime.choices", default={}).get("hydra/job_logging")
        # (was: logging's "Unable to configure handler 'file'" traceback)
        raise OverrideMistake(
            f"hydra/job_logging={choice} sets up no log file, to which sft adds the run's log: "
            "use hydra/job_logging=none for no job logging at all (no log file)"
        )
    swept = OmegaConf.select(cfg, SEARCH_SPACE, default=None)
    if swept and not multirun:
        # (was: one run of the config's values; a search without -m is refused the same way)
        raise OverrideMistake(
            f"{SEARCH_SPACE} sets a sweep ({', '.join(swept)}), which runs as a multirun: add -m"
        )


def check_launcher(cfg: DictConfig, parsed: Sequence[Override] = ()) -> None:
    """OverrideMistake for a multirun launcher that cannot start here, before the sweep
    directory is made (was: a traceback from inside the launcher, after it), or a SLURM job
    shape sbatch cannot take."""
    launcher = (OmegaConf.select(cfg, "hydra.runtime.choices", default={}) or {}).get(
        "hydra/launcher"
    )
    if launcher == "ray" and importlib.util.find_spec("ray") is None:
        raise OverrideMistake(
            "hydra/launcher=ray runs the jobs as Ray tasks, and Ray is not installed: "
            "pip install -e '.[cluster]'"
        )
    if launcher == "ray":
        check_ray_jobs(cfg)
    if launcher != "slurm_ddp":
        return
    # its job shape reads trainer=ddp's keys, unless the command sets it itself
    # (hydra.launcher.nodes=1 trainer=gpu: one-GPU jobs)
    for key in ("hydra.launcher.nodes", "hydra.launcher.tasks_per_node"):
        if OmegaConf.select(cfg, key, throw_on_resolution_failure=False) is None:
            raise OverrideMistake(
                f"hydra/launcher=slurm_ddp sizes each job by trainer=ddp's trainer.num_nodes and "
                f"trainer.devices, which this trainer config lacks: add trainer=ddp (or set "
                f"{key})"
            )
    # submitit sizes the sweep's job array once, from the first job's config (was: a job of
    # trainer.devices=4 got the first job's tasks, without a word)
    shape = {*SLURM_SHAPE, *SLURM_SHAPE.values(), "trainer"}
    for override in parsed:
        if override.is_sweep_override() and override.key_or_group.lstrip("+~") in shape:
            raise OverrideMistake(
                f"{override.input_line.lstrip('+')}: hydra/launcher=slurm_ddp gives every job "
                "of a sweep the same nodes and tasks (one job array): run one sweep per job "
                "shape"
            )
    written = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    for key, setting in SLURM_SHAPE.items():
        value = OmegaConf.select(cfg, key, throw_on_resolution_failure=False)
        gpus = key.endswith("gpus_per_node")
        # CPU nodes: gpus_per_node=0, or null (no --gpus-per-node: GPUs asked for otherwise)
        least = 0 if gpus else 1
        if (isinstance(value, int) and not isinstance(value, bool) and value >= least) or (
            gpus and value is None
        ):
            continue
        name = key.rpartition(".")[2]
        given = setting if written.get(name) == f"${{{setting}}}" else key
        raise OverrideMistake(
            f"{given}={'null' if value is None else value}: hydra/launcher=slurm_ddp needs a "
            f"whole number >= {least} there, "
            f"sbatch's {name.replace('_', ' ')} (Lightning's -1, every GPU, is no count for "
            f"SLURM): e.g. {given}={max(least, 4) if setting == 'trainer.devices' else 2}"
        )
    if shutil.which("sbatch") is None:
        raise OverrideMistake(
            "hydra/launcher=slurm_ddp submits the jobs with SLURM's sbatch, which this machine "
            "does not have: run the sweep where SLURM is (a login node), or run its jobs here "
            "with hydra/launcher=local_jobs"
        )


# Lightning's DDP strategies that start their ranks by running the process's command line again
SPAWNING = ("spawn", "fork", "notebook")


# what `ray start` leaves while its cluster runs; ray.init() without an address joins it
RAY_CURRENT_CLUSTER = "/tmp/ray/ray_current_cluster"


def check_ray_jobs(cfg: DictConfig) -> None:
    """OverrideMistake for Ray jobs that could never run: more CPUs or GPUs than the instance
    the sweep starts on this machine has (was: Ray's autoscaler line every 35 s, forever), and
    subprocess DDP (was: Ray's worker died on sft-train's arguments, a WorkerCrashedError)."""
    strategy = OmegaConf.select(cfg, "trainer.strategy", default="auto")
    devices = OmegaConf.select(cfg, "trainer.devices", default=1)
    nodes = OmegaConf.select(cfg, "trainer.num_nodes", default=1)
    if (
        isinstance(strategy, str)
        and strategy.startswith("ddp")
        and not any(way in strategy for way in SPAWNING)
        and (_several(devices) or _several(nodes))
    ):
        raise OverrideMistake(
            f"trainer.strategy={strategy} under hydra/launcher=ray: Lightning's {strategy} starts "
            "its ranks by running the process's command line again, which in a Ray worker is "
            "Ray's, not sft-train: set trainer.strategy=ddp_spawn"
        )
    if (
        OmegaConf.select(cfg, "hydra.launcher.address") is not None
        or os.environ.get("RAY_ADDRESS")
        or Path(RAY_CURRENT_CLUSTER).exists()  # ray.init() joins the one `ray start` runs
    ):
        return  # a cluster's nodes: Ray's autoscaler may add what a job asks for
    init = OmegaConf.select(cfg, "hydra.launcher.init", default=None) or {}
    for kind, key in (("CPUs", "cpus_per_job"), ("GPUs", "gpus_per_job")):
        asked = OmegaConf.select(cfg, f"hydra.launcher.{key}", default=0)
        if not isinstance(asked, int | float) or asked <= 0:
            continue
        count = f"num_{kind[:3].lower()}s"
        here = init.get(count)
        if here is None:  # as Ray counts them (not the CPUs this process may run on)
            here = (os.cpu_count() or 1) if kind == "CPUs" else _visible_gpus()
        if isinstance(here, int | float) and asked > here:
            raise OverrideMistake(
                f"hydra.launcher.{key}={asked:g}: the Ray instance this sweep starts on this "
                f"machine has {here} {kind}, so no job could start: ask for at most {here} "
                f"(or set +hydra.launcher.init.{count}=, or join a cluster with "
                "hydra.launcher.address=)"
            )


def _several(count: Any) -> bool:
    """Whether Lightning's `devices` or `num_nodes` value asks for more than one (-1: all;
    "auto" is not counted here)."""
    if isinstance(count, list | ListConfig):
        return len(count) > 1
    text = str(count).strip()
    return text.lstrip("-").isdigit() and int(text) not in (0, 1)


def _visible_gpus() -> int:
    """The CUDA GPUs a Ray instance started here would count."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip()])
    import torch  # late: seconds to import, for a GPU job only

    return torch.cuda.device_count()
