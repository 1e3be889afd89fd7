"""sft-compare: finds the runs under a path, ranks them by a metric, writes curves and a CSV."""

import csv
import json
import os
from pathlib import Path

import matplotlib.image
import pytest
from lightning.pytorch.loggers import TensorBoardLogger

from sft.compare import legend_labels, main
from sft.runs.result import RunResult
from sft.runs.sweep_summary import read_results


def make_run(run_dir: Path, overrides: list[str], val_acc: list[float], test_acc: float) -> None:
    """A run directory as sft-train leaves it: .hydra/overrides.yaml and tensorboard/ events."""
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    logger = TensorBoardLogger(save_dir=run_dir / "tensorboard", name=None, version="")
    for epoch, acc in enumerate(val_acc):
        step = 10 * (epoch + 1) - 1
        best = max(val_acc[: epoch + 1])
        logger.log_metrics({"epoch": epoch, "train/loss_epoch": 1.0 - acc}, step=step)
        logger.log_metrics({"val/acc": acc, "val/acc_best": best, "val/loss": 1 - acc}, step=step)
    logger.log_metrics({"test/acc": test_acc, "epoch": len(val_acc)}, step=10 * len(val_acc))
    logger.finalize("success")


@pytest.fixture
def sweep(tmp_path) -> Path:
    """A sweep of two runs: lr 0.1 peaks at 0.6 (ends at 0.5), lr 0.01 ends best at 0.55."""
    make_run(tmp_path / "sweep" / "0", ["seed=0", "model.lr_head=0.1"], [0.3, 0.6, 0.5], 0.58)
    make_run(tmp_path / "sweep" / "1", ["seed=0", "model.lr_head=0.01"], [0.2, 0.4, 0.55], 0.53)
    return tmp_path / "sweep"


def table_rows(output: str) -> list[list[str]]:
    """The cells of each row of the printed table."""
    lines = [line for line in output.splitlines() if line.startswith("│")]
    return [[cell.strip() for cell in line.split("│")[1:-1]] for line in lines]


def test_two_runs_are_ranked_by_the_metric_with_curves_and_csv(sweep, tmp_path, capsys):
    main([str(sweep), "--csv", str(tmp_path / "runs.csv")])
    out = capsys.readouterr().out

    # one row per run, labelled by the override that differs, best val/acc first
    rows = table_rows(out)
    # label, best, last, val/acc_best, test/acc, steps, epochs: 3 epochs of 10 steps, whose
    # values Lightning logged at indices 9, 19, 29
    assert rows == [
        ["model.lr_head=0.1", "0.6000", "0.5000", "0.6000", "0.5800", "30", "3"],
        ["model.lr_head=0.01", "0.5500", "0.5500", "0.5500", "0.5300", "30", "3"],
    ], out
    assert "seed=0" not in out  # shared by both runs: not part of the label

    png = sweep / "compare.png"
    assert f"curves: {png}" in out
    height, width, _ = matplotlib.image.imread(png).shape
    assert width > 1000 and height > 300  # two panels: val/acc and val/loss

    with (tmp_path / "runs.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [r["run"] for r in table] == ["model.lr_head=0.1", "model.lr_head=0.01"]
    assert b"\r" not in (tmp_path / "runs.csv").read_bytes()  # LF, as summary.csv (was: CRLF)
    assert float(table[0]["val/acc best"]) == pytest.approx(0.6)
    assert float(table[1]["test/acc"]) == pytest.approx(0.53)


def test_files_the_user_named_are_not_replaced(sweep, tmp_path, capsys):
    mine = tmp_path / "runs.csv"
    mine.write_text("my own table\n")
    with pytest.raises(SystemExit) as exit_:
        main([str(sweep), "--csv", str(mine)])
    assert exit_.value.code == 1
    assert capsys.readouterr().err.strip() == (
        f"error: {mine} already exists: give another --csv path (results already written are "
        "never replaced)"
    )
    assert mine.read_text() == "my own table\n"
    assert not (sweep / "compare.png").exists()  # refused before anything was written


@pytest.mark.parametrize("setting, name", [("--csv", "tables"), ("--png", "plots.png")])
def test_a_folder_given_for_a_file_is_named_as_a_folder(sweep, tmp_path, capsys, setting, name):
    """Was: "<folder> already exists", as if a file of that name were in the way."""
    folder = tmp_path / name
    folder.mkdir()
    with pytest.raises(SystemExit):
        main([str(sweep), setting, str(folder)])
    example = "runs.csv" if setting == "--csv" else "compare.png"
    assert capsys.readouterr().err.strip() == (
        f"error: {setting} {folder} is a folder: {setting} names the file to write, e.g. "
        f"{setting} {folder / example}"
    )
    assert list(folder.iterdir()) == [] and not (sweep / "compare.png").exists()


@pytest.mark.parametrize("name", ["curves", "curves.txt"])
def test_a_png_path_without_an_image_extension_is_refused(sweep, tmp_path, capsys, name):
    """`--png curves` (was: matplotlib wrote curves.png, over the user's file of that name, after
    only `curves` was checked) and `--png curves.txt` (was: matplotlib's ValueError traceback)."""
    mine = tmp_path / "curves.png"
    mine.write_text("my own plot\n")
    with pytest.raises(SystemExit) as exit_:
        main([str(sweep), "--png", str(tmp_path / name)])
    assert exit_.value.code == 1
    assert capsys.readouterr().err.strip() == (
        f"error: --png {tmp_path / name}: expected an image file name, such as curves.png (.png, "
        ".pdf, .svg or another format matplotlib writes)"
    )
    assert mine.read_text() == "my own plot\n"
    assert not (tmp_path / name).exists() and not (sweep / "compare.png").exists()


def test_a_png_path_that_cannot_be_written_is_one_line(sweep, tmp_path, capsys):
    """A dangling link (was: written through it, or a FileNotFoundError traceback) and a folder
    that takes no files (was: a traceback)."""
    link = tmp_path / "curves.png"
    link.symlink_to(tmp_path / "gone" / "z.png")
    with pytest.raises(SystemExit):
        main([str(sweep), "--png", str(link)])
    assert capsys.readouterr().err.startswith(f"error: {link} already exists: give another --png")
    with pytest.raises(SystemExit):
        main([str(sweep), "--png", "/proc/curves.png"])
    err = capsys.readouterr().err
    assert (
        err.startswith("error: /proc/curves.png could not be written: ") and "Traceback" not in err
    )


def test_csv_and_png_outputs_that_cannot_both_be_written_leave_neither(sweep, tmp_path, capsys):
    """--csv to a folder that takes no files was a traceback, after the curves were written;
    --png and --csv of one file wrote the table over the curves."""
    png = tmp_path / "p.png"
    with pytest.raises(SystemExit):
        main([str(sweep), "--csv", "/proc/runs.csv", "--png", str(png)])
    err = capsys.readouterr().err
    assert err.startswith("error: /proc/runs.csv could not be written: ") and "Traceback" not in err
    assert not png.exists()
    with pytest.raises(SystemExit):
        main([str(sweep), "--csv", "/proc/runs.csv", "--png", "/proc/p.png"])
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main([str(sweep), "--csv", str(tmp_path / "same.png"), "--png", str(tmp_path / "same.png")])
    assert capsys.readouterr().err.strip() == (
        f"error: --csv {tmp_path / 'same.png'} is where the curves go too: give another --csv"
    )
    assert not (tmp_path / "same.png").exists()
    with pytest.raises(SystemExit):  # the default curves' file
        main([str(sweep), "--csv", str(sweep / "compare.png")])
    assert "is where the curves go too" in capsys.readouterr().err
    assert not (sweep / "compare.png").exists()
    # the curves fail: the new table is taken back
    with pytest.raises(SystemExit):
        main([str(sweep), "--csv", str(tmp_path / "t.csv"), "--png", "/proc/p.png"])
    assert capsys.readouterr().err.startswith("error: /proc/p.png could not be written")
    assert not (tmp_path / "t.csv").exists()


def test_runs_in_linked_folders_are_compared(sweep, tmp_path, capsys):
    """A folder of links to the runs to compare: Path.rglob passed over them without a word
    (and a folder of links only was "no TensorBoard runs"); a link back up is not followed."""
    picks = tmp_path / "picks"
    picks.mkdir()
    for job in ("0", "1"):
        (picks / f"job{job}").symlink_to(sweep / job)
    (tmp_path / "other").mkdir()
    make_run(tmp_path / "other" / "run", ["seed=1"], [0.1], 0.1)
    (picks / "up").symlink_to(tmp_path)  # above picks: not followed (nor into other/)
    main([str(picks)])
    rows = table_rows(capsys.readouterr().out)
    assert [row[0] for row in rows] == ["model.lr_head=0.1", "model.lr_head=0.01"]
    # a run given through a link and directly: one run
    main([str(picks), str(sweep / "0")])
    out = capsys.readouterr().out
    assert len(table_rows(out)) == 2 and "left out" not in out


def test_sft_eval_runs_are_left_out_of_a_comparison_of_training_runs(sweep, tmp_path, capsys):
    """`sft-compare outputs`: sft-eval's score of a checkpoint was ranked first among the
    training runs, with a step and an epoch; given alone, eval runs are compared."""
    evaluation = tmp_path / "sweep" / "eval"
    make_run(evaluation, ["ckpt_path=x.ckpt"], [0.9], 0.9)
    (evaluation / ".hydra" / "config.yaml").write_text("task_name: eval\n")
    # a training run under debug=* (its task: debug) stays
    (sweep / "0" / ".hydra" / "config.yaml").write_text("task_name: debug\n")
    main([str(sweep)])
    out = capsys.readouterr().out
    assert [row[0] for row in table_rows(out)] == ["model.lr_head=0.1", "model.lr_head=0.01"]
    assert "left out: 1 run of sft-eval: " in out and str(evaluation) in out
    main([str(evaluation)])
    assert len(table_rows(capsys.readouterr().out)) == 1


def test_a_compare_png_of_the_users_is_not_replaced(sweep, capsys):
    """The default compare.png in the first PATH was replaced whatever it was; sft-compare's own
    (it says so in the PNG) still is, on every call."""
    main([str(sweep)])
    capsys.readouterr()
    main([str(sweep)])  # its own: written again
    mine = sweep / "compare.png"
    mine.write_text("my own figure")
    with pytest.raises(SystemExit):
        main([str(sweep)])
    assert capsys.readouterr().err.startswith(
        f"error: {mine} exists and sft-compare did not write it"
    )
    assert mine.read_text() == "my own figure"


def test_the_curves_of_an_event_file_go_beside_it(sweep, tmp_path, capsys, monkeypatch):
    """An event file as PATH: compare.png was written in the current folder, over a file of the
    user's of that name."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "compare.png").write_text("mine")
    (events,) = (sweep / "0" / "tensorboard").glob("events.out.tfevents.*")
    main([str(events)])
    assert (tmp_path / "compare.png").read_text() == "mine"
    assert (events.parent / "compare.png").is_file()


def test_a_loss_ranks_by_the_lowest_value(sweep, tmp_path, capsys):
    """--mode min, or no --mode (was: a loss ranked highest first, unlike the sweep summary)."""
    png = tmp_path / "plots" / "loss.png"
    main([str(sweep / "0"), str(sweep / "1"), "--metric", "val/loss", "--png", str(png)])
    rows = table_rows(capsys.readouterr().out)
    assert [row[:2] for row in rows] == [
        ["model.lr_head=0.1", "0.4000"],
        ["model.lr_head=0.01", "0.4500"],
    ]
    assert png.stat().st_size > 10_000
    assert not (sweep / "0" / "compare.png").exists()


def test_runs_without_overrides_are_labelled_by_their_path(tmp_path, capsys):
    for name, acc in (("first", [0.1, 0.2]), ("second", [0.3, 0.1])):
        make_run(tmp_path / "runs" / name, [], acc, 0.1)
    main([str(tmp_path / "runs"), "--png", str(tmp_path / "c.png")])
    rows = table_rows(capsys.readouterr().out)
    assert [row[:2] for row in rows] == [["second", "0.3000"], ["first", "0.2000"]]


def test_no_runs_is_one_clear_error(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main([str(empty)])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and str(empty) in err[0]


def test_unknown_metric_names_the_logged_ones(sweep, capsys):
    with pytest.raises(SystemExit):
        main([str(sweep), "--metric", "val/acc1"])
    err = capsys.readouterr().err
    assert "'val/acc1'" in err and "val/acc_best" in err and "Traceback" not in err
    # the example is the one mistyped (was: the first scalar, train/acc)
    with pytest.raises(SystemExit):
        main([str(sweep), "--metric", "val/acc_bset"])
    assert capsys.readouterr().err.strip().endswith("(e.g. --metric val/acc_best)")


def test_sft_eval_runs_given_alone_are_pointed_to_their_metric(tmp_path, capsys):
    """sft-eval's runs log test/... only: `sft-compare outputs/eval` said no run logged val/acc,
    without a word of --metric."""
    make_run(tmp_path / "eval", ["ckpt_path=x.ckpt"], [], 0.9)
    with pytest.raises(SystemExit):
        main([str(tmp_path / "eval")])
    err = capsys.readouterr().err
    assert err.strip().endswith(
        "scalars found: epoch, test/acc: compare on one of them with --metric "
        "(e.g. --metric test/acc)"
    ), err
    main([str(tmp_path / "eval"), "--metric", "test/acc"])
    assert [row[1] for row in table_rows(capsys.readouterr().out)] == ["0.9000"]


def test_list_values_in_labels_and_runs_without_scalars_are_shown(tmp_path, capsys):
    """An override's list value `[neg,pos]` stays in its label (was: read by rich as markup and
    dropped, so runs that differ only there looked the same), and a run that logged nothing
    (failed before its first log) is named as left out (was: silently absent)."""
    make_run(tmp_path / "runs" / "a", ["data.label_names=[neg,pos]"], [0.5, 0.6], 0.5)
    make_run(tmp_path / "runs" / "b", ["data.label_names=[pos,neg]"], [0.4, 0.5], 0.4)
    # price tiers: drawn as text (was: matplotlib's math-text ParseException on `$$`)
    make_run(tmp_path / "runs" / "d", ["data.label_names=[$,$$,$$$]"], [0.3, 0.4], 0.3)
    failed = tmp_path / "runs" / "c" / "tensorboard"
    failed.mkdir(parents=True)
    logger = TensorBoardLogger(save_dir=failed, name=None, version="")
    logger.experiment.flush()  # an event file without scalars
    logger.finalize("failed")
    main([str(tmp_path / "runs"), "--png", str(tmp_path / "c.png")])
    out = capsys.readouterr().out
    assert [row[0] for row in table_rows(out)] == [
        "data.label_names=[neg,pos]",
        "data.label_names=[pos,neg]",
        "data.label_names=[$,$$,$$$]",
    ]
    assert "left out: 1 run that logged no scalars" in out and "runs/c" in out


@pytest.mark.parametrize("events", [True, False])
def test_a_failed_job_is_listed_with_its_status(sweep, tmp_path, capsys, events):
    """A sweep job that failed before logging a scalar, as sft-train leaves it (overrides,
    result.json, an event file without scalars): was left out as if it were not a run. One that
    failed before its logger made an event file (`data.batch_size=abc`) was named as left out
    "without TensorBoard events"."""
    job = sweep / "2"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("- seed=0\n- model.lr_head=10\n")
    if events:
        logger = TensorBoardLogger(save_dir=job / "tensorboard", name=None, version="")
        logger.experiment.flush()
        logger.finalize("failed")
    RunResult(
        status="failed",
        error="loss is nan",
        output_dir=str(job),
        overrides=["seed=0", "model.lr_head=10"],
    ).write()
    main([str(sweep), "--png", str(tmp_path / "c.png")])
    out = capsys.readouterr().out
    rows = table_rows(out)
    assert [(row[0], row[-1]) for row in rows] == [
        ("model.lr_head=0.1", "-"),
        ("model.lr_head=0.01", "-"),
        ("model.lr_head=10", "failed"),
    ]
    assert "left out" not in out


def test_a_sweep_whose_jobs_all_failed_names_their_errors(tmp_path, capsys):
    """Every job failed before logging (here: a diverging learning rate): the error said only
    that there were no runs with scalars, as if the sweep were empty."""
    for job, lr in (("0", "10"), ("1", "20")):
        (tmp_path / "sweep" / job).mkdir(parents=True)
        RunResult(
            status="failed",
            error=f"loss is nan at step 3 (lr {lr})",
            output_dir=str(tmp_path / "sweep" / job),
            overrides=[f"model.lr_head={lr}"],
        ).write()
    with pytest.raises(SystemExit):
        main([str(tmp_path / "sweep"), "--png", str(tmp_path / "c.png")])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no TensorBoard runs with scalars under ")
    assert err[0].endswith(
        f"(2 runs ended before logging: {tmp_path / 'sweep' / '0'}: loss is nan at step 3 "
        f"(lr 10); {tmp_path / 'sweep' / '1'}: loss is nan at step 3 (lr 20))"
    ), err[0]


def test_overrides_with_hydra_interpolations_label_runs(tmp_path, capsys):
    """The Optuna sweeper adds `++callbacks.optuna_pruning={...trial_number:${hydra:job.num}}`
    to each job's overrides (was: UnsupportedInterpolationType from sft-compare on any study)."""
    pruning = "++callbacks.optuna_pruning={trial_number:${hydra:job.num}}"
    make_run(tmp_path / "study" / "0", ["model.lr_head=0.1", pruning], [0.5], 0.5)
    make_run(tmp_path / "study" / "1", ["model.lr_head=0.2", pruning], [0.6], 0.6)
    main([str(tmp_path / "study"), "--png", str(tmp_path / "c.png")])
    rows = table_rows(capsys.readouterr().out)
    assert [row[0] for row in rows] == ["model.lr_head=0.2", "model.lr_head=0.1"]


@pytest.mark.parametrize("written", ['{"status": "compl', "[]", '{"status": "completed"}'])
def test_a_hand_edited_result_is_named_and_its_run_still_compared(
    sweep, tmp_path, capsys, caplog, written
):
    """A result.json that is not a run record (cut off, not an object, missing fields): a warning
    naming it, and the run compared by its scalars (was: a JSONDecodeError / AttributeError
    traceback). The sweep summary leaves it out the same way."""
    broken = sweep / "0" / "result.json"
    broken.write_text(written)
    RunResult(
        status="completed",
        output_dir=str(sweep / "1"),
        metrics={"val/acc_best": 0.55},
        overrides=["seed=0", "model.lr_head=0.01"],
    ).write()
    main([str(sweep), "--png", str(tmp_path / "c.png")])
    rows = table_rows(capsys.readouterr().out)
    assert [row[0] for row in rows] == ["model.lr_head=0.1", "model.lr_head=0.01"]
    warnings = [r.getMessage() for r in caplog.records if r.name == "sft.compare"]
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: {broken}: not a run record")

    assert [job for job, _ in read_results(sweep)] == ["1"]


@pytest.mark.parametrize(
    "written", ["- !!python/object/apply:os.system ['true']\n", "[unclosed\n", "seed: 0\n"]
)
def test_overrides_that_cannot_be_read_are_named_and_the_run_still_compared(
    sweep, tmp_path, capsys, caplog, written
):
    """A run's .hydra/overrides.yaml with a YAML tag (a Python object), cut off, or not a list
    (a run without result.json is labelled by it): a traceback. Named now, and the run is
    labelled by the others' settings."""
    broken = sweep / "0" / ".hydra" / "overrides.yaml"
    broken.write_text(written)
    main([str(sweep), "--png", str(tmp_path / "c.png")])
    assert len(table_rows(capsys.readouterr().out)) == 2
    warnings = [r.getMessage() for r in caplog.records if r.name == "sft.compare"]
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: {broken} cannot be read (")


def test_a_run_without_tensorboard_events_is_named_as_left_out(sweep, tmp_path, capsys):
    """A run of logger=csv (result.json, csv/metrics.csv, no event files) was silently absent."""
    csv_run = tmp_path / "csv_run"
    (csv_run / "csv").mkdir(parents=True)
    (csv_run / "csv" / "metrics.csv").write_text("epoch,step,val/acc\n0,9,0.5\n")
    RunResult(status="completed", output_dir=str(csv_run), metrics={"val/acc": 0.5}).write()
    main([str(sweep), str(csv_run), "--png", str(tmp_path / "c.png")])
    out = capsys.readouterr().out
    assert len(table_rows(out)) == 2
    assert (
        f"left out: 1 run without TensorBoard events (logger=csv, debug=fdr, or failed before logging): {csv_run}"
        in out
    )


def test_runs_of_two_studies_are_labelled_without_the_pruning_callback(tmp_path, capsys):
    """Each study's jobs carry the sweeper's pruning callback with their own storage: compared
    together, that override was part of every label (was: `++callbacks.optuna_pruning={...}`)."""
    for study, lr in (("a", 0.1), ("b", 0.2)):
        pruning = f"++callbacks.optuna_pruning={{storage:'journal:///{study}.journal'}}"
        make_run(tmp_path / study / "0", [f"model.lr_head={lr}", pruning], [lr], lr)
    main([str(tmp_path / "a"), str(tmp_path / "b"), "--png", str(tmp_path / "c.png")])
    rows = table_rows(capsys.readouterr().out)
    assert [row[0] for row in rows] == ["model.lr_head=0.2", "model.lr_head=0.1"]


def test_a_resumed_run_is_labelled_by_the_settings_it_finished_with(sweep, tmp_path, capsys):
    """Resumed with a longer schedule, a run was labelled by its first part's overrides
    (.hydra/overrides.yaml): `trainer.max_epochs=3` for a run that trained 6 epochs. Its
    result.json records the last part's, which the rest of the run had; `resume=` is left out."""
    for job, lr in (("0", 0.1), ("1", 0.01)):
        (sweep / job / ".hydra" / "overrides.yaml").write_text(
            f"- model.lr_head={lr}\n- trainer.max_epochs=3\n"
        )
    RunResult(
        status="completed",
        output_dir=str(sweep / "0"),
        overrides=["model.lr_head=0.1", "trainer.max_epochs=3"],
    ).write()
    resumed = ["model.lr_head=0.01", "trainer.max_epochs=6", f"resume={sweep / '1'}"]
    RunResult(status="completed", output_dir=str(sweep / "1"), overrides=resumed).write()
    main([str(sweep), "--png", str(tmp_path / "c.png")])
    rows = table_rows(capsys.readouterr().out)
    assert [row[0] for row in rows] == [
        "model.lr_head=0.1 trainer.max_epochs=3",
        "model.lr_head=0.01 trainer.max_epochs=6",
    ]


def test_runs_are_labelled_by_the_settings_that_differ(tmp_path, capsys):
    """Overrides written otherwise set no run apart (was: `~model.backbone` vs
    `~model.backbone=null` in both labels), and a key given again (a resume command that repeats
    the run's overrides with a new value) labels by its last value (was: both)."""
    make_run(tmp_path / "a", ["~model.backbone", "model.lr_head=1e-2"], [0.5], 0.5)
    b = [
        "~model.backbone=null",
        "trainer.max_epochs=3",
        "model.lr_head=0.1",
        "trainer.max_epochs=6",
    ]
    make_run(tmp_path / "b", b, [0.6], 0.6)
    c = ["~model.backbone", "model.lr_head=0.01", "trainer.max_epochs=1", "~trainer.max_epochs"]
    make_run(tmp_path / "c", c, [0.4], 0.4)
    main([str(tmp_path / d) for d in "abc"] + ["--png", str(tmp_path / "c.png")])
    rows = table_rows(capsys.readouterr().out)
    assert [row[0] for row in rows] == [
        "trainer.max_epochs=6 model.lr_head=0.1",
        "model.lr_head=1e-2",
        "model.lr_head=0.01 ~trainer.max_epochs",
    ]


def test_legend_entries_of_long_labels_that_differ_in_the_middle_stay_apart():
    """The legend cuts long labels in the middle; two runs that differ only there (a sweep over
    one setting among long shared paths) keep what sets them apart, not two identical entries."""
    shared_head = "model.backbone.model_name_or_path=/home/me/models/all-MiniLM-L6-v2"
    shared_tail = "data.data_dir=/home/me/datasets/sst2/phrases seed=3"
    labels = [f"{shared_head} model.lr_head={lr} {shared_tail}" for lr in ("1e-3", "3e-3")]
    short = "model.lr_head=1e-3 trainer.max_epochs=2"
    legends = legend_labels([*labels, short])
    assert len(set(legends)) == 3
    assert "model.lr_head=1e-3" in legends[0] and "model.lr_head=3e-3" in legends[1]
    assert all(len(legend) <= 60 for legend in legends)
    assert legends[2] == short  # short labels are shown whole
    # one long override that differs inside the cut: numbered by its row in the table
    paths = [f"data.data_dir=/home/me/datasets/{'x' * 30}/{n}/{'y' * 30}" for n in (1, 2)]
    numbered = legend_labels(paths)
    assert [legend[-4:] for legend in numbered] == [" [1]", " [2]"]
    assert numbered[0][:-4] == numbered[1][:-4]


def test_an_interrupted_run_shows_the_steps_it_trained(sweep, capsys):
    """A run interrupted between its logging steps (at step 32; its last values at index 29):
    sft-compare showed the 30 steps it had logged, not the 32 that its line said it trained."""
    RunResult(
        status="failed",
        error="interrupted by SIGINT at epoch 3 step 32: saved ...",
        output_dir=str(sweep / "0"),
        overrides=["seed=0", "model.lr_head=0.1"],
        metrics={"val/acc": 0.5},
        epochs=3,
        steps=32,
    ).write()
    # a record written before result.json kept the steps
    old = {"status": "completed", "overrides": ["seed=0", "model.lr_head=0.01"], "metrics": {}}
    (sweep / "1" / "result.json").write_text(json.dumps(old | {"output_dir": str(sweep / "1")}))
    main([str(sweep)])
    rows = table_rows(capsys.readouterr().out)
    assert [(row[0], row[5]) for row in rows] == [
        ("model.lr_head=0.1", "32"),
        ("model.lr_head=0.01", "30"),  # no steps recorded: the steps it logged
    ]


def test_a_run_without_its_record_counts_the_epochs_it_completed(tmp_path, capsys):
    """Without a readable result.json the epochs came from Lightning's 0-based `epoch` scalar
    + 1, which counted the epoch under way: a run stopped at step 6 of its first epoch showed 1
    epoch, one two epochs and 5 steps in showed 3. Completed epochs are those that logged their
    epoch-end means."""
    runs = tmp_path / "runs"
    make_run(runs / "two", ["seed=0"], [0.3, 0.6], 0.5)
    logger = TensorBoardLogger(save_dir=runs / "two" / "tensorboard", name=None, version="")
    logger.log_metrics({"epoch": 2, "train/loss_step": 0.4}, step=24)  # 5 steps into the third
    logger.finalize("success")
    (runs / "six_steps" / ".hydra").mkdir(parents=True)
    (runs / "six_steps" / ".hydra" / "overrides.yaml").write_text("- seed=1\n")
    logger = TensorBoardLogger(save_dir=runs / "six_steps" / "tensorboard", name=None, version="")
    logger.log_metrics({"epoch": 0, "train/loss_step": 0.7, "val/acc": 0.4}, step=5)
    logger.finalize("success")
    main([str(runs), "--png", str(tmp_path / "c.png")])
    rows = table_rows(capsys.readouterr().out)
    assert [(row[0], row[6]) for row in rows] == [("seed=0", "2"), ("seed=1", "0")]


def test_a_truncated_event_file_is_named(tmp_path, capsys, caplog):
    """TensorBoard stops reading at a damaged record without a word: a run whose event file
    was cut short showed no curves (or shorter ones), and nothing said why."""
    run = tmp_path / "run"
    make_run(run, ["seed=0"], [0.3, 0.6, 0.5], 0.58)
    events = next((run / "tensorboard").glob("events.out.tfevents.*"))
    os.truncate(events, events.stat().st_size - 7)
    main([str(run), "--png", str(tmp_path / "c.png")])
    said = capsys.readouterr().err + caplog.text
    assert f"warning: {events} ends in a damaged record (a truncated or corrupted event file)" in (
        said
    )


def test_a_file_given_as_a_run_is_named_as_such(sweep, tmp_path, capsys):
    """Was: "no TensorBoard runs with scalars under .../result.json"."""
    notes = sweep / "0" / "notes.txt"
    notes.write_text("x")
    with pytest.raises(SystemExit):
        main([str(notes), "--png", str(tmp_path / "c.png")])
    assert capsys.readouterr().err.startswith(
        f"error: {notes} is a file: give run or sweep directories (here {sweep / '0'})"
    )


def test_a_resumed_runs_relogged_steps_are_dropped_without_tensorboards_warning(
    tmp_path, capsys, caplog
):
    """A run resumed from step 19 logs steps 19, 29 again (was: TensorBoard's "Detected out of
    order event.step likely caused by a TensorFlow restart" for every such run)."""
    run = tmp_path / "run"
    make_run(run, ["seed=0"], [0.3, 0.6, 0.5], 0.58)
    # as sft-train's resume sets it (sft.runs.resume.continue_tensorboard)
    logger = TensorBoardLogger(save_dir=run / "tensorboard", name=None, version="", purge_step=19)
    logger.log_metrics({"val/acc": 0.7}, step=19)
    logger.finalize("success")
    main([str(run), "--png", str(tmp_path / "c.png")])
    captured = capsys.readouterr()
    assert "out of order" not in captured.out + captured.err + caplog.text
    assert table_rows(captured.out)[0][1:3] == ["0.7000", "0.7000"]


def test_curves_of_runs_without_the_metrics_curve_have_a_legend_and_no_warning(tmp_path):
    """Runs with val/loss but no val/acc curve (a resumed ddp_sim run's, before its fix):
    matplotlib warned "No artists with labels found to put in legend", and no panel had one."""
    import warnings
    from unittest.mock import patch

    from sft.compare import Run, legend_labels, plot_curves

    runs = [
        Run(tmp_path / name, [f"seed={seed}"], {"val/loss": [(1, 0.7), (2, 0.6)]}, label=name)
        for seed, name in enumerate(["a", "b"])
    ]
    runs[1].scalars["val/acc"] = [(1, 0.5), (2, 0.6)]
    legends = []
    with warnings.catch_warnings(), patch("matplotlib.axes.Axes.legend", autospec=True) as legend:
        warnings.simplefilter("error")
        plot_curves(runs, "val/acc", tmp_path / "curves.png")
        legends = [call.args[2] for call in legend.call_args_list]
    assert (tmp_path / "curves.png").is_file()
    # run a, without a val/acc curve, is named too (was: only b, the first panel's)
    assert [sorted(labels) for labels in legends] == [sorted(legend_labels(["a", "b"]))]
