"""Sweeps that scale out: Ray jobs in parallel with their own devices, Optuna trials in parallel
against one study, jobs requeued at a time limit that resume exactly, DDP jobs in a multirun."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
from conftest import FAST, run_entry_point, run_module
from optuna.trial import TrialState

from sft.callbacks.optuna_pruning import open_storage
from sft.jobs.train import train
from sft.runs.sweep_summary import read_results

TESTS_DIR = Path(__file__).parent
# a local Ray instance of 2 CPUs and 2 (pretend) GPUs; small object store: CI machines are small
RAY = [
    "hydra/launcher=ray",
    "+hydra.launcher.init.num_cpus=2",
    "+hydra.launcher.init.num_gpus=2",
    "+hydra.launcher.init.object_store_memory=80000000",
    "+hydra.launcher.init.include_dashboard=false",
    "hydra.launcher.cpus_per_job=1",
]
ONE_EPOCH = [*FAST, "trainer.max_epochs=1", "test=false"]


def rendezvous(folder: Path) -> list[str]:
    """Jobs that run at once wait for each other at fit start (helpers.faults.Rendezvous), so
    their overlap does not hang on Ray's worker start-up skew; jobs run one after the other
    wait out the timeout and still do not overlap."""
    return [
        "+callbacks.meet._target_=helpers.faults.Rendezvous",
        f"+callbacks.meet.folder={folder}",
        "+callbacks.meet.peers=2",
        "+callbacks.meet.timeout=60",
    ]


def with_helpers() -> dict[str, str]:
    """The environment of a sweep whose jobs import the tests' helpers (fault callbacks)."""
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]),
    }


@pytest.mark.slow
def test_ray_runs_jobs_in_parallel_each_on_its_own_gpu(tmp_path, data_dir):
    """3 jobs, 2 at a time (1 of the 2 CPUs and 1 of the 2 GPUs each): every job has its
    directory and row, a failing job is recorded and the others finish, jobs overlap in time,
    and jobs running at once were given different GPUs."""
    sweep = tmp_path / "sweep"
    result = run_module(
        "sft.train",
        "-m",
        *RAY,
        "hydra.launcher.gpus_per_job=1",
        *ONE_EPOCH,
        "data.batch_size=32,16,0",  # batch size 0: a user error, that job fails
        *rendezvous(tmp_path / "met"),  # the two that train meet: they overlap whatever the skew
        f"hydra.sweep.dir={sweep}",
        env=with_helpers(),
    )
    assert result.returncode == 1, result.stderr[-3000:]  # a failed job fails the sweep
    assert "error: 1 of 3 jobs failed" in result.stderr
    results = dict(read_results(sweep))
    assert sorted(results) == ["0", "1", "2"]
    assert [results[j].status for j in "01"] == ["completed"] * 2
    assert results["2"].status == "failed" and "data.batch_size" in results["2"].error
    summary = (sweep / "summary.csv").read_text().splitlines()
    assert len(summary) == 1 + 3 and sum(",completed," in row for row in summary) == 2
    for job in "01":
        assert list((sweep / job / "tensorboard").glob("events.out.tfevents.*"))

    spans = sorted((r.started_at, r.ended_at, job) for job, r in results.items())
    overlapping = [(a, b) for i, a in enumerate(spans) for b in spans[i + 1 :] if b[0] < a[1]]
    assert overlapping, f"no two jobs ran at once: {spans}"
    devices = {job: gpus_of(sweep / job) for job in results}
    assert set(devices.values()) <= {"0", "1"}
    for a, b in overlapping:
        assert devices[a[2]] != devices[b[2]], f"jobs {a[2]} and {b[2]} ran at once on one GPU"


def gpus_of(job_dir: Path) -> str:
    """The CUDA_VISIBLE_DEVICES a job's run log records."""
    (log,) = job_dir.glob("*.log")
    line = next(x for x in log.read_text().splitlines() if "CUDA_VISIBLE_DEVICES=" in x)
    return line.split("CUDA_VISIBLE_DEVICES=")[1].strip("'")


# an Optuna search on the small CNN: 2 trials at a time on Ray (the journal storage default)
OPTUNA = [
    "hydra/sweeper=sft_optuna",
    "hydra.sweeper.study_name=parallel",
    "hydra.sweeper.n_jobs=2",
    "model.lr_head=tag(log,interval(1e-3,1e-1))",
]


@pytest.mark.slow
def test_optuna_trials_run_two_at_a_time_against_one_study(tmp_path, data_dir):
    """4 trials, 2 at a time on Ray, against one study (the journal file): the first 2 run at
    once, the second batch's trials are numbered on, in job directories of their numbers (Ray is
    given its jobs from number 2), and no trial repeats another's parameters. A search run again
    resumes its study the same way (the same sweeper and storage; its launcher is given the jobs
    from their trial numbers, as here): test_optuna_sweeper's
    test_rerun_resumes_the_study_with_new_trials_in_new_job_dirs."""
    sweep = tmp_path / "sweep"
    args = ["sft.train", "-m", *RAY, *ONE_EPOCH, *OPTUNA, f"hydra.sweep.dir={sweep}"]
    # (was flaky: a tiny trial could end before the other's worker had started)
    result = run_module(
        *args, *rendezvous(tmp_path / "met"), "hydra.sweeper.n_trials=4", env=with_helpers()
    )
    assert result.returncode == 0, result.stderr[-3000:]
    storage = f"journal://{sweep / 'optuna.journal'}"
    study = optuna.load_study(study_name="parallel", storage=open_storage(storage))
    assert [t.number for t in study.trials] == list(range(4))
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    assert len({t.params["model.lr_head"] for t in study.trials}) == 4, "a trial was repeated"
    results = dict(read_results(sweep))
    assert sorted(results) == [str(n) for n in range(4)]
    first = [results[job] for job in "01"]
    assert max(r.started_at for r in first) < min(r.ended_at for r in first), (
        "the two trials did not run at once"
    )


EXACT = [
    *FAST,
    "trainer.deterministic=true",
    "trainer.max_epochs=2",
    "callbacks.step_checkpoint.every_n_train_steps=2",
    "test=false",
]


@pytest.mark.slow
def test_a_job_signalled_for_its_time_limit_is_requeued_and_resumes_exactly(
    train_cfg, tmp_path, monkeypatch, data_dir
):
    """A submitit job (local executor, as on SLURM) gets USR2, submitit's time-limit and
    preemption signal, at step 7: it saves last.ckpt, submitit requeues it, the requeued job
    continues in its directory and ends with the weights of an uninterrupted run. The sweep
    runs in this process (sft-train's main); the job, signalled and requeued, in its own."""
    import sft.train

    sweep = tmp_path / "sweep"
    marker = tmp_path / "signalled"
    signal = [
        "+callbacks.signal._target_=helpers.faults.SignalOnceAtStep",
        "+callbacks.signal.step=7",
        "+callbacks.signal.signal=SIGUSR2",
        f"+callbacks.signal.marker={marker}",
    ]
    monkeypatch.setenv("PYTHONPATH", with_helpers()["PYTHONPATH"])  # the job's, for the callback
    argv = ["sft-train", "-m", "hydra/launcher=local_jobs", *EXACT, *signal, "seed=0"]
    assert run_entry_point(sft.train.main, [*argv, f"hydra.sweep.dir={sweep}"]) == 0
    assert marker.exists()
    job = sweep / "0"
    (log,) = job.glob("*.log")
    text = log.read_text()
    assert "handing SIGUSR2 to submitit" in text
    # signalled as the batch after step 7 began: saved when it ended, at step 8
    assert "(a requeued or re-run job): continuing from" in text and "step 8)" in text
    assert [r.status for _, r in read_results(sweep)] == ["completed"]

    train(train_cfg(*EXACT[len(FAST) :], run_dir=tmp_path / "reference"))
    want = torch.load(tmp_path / "reference" / "checkpoints" / "last.ckpt", weights_only=True)
    got = torch.load(job / "checkpoints" / "last.ckpt", weights_only=True)
    assert got["global_step"] == want["global_step"]
    for key, tensor in want["state_dict"].items():
        torch.testing.assert_close(got["state_dict"][key], tensor, rtol=0, atol=1e-6, msg=key)


def signalled_sweep(
    command: list[str], markers: list[Path], signum: int, to_group: bool
) -> subprocess.CompletedProcess:
    """Run `command` (a sweep whose jobs write `markers` mid-training) in a process group of its
    own, as a terminal runs a command, with SIGINT's default action (a process started in the
    background ignores it from birth); once every marker is there, send `signum` to the group,
    as Ctrl-C in the terminal does (`to_group`), or to the sweep's main process alone (`kill`)."""
    env = {**with_helpers(), "HYDRA_FULL_ERROR": "0", "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    ) as sweep:
        deadline = time.monotonic() + 300
        while (
            not all(m.exists() for m in markers)
            and sweep.poll() is None
            and time.monotonic() < deadline
        ):
            time.sleep(0.05)
        if sweep.poll() is None:
            (os.killpg if to_group else os.kill)(sweep.pid, signum)
        stdout, stderr = sweep.communicate(timeout=300)
    return subprocess.CompletedProcess(command, sweep.returncode, stdout, stderr)


@pytest.mark.slow
@pytest.mark.parametrize(
    "launcher, signum, to_group",
    [
        ("local_jobs", signal.SIGINT, True),
        ("local_jobs", signal.SIGTERM, False),
        ("ray", signal.SIGINT, True),
        ("ray", signal.SIGTERM, False),
    ],
    ids=["local_jobs-ctrl_c", "local_jobs-kill", "ray-ctrl_c", "ray-kill"],
)
def test_a_signalled_sweep_stops_every_job_with_its_checkpoint(
    launcher, signum, to_group, tmp_path, data_dir
):
    """Ctrl-C, or SIGTERM to the sweep's main process alone (`kill`, `timeout`), while two jobs
    train, each with a checkpoint that takes 2 s to write. Each job saves last.ckpt and its
    record, and the sweep ends after them with the interrupt's line (one, no traceback) and
    status. Was, local_jobs: submitit's controllers SIGKILLed their jobs one second after
    Ctrl-C, mid-save (no result.json), and the sweep ended at once in "interrupted (Ctrl-C)"
    and the controllers' tracebacks; `kill` ended the main process alone, and the jobs trained
    on unwatched. Ray: its workers, outside the terminal's process group, never got the
    Ctrl-C and Ray's shutdown killed them unsaved; `kill` met Ray's own handler, which aborted
    (status -6)."""
    sweep = tmp_path / "sweep"
    launch = ["hydra/launcher=local_jobs"] if launcher == "local_jobs" else RAY
    command = [sys.executable, "-m", "sft.train", "-m", *launch, *FAST]
    command += [
        "trainer.max_epochs=20",
        "test=false",
        *rendezvous(tmp_path / "met"),
        "+callbacks.slow._target_=helpers.faults.SlowSteps",
        "+callbacks.slow.seconds=0.05",
        "+callbacks.slow_save._target_=helpers.faults.SlowSave",
        "+callbacks.slow_save.seconds=2",
        "+callbacks.slow_save.step=3",
        # each job says when it has trained 3 steps
        "+callbacks.mark._target_=helpers.faults.MarkAtStep",
        f"+callbacks.mark.marker={tmp_path}/reached_${{hydra:job.num}}",
        "+callbacks.mark.step=3",
        "seed=0,1",
        f"hydra.sweep.dir={sweep}",
    ]
    markers = [tmp_path / f"reached_{job}" for job in (0, 1)]
    stopped = signalled_sweep(command, markers, signum, to_group)
    name = "SIGINT" if launcher == "ray" else signal.Signals(signum).name  # Ray: ray.cancel's
    assert stopped.returncode == 128 + signal.Signals[name], stopped.stderr[-3000:]
    assert "Traceback" not in stopped.stderr, stopped.stderr[-3000:]
    line = stopped.stderr.strip().splitlines()[-1]
    assert re.match(rf"interrupted by {name} at epoch \d+ step \d+: saved ", line), line
    assert "continue the sweep (each job from its last.ckpt) with: sft-train -m " in line
    results = dict(read_results(sweep))
    assert [results[job].status for job in "01"] == ["interrupted"] * 2
    for job in "01":
        saved = torch.load(sweep / job / "checkpoints" / "last.ckpt", weights_only=True)
        assert saved["global_step"] == results[job].steps > 0


def test_a_ddp_rank_of_a_multirun_job_runs_that_job(monkeypatch):
    """The command line Lightning's launcher gives rank 1 (the sweep's, `-m` and all) becomes its
    job's, as a single run in the job's directory (quoted for Hydra as it is: json's quoting
    read back `jos\\u00e9`), also for a sweep started by hydra.mode=MULTIRUN; elsewhere (rank 0,
    after the job) it is as given (None)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from sft.utils.ddp_ranks import JOB_ENV, rank_command, ranks_join

    monkeypatch.delenv(JOB_ENV, raising=False)
    monkeypatch.setenv("MASTER_PORT", "1234")
    launched = ["hydra.mode=MULTIRUN", "seed=1,2", "trainer=ddp", 'hydra.run.dir="outputs/x"']
    launched += ["hydra.job.name=train_ddp_process_1", "hydra.output_subdir=null"]
    job = ["--config-dir", "/my/conf", "seed=2", "trainer=ddp", "hydra.job.num=1"]
    monkeypatch.setenv("LOCAL_RANK", "1")
    with ranks_join("/sweeps/josé's/1", job):
        command = rank_command(launched)
        assert command[:7] == [
            *job,
            "hydra.job.name=train_ddp_process_1",
            "hydra.output_subdir=null",
        ]
        assert command[8:] == ["hydra.mode=RUN"]
        run_dir = OverridesParser.create().parse_override(command[7])
        assert run_dir.key_or_group == "hydra.run.dir" and run_dir.value() == "/sweeps/josé's/1"
        monkeypatch.setenv("LOCAL_RANK", "0")
        assert rank_command(launched) is None  # the job itself
        os.environ["MASTER_PORT"] = "5678"  # the launcher's, for this job's ranks
    assert JOB_ENV not in os.environ and os.environ["MASTER_PORT"] == "1234"
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert rank_command(launched) is None


@pytest.mark.slow
def test_ddp_jobs_in_a_multirun_get_one_directory_each(tmp_path, data_dir):
    """trainer=ddp_sim with the subprocess DDP launcher: the ranks Lightning starts join their
    job instead of re-running the sweep (which made a second sweep directory of the next
    second's timestamp, when the sweep directory was the default, and had rank 1 of job 0 run
    job 1's settings next)."""
    result = run_module(
        "sft.train",
        "-m",
        *ONE_EPOCH,
        "trainer=ddp_sim",
        "trainer.strategy=ddp",
        "seed=1,2",
        "name=grid",
        env={**os.environ, "SFT_OUTPUT_DIR": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "train" / "grid" / "multiruns").iterdir()
    results = dict(read_results(sweep))
    assert sorted(results) == ["0", "1"] and all(r.status == "completed" for r in results.values())
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith(".")) == [
        "0",
        "1",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train"]
    assert result.stdout.count("Launching 2 jobs locally") == 1
    for job, seed in (("0", 1), ("1", 2)):  # each job's rank 1 ran as that job, in its folder
        log = (sweep / job / "train.log").read_text()
        assert f"[rank: 1] Seed set to {seed}" in log, log


def test_a_csv_logger_copied_to_another_process_continues_the_runs_metrics(tmp_path):
    """The copy of a CSV logger that another process unpickles (a ddp_spawn rank) keeps the
    rows and columns of the run's metrics.csv (Lightning's writer deletes the file when made,
    and rewrites it with only the columns it has seen itself). A logger made anew writes a new
    file, as Lightning's does (a failed run's folder run again)."""
    import pickle

    from sft.loggers import CSVLogger

    logger = CSVLogger(tmp_path, name="csv", version="")
    copy_for_the_test = pickle.dumps(logger)
    logger.log_metrics({"val/acc": 0.5}, step=3)
    logger.save()
    test = pickle.loads(copy_for_the_test)
    test.log_metrics({"test/acc": 0.25}, step=4)
    test.save()
    metrics = tmp_path / "csv" / "metrics.csv"
    assert metrics.read_text().splitlines() == ["step,test/acc,val/acc", "3,,0.5", "4,0.25,"]
    again = CSVLogger(tmp_path, name="csv", version="")
    again.log_metrics({"val/acc": 0.75}, step=1)
    again.save()
    assert metrics.read_text().splitlines() == ["step,val/acc", "1,0.75"]


@pytest.mark.slow
def test_a_ddp_spawn_run_records_its_progress_and_csv_metrics(tmp_path, monkeypatch):
    """trainer=ddp_sim logger=csv: the test, in new processes, ended in a traceback ("dict
    contains fields not in fieldnames") after deleting the fit's rows of metrics.csv, and the
    run was recorded as failed. Without a last.ckpt (callbacks=none, as the label-efficiency
    studies run) its result.json said 0 epochs and 0 steps. sft-train runs in this process (its
    ranks and the test's are spawned all the same)."""
    import sft.train

    monkeypatch.setenv("SFT_OUTPUT_DIR", str(tmp_path))
    run = tmp_path / "run"
    argv = [
        "sft-train",
        *FAST,
        "data.samples_per_class=8",
        "data.val_size=64",
        "+trainer.limit_test_batches=2",
        "trainer.max_epochs=2",
        "trainer=ddp_sim",
        "logger=csv",
        "callbacks=none",
        f"hydra.run.dir={run}",
    ]
    assert run_entry_point(sft.train.main, argv) == 0
    rows = (run / "csv" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert {"val/acc", "train/loss_epoch", "test/acc"} <= set(header)
    filled = [dict(zip(header, r.split(","), strict=True)) for r in rows[1:]]
    assert sum(bool(r["val/acc"]) for r in filled) == 2
    assert sum(bool(r["test/acc"]) for r in filled) == 1
    record = json.loads((run / "result.json").read_text())
    # 80 images, 40 a rank: one batch of 32 an epoch
    assert (record["status"], record["epochs"], record["steps"]) == ("completed", 2, 2)
    assert filled[-1]["step"] == "2"  # the test's, logged after the fit's last step


@pytest.mark.slow
def test_gradual_unfreezing_under_ddp_names_the_strategy_it_needs(tmp_path, monkeypatch):
    """callbacks=backbone_unfreeze under trainer=ddp_sim: DDP's "parameters that were not used
    in producing the loss" as the ranks' traceback; now one line naming the strategy, with
    which the run trains (in this process: its ranks are spawned all the same)."""
    import sft.train

    args = [
        *FAST,
        "data.samples_per_class=8",
        "data.val_size=64",
        "trainer.max_epochs=2",
        "test=false",
        "trainer=ddp_sim",
        "callbacks=[default,backbone_unfreeze]",
    ]
    env = {**os.environ, "SFT_OUTPUT_DIR": str(tmp_path)}
    refused = run_module("sft.train", *args, f"hydra.run.dir={tmp_path / 'a'}", env=env)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1] == (
        "error: callbacks=backbone_unfreeze under DDP: the backbone trains from epoch 1 only, and "
        "DDP expects every weight that may train to have a gradient at each step unless told: "
        "set trainer.strategy=ddp_spawn_find_unused_parameters_true"
    )
    assert "Traceback" not in refused.stderr
    strategy = "trainer.strategy=ddp_spawn_find_unused_parameters_true"
    monkeypatch.setenv("SFT_OUTPUT_DIR", str(tmp_path))
    told = ["sft-train", *args, strategy, f"hydra.run.dir={tmp_path / 'b'}"]
    assert run_entry_point(sft.train.main, told) == 0


@pytest.mark.slow
def test_sigterm_to_local_jobs_in_their_test_stops_them(tmp_path, data_dir):
    """SIGTERM to a local_jobs sweep while its jobs test (outside training, where no
    GracefulInterrupt handles it): submitit's own handler in each job only logged it, the jobs
    ran to their end and the sweep exited 0 as if nothing had come."""
    sweep = tmp_path / "sweep"
    command = [sys.executable, "-m", "sft.train", "-m", "hydra/launcher=local_jobs", *FAST]
    command += [
        "trainer.max_epochs=1",
        "+callbacks.mark._target_=helpers.faults.MarkAtStep",
        f"+callbacks.mark.marker={tmp_path}/testing_${{hydra:job.num}}",
        "+callbacks.mark.hook=on_test_batch_start",
        # a test long enough for the signal to come while both jobs still test (was flaky:
        # a job could end its test first)
        "+callbacks.slow._target_=helpers.faults.SlowSteps",
        "+callbacks.slow.seconds=0.05",
        "+callbacks.slow.hook=on_test_batch_end",
        "seed=0,1",
        f"hydra.sweep.dir={sweep}",
    ]
    markers = [tmp_path / f"testing_{job}" for job in (0, 1)]
    stopped = signalled_sweep(command, markers, signal.SIGTERM, to_group=False)
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    line = stopped.stderr.strip().splitlines()[-1]
    # the job's own line, as for Ctrl-C in the test: the checkpoint to test, the sweep's command
    assert line.startswith(
        "interrupted by SIGTERM during the test (training had finished): test with sft-eval "
        f"ckpt_path={sweep}/"
    ), line
    assert "; continue the sweep (each job from its last.ckpt) with: sft-train -m " in line
    assert [r.status for _, r in read_results(sweep)] == ["interrupted"] * 2
