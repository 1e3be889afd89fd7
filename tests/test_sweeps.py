"""Multirun sweeps: every job writes result.json, the sweep dir gets summary.csv / summary.md,
a failing job is listed (not dropped) and makes the sweep exit 1 after the other jobs ran."""

import csv
import json
import logging
import time
from pathlib import Path

import pytest
import torch
from conftest import CONF_DIR, FAST, run_entry_point
from hydra.core.global_hydra import GlobalHydra
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import RunMode
from inference_checkpoints import image_checkpoint
from omegaconf import OmegaConf

from sft import eval as eval_module
from sft.runs.result import COMPLETED, FAILED, INTERRUPTED, RunResult
from sft.runs.sweep_summary import (
    SweepSummary,
    read_results,
    summary_rows,
    sweep_mode,
    write_summary,
)
from sft.train import main

# A few batches of everything: the sweep tests check bookkeeping, not learning.
TINY = [
    *FAST,
    "data.samples_per_class=4",
    "data.batch_size=16",
    "data.eval_batch_size=64",
    "data.val_size=64",
    "+trainer.limit_test_batches=2",
    "callbacks.early_stopping=null",
]


def run_sft_train(capsys, *args: str) -> tuple[int, str]:
    """`sft-train *args` in this process: (exit code, stderr)."""
    return run_entry_point(main, ["sft-train", *args]), capsys.readouterr().err


@pytest.fixture(scope="module")
def grid_sweep(tmp_path_factory, data_dir):
    """4 jobs; a backbone of width -1 cannot be built (no config check knows small_cnn's
    width): job 3 fails (a bug, so its traceback goes to its log), the three others train for 2
    epochs."""
    sweep_dir = tmp_path_factory.mktemp("sweep")
    argv = [
        "sft-train",
        "-m",
        *TINY,
        "trainer.max_epochs=2",
        "model.backbone.width=8,4,6,-1",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    return sweep_dir, run_entry_point(main, argv)


def test_grid_sweep_summary_lists_every_job_and_marks_the_best(grid_sweep):
    sweep_dir, exit_code = grid_sweep
    assert exit_code == 1  # one job failed: the sweep reports it after running all four

    rows = list(csv.DictReader((sweep_dir / "summary.csv").open()))
    assert [r["job"] for r in rows] == ["0", "1", "2", "3"]
    assert [r["status"] for r in rows] == ["completed"] * 3 + ["failed"]
    assert rows[3]["overrides"].endswith("model.backbone.width=-1")
    assert "negative dimension" in rows[3]["error"]
    for row in rows[:3]:
        assert 0.0 <= float(row["val/acc_best"]) <= 1.0
        assert 0.0 <= float(row["test/acc"]) <= 1.0
        assert row["epochs"] == "2" and float(row["wall_time_s"]) > 0 and row["error"] == ""
    assert rows[3]["val/acc_best"] == "" and rows[3]["test/acc"] == ""

    best = max(rows[:3], key=lambda r: float(r["val/acc_best"]))
    assert [r["best"] for r in rows].count("best") == 1 and best["best"] == "best"

    md = (sweep_dir / "summary.md").read_text()
    assert "4 jobs, 3 completed, 1 failed" in md
    assert f"Best: job {best['job']} (val/acc_best" in md
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + 4 and "| failed |" in table[4] and "negative dimension" in table[4]


def test_each_job_directory_is_self_contained(grid_sweep):
    sweep_dir, _ = grid_sweep
    for job in ("0", "1", "2"):
        job_dir = sweep_dir / job
        result = json.loads((job_dir / "result.json").read_text())
        assert result["status"] == "completed" and result["error"] is None
        assert result["output_dir"] == str(job_dir.resolve())
        assert result["optimized_metric"] == "val/acc_best"
        assert set(result["metrics"]) >= {"val/acc_best", "val/acc", "test/acc", "test/loss"}
        assert "model.backbone.width=" in " ".join(result["overrides"])
        # as typed (were: Hydra's basic sweeper's `~model.backbone=null` and `=False`)
        assert result["overrides"][0] == "~model.backbone"
        assert "trainer.enable_progress_bar=false" in result["overrides"]
        assert (job_dir / ".hydra" / "config.yaml").is_file()
        assert (job_dir / "config_resolved.yaml").is_file()
        assert (job_dir / "checkpoints" / "last.ckpt").is_file()
        assert any((job_dir / "tensorboard").glob("events.out.tfevents.*"))
        assert (job_dir / "train.log").is_file()

    failed = json.loads((sweep_dir / "3" / "result.json").read_text())
    assert failed["status"] == "failed" and failed["metrics"] == {}
    assert failed["error"].startswith("RuntimeError: ") and "\n" not in failed["error"]
    # a bug keeps its traceback, in the failed job's own log
    assert "Traceback" in (sweep_dir / "3" / "train.log").read_text()


def test_single_run_user_error_is_one_line_and_recorded(monkeypatch, capsys, tmp_path):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    missing = tmp_path / "nowhere"
    code, err = run_sft_train(
        capsys,
        *FAST,
        f"paths.data_dir={missing}",
        "data.download=false",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert code == 1
    assert err.strip().splitlines()[-1].startswith("error: ") and "Traceback" not in err
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["status"] == "failed" and str(missing) in result["error"]
    assert not (tmp_path / "summary.md").exists()


def test_a_sweep_over_checkpoints_scores_each_and_goes_on_past_a_failing_job(
    tmp_path, tmp_path_factory, data_dir, capsys
):
    """`sft-eval -m ckpt_path=a,b`: each job records its scores, a job whose checkpoint is not
    there fails alone, and the summary lists them (was: the first failing job stopped the sweep
    with exit status 1, and a sweep's summary said "0 jobs")."""
    checkpoint = image_checkpoint(tmp_path_factory.getbasetemp() / "inference_ckpts")
    missing = tmp_path / "missing.ckpt"
    sweep_dir = tmp_path / "sweep"
    argv = [
        "sft-eval",
        "-m",
        f"ckpt_path={missing},{checkpoint}",
        "trainer.accelerator=cpu",
        "+trainer.limit_test_batches=2",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    assert run_entry_point(eval_module.main, argv) == 1
    err = capsys.readouterr().err
    assert "error: 1 of 2 jobs failed" in err
    rows = list(csv.DictReader((sweep_dir / "summary.csv").open()))
    assert [(r["job"], r["status"]) for r in rows] == [("0", "failed"), ("1", "completed")]
    assert "no such file" in rows[0]["error"]
    scored = json.loads((sweep_dir / "1" / "scores.json").read_text())
    assert scored["task"] == "eval" and (sweep_dir / "1" / "predictions.csv").is_file()
    # the epochs and steps the scored last.ckpt trained: one epoch (was: 0 epochs, no steps)
    steps = torch.load(checkpoint, weights_only=True, map_location="cpu")["global_step"]
    assert steps > 0 and (scored["epochs"], scored["steps"]) == (1, steps)
    assert float(rows[1]["test/acc"]) == pytest.approx(scored["metrics"]["test/acc"])
    assert "epochs" not in rows[0]  # an evaluation trains none
    # no training run's record: an eval folder stays one (sft-compare, resume, a sweep run
    # again and sft-eval's own retry into a failed job's folder read result.json as training's)
    assert not list(sweep_dir.rglob("result.json"))
    retry = ["sft-eval", f"ckpt_path={checkpoint}", "trainer.accelerator=cpu"]
    retry += ["+trainer.limit_test_batches=2", f"hydra.run.dir={sweep_dir / '0'}"]
    assert run_entry_point(eval_module.main, retry) == 0
    # another sweep into its folder is refused before a job runs, as a training sweep's
    capsys.readouterr()
    other = [*argv[:2], f"ckpt_path={tmp_path / 'other.ckpt'},{checkpoint}", *argv[3:]]
    assert run_entry_point(eval_module.main, other) == 1
    assert f"error: hydra.sweep.dir={sweep_dir} holds " in capsys.readouterr().err
    # a training sweep into it: refused before a job runs (its jobs' records are no training's)
    train_sweep = ["sft-train", "-m", *TINY, "seed=1,2", f"hydra.sweep.dir={sweep_dir}"]
    assert run_entry_point(main, train_sweep) == 1
    assert "holds a sweep of another command" in capsys.readouterr().err


def test_a_record_inside_a_jobs_folder_is_no_job_of_the_sweep(tmp_path):
    """`sft-eval hydra.run.dir=<sweep>/0/eval`: its scores.json was listed as a job of the
    training sweep (and its failure failed the sweep)."""
    job = tmp_path / "0"
    RunResult(status=COMPLETED, output_dir=str(job), overrides=["seed=1"]).write(
        job / "result.json"
    )
    nested = RunResult(status=FAILED, task="eval", output_dir=str(job / "eval"))
    nested.write(job / "eval" / "scores.json")
    assert [job for job, _ in read_results(tmp_path)] == ["0"]


def write_result(path: Path, status: str, metric: float | None = None, **metrics: float) -> None:
    values = dict(metrics)
    if metric is not None:
        values["val/loss"] = metric
    RunResult(
        status=status,
        error=None if status == "completed" else "RuntimeError: boom",
        overrides=[f"job={path.name}"],
        metrics=values,
        optimized_metric="val/loss",
        epochs=1,
        wall_time_s=1.0,
        output_dir=str(path),
    ).write()


def test_a_searched_key_stays_in_the_table_when_every_trial_drew_one_value(tmp_path):
    """A search whose two trials so far drew the same learning rate: the summary said the rate
    was one of the "Overrides of every job" and left it out of the table, as if not searched."""
    for job, seed in (("0", 0), ("1", 1)):
        RunResult(
            status="completed",
            overrides=["model.lr_head=0.01", f"seed={seed}", "trainer.max_epochs=1"],
            metrics={"val/acc": 0.5},
            output_dir=str(tmp_path / job),
        ).write()
    OmegaConf.save(
        {
            "hydra": {
                "overrides": {"task": ["seed=0,1", "trainer.max_epochs=1"]},
                "sweeper": {"params": {"model.lr_head": "tag(log, interval(1e-3, 1e-1))"}},
            }
        },
        tmp_path / "multirun.yaml",
    )
    write_summary(tmp_path)
    md = (tmp_path / "summary.md").read_text()
    assert "Overrides of every job: `trainer.max_epochs=1`" in md
    table = [line for line in md.splitlines() if line.startswith("| 0 ")]
    assert "model.lr_head=0.01 seed=0" in table[0]


def test_summary_reads_any_job_layout_and_minimises_losses(tmp_path):
    """Job dirs as another sweeper names them (trial numbers with gaps, nested dirs)."""
    write_result(tmp_path / "10", "completed", 0.3, **{"test/acc": 0.7})
    write_result(tmp_path / "2", "completed", 0.2, **{"test/acc": 0.6, "test/f1": 0.5})
    write_result(tmp_path / "7", "failed")
    write_result(tmp_path / "lr=0.1" / "seed=1", "completed", 0.1)

    rows = write_summary(tmp_path)
    assert [r["job"] for r in rows] == ["2", "7", "10", "lr=0.1/seed=1"]
    assert [r["best"] for r in rows] == ["", "", "", "best"]  # val/loss: lowest wins
    assert list(rows[0])[:6] == ["job", "status", "overrides", "val/loss", "test/acc", "test/f1"]
    assert rows[1]["status"] == "failed" and rows[1]["error"] == "RuntimeError: boom"
    assert rows[3]["test/acc"] is None

    assert [r["best"] for r in summary_rows(read_results(tmp_path), mode="max")] == [
        "",
        "",
        "best",
        "",
    ]
    # an Optuna search set to maximise a loss: its summary ranks as the search did (was: by the
    # metric's name, so summary.md's best was not Optuna's best trial); the summary's own mode
    # first
    search = OmegaConf.create({"sweeper": {"direction": "maximize"}})
    assert sweep_mode(search, None) == "max" and sweep_mode(search, "min") == "min"
    assert sweep_mode(OmegaConf.create({"sweeper": {}}), None) is None  # a grid: by the name
    assert len(list(csv.DictReader((tmp_path / "summary.csv").open()))) == 4
    assert (
        "Best: job lr=0.1/seed=1 (val/loss = 0.1000, minimised)"
        in (tmp_path / "summary.md").read_text()
    )


def test_resume_in_a_multirun_is_refused(tmp_path, capsys):
    """`-m ... resume=auto` logged "no run ... has last.ckpt: starting fresh" in every job and
    trained from scratch (was: silently ignored)."""
    sweep = tmp_path / "sweep"
    code, err = run_sft_train(capsys, "-m", *TINY, "resume=auto", f"hydra.sweep.dir={sweep}")
    # one line before anything is made (was: a failed job 0/ and `error: 1 of 1 jobs failed`,
    # the reason only in summary.md)
    assert code == 1
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith("error: resume=auto continues a single run, not the jobs of a multirun (-m)")
    )
    assert not sweep.exists()


def test_a_sweep_rerun_in_its_directory_keeps_each_jobs_first_record(tmp_path, capsys):
    """The same grid re-run into its hydra.sweep.dir continues its jobs, each job's config of
    the re-run beside the first (was: written over .hydra/ of the first run); another grid
    there is refused before any job runs (was: each job refused alone after Hydra had written
    its config over the other job's, and the sweep ended with status 0)."""
    sweep = tmp_path / "sweep"
    grid = ["-m", *TINY, "trainer.max_epochs=1", f"hydra.sweep.dir={sweep}"]
    assert run_sft_train(capsys, *grid, "seed=1,2")[0] == 0
    first = {p: p.read_bytes() for p in sweep.glob("*/.hydra/*.yaml")}
    assert len(first) == 6

    assert run_sft_train(capsys, *grid, "seed=1,2")[0] == 0
    assert {p: p.read_bytes() for p in sweep.glob("*/.hydra/*.yaml")} == first
    assert len(list(sweep.glob("*/.hydra/resumed_*/overrides.yaml"))) == 2
    # the same overrides in another order are the same jobs (was: refused as another sweep)
    time.sleep(1)  # each re-run's config goes to .hydra/resumed_<second>/
    reordered = ["-m", "seed=1,2", "trainer.max_epochs=1", *TINY, f"hydra.sweep.dir={sweep}"]
    assert run_sft_train(capsys, *reordered)[0] == 0
    assert len(list(sweep.glob("*/.hydra/resumed_*/overrides.yaml"))) == 4

    # a grid with glob(...) is split as Hydra's sweeper splits it (its parser needs the loader)
    code, err = run_sft_train(capsys, *grid, "seed=1,2", "trainer=glob(cp*)")
    assert code == 1 and "this sweep's job 0 would run" in err.strip().splitlines()[-1]
    code, err = run_sft_train(capsys, *grid, "seed=1,3")
    assert code == 1
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith(
            f"error: hydra.sweep.dir={sweep} holds another sweep: its job 1 ran seed=2, this sweep's "
            "job 1 would run seed=3 (the rest alike); "
        )
    )
    assert {p: p.read_bytes() for p in sweep.glob("*/.hydra/*.yaml")} == first
    assert len(list(sweep.glob("*/.hydra/resumed_*/overrides.yaml"))) == 4
    # an Optuna search into the grid's directory (was: each trial refused alone, after the
    # study, its journal and multirun.yaml were written there)
    multirun = (sweep / "multirun.yaml").read_bytes()
    search = ["hydra/sweeper=sft_optuna", "model.lr_head=interval(1e-3,0.3)"]
    code, err = run_sft_train(capsys, *grid, *search, "hydra.sweeper.n_trials=1")
    assert code == 1
    assert err.strip().splitlines()[-1] == (
        f"error: hydra.sweep.dir={sweep} holds a sweep of another sweeper (BasicSweeper; this "
        "one is SFTOptunaSweeper): give this sweep a new hydra.sweep.dir"
    )
    assert (sweep / "multirun.yaml").read_bytes() == multirun
    assert not list(sweep.glob("optuna*")) and not (sweep / ".not_run").exists()


def test_a_job_directory_holding_another_jobs_record_is_never_written_over(tmp_path, capsys):
    """Two jobs of a sweep without checkpoints into one directory (hydra.sweep.subdir=same): the
    second is refused and the first's result.json stays (was: replaced by the second's, since
    only a last.ckpt was checked against the job's overrides)."""
    sweep = tmp_path / "sweep"
    job = sweep / "same"
    # as the studies run (experiment/_fixed_steps.yaml): no checkpoints, only the record
    args = [
        *(
            f"callbacks.{c}=null"
            for c in ("model_checkpoint", "last_checkpoint", "step_checkpoint")
        ),
        "+trainer.enable_checkpointing=false",
        "seed=1,2",
    ]
    code, err = run_sft_train(
        capsys,
        "-m",
        *TINY,
        "trainer.max_epochs=1",
        *args,
        f"hydra.sweep.dir={sweep}",
        "hydra.sweep.subdir=same",
    )
    record = RunResult.read(job / "result.json")
    assert record.status == "completed"
    assert "seed=1" in record.overrides and "seed=2" not in record.overrides
    assert f"{job} holds a run of another job" in (job / "train.log").read_text()
    # and the sweep says so (was: exit 0, "1 job, 1 completed, 0 failed")
    assert code == 1
    assert err.strip().splitlines()[-1] == f"error: 1 of 2 jobs failed: see {sweep / 'summary.md'}"
    rows = list(csv.DictReader((sweep / "summary.csv").open()))
    assert [(r["job"], r["status"]) for r in rows] == [
        ("1 (not run)", "failed"),
        ("same", "completed"),
    ]
    assert rows[0]["error"].startswith(f"{job} holds a run of another job")


def test_a_sweep_run_again_keeps_its_finished_jobs_without_last_checkpoint(tmp_path, capsys):
    """A sweep re-run into its directory whose jobs completed with only Lightning's own
    checkpoints (a study's save none): no last.ckpt to continue from, so each job trained again
    from the start (hours for a study stopped near its end); their records now stand."""
    sweep = tmp_path / "sweep"
    no_sft_checkpoints = [
        f"callbacks.{c}=null" for c in ("model_checkpoint", "last_checkpoint", "step_checkpoint")
    ]
    # Lightning's own checkpoint callback, which runs without a checkpoint callback of their own
    # have only when they ask for it
    lightnings = "trainer.enable_checkpointing=true"
    grid = ["-m", *TINY, "trainer.max_epochs=1", *no_sft_checkpoints, lightnings, "seed=1,2"]
    code, err = run_sft_train(capsys, *grid, f"hydra.sweep.dir={sweep}")
    assert code == 0, err[-2000:]
    written = {p: p.read_bytes() for p in sweep.glob("*/**/*") if p.is_file() and p.suffix}
    written = {p: b for p, b in written.items() if ".hydra" not in p.parts and p.suffix != ".log"}
    assert any(p.suffix == ".ckpt" for p in written) and any("tfevents" in p.name for p in written)
    record = RunResult.read(sweep / "1" / "result.json")
    record.status, record.error = "interrupted", "interrupted by SIGINT"  # it did not finish
    record.write()  # and runs again
    code, err = run_sft_train(capsys, *grid, f"hydra.sweep.dir={sweep}")
    assert code == 0, err[-2000:]
    job_0 = {p: b for p, b in written.items() if p.is_relative_to(sweep / "0")}
    assert {p: p.read_bytes() for p in job_0} == job_0
    assert not list((sweep / "0").rglob(".replaced_logs"))
    assert RunResult.read(sweep / "1" / "result.json").started_at > record.started_at
    assert [r.status for _, r in read_results(sweep)] == ["completed", "completed"]
    assert (
        f"{sweep / '0'} holds this job's completed run (result.json, "
        in (sweep / "0" / "train.log").read_text()
    )
    # a last.ckpt from before the job completed (a signal's save, the job then continued to its
    # end saving none): the record stands too (was: continued from it at every run again)
    steps = RunResult.read(sweep / "0" / "result.json").steps
    stale = sweep / "0" / "checkpoints" / "last.ckpt"
    stale.parent.mkdir(exist_ok=True)
    torch.save({"global_step": steps - 1, "epoch": 0}, stale)
    code, err = run_sft_train(capsys, *grid, f"hydra.sweep.dir={sweep}")
    assert code == 0, err[-2000:]
    assert {p: p.read_bytes() for p in job_0} == job_0
    assert (
        f"its checkpoints/last.ckpt (step {steps - 1}) is from before the run completed"
        in (sweep / "0" / "train.log").read_text()
    )


def test_jobs_of_other_names_share_the_sweep_directory(tmp_path, capsys):
    """`-m experiment=a,b` (each sets its own `name`) in the default sweep directory, which
    holds ${name}: each job made a sweep directory of its own name, the summary of the sweep's
    listed no job, and the command exited 0 with every job failed."""
    logs = tmp_path / "josé's"  # quoted for Hydra as it is (json's quoting: jos\\u00e9)
    code, err = run_sft_train(
        capsys, "-m", *TINY, "name=one,two", "model.lr_head=-1", f'paths.log_dir="{logs}"'
    )
    assert [p.name for p in tmp_path.iterdir()] == [logs.name]
    (sweep,) = (logs / "train").glob("*/multiruns/*")
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir() and p.name[0] != ".") == ["0", "1"]
    assert code == 1
    assert err.strip().splitlines()[-1] == f"error: 2 of 2 jobs failed: see {sweep / 'summary.md'}"
    assert "2 jobs, 0 completed, 2 failed" in (sweep / "summary.md").read_text()


def test_a_grid_sweep_without_validation_completes(tmp_path, capsys):
    """A grid's jobs return optimized_metric to no one: a job that trains without validation
    (so without val/acc_best) completes (a check for Optuna's searches failed it)."""
    sweep = tmp_path / "sweep"
    code, err = run_sft_train(
        capsys,
        "-m",
        *TINY,
        "trainer.max_epochs=1",
        "+trainer.limit_val_batches=0",
        "seed=1,2",
        f"hydra.sweep.dir={sweep}",
    )
    assert code == 0, err[-2000:]
    assert [r.status for _, r in read_results(sweep)] == ["completed", "completed"]
    # but nothing ranks them, and the summary says why (was: silent)
    said = "No completed job logged a finite val/acc_best: no job is ranked (did training end"
    assert said in (sweep / "summary.md").read_text()


def test_a_job_that_did_not_run_is_summarised_from_the_sweep_directory(tmp_path):
    """A job that failed before training while its directory keeps an earlier run's record
    records itself in <sweep>/.not_run/ (written by the job's process, so any launcher works):
    the summary lists it by its number and counts each job once, as it ended last; readers of
    the jobs' own records (study reports) do not get it."""

    def record(status, job_dir, seed, error=None):
        return RunResult(
            status,
            error,
            overrides=[f"seed={seed}"],
            metrics={"val/acc_best": 0.5} if status == "completed" else {},
            output_dir=str(tmp_path / job_dir),
        )

    record("completed", "2", seed=2).write()
    record("completed", "10", seed=10).write()
    # written before the sweep was moved here: its record names the old place
    moved = record("completed", "4", seed=4)
    moved.output_dir = "/old/place/sweep/4"
    moved.write(tmp_path / "4" / "result.json")
    # job 3 refused: its directory (2/) holds job 2's run
    record("failed", "2", 3, "holds a run of another job").write(tmp_path / ".not_run" / "3.json")
    # job 4 run again, failed before training: its directory keeps its earlier record
    record("failed", "4", 4, "not an sft checkpoint").write(tmp_path / ".not_run" / "4.json")
    rows = write_summary(tmp_path)
    assert [(r["job"], r["status"]) for r in rows] == [
        ("2", "completed"),
        ("3 (not run)", "failed"),
        ("4 (not run)", "failed"),
        ("10", "completed"),
    ]
    table = list(csv.DictReader((tmp_path / "summary.csv").open()))
    assert [r["job"] for r in table] == ["2", "3 (not run)", "4", "4 (not run)", "10"]
    assert "4 jobs, 2 completed, 2 failed (listed as well" in (tmp_path / "summary.md").read_text()
    assert [job for job, _ in read_results(tmp_path)] == ["2", "4", "10"]


def test_a_rerun_job_with_sfts_checkpoints_but_no_last_checkpoint_is_refused(tmp_path, capsys):
    """A sweep re-run whose unfinished job has sft's checkpoints but no last.ckpt to continue
    from: the job is refused (its checkpoints and record stay) and the sweep says so."""
    sweep = tmp_path / "sweep"
    grid = ["-m", *TINY, "trainer.max_epochs=1", "seed=1", f"hydra.sweep.dir={sweep}"]
    assert run_sft_train(capsys, *grid)[0] == 0
    (sweep / "0" / "checkpoints" / "last.ckpt").unlink()
    record = RunResult.read(sweep / "0" / "result.json")
    record.status, record.error = "failed", "Crash"  # e.g. its test crashed
    record.write()
    kept = {p: p.read_bytes() for p in (sweep / "0").glob("*/*") if p.suffix in (".ckpt", ".json")}
    kept[sweep / "0" / "result.json"] = (sweep / "0" / "result.json").read_bytes()
    code, err = run_sft_train(capsys, *grid)
    assert code == 1
    # one job: not also counted by its earlier record (was: "1 of 2 jobs failed")
    assert err.strip().splitlines()[-1] == f"error: 1 of 1 jobs failed: see {sweep / 'summary.md'}"
    assert {p: p.read_bytes() for p in kept} == kept
    rows = list(csv.DictReader((sweep / "summary.csv").open()))
    assert [(r["job"], r["status"]) for r in rows] == [("0", "failed"), ("0 (not run)", "failed")]
    assert f"{sweep / '0'} already holds a run's checkpoints" in rows[1]["error"]
    assert "but no checkpoints/last.ckpt to continue from" in rows[1]["error"]
    assert "another hydra.sweep.dir" in rows[1]["error"]


def test_a_rerun_job_that_fails_before_training_keeps_its_record_and_fails_the_sweep(
    tmp_path, capsys
):
    """A sweep run again whose finished job now fails before it trains (here: its last.ckpt is
    no longer an sft checkpoint): its directory keeps the earlier record, and the sweep lists the
    job as not run and exits 1 (was: the failure was only in the job's log, exit 0)."""
    sweep = tmp_path / "sweep"
    grid = ["-m", *TINY, "trainer.max_epochs=1", "seed=1", f"hydra.sweep.dir={sweep}"]
    assert run_sft_train(capsys, *grid)[0] == 0
    last = sweep / "0" / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    del checkpoint["hyper_parameters"]
    torch.save(checkpoint, last)
    record = (sweep / "0" / "result.json").read_bytes()
    code, err = run_sft_train(capsys, *grid)
    assert (sweep / "0" / "result.json").read_bytes() == record
    assert code == 1
    assert err.strip().splitlines()[-1] == f"error: 1 of 1 jobs failed: see {sweep / 'summary.md'}"
    rows = list(csv.DictReader((sweep / "summary.csv").open()))
    assert [(r["job"], r["status"]) for r in rows] == [
        ("0", "completed"),
        ("0 (not run)", "failed"),
    ]
    assert (
        rows[1]["error"]
        == f"checkpoint {last}: not an sft training checkpoint (no hyper_parameters)"
    )
    assert "1 job, 0 completed, 1 failed (listed as well" in (sweep / "summary.md").read_text()


def test_a_finished_job_of_a_sweep_run_again_is_not_tested_again(tmp_path, capsys, monkeypatch):
    """A sweep run again to continue it resumes its finished jobs, which train no further: each
    was tested again (the whole test split per job), and that time added to its record's."""
    import lightning.pytorch as pl

    sweep = tmp_path / "sweep"
    grid = ["-m", *TINY, "trainer.max_epochs=1", "seed=1,2", f"hydra.sweep.dir={sweep}"]
    assert run_sft_train(capsys, *grid)[0] == 0
    first = {p: json.loads(p.read_text()) for p in sweep.glob("*/result.json")}
    assert len(first) == 2 and all("test/acc" in r["metrics"] for r in first.values())

    def tested_again(*args, **kwargs):
        raise AssertionError("tested again")

    monkeypatch.setattr(pl.Trainer, "test", tested_again)
    code, err = run_sft_train(capsys, *grid)
    assert code == 0, err
    for path, record in first.items():
        again = json.loads(path.read_text())
        assert again["status"] == "completed" and again["metrics"] == record["metrics"]
        said = "Not tested again: the run trained no further since its test (test/acc "
        assert said in (path.parent / "train.log").read_text()


def test_a_finished_run_resumed_as_it_was_is_not_tested_again(
    tmp_path, capsys, monkeypatch, data_dir
):
    """resume=<a finished run> with its overrides and data trains no further and keeps its
    test metrics; on other data (the same overrides, another SFT_DATA_DIR) it is tested."""
    import lightning.pytorch as pl

    run = tmp_path / "run"
    args = [*TINY, "trainer.max_epochs=1"]
    assert run_sft_train(capsys, *args, f"hydra.run.dir={run}")[0] == 0
    first = json.loads((run / "result.json").read_text())
    assert "test/acc" in first["metrics"]

    def tested_again(*args, **kwargs):
        raise AssertionError("tested again")

    monkeypatch.setattr(pl.Trainer, "test", tested_again)
    assert run_sft_train(capsys, *args, f"resume={run}")[0] == 0
    assert json.loads((run / "result.json").read_text())["metrics"] == first["metrics"]
    (tmp_path / "data").symlink_to(data_dir)
    monkeypatch.setenv("SFT_DATA_DIR", str(tmp_path / "data"))
    code, err = run_sft_train(capsys, *args, f"resume={run}")
    assert code == 1 and "tested again" in err


def test_a_grid_rerun_with_its_swept_keys_reordered_is_told_the_first_order(tmp_path, capsys):
    """Swept keys in another order number the same jobs otherwise (Hydra's product order): the
    re-run was refused as "another sweep" naming job 1's differences, which were only the
    numbering; it is now told the order that continues the jobs."""
    sweep = tmp_path / "sweep"
    common = ["-m", *TINY, f"hydra.sweep.dir={sweep}"]
    assert run_sft_train(capsys, *common, "seed=1,2", "trainer.max_steps=1,2")[0] == 0
    code, err = run_sft_train(capsys, *common, "trainer.max_steps=1,2", "seed=1,2")
    assert code == 1
    assert err.strip().splitlines()[-1] == (
        f"error: hydra.sweep.dir={sweep} holds this sweep's jobs under other numbers (Hydra "
        "numbers a grid's jobs by the order of its swept keys): give the swept keys in their "
        f"first order to continue them ({sweep / 'multirun.yaml'}: "
        f"{' '.join([*TINY, 'seed=1,2', 'trainer.max_steps=1,2'])})"
    )
    # an interrupted grid (a job without its record yet) is told the same (was: "another sweep")
    (sweep / "3" / "result.json").unlink()
    code, err = run_sft_train(capsys, *common, "trainer.max_steps=1,2", "seed=1,2")
    assert (
        code == 1 and "holds this sweep's jobs under other numbers" in err.strip().splitlines()[-1]
    )
    # a job's record written otherwise (its resume alone records resume= and the values as
    # typed there) still matches its planned job (was: "another sweep")
    record = json.loads((sweep / "1" / "result.json").read_text())
    assert record["overrides"][-2:] == ["seed=1", "trainer.max_steps=2"]
    record["overrides"][-2:] = ["trainer.max_steps=2", "+seed=1", f"resume={sweep / '1'}"]
    (sweep / "1" / "result.json").write_text(json.dumps(record))
    code, err = run_sft_train(capsys, *common, "trainer.max_steps=1,2", "seed=1,2")
    assert (
        code == 1 and "holds this sweep's jobs under other numbers" in err.strip().splitlines()[-1]
    )


def test_a_study_job_run_again_sets_its_earlier_logs_aside(tmp_path, capsys):
    """An unfinished job without last.ckpt (a study's) runs again from the start in its
    directory and replaces its record, but its earlier TensorBoard events stayed beside the new
    ones: sft-compare then showed the earlier run's best val/acc as this run's. With
    `logger=many_loggers` the job failed (OSError) moving the CSV logger's save_dir, the job
    folder itself, into itself."""
    from sft.compare import find_runs

    sweep = tmp_path / "sweep"
    no_checkpoints = [
        *(
            f"callbacks.{c}=null"
            for c in ("model_checkpoint", "last_checkpoint", "step_checkpoint")
        ),
        "+trainer.enable_checkpointing=false",
    ]
    grid = [
        "-m",
        *TINY,
        "trainer.max_steps=2",
        *no_checkpoints,
        "seed=1",
        "logger=many_loggers",
        f"hydra.sweep.dir={sweep}",
    ]
    assert run_sft_train(capsys, *grid)[0] == 0
    first = sorted((sweep / "0" / "tensorboard").rglob("events.out.tfevents.*"))
    first_csv = (sweep / "0" / "csv" / "metrics.csv").read_text()
    record = RunResult.read(sweep / "0" / "result.json")
    record.status, record.error = "interrupted", "interrupted by SIGINT"  # it did not finish
    record.write()
    first_config = (sweep / "0" / "config_resolved.yaml").read_text()
    assert run_sft_train(capsys, *grid)[0] == 0
    # the job dir's resolved config is this run's, the earlier one's is kept with its logs (was:
    # this run's in .hydra/resumed_<time>/, as a resumed run's)
    assert (sweep / "0" / "config_resolved.yaml").is_file()
    assert not list((sweep / "0" / ".hydra").glob("*/config_resolved.yaml"))
    (kept_config,) = (sweep / "0" / ".replaced_logs").glob("*/config_resolved.yaml")
    assert kept_config.read_text() == first_config
    now = sorted((sweep / "0" / "tensorboard").rglob("events.out.tfevents.*"))
    assert now and not set(first) & set(now)  # only the new run's events
    kept = list((sweep / "0" / ".replaced_logs").glob("*/tensorboard"))
    assert len(kept) == 1 and sorted(p.name for p in kept[0].rglob("events.*")) == sorted(
        p.name for p in first
    )
    (kept_csv,) = (sweep / "0" / ".replaced_logs").glob("*/csv/metrics.csv")
    assert kept_csv.read_text() == first_csv
    assert (sweep / "0" / "csv" / "metrics.csv").is_file()
    runs, _, _ = find_runs([sweep])
    assert [r.path for r in runs] == [(sweep / "0" / "tensorboard").resolve()]


def test_a_sweep_exits_1_only_for_jobs_that_failed_in_this_run(tmp_path, capsys, caplog):
    """A continued Optuna study never runs a failed trial again (an interrupted one is told
    failed): every later continuation of the study exited 1 for it, however its trials went."""

    def record(job: str, status: str, **fields) -> None:
        (tmp_path / job).mkdir()
        RunResult(status=status, output_dir=str(tmp_path / job), **fields).write()

    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    record("0", INTERRUPTED, error="interrupted by SIGINT (Ctrl-C)")
    callback = SweepSummary()
    callback.on_multirun_start(config)
    record("1", COMPLETED, metrics={"val/acc": 0.5}, optimized_metric="val/acc")
    with caplog.at_level(logging.WARNING):
        callback.on_multirun_end(config)  # exits 0
    # not "failed" (an interrupted job is no crash)
    assert "1 of 2 jobs were interrupted in earlier runs of this sweep (jobs 0)" in caplog.text
    assert "error:" not in capsys.readouterr().err

    callback.on_multirun_start(config)
    record("2", FAILED, error="data.batch_size: expected a positive integer")
    with pytest.raises(SystemExit) as exit_:
        callback.on_multirun_end(config)
    assert exit_.value.code == 1
    assert capsys.readouterr().err.startswith("error: 1 of 3 jobs failed: see ")


def test_a_job_lost_in_a_sweep_run_again_is_counted_beside_its_earlier_record(tmp_path, capsys):
    """A Ray worker killed (e.g. out of memory) in a sweep run again into its folder leaves the
    job's earlier record as it was: the launcher reports the loss through on_job_end, which wrote
    nothing, and the sweep then exited 0 with the earlier run's row."""
    job = tmp_path / "0"
    job.mkdir()
    earlier = RunResult(status=COMPLETED, output_dir=str(job), overrides=["seed=1"])
    earlier.write()
    config = OmegaConf.create(
        {
            "hydra": {
                "mode": RunMode.MULTIRUN,
                "sweep": {"dir": str(tmp_path)},
                "runtime": {"output_dir": str(job)},
                "job": {"num": 0},
            }
        }
    )
    callback = SweepSummary()
    callback.on_multirun_start(config)
    lost = JobReturn(overrides=["seed=1"], status=JobStatus.FAILED)
    lost.return_value = RuntimeError("the worker died")
    callback.on_job_end(config, lost)
    with pytest.raises(SystemExit):
        callback.on_multirun_end(config)
    assert "error: 1 of 1 jobs failed" in capsys.readouterr().err
    not_run = RunResult.read(tmp_path / ".not_run" / "0.json")
    assert not_run.status == FAILED and "the worker died" in not_run.error
    assert RunResult.read(job / "result.json").status == COMPLETED, "the earlier record is kept"


def test_a_sweep_subdir_interpolating_hydra_settings_keeps_sfts_checks(tmp_path, capsys, recwarn):
    """`hydra.sweep.subdir=${hydra.job.num}_${seed}` (sft's default, written out, with the seed):
    reading the override resolved it and raised, so sft's run-directory callback was off with
    only Hydra's UserWarning: no lock, no check of the folder, and a summary of 0 jobs."""
    sweep = tmp_path / "sweep"
    code, err = run_sft_train(
        capsys,
        "-m",
        *TINY,
        "trainer.max_epochs=1",
        "seed=1,2",
        f"hydra.sweep.dir={sweep}",
        "hydra.sweep.subdir=${hydra.job.num}_${seed}",
    )
    assert code == 0, err
    assert not [str(w.message) for w in recwarn if "RunDirectory" in str(w.message)]
    rows = list(csv.DictReader((sweep / "summary.csv").open()))
    assert [(r["job"], r["status"]) for r in rows] == [("0_1", "completed"), ("1_2", "completed")]


def test_a_sweep_continues_after_one_of_its_jobs_was_resumed_alone(tmp_path, capsys):
    """A job resumed as a single run (resume=<sweep>/<n>, as the README says for one job)
    recorded resume= and its settings as typed there (0.03 for 3e-2): the sweep run again
    refused its own directory for good ("holds another sweep")."""
    sweep = tmp_path / "sweep"
    lr = "model.lr_head=1e-2,3e-2"
    grid = ["-m", *TINY, "trainer.max_epochs=1", lr, "test=false", f"hydra.sweep.dir={sweep}"]
    assert run_sft_train(capsys, *grid)[0] == 0
    alone = [*TINY, "trainer.max_epochs=1", "test=false", "model.lr_head=0.03"]
    assert run_sft_train(capsys, *alone, f"resume={sweep / '1'}")[0] == 0
    assert run_sft_train(capsys, *grid)[0] == 0
    rows = list(csv.DictReader((sweep / "summary.csv").open()))
    assert [(r["job"], r["status"]) for r in rows] == [("0", "completed"), ("1", "completed")]


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        (["model.lr_head=1e-2", "~model.backbone"], ["~model.backbone=null", "model.lr_head=0.01"], True),
        (["+data.x=1", "resume=/runs/a"], ["data.x=1"], True),
        # a count of batches and a fraction of them, to Lightning
        (["trainer.limit_val_batches=1"], ["trainer.limit_val_batches=1.0"], False),
        (["seed=1"], ["seed=true"], False),
        (["model.x=nan"], ["model.x=nan"], True),
        # a delete and a set of one key: the later wins, as Hydra applies them
        (["+model.x=1", "~model.x"], ["~model.x"], True),
        (["~model.x", "+model.x=1"], ["model.x=1"], True),
        (["+model.x=1", "~model.x"], ["model.x=1"], False),
    ],
)  # fmt: skip
def test_overrides_are_compared_by_setting(a, b, same):
    """A sweep run again into its directory, and a job's record, are matched by what the
    overrides set (was: as written: `0.01` and `1e-2` were two sweeps)."""
    from sft.runs.result import same_overrides

    assert same_overrides(a, b) is same


def test_sweeps_started_in_the_same_second_get_a_directory_each(tmp_path, monkeypatch, capsys):
    """The default sweep directory is named by the second it starts in: a second sweep of the
    experiment started in the same second (a script starting several) was refused, the
    directory holding another sweep's jobs. It now takes `<time>_1`, as a single run does."""
    import datetime

    import hydra.core.utils

    class SameSecond(datetime.datetime):
        @classmethod
        def now(cls, tz=None):
            return cls(2026, 12, 7, 12, 0, 0)

    monkeypatch.setattr(hydra.core.utils, "datetime", SameSecond)  # Hydra's ${now:} resolver
    monkeypatch.setenv("SFT_OUTPUT_DIR", str(tmp_path))
    for seeds in ("seed=1,2", "seed=3"):
        code, err = run_sft_train(capsys, "-m", *TINY, "trainer.max_epochs=1", seeds, "name=same")
        assert code == 0, err[-2000:]
    sweeps = tmp_path / "train" / "same" / "multiruns"
    first, second = "2026-12-07_12-00-00", "2026-12-07_12-00-00_1"
    assert sorted(p.name for p in sweeps.iterdir()) == [first, second]
    assert sorted(dict(read_results(sweeps / first))) == ["0", "1"]
    assert [r.overrides[-2:] for _, r in read_results(sweeps / second)] == [["seed=3", "name=same"]]


def test_only_a_sweep_directory_named_by_the_time_is_replaced_and_a_refused_one_is_removed(
    tmp_path, monkeypatch
):
    """An Optuna search's config names its directory by the study (`.../optuna/<study>`), so
    that the same command again continues the study: it stays the directory of every run of
    that command. A directory reserved for a sweep that is then refused (its sweeper's checks
    come after) is removed again, as one that Hydra would have made."""
    from hydra import compose, initialize_config_dir

    from sft.runs.directories import RunDirectory

    monkeypatch.setenv("SFT_OUTPUT_DIR", str(tmp_path))
    for overrides in (["hparams_search=sst2_minilm_optuna"], []):
        dirs = []
        for _ in range(2):
            GlobalHydra.instance().clear()
            with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
                cfg = compose("train", overrides=overrides, return_hydra_config=True)
                callback = RunDirectory()
                callback.on_multirun_start(cfg)
                dirs.append(Path(cfg.hydra.sweep.dir))
                callback.on_multirun_end(cfg)  # refused here: no job ran
        if overrides:
            assert dirs[0] == dirs[1] == tmp_path / "train/sst2_minilm/optuna/sst2_minilm_optuna"
        else:
            assert dirs[0].parent == tmp_path / "train/default/multiruns"
            assert not any(d.exists() for d in dirs)
