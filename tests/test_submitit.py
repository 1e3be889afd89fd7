"""Multiruns through submitit: jobs in their own processes locally, sbatch arrays on SLURM."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CONF_DIR, FAST, run_entry_point
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

submitit = pytest.importorskip("submitit", reason="the cluster extra: pip install -e '.[cluster]'")
pytest.importorskip("hydra_plugins.hydra_submitit_launcher")


@pytest.mark.slow
def test_local_jobs_multirun_completes_two_jobs(tmp_path, data_dir):
    """The sweep runs in this process (sft-train's main, without a new interpreter's seconds of
    imports); submitit runs its jobs in processes of their own."""
    import sft.train

    sweep = tmp_path / "sweep"
    argv = ["sft-train", "-m", "hydra/launcher=local_jobs", *FAST, "trainer.max_epochs=1"]
    argv += ["+trainer.limit_test_batches=2", "seed=0,1", f"hydra.sweep.dir={sweep}"]
    assert run_entry_point(sft.train.main, argv) == 0

    # each job ran in its own submitit process (not this one), and left a complete run directory
    job_logs = sorted((sweep / ".submitit").glob("*/*_0_log.out"))
    assert len(job_logs) == 2
    assert len({log.parent.name for log in job_logs} | {str(os.getpid())}) == 3
    for job, seed in (("0", 0), ("1", 1)):
        run_dir = sweep / job
        assert f"seed={seed}" in (run_dir / ".hydra" / "overrides.yaml").read_text()
        checkpoints = {p.name for p in (run_dir / "checkpoints").iterdir()}
        assert {"last.ckpt", "epoch_000.ckpt"} <= checkpoints
        run_result = json.loads((run_dir / "result.json").read_text())
        assert run_result["status"] == "completed" and run_result["epochs"] == 1
        assert "test/acc" in run_result["metrics"]

    # the console script compares the sweep's two runs from their event files
    compare = Path(sys.executable).with_name("sft-compare")
    table = subprocess.run([str(compare), str(sweep)], capture_output=True, text=True, timeout=120)
    assert table.returncode == 0, table.stderr[-2000:]
    assert "seed=0" in table.stdout and "seed=1" in table.stdout
    assert table.stdout.count("completed") == 2  # status from result.json
    assert (sweep / "compare.png").stat().st_size > 10_000


class Submitted(Exception):
    """Raised instead of calling sbatch."""


def test_slurm_ddp_sbatch_matches_the_trainer(tmp_path, monkeypatch):
    """The sbatch script of a 2-job sweep asks for nodes x devices tasks, one GPU each, which is
    what Lightning's SLURMEnvironment checks against trainer.num_nodes and trainer.devices."""
    overrides = [
        "hydra/launcher=slurm_ddp",
        "hydra.launcher.partition=gpu_long",
        "trainer=ddp",
        "trainer.devices=4",
        "trainer.num_nodes=2",
        f"hydra.sweep.dir={tmp_path}",
    ]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    launcher = instantiate(cfg.hydra.launcher)
    launcher.setup(hydra_context=None, task_function=lambda cfg: None, config=cfg)

    scripts: list[str] = []

    def submit(executor, command: str):
        scripts.append(executor._make_submission_file_text(command, "uid"))
        raise Submitted

    slurm = submitit.SlurmExecutor
    monkeypatch.setattr(slurm, "affinity", classmethod(lambda cls: 1))  # no srun here
    monkeypatch.setattr(slurm, "_submit_command", submit)
    with pytest.raises(Submitted):
        launcher.launch([["seed=0"], ["seed=1"]], initial_job_idx=0)

    sbatch = scripts[0].splitlines()
    for line in (
        "--nodes=2",
        "--ntasks-per-node=4",
        "--gpus-per-node=4",
        "--partition=gpu_long",
        "--time=240",
        "--array=0-1%2",
    ):
        assert f"#SBATCH {line}" in sbatch, scripts[0]
    assert any(line.startswith("srun ") for line in sbatch)
