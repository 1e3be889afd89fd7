"""Resume: a killed run continues in its own directory exactly where it stopped; nothing is lost."""

import csv
import json
import logging
import math
import os
import shutil
import subprocess
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import CONF_DIR, FAST, logs_warning, run_entry_point, run_module
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import DictConfig
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import sft.train
import sft.utils.checkpoint_io as checkpoint_io
from sft.errors import SFTError
from sft.jobs.train import train
from sft.models import SFTClassifier
from sft.runs.directories import RunDirectory, choose_run_dir
from sft.runs.result import RunRecorder, RunResult
from sft.runs.resume import follow_moved_run, wait_to_sort_after
from sft.utils.checkpoint_io import AtomicCheckpointIO
from sft.utils.hardware import resolve_auto_precision

TESTS_DIR = Path(__file__).parent
STEPS_PER_EPOCH = 6  # 20 per class x 10 classes / batch 32, drop_last
# Deterministic CPU run where randomness matters: augmentation (on by default), dropout in the
# head branch, a shuffled loader, a warm-up + cosine LR schedule; last.ckpt every 2 steps.
EXACT = [
    "trainer.deterministic=true",
    "trainer.max_epochs=3",
    "callbacks.step_checkpoint.every_n_train_steps=2",
    "model.head.branch=mlp",
    "model.head.hidden_dim=16",
    "model.head.dropout=0.5",
    "test=false",
]


def run_train_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`sft-train` in a subprocess that can import the tests' helpers (fault callbacks)."""
    path = os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")])
    return run_module("sft.train", *args, cwd=cwd, env={**os.environ, "PYTHONPATH": path})


def only_run_dir(experiment_dir: Path) -> Path:
    runs = [p for p in experiment_dir.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def scalars(tensorboard_dir: Path, tag: str) -> list[tuple[int, float]]:
    acc = EventAccumulator(str(tensorboard_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


# L2-SP as a decoupled pull every 3rd step: the step-8 checkpoint holds 2 steps' pulls back
LAZY_L2SP = [
    "model.regularizer=l2sp",
    "model.reg_lambda=0.5",
    "model.reg_decoupled=true",
    "model.reg_every=3",
]


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], LAZY_L2SP], ids=["default", "lazy_l2sp"])
def test_killed_run_resumes_exactly_in_its_directory(train_cfg, tmp_path, data_dir, extra):
    """SIGKILL mid-epoch after a step checkpoint, then resume=<run dir>: the same final weights,
    optimizer state and validation metrics as an uninterrupted run; TensorBoard continues in the
    same directory with the same steps. With reg_every, the checkpoint carries the held pulls."""
    exact = [*EXACT, *extra]
    reference = train(train_cfg(*exact, run_dir=tmp_path / "reference"))

    # Dies at the start of step 9 of 18 (epoch 1); the last step checkpoint is from step 8.
    killed = run_train_cli(
        *FAST,
        *exact,
        f"paths.log_dir={tmp_path}",
        "name=killed",
        "+callbacks.kill._target_=helpers.faults.SignalAtStep",
        "+callbacks.kill.step=9",
        cwd=tmp_path,
    )
    assert killed.returncode == -9, killed.stderr[-3000:]
    run_dir = only_run_dir(tmp_path / "train" / "killed")
    last = run_dir / "checkpoints" / "last.ckpt"
    saved = torch.load(last, weights_only=True)
    assert saved["global_step"] == 8 and saved["epoch"] == 1  # mid-epoch
    if extra:  # steps 7 and 8's pulls held back
        assert saved["reg_held"]["steps"] == 2

    resumed = train(train_cfg(*exact, f"resume={run_dir}", run_dir=run_dir))

    want = torch.load(tmp_path / "reference" / "checkpoints" / "last.ckpt", weights_only=True)
    got = torch.load(last, weights_only=True)
    assert got["global_step"] == want["global_step"] == 3 * STEPS_PER_EPOCH
    for key, tensor in want["state_dict"].items():
        torch.testing.assert_close(got["state_dict"][key], tensor, rtol=0, atol=1e-6, msg=key)
    for (k, w), g in zip(
        want["optimizer_states"][0]["state"].items(),
        got["optimizer_states"][0]["state"].values(),
        strict=True,
    ):
        torch.testing.assert_close(
            g["momentum_buffer"], w["momentum_buffer"], rtol=0, atol=1e-6, msg=str(k)
        )
    for name in ("val/acc", "val/acc_best", "val/loss", "train/loss_epoch"):
        assert resumed[name] == pytest.approx(reference[name], abs=1e-6), name

    # TensorBoard: one run directory (no version_N), the steps the killed run logged after its
    # checkpoint purged, so every step appears once and the curves equal the reference's.
    tb = run_dir / "tensorboard"
    assert not [p for p in tb.iterdir() if p.is_dir()]
    assert (
        len(list(tb.glob("events.out.tfevents.*"))) >= 2
    )  # the killed run's and the resumed one's
    for tag in ("val/acc", "val/loss", "train/loss_epoch"):
        got_curve = scalars(tb, tag)
        want_curve = scalars(tmp_path / "reference" / "tensorboard", tag)
        assert [s for s, _ in got_curve] == [s for s, _ in want_curve], tag
        if tag.startswith("val/"):
            assert [v for _, v in got_curve] == pytest.approx([v for _, v in want_curve], abs=1e-6)
    # (epoch means of training metrics are not checkpointed: for the interrupted epoch they
    # cover the batches after the resume only)


def test_ctrl_c_in_a_batch_that_a_validation_follows_resumes_exactly(train_cfg, tmp_path):
    """The checkpoint was written at the batch's end, before the validation due after it, and
    the resumed run went past that validation (Lightning counts it done): early stopping's
    record missed its score, and the run stopped a step later than an uninterrupted one, with
    other weights. Now the validation runs first and the stop follows it."""
    every_3 = [*EXACT, "trainer.max_epochs=2", "+trainer.val_check_interval=3"]
    train(train_cfg(*every_3, run_dir=tmp_path / "reference"))
    run_dir = tmp_path / "run"
    signal_in_step_3 = [
        "+callbacks.int._target_=helpers.faults.SignalAtStep",
        "+callbacks.int.step=2",
        "+callbacks.int.signal=SIGINT",
    ]
    with pytest.raises(SystemExit, match=r"^interrupted by SIGINT at epoch 0 step 3: saved "):
        train(train_cfg(*every_3, *signal_in_step_3, run_dir=run_dir))
    last = run_dir / "checkpoints" / "last.ckpt"
    saved = torch.load(last, weights_only=True)
    early_stopping = next(v for k, v in saved["callbacks"].items() if "EarlyStopping" in k)
    assert torch.isfinite(early_stopping["best_score"])  # step 3's validation scored

    train(train_cfg(*every_3, f"resume={run_dir}", run_dir=run_dir))
    want = torch.load(tmp_path / "reference" / "checkpoints" / "last.ckpt", weights_only=True)
    got = torch.load(last, weights_only=True)
    assert got["global_step"] == want["global_step"]
    for key, tensor in want["state_dict"].items():
        torch.testing.assert_close(got["state_dict"][key], tensor, rtol=0, atol=1e-6, msg=key)


def _same_weights(got: Path, want: Path) -> None:
    got_ckpt, want_ckpt = (torch.load(p, weights_only=True) for p in (got, want))
    assert got_ckpt["global_step"] == want_ckpt["global_step"]
    for key, tensor in want_ckpt["state_dict"].items():
        torch.testing.assert_close(got_ckpt["state_dict"][key], tensor, rtol=0, atol=1e-6, msg=key)


def test_a_signal_mid_way_through_a_gradient_accumulation_stops_at_its_step(train_cfg, tmp_path):
    """`trainer.accumulate_grad_batches=4`: a SIGTERM in the first batch of an accumulation
    stopped the run after that batch. Checkpoints hold no gradients, so the resumed run stepped
    on the accumulation's other three batches alone, and ended with other weights than an
    uninterrupted run. Now the stop waits for the accumulation's step."""
    accumulating = [*EXACT, "trainer.max_epochs=2", "+trainer.accumulate_grad_batches=4"]
    train(train_cfg(*accumulating, run_dir=tmp_path / "reference"))
    run_dir = tmp_path / "run"
    # steps 1, 2 end epoch 0 (6 batches); the signal comes as epoch 1's first batch starts
    signal_in_step_3 = [
        "+callbacks.int._target_=helpers.faults.SignalAtStep",
        "+callbacks.int.step=2",
        "+callbacks.int.signal=SIGTERM",
    ]
    with pytest.raises(SystemExit, match=r"^interrupted by SIGTERM at epoch 1 step 3: saved "):
        train(train_cfg(*accumulating, *signal_in_step_3, run_dir=run_dir))
    train(train_cfg(*accumulating, f"resume={run_dir}", run_dir=run_dir))
    last = "checkpoints/last.ckpt"
    _same_weights(run_dir / last, tmp_path / "reference" / last)


def test_max_time_mid_way_through_a_gradient_accumulation_stops_at_its_step(train_cfg, tmp_path):
    """`trainer.max_time` ran out at the first or second batch of an accumulation of 4 and the
    run stopped there: resumed, it stepped on the accumulation's other batches alone and ended
    with other weights than an uninterrupted run. Now the stop waits for the step."""
    accumulating = [*EXACT, "trainer.max_epochs=2", "+trainer.accumulate_grad_batches=4"]
    train(train_cfg(*accumulating, run_dir=tmp_path / "reference"))
    run_dir = tmp_path / "run"
    # about 0.6 s a batch: the first second ends in the first accumulation (min_epochs=1 would
    # finish epoch 0 first)
    slow = ["+callbacks.slow._target_=helpers.faults.SlowSteps", "+callbacks.slow.seconds=0.6"]
    one_second = ["+trainer.max_time=00:00:00:01", "trainer.min_epochs=0"]
    train(train_cfg(*accumulating, *slow, *one_second, run_dir=run_dir))
    last = "checkpoints/last.ckpt"
    stopped = torch.load(run_dir / last, weights_only=True)
    assert stopped["global_step"] == 1
    train(
        train_cfg(
            *accumulating, "+trainer.max_time={hours:1}", f"resume={run_dir}", run_dir=run_dir
        )
    )
    _same_weights(run_dir / last, tmp_path / "reference" / last)
    # the resumed run counted on from the time its checkpoint held (Lightning's key, "Timer")
    counted = [torch.load(run_dir / last, weights_only=True), stopped]
    trained_s = [c["callbacks"]["Timer"]["time_elapsed"]["train"] for c in counted]
    assert trained_s[0] > trained_s[1] > 1


def test_a_kill_after_a_validation_mid_way_through_an_accumulation_resumes_exactly(
    train_cfg, tmp_path
):
    """A validation after the 3rd batch of an epoch, with 2 batches per step, came mid-way
    through an accumulation, and last.ckpt was written there: a run killed before the step
    resumed from it without the first batch's gradient. Now last.ckpt is written at the step,
    and the killed run resumes from the one before."""
    accumulating = [
        *EXACT,
        "trainer.max_epochs=2",
        "+trainer.accumulate_grad_batches=2",
        "+trainer.val_check_interval=3",
    ]
    train(train_cfg(*accumulating, run_dir=tmp_path / "reference"))
    run_dir = tmp_path / "run"
    # epoch 1: batches 0-1 step 4, the validation after batch 2, killed as batch 3 starts
    kill_after_the_validation = [
        "+callbacks.kill._target_=helpers.faults.SignalAtStep",
        "+callbacks.kill.step=4",
        "+callbacks.kill.batch_idx=3",
    ]
    killed = run_train_cli(
        *FAST, *accumulating, *kill_after_the_validation, f"hydra.run.dir={run_dir}", cwd=tmp_path
    )
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4
    train(train_cfg(*accumulating, f"resume={run_dir}", run_dir=run_dir))
    last = "checkpoints/last.ckpt"
    _same_weights(run_dir / last, tmp_path / "reference" / last)


def test_ctrl_c_at_the_validation_where_early_stopping_ends_training_resumes_to_its_end(
    train_cfg, tmp_path
):
    """The stop waits for the validation due after the batch. When early stopping asks there to
    end training (at an epoch's last validation: Lightning ends it after the epoch, min_epochs
    met), the resumed run trained another epoch (Lightning checkpoints no `should_stop`), with
    other weights than an uninterrupted run. Now it ends where that run ended."""
    stop_at_first = [
        *EXACT,
        "trainer.max_epochs=3",
        "+callbacks.early_stopping.stopping_threshold=-1.0",  # any val/acc asks to stop
    ]
    train(train_cfg(*stop_at_first, run_dir=tmp_path / "reference"))
    run_dir = tmp_path / "run"
    signal_in_the_epochs_last_step = [
        "+callbacks.int._target_=helpers.faults.SignalAtStep",
        f"+callbacks.int.step={STEPS_PER_EPOCH - 1}",
        "+callbacks.int.signal=SIGINT",
    ]
    with pytest.raises(
        SystemExit, match=rf"^interrupted by SIGINT at epoch 0 step {STEPS_PER_EPOCH}:"
    ):
        train(train_cfg(*stop_at_first, *signal_in_the_epochs_last_step, run_dir=run_dir))

    # a new run from that checkpoint makes its own decision (its early stopping starts afresh)
    interrupted = tmp_path / "interrupted.ckpt"
    shutil.copy(run_dir / "checkpoints" / "last.ckpt", interrupted)
    train(train_cfg(*EXACT, f"ckpt_path={interrupted}", run_dir=tmp_path / "new"))
    new = torch.load(tmp_path / "new" / "checkpoints" / "last.ckpt", weights_only=True)
    assert new["global_step"] == 3 * STEPS_PER_EPOCH

    train(train_cfg(*stop_at_first, f"resume={run_dir}", run_dir=run_dir))
    want = torch.load(tmp_path / "reference" / "checkpoints" / "last.ckpt", weights_only=True)
    got = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert got["global_step"] == want["global_step"] == STEPS_PER_EPOCH
    for key, tensor in want["state_dict"].items():
        torch.testing.assert_close(got["state_dict"][key], tensor, rtol=0, atol=1e-6, msg=key)


def test_a_run_early_stopping_ended_resumes_ended_unless_its_patience_is_raised(
    train_cfg, tmp_path, caplog
):
    """Lightning checkpoints no `should_stop` and restores early stopping's patience from the
    checkpoint: a run it had ended trained on to its next validation when resumed (a re-run
    sweep's finished job: other records), and one resumed with a larger patience stopped by the
    old one, though its log and config said the new one."""
    no_gain_after_the_first = [
        *EXACT,
        "+trainer.val_check_interval=3",
        "callbacks.early_stopping.patience=1",
        "callbacks.early_stopping.min_delta=1.0",  # val/acc never improves by 1
    ]
    run_dir = tmp_path / "run"
    train(train_cfg(*no_gain_after_the_first, run_dir=run_dir))
    last = run_dir / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 6  # validations at 3 and 6

    saved = last.read_bytes()
    with caplog.at_level(logging.INFO):
        train(train_cfg(*no_gain_after_the_first, f"resume={run_dir}", run_dir=run_dir))
    assert last.read_bytes() == saved  # nothing trained, nothing saved again
    assert (
        "early stopping had ended the run this one continues (Monitored metric val/acc did not"
        in (caplog.text)
    )

    patient = [*no_gain_after_the_first, "callbacks.early_stopping.patience=3"]
    train(train_cfg(*patient, f"resume={run_dir}", run_dir=run_dir))
    # two more validations without a gain (9, 12) make three
    assert torch.load(last, weights_only=True)["global_step"] == 12


def count_reads(path: Path, monkeypatch) -> list[str]:
    """Every torch.load of `path` from now on (by name, or through an open file), recorded."""
    reads, load = [], torch.load

    def counting_load(f, *args, **kwargs):
        if isinstance(f, (str, os.PathLike)):
            name = str(f)
        else:  # an open file: Lightning reads through fsspec
            name = str(getattr(f, "path", None) or getattr(f, "name", ""))
        if Path(name).resolve() == path.resolve():
            reads.append(name)
        return load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counting_load)
    return reads


@pytest.mark.parametrize(
    "bound, how",
    [
        ([], "resume"),
        ([f"+trainer.max_steps={2 * STEPS_PER_EPOCH}"], "resume"),
        ([f"+trainer.max_steps={2 * STEPS_PER_EPOCH}"], "ckpt_path"),
    ],
    ids=["epochs", "max_steps", "max_steps_new_run"],
)
def test_run_stopped_at_an_epoch_end_resumes_exactly(
    train_cfg, tmp_path, data_dir, monkeypatch, bound, how
):
    """The latest checkpoint is the one written after epoch 0's validation (no step checkpoint
    since): the resumed run starts epoch 1 with the same shuffle and augmentation draws. With
    max_steps set, Lightning ran epoch 1 without a batch (it took the batch count at epoch 0's
    end for epoch 1's) and stopped at max_epochs, the steps left untrained and the run recorded
    as completed."""
    from helpers.faults import Crash

    two_epochs = [*EXACT, "trainer.max_epochs=2", *bound]
    train(train_cfg(*two_epochs, run_dir=tmp_path / "reference"))
    run_dir = tmp_path / "run"
    crash = ["+callbacks.crash._target_=helpers.faults.CrashAtStep", "+callbacks.crash.step=7"]
    with pytest.raises(Crash):
        train(train_cfg(*two_epochs, *crash, run_dir=run_dir))
    last = run_dir / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == STEPS_PER_EPOCH

    reads = count_reads(last, monkeypatch)
    if how == "resume":
        train(train_cfg(*two_epochs, f"resume={run_dir}", run_dir=run_dir))
    else:  # a new run from it (ckpt_path=) continues its loop as well
        run_dir = tmp_path / "new_run"
        train(train_cfg(*two_epochs, f"ckpt_path={last}", run_dir=run_dir))
    assert len(reads) == 1  # read once, handed to the checks, TensorBoard and Lightning
    want = torch.load(tmp_path / "reference" / "checkpoints" / "last.ckpt", weights_only=True)
    got = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert got["global_step"] == want["global_step"] == 2 * STEPS_PER_EPOCH
    for key, tensor in want["state_dict"].items():
        torch.testing.assert_close(got["state_dict"][key], tensor, rtol=0, atol=1e-6, msg=key)


@pytest.mark.parametrize(
    "validation, stop",
    [([], 3), (["+trainer.val_check_interval=0.5"], 2)],
    ids=["saved_at_epoch_end_hooks", "saved_at_train_end"],
)
def test_a_run_that_max_steps_stopped_mid_epoch_resumes_to_its_end(
    train_cfg, tmp_path, validation, stop
):
    """max_steps=3 in a 6-batch epoch, resumed with the steps of two epochs: last.ckpt, written
    in the epoch-end hooks Lightning runs for a cut epoch, counted epoch 0 done; the resumed run
    trained its last 3 batches as epoch 1 and stopped at max_epochs=2 with 6 steps of 12, the
    run recorded as completed. It resumes as the uninterrupted run trains now (at constant
    rates: a schedule is sized for the steps each part is given). Validating twice an epoch,
    last.ckpt is written when training ends, after Lightning counted the epoch completed."""
    two_epochs = [*EXACT, "trainer.max_epochs=2", "model.scheduler=null", *validation]
    train(train_cfg(*two_epochs, run_dir=tmp_path / "reference"))
    run_dir = tmp_path / "run"
    train(train_cfg(*two_epochs, f"+trainer.max_steps={stop}", run_dir=run_dir))
    train(train_cfg(*two_epochs, f"resume={run_dir}", run_dir=run_dir))
    want = tmp_path / "reference" / "checkpoints" / "last.ckpt"
    _same_weights(run_dir / "checkpoints" / "last.ckpt", want)
    assert torch.load(want, weights_only=True)["global_step"] == 2 * STEPS_PER_EPOCH


@pytest.mark.parametrize("logger", ["csv", "many_loggers"])
def test_a_resumed_run_keeps_the_csv_log_of_its_first_part(train_cfg, tmp_path, logger):
    """logger=csv, then resume=<run dir> training an epoch further: the first part's
    csv/metrics.csv and hparams.yaml stay as written and the resumed part logs to its own
    csv/version_0/ (was: Lightning deleted the first part's metrics.csv)."""
    run_dir = tmp_path / "run"
    once = [f"logger={logger}", "trainer.log_every_n_steps=1", "test=false"]
    train(train_cfg(*once, "trainer.max_epochs=1", run_dir=run_dir))
    first = {f.name: f.read_text() for f in (run_dir / "csv").iterdir()}
    assert {"metrics.csv", "hparams.yaml"} <= set(first)

    train(train_cfg(*once, "trainer.max_epochs=2", f"resume={run_dir}", run_dir=run_dir))
    for name, text in first.items():
        assert (run_dir / "csv" / name).read_text() == text, name
    rows = list(csv.DictReader((run_dir / "csv" / "version_0" / "metrics.csv").open()))
    assert {r["epoch"] for r in rows if r["epoch"]} == {"1"}


def test_fresh_run_never_reuses_an_existing_directory(tmp_path):
    """Two runs started in the same second (here: the second one finds the directory the first
    one created) get different directories."""
    first = choose_run_dir(None, tmp_path / "exp" / "2026-01-01_00-00-00")
    second = choose_run_dir(None, tmp_path / "exp" / "2026-01-01_00-00-00")
    assert first.name == "2026-01-01_00-00-00"
    assert second.name == "2026-01-01_00-00-00_1"
    assert first.is_dir() and second.is_dir()


def run_start_config(overrides: list[str]) -> DictConfig:
    """The config Hydra hands its callbacks at the start of `sft-train <overrides>`, after the
    run-directory callback settled it."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    callback = RunDirectory()
    callback.on_run_start(config=cfg)
    callback.on_run_end(config=cfg)  # the directory it held, released
    return cfg


def make_run(experiment_dir: Path, name: str, mtime: float | None) -> Path:
    run = experiment_dir / name
    (run / "checkpoints").mkdir(parents=True)
    if mtime is not None:
        last = run / "checkpoints" / "last.ckpt"
        torch.save({"epoch": 0, "global_step": 1}, last)
        os.utime(last, (mtime, mtime))
    return run


def test_resume_auto_picks_the_run_with_the_newest_last_checkpoint(tmp_path):
    """hydra.run.dir with resume=auto: the run whose last.ckpt is newest, its config recorded
    beside the original's; none: a fresh one."""
    exp = tmp_path / "outputs" / "train" / "exp"
    make_run(exp, "2026-01-01_00-00-00", mtime=2_000_000_000)
    newest = make_run(exp, "2026-01-02_00-00-00", mtime=2_000_000_100)
    make_run(exp, "2026-01-03_00-00-00", mtime=None)  # a later run without a checkpoint
    (newest / ".hydra").mkdir()
    (newest / ".hydra" / "config.yaml").write_text("{}\n")
    overrides = [f"paths.log_dir={tmp_path / 'outputs'}", "name=exp", "resume=auto"]
    cfg = run_start_config(overrides)
    assert cfg.hydra.run.dir == str(newest.resolve())
    assert cfg.hydra.output_subdir.startswith(".hydra/resumed_")

    nothing = tmp_path / "outputs" / "train" / "other"
    cfg = run_start_config([*overrides[:1], "name=other", "resume=auto"])
    fresh = Path(cfg.hydra.run.dir)
    assert fresh.parent == nothing.resolve() and fresh.is_dir()  # created (reserved) at once
    assert cfg.hydra.output_subdir == ".hydra"


def test_resume_auto_prefers_the_newest_run_with_the_commands_settings(tmp_path, caplog):
    """Two interrupted runs of one experiment with other learning rates: resume=auto with one's
    settings continued whichever checkpointed last, with the other's settings from then on
    (a warning named them). It now continues the newest run of the same settings, where one
    is, else the newest."""
    exp = tmp_path / "outputs" / "train" / "exp"
    common = [f"paths.log_dir={tmp_path / 'outputs'}", "name=exp"]
    runs = {}
    for n, lr in enumerate(["0.1", "0.01", "0.1"]):  # the 0.1 runs: the first and the last
        run = make_run(exp, f"2026-01-0{n + 1}_00-00-00", mtime=2_000_000_000 + n)
        RunResult(
            status="interrupted", output_dir=str(run), overrides=[*common, f"model.lr_head={lr}"]
        ).write()
        runs[n] = run
    os.utime(runs[1] / "checkpoints" / "last.ckpt", (2_000_000_100, 2_000_000_100))  # newest
    with caplog.at_level(logging.INFO, logger="sft.runs.directories"):
        cfg = run_start_config([*common, "model.lr_head=1e-1", "resume=auto"])
    assert cfg.hydra.run.dir == str(runs[2].resolve())  # 1e-1 is 0.1: the same setting
    assert "the newest run with this command's settings (1 newer run has other settings" in (
        caplog.text
    )
    cfg = run_start_config([*common, "model.lr_head=0.01", "resume=auto"])
    assert cfg.hydra.run.dir == str(runs[1].resolve())
    # continued for longer: the run length tells no runs apart
    cfg = run_start_config([*common, "model.lr_head=0.1", "trainer.max_epochs=9", "resume=auto"])
    assert cfg.hydra.run.dir == str(runs[2].resolve())
    # a run killed before it wrote result.json: the overrides Hydra recorded as it started
    (runs[2] / "result.json").unlink()
    (runs[2] / ".hydra").mkdir(exist_ok=True)
    (runs[2] / ".hydra" / "overrides.yaml").write_text(
        "".join(f"- {o}\n" for o in [*common, "model.lr_head=0.1"])
    )
    cfg = run_start_config([*common, "model.lr_head=0.1", "resume=auto"])
    assert cfg.hydra.run.dir == str(runs[2].resolve())
    # no run of these settings: the newest, as before (its other settings are warned about)
    cfg = run_start_config([*common, "model.lr_head=0.5", "resume=auto"])
    assert cfg.hydra.run.dir == str(runs[1].resolve())


def test_a_run_directory_given_on_the_command_line_is_used_as_given(tmp_path):
    given = tmp_path / "mine"
    cfg = run_start_config([f"hydra.run.dir={given}"])
    assert cfg.hydra.run.dir == str(given) and not given.exists()  # Hydra creates it later


def test_resume_of_a_missing_directory_makes_no_run_directory(tmp_path):
    """sft-train resume=<a path that is not there>: one error line, and no fresh (failed) run
    directory left behind under the experiment."""
    outputs = tmp_path / "outputs"
    missing = tmp_path / "no_such_run"
    result = run_train_cli(
        f"paths.log_dir={outputs}", "name=exp", f"resume={missing}", cwd=tmp_path
    )
    assert result.returncode == 1
    assert (
        result.stderr.strip().splitlines()[-1] == f"error: resume={missing}: no such run directory"
    )
    assert not missing.exists()
    assert not (outputs / "train" / "exp").exists() or not any(
        (outputs / "train" / "exp").iterdir()
    )


def test_resume_of_a_folder_that_holds_no_run_writes_nothing_there(tmp_path):
    """sft-train resume=<an existing folder without checkpoints/last.ckpt>: one error line, and
    the folder stays as it was (was: Hydra's .hydra/, train.log and a failed result.json were
    written into it before the refusal)."""
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "todo.txt").write_text("mine\n")
    result = run_train_cli(
        f"paths.log_dir={tmp_path / 'outputs'}", f"resume={folder}", cwd=tmp_path
    )
    assert result.returncode == 1
    last = folder / "checkpoints" / "last.ckpt"
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: resume={folder}: {last} does not exist, nothing to resume from"
    )
    assert [p.name for p in folder.iterdir()] == ["todo.txt"]


def test_resume_mistakes_are_one_line_errors(train_cfg, tmp_path):
    # a resume= path that does not exist: the run dir resolver gave a fresh directory
    with pytest.raises(SFTError, match="no such run directory"):
        train(train_cfg(f"resume={tmp_path / 'nowhere'}", run_dir=tmp_path / "fresh"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SFTError, match="nothing to resume from"):
        train(train_cfg(f"resume={empty}", run_dir=empty))
    with pytest.raises(SFTError, match="not both"):
        train(train_cfg(f"resume={empty}", f"ckpt_path={empty}/x.ckpt", run_dir=empty))
    # a checkpoint file: which setting takes it (was: "no such run directory")
    last = empty / "checkpoints" / "last.ckpt"
    last.parent.mkdir()
    last.write_bytes(b"")
    with pytest.raises(SFTError) as info:
        train(train_cfg(f"resume={last}", run_dir=tmp_path / "fresh"))
    assert str(info.value) == (
        f"resume={last} is a file: resume={empty} continues the run that holds it; "
        f"ckpt_path={last} starts a new run from it"
    )
    # a run's own files and its checkpoints folder (were: told that ckpt_path= would start a
    # run from config_resolved.yaml; ".../checkpoints/checkpoints/last.ckpt does not exist")
    (empty / "config_resolved.yaml").write_text("seed: 0\n")
    with pytest.raises(SFTError, match=r"is a file: resume= takes a run directory$"):
        train(train_cfg(f"resume={empty / 'config_resolved.yaml'}", run_dir=tmp_path / "fresh"))
    last.unlink()
    with pytest.raises(SFTError, match=rf"\(resume={empty}: the run that holds this folder\)$"):
        train(train_cfg(f"resume={empty / 'checkpoints'}", run_dir=tmp_path / "fresh"))
    # what a folder without last.ckpt is instead (were: "does not exist" alone): a run with
    # other checkpoints, a sweep's, an sft-eval run's
    (last.parent / "gone.ckpt").symlink_to(tmp_path / "nowhere.ckpt")  # passed over
    best = last.parent / "epoch_000.ckpt"
    best.write_bytes(b"")
    with pytest.raises(SFTError) as info:
        train(train_cfg(f"resume={empty}", run_dir=empty))
    assert str(info.value).endswith(
        f"nothing to resume from (ckpt_path={best}, its newest checkpoint, starts a new run from it)"
    )
    best.unlink()
    for record, said in (
        ("multirun.yaml", f"({empty} is a sweep's: re-run the sweep with hydra.sweep.dir={empty},"),
        ("scores.json", f"({empty} is an sft-eval run's: it trained nothing)"),
    ):
        (empty / record).write_text("{}")
        with pytest.raises(SFTError) as info:
            train(train_cfg(f"resume={empty}", run_dir=empty))
        assert f"nothing to resume from {said}" in str(info.value)
        (empty / record).unlink()


RECORDED = ["experiment=mine", "data.samples_per_class=20", "model.lr_head=0.01", "~model.backbone"]


@pytest.mark.parametrize(
    ("now", "said"),
    [
        (
            ["experiment=mine", "data.samples_per_class=40", "model.lr_head=0.01", "~model.backbone"],
            "now data.samples_per_class=40; then data.samples_per_class=20",
        ),
        # a value given again after the recorded one: Hydra applies the last (was: "then none")
        (
            [*RECORDED, "data.samples_per_class=40"],
            "now data.samples_per_class=40; then data.samples_per_class=20",
        ),
        # the same settings written otherwise, as a sweep records its jobs' (was: each named)
        (
            ["experiment=mine", "+data.samples_per_class=20", "model.lr_head=1e-2", "~model.backbone=null"],
            None,
        ),
    ],
)  # fmt: skip
def test_resuming_with_other_overrides_names_them(
    now, said, train_cfg, tmp_path, monkeypatch, caplog
):
    """`sft-train ... resume=auto` with other settings than the run it continues (was: the
    latest run continued with them without a word)."""
    import sft.runs.resume as resume_module

    run_dir = tmp_path / "run"
    train(train_cfg("trainer.max_epochs=1", "test=false", run_dir=run_dir))
    record = RunResult("completed", overrides=RECORDED, output_dir=str(run_dir)).write()
    monkeypatch.setattr(resume_module, "task_overrides", lambda: [*now, "resume=auto"])
    resumed = train_cfg("trainer.max_epochs=2", "test=false", f"resume={run_dir}", run_dir=run_dir)
    with caplog.at_level(logging.WARNING, logger="sft"):
        train(resumed)
    lines = [r.getMessage() for r in caplog.records if "other overrides than" in r.getMessage()]
    if said is None:
        assert not lines
    else:
        assert lines == [
            f"resuming {run_dir} with other overrides than it ran with ({record}): {said}; the "
            "rest of the run has this command's settings"
        ]


@pytest.mark.parametrize(
    ("then", "now", "plugins"),
    [
        ("l2sp", "none", []),
        ("none", "l2sp", []),
        # Lightning reads the file itself (no sft checkpoint plugin to hand the contents to)
        ("l2sp", "none", ["trainer.plugins=null"]),
    ],
)
def test_a_new_run_from_a_checkpoint_may_change_the_regulariser(
    train_cfg, tmp_path, caplog, then, now, plugins
):
    """The change is warned about, then trains with this run's regulariser (was: refused after
    the warning, "it has extra regularizer.ref_0 ..." / "it lacks regularizer.ref_0 ...")."""
    first = tmp_path / "first"
    train(
        train_cfg(
            "trainer.max_epochs=1",
            "test=false",
            f"model.regularizer={then}",
            "model.reg_lambda=0.01",
            run_dir=first,
        )
    )
    second = train_cfg(
        "trainer.max_epochs=2",
        "test=false",
        f"model.regularizer={now}",
        "model.reg_lambda=0.01",
        f"ckpt_path={first / 'checkpoints' / 'last.ckpt'}",
        *plugins,
        run_dir=tmp_path / "second",
    )
    with logs_warning(caplog, rf"model\.regularizer='{then}' -> '{now}'"):
        metrics = train(second)
    assert metrics["val/acc"] >= 0
    saved = torch.load(tmp_path / "second" / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["epoch"] == 1
    assert any(k.startswith("regularizer.") for k in saved["state_dict"]) == (now == "l2sp")


def test_trainer_writes_checkpoints_atomically(train_cfg):
    cfg = train_cfg()
    resolve_auto_precision(cfg.trainer, cpu_bf16_pays=False)  # as sft-train does first
    trainer = instantiate(cfg.trainer)
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)


def test_a_kill_during_a_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "w": torch.ones(3)}, path)

    def dies_half_way(obj, f):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt  # as a kill while writing

    monkeypatch.setattr(checkpoint_io.torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"global_step": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()

    state = torch.load(path, weights_only=True)
    assert state["global_step"] == 1 and torch.equal(state["w"], torch.ones(3))
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # no temp file left


def test_samplers_repeat_a_pass_without_its_first_indices():
    """The position of an epoch is (the pass's seed or epoch, batches done); the shuffled order
    is torch's RandomSampler's for the same global seed, so seeded runs shuffle as before."""
    from torch.utils.data import RandomSampler

    from sft.data.length_grouped import LengthGroupedSampler
    from sft.data.resumable import ResumableDataLoader, ResumableRandomSampler

    torch.manual_seed(3)
    expected = list(RandomSampler(range(50)))
    torch.manual_seed(3)
    sampler = ResumableRandomSampler(range(50))
    assert list(sampler) == expected
    sampler.resume_pass(sampler.pass_state(), skip=20)
    assert list(sampler) == expected[20:]

    grouped = LengthGroupedSampler(torch.randint(1, 30, (50,)), batch_size=4, pool_batches=2)
    grouped.set_epoch(2)
    order = list(grouped)
    state = grouped.pass_state()
    grouped.set_epoch(0)
    grouped.resume_pass(state, skip=8)
    assert list(grouped) == order[8:]

    loader = ResumableDataLoader(
        list(range(10)), batch_size=2, sampler=ResumableRandomSampler(range(10))
    )
    batches = iter(loader)
    first = [next(batches), next(batches)]
    state = loader.state_dict()
    rest = list(batches)
    assert state["batches"] == 2
    loader.load_state_dict(state)
    assert [b.tolist() for b in loader] == [b.tolist() for b in rest]
    assert len(first + rest) == 5


def test_a_resumed_epoch_in_batches_of_another_size_says_what_it_skips(caplog):
    """resume= with another data.batch_size (or data) than the checkpoint's: the rest of the
    interrupted epoch skips as many batches of the new size, other examples than those trained
    (was: without a word; half an epoch of CIFAR-10 left untrained in the trial)."""
    from sft.data.resumable import ResumableDataLoader, ResumableRandomSampler

    def loader(batch_size: int) -> ResumableDataLoader:
        data = list(range(20))
        return ResumableDataLoader(
            data, batch_size=batch_size, sampler=ResumableRandomSampler(data)
        )

    interrupted = loader(2)
    batches = iter(interrupted)
    next(batches), next(batches), next(batches)
    state = interrupted.state_dict()
    loader(2).load_state_dict(state)  # the same batches: nothing to say
    with logs_warning(
        caplog,
        r"^the checkpoint was written 3 batches into an epoch of 20 examples in batches of 2; "
        r"this run's data has 20 in batches of 4: the rest of that epoch skips its first 3 "
        r"batches \(12 examples\), which are not the 6 examples trained",
    ):
        loader(4).load_state_dict(state)
    assert sum("batches into an epoch" in r.getMessage() for r in caplog.records) == 1


def test_a_resumed_runs_event_file_sorts_after_the_interrupted_ones(tmp_path):
    """TensorBoard reads event files in name order (creation second, host, pid): a run resumed
    within the second its interrupted run started must still sort last (was: the resumed
    run's steps shown before the interrupted run's, a flaky failure of the test above)."""
    import time

    now = int(time.time())
    (tmp_path / f"events.out.tfevents.{now}.host.99999.0").write_bytes(b"")
    wait_to_sort_after(tmp_path)
    assert int(time.time()) > now
    start = time.time()
    wait_to_sort_after(tmp_path / "elsewhere")  # nothing there: no wait
    assert time.time() - start < 0.1


def test_the_best_validation_accuracy_survives_a_resume():
    """val/acc_best (the run's returned metric) is the best over every validation of the run,
    also those before the checkpoint it resumed from: torchmetrics does not checkpoint it."""
    backbone = {"_target_": "sft.models.backbones.create_backbone", "name": "small_cnn", "width": 8}

    def attached(model: SFTClassifier) -> SFTClassifier:
        model.trainer = L.Trainer(logger=False, enable_checkpointing=False)  # no optimizer yet
        return model

    before = attached(SFTClassifier(backbone=backbone, num_classes=3))
    before.on_train_start()
    before.val_acc_best(torch.tensor(0.9))
    checkpoint: dict = {}
    before.on_save_checkpoint(checkpoint)

    resumed = attached(SFTClassifier(backbone=backbone, num_classes=3))
    resumed.on_load_checkpoint(checkpoint)
    resumed.on_train_start()
    resumed.val_acc_best(torch.tensor(0.5))
    assert float(resumed.val_acc_best.compute()) == pytest.approx(0.9)
    # a new run (no checkpoint) starts from nothing
    fresh = attached(SFTClassifier(backbone=backbone, num_classes=3))
    fresh.on_train_start()
    fresh.val_acc_best(torch.tensor(0.5))
    assert float(fresh.val_acc_best.compute()) == pytest.approx(0.5)


def test_last_checkpoint_is_the_newest_state_when_validation_does_not_improve(train_cfg, tmp_path):
    """Validation twice an epoch with a model that cannot improve (lr ~ 0): Lightning 2.6's
    save_last left last.ckpt at the first validation's step, so resume= redid steps and
    sft-eval/-predict/-export read a stale model (was: global_step 3 of 6)."""
    cfg = train_cfg(
        "trainer.max_epochs=1",
        "+trainer.val_check_interval=0.5",
        "callbacks.step_checkpoint=null",
        "model.lr_backbone=0",
        "model.lr_head=1e-12",
        "test=false",
    )
    train(cfg)
    ckpts = tmp_path / "run" / "checkpoints"
    assert torch.load(ckpts / "epoch_000.ckpt", weights_only=True)["global_step"] == 3  # best
    assert torch.load(ckpts / "last.ckpt", weights_only=True)["global_step"] == STEPS_PER_EPOCH


def test_last_checkpoint_holds_the_final_step_and_each_state_once(train_cfg, tmp_path, monkeypatch):
    """A run stopped by max_steps mid-epoch: last.ckpt holds its final step (was: the step of its
    last validation, Lightning's save_last writes at the end only a run's first last.ckpt), and
    each step's state goes to last.ckpt once (was: twice at a validation that improved)."""
    written: list[int] = []
    save = AtomicCheckpointIO.save_checkpoint

    def recording(self, checkpoint, path, storage_options=None):
        if Path(path).name == "last.ckpt":
            written.append(checkpoint["global_step"])
        save(self, checkpoint, path, storage_options)

    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", recording)
    cfg = train_cfg(
        "trainer.max_epochs=2",
        "+trainer.max_steps=10",  # validations at steps 3, 6 and 9, then 1 more step
        "+trainer.val_check_interval=0.5",
        "callbacks.step_checkpoint=null",
        "test=false",
    )
    train(cfg)
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 10
    assert written == [3, 6, 9, 10]


def test_a_new_run_from_a_checkpoint_tests_its_own_weights(train_cfg, tmp_path, caplog):
    """ckpt_path= starts a new run: one that ends before its first validation tested the old
    run's best file and reported its metrics as its own (was: Lightning restores ModelCheckpoint's
    best_model_path from the checkpoint, also when it points into another run's directory)."""
    first = tmp_path / "first"
    train(train_cfg("trainer.max_epochs=1", "test=false", run_dir=first))
    new = tmp_path / "new"
    cfg = train_cfg(
        "trainer.max_epochs=2",
        "+trainer.max_steps=8",  # 2 steps into epoch 2, whose validation comes at its end
        f"ckpt_path={first}/checkpoints/last.ckpt",
        run_dir=new,
    )
    with caplog.at_level("INFO"):
        train(cfg)
    tested = [line for line in caplog.text.splitlines() if "Best checkpoint:" in line]
    assert not [line for line in tested if str(first) in line], tested
    assert "No best checkpoint recorded: testing the current weights." in caplog.text
    # one whose epochs or steps already reach max_epochs / max_steps would train nothing (was:
    # a "completed" run), also when saved at a validation inside its last epoch
    halves = tmp_path / "halves"
    train(train_cfg("trainer.max_epochs=1", "+trainer.val_check_interval=0.5", run_dir=halves))
    for run, limits in (
        (first, ["trainer.max_epochs=1"]),
        (halves, ["trainer.max_epochs=1"]),
        (first, ["trainer.max_epochs=2", "+trainer.max_steps=6"]),
    ):
        last = run / "checkpoints" / "last.ckpt"
        with pytest.raises(SFTError) as info:
            train(train_cfg(*limits, f"ckpt_path={last}"))
        reached = limits[-1].lstrip("+")
        assert str(info.value) == (
            f"ckpt_path={last} has trained 1 epoch (6 steps), which reaches {reached}: the run "
            f"from it would train nothing; raise {reached.split('=')[0]} (it counts the "
            "checkpoint's epochs and steps too)"
        )


def _record(dirpath: str, best: str) -> dict:
    return {
        "dirpath": dirpath,
        "best_model_path": best,
        "best_model_score": torch.tensor(0.5),
        "best_k_models": {best: torch.tensor(0.5)},
        "kth_best_model_path": best,
        "last_model_path": "",
    }


def test_a_checkpoint_record_is_moved_with_its_run_only(tmp_path):
    """follow_moved_run: a run left in place keeps every record as written, also of a best
    folder of its own or elsewhere (was: a best folder other than checkpoints/ was taken for a
    moved run and its record dropped); a moved run's records follow it, folders outside it stay."""
    run = tmp_path / "run"
    for folder in ("checkpoints", "best"):
        (run / folder).mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    (run / "best" / "epoch_002.ckpt").write_bytes(b"")
    elsewhere = str(tmp_path / "ssd" / "epoch_001.ckpt")
    last_key, best_key, far_key = "LastCheckpoint{}", "ModelCheckpoint{'b'}", "ModelCheckpoint{'f'}"

    def checkpoint(root: Path) -> dict:
        root = root.resolve()
        return {
            "callbacks": {
                last_key: _record(
                    str(root / "checkpoints"), str(root / "checkpoints" / "last.ckpt")
                ),
                best_key: _record(str(root / "best"), str(root / "best" / "epoch_002.ckpt")),
                far_key: _record(str(Path(elsewhere).parent), elsewhere),
            }
        }

    in_place = checkpoint(run)
    follow_moved_run(in_place, run / "checkpoints" / "last.ckpt")
    assert in_place == checkpoint(run)

    moved = tmp_path / "moved"
    run.rename(moved)
    state = checkpoint(run)  # as written, before the move
    follow_moved_run(state, moved / "checkpoints" / "last.ckpt")
    assert state["callbacks"][best_key]["best_model_path"] == str(
        moved.resolve() / "best" / "epoch_002.ckpt"
    )
    assert state["callbacks"][best_key]["dirpath"] == str(moved.resolve() / "best")
    assert list(state["callbacks"][best_key]["best_k_models"]) == [
        str(moved.resolve() / "best" / "epoch_002.ckpt")
    ]
    assert state["callbacks"][last_key]["dirpath"] == str(moved.resolve() / "checkpoints")
    assert state["callbacks"][far_key] == checkpoint(run)["callbacks"][far_key]


@pytest.mark.parametrize("trains_further", [True, False])
def test_a_continued_run_failing_in_its_test_keeps_only_test_metrics_of_its_checkpoint(
    tmp_path, trains_further
):
    """A resumed run that trains further and then fails in its test may have another best
    checkpoint: its result.json drops the earlier part's test metrics (was: they stood beside
    the new validation's, as if measured on the new best). A finished run resumed trains
    nothing: its best, and so its earlier test metrics, still hold."""
    first = RunRecorder(tmp_path, [], "val/acc_best")
    first.fit_started()
    first.completed({"val/acc": 0.8, "val/acc_best": 0.8, "test/acc": 0.79})

    again = RunRecorder(tmp_path, [], "val/acc_best")
    again.continues_earlier_run()
    again.fit_started()
    logged = {"val/acc": 0.85, "val/acc_best": 0.85} if trains_further else {}
    again.set_progress(2 if trains_further else 1, 20 if trains_further else 10, logged)
    again.failed(RuntimeError("the test split could not be read"))

    recorded = RunResult.read(tmp_path / "result.json")
    assert recorded.status == "failed"
    if trains_further:
        assert recorded.metrics == {"val/acc": 0.85, "val/acc_best": 0.85}
    else:
        assert recorded.metrics == {"val/acc": 0.8, "val/acc_best": 0.8, "test/acc": 0.79}


@pytest.mark.parametrize(
    ("recorded", "now", "kept"),
    [
        (["seed=1"], ["seed=1"], True),
        # a sweep job started from a checkpoint; its DDP ranks' resume command lacks ckpt_path=
        (["seed=1", "ckpt_path=/a.ckpt"], ["seed=1"], True),
        (["seed=1", "ckpt_path=/a.ckpt"], ["seed=1", "ckpt_path=/a.ckpt"], True),
        (["seed=1"], ["seed=2"], False),
        (["seed=1"], ["seed=1", "+trainer.limit_test_batches=1"], False),
    ],
)
def test_a_finished_runs_test_metrics_hold_for_its_settings_only(tmp_path, recorded, now, kept):
    """What a finished run continued without training keeps instead of testing again; DDP's
    ranks must agree (the sweep job's overrides have ckpt_path=, its ranks' not)."""
    from sft.runs.result import earlier_test_metrics

    RunResult(
        status="completed",
        output_dir=str(tmp_path),
        overrides=recorded,
        metrics={"val/acc": 0.5, "test/acc": 0.4, "test/loss": None},
    ).write()
    assert earlier_test_metrics(tmp_path, now) == ({"test/acc": 0.4} if kept else {})


def test_resuming_a_run_of_another_pretrained_model_is_refused(tmp_path):
    """resume=auto continued a RoBERTa run with XLM-R's folder (same weight shapes), with a
    warning only: the checkpoint's weights ran under another tokenizer."""
    from types import SimpleNamespace

    from sft.runs.resume import ResumePoint, check_resume_checkpoint

    trained = {"name": "huggingface", "model_name_or_path": str(tmp_path / "roberta")}
    now = {"name": "huggingface", "model_name_or_path": str(tmp_path / "xlm_roberta")}
    point = ResumePoint(tmp_path / "last.ckpt", {"hyper_parameters": {"backbone": trained}})
    model = SimpleNamespace(hparams={"backbone": now})
    with pytest.raises(SFTError, match=r"was trained with model\.backbone\.model_name_or_path="):
        check_resume_checkpoint(point, model)
    timm = {"name": "timm", "model_name": "test_vit"}
    point = ResumePoint(tmp_path / "last.ckpt", {"hyper_parameters": {"backbone": timm}})
    model = SimpleNamespace(hparams={"backbone": {**timm, "model_name": "test_vit2"}})
    with pytest.raises(SFTError, match=r"model\.backbone\.model_name='test_vit', this run has "):
        check_resume_checkpoint(point, model)


def rates_of_a_resumed_run(train_cfg, run_dir: Path, *changes: str) -> dict[int, float]:
    """The first group's learning rate at each step of a 3-step run (cosine, no warm-up)
    resumed with max_steps=6 and `changes`."""
    rates = run_dir.parent / "rates.json"
    record = [
        "+callbacks.rates._target_=helpers.probes.RecordLearningRates",
        f"+callbacks.rates.path={rates}",
    ]
    common = ["test=false", "model.warmup_ratio=0", "trainer.max_epochs=10", *record]
    train(train_cfg(*common, "+trainer.max_steps=3", run_dir=run_dir))
    resumed = [*common, "+trainer.max_steps=6", *changes, f"resume={run_dir}"]
    train(train_cfg(*resumed, run_dir=run_dir))
    return {int(k): v for k, v in json.loads(rates.read_text()).items()}


def test_a_run_resumed_with_more_steps_follows_its_new_schedule_from_the_first_step(
    train_cfg, tmp_path
):
    """max_steps=3, resumed with max_steps=6: the resumed steps follow the 6-step cosine schedule
    (was: step 3 took the old schedule's last rate, 0, so that step trained nothing)."""
    lr = rates_of_a_resumed_run(train_cfg, tmp_path / "run")
    assert sorted(lr) == [0, 1, 2, 3, 4, 5]
    head = lr[0]  # the first group's base rate (cosine at step 0)
    expected = [head * 0.5 * (1 + math.cos(math.pi * step / 6)) for step in (3, 4, 5)]
    assert [lr[step] for step in (3, 4, 5)] == pytest.approx(expected)


def test_a_run_resumed_with_other_rates_and_weight_decay_trains_with_them(train_cfg, tmp_path):
    """resume= with a lower model.lr_head (what the non-finite loss error advises) and another
    weight decay: the restored optimizer kept the saved run's rates and decay, without a word,
    while config_resolved.yaml recorded the new ones."""
    run_dir = tmp_path / "run"
    lr = rates_of_a_resumed_run(train_cfg, run_dir, "model.lr_head=0.001", "model.weight_decay=0.1")
    expected = [0.001 * 0.5 * (1 + math.cos(math.pi * step / 6)) for step in (3, 4, 5)]
    assert [lr[step] for step in (3, 4, 5)] == pytest.approx(expected)
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    groups = {g["name"]: g for g in saved["optimizer_states"][0]["param_groups"]}
    assert groups["head"]["initial_lr"] == 0.001 and groups["head"]["weight_decay"] == 0.1
    assert groups["head/no_decay"]["weight_decay"] == 0.0


def test_a_resumed_run_keeps_the_checkpoint_it_started_from_in_its_record(tmp_path):
    """A run started with ckpt_path=<other run's checkpoint> and later resumed (resume=<run>,
    no ckpt_path=) recorded only the resuming command's overrides: its result.json, and so its
    sft-compare label, no longer said that its steps began in another run."""
    first = RunRecorder(tmp_path, ["ckpt_path=/runs/a/last.ckpt", "trainer.max_epochs=2"], None)
    first.fit_started()
    first.set_progress(1, 10, {"val/acc": 0.8})
    first.failed(KeyboardInterrupt())

    again = RunRecorder(tmp_path, [f"resume={tmp_path}", "trainer.max_epochs=2"], None)
    again.continues_earlier_run()
    again.fit_started()
    again.completed({"val/acc": 0.85})

    recorded = RunResult.read(tmp_path / "result.json")
    assert recorded.overrides == [
        f"resume={tmp_path}",
        "trainer.max_epochs=2",
        "ckpt_path=/runs/a/last.ckpt",
    ]


def test_resuming_a_run_that_logged_no_metric_keeps_its_command(tmp_path, monkeypatch):
    """A run whose record holds no metric (stopped before it logged one) and that was resumed:
    the resume wrote its own command over the run's `.hydra/` (was: taken as a run replacing
    one that failed before logging), so sft-compare labelled the run with the resume's
    settings and the original command was lost."""
    monkeypatch.chdir(tmp_path)
    task = [*FAST, "trainer.max_epochs=1", "test=false", f"paths.log_dir={tmp_path}", "name=r"]
    assert run_entry_point(sft.train.main, ["sft-train", *task]) == 0
    run_dir = only_run_dir(tmp_path / "train" / "r")
    record = json.loads((run_dir / "result.json").read_text())
    record.update(status="interrupted", metrics={})
    (run_dir / "result.json").write_text(json.dumps(record))
    typed = (run_dir / ".hydra" / "overrides.yaml").read_text()

    again = [*task[:-1], "name=r", "trainer.max_epochs=2", f"resume={run_dir}"]
    assert run_entry_point(sft.train.main, ["sft-train", *again]) == 0
    assert (run_dir / ".hydra" / "overrides.yaml").read_text() == typed
    (resumed,) = (run_dir / ".hydra").glob("resumed_*")
    assert f"resume={run_dir}" in (resumed / "overrides.yaml").read_text()


def small_image_folder(folder: Path, data_dir: Path, per_class: int = 16) -> Path:
    """Three CIFAR-10 classes of `per_class` training images each, as an image folder."""
    for name in ("airplane", "cat", "ship"):
        (folder / "train" / name).mkdir(parents=True)
        for image in sorted((data_dir / "cifar10-images" / "train" / name).iterdir())[:per_class]:
            shutil.copy(image, folder / "train" / name / image.name)
    return folder


def image_folder_run(folder: Path) -> list[str]:
    """EXACT's deterministic run on `small_image_folder`: 5 steps an epoch, 4 epochs."""
    return [
        *EXACT,
        "data=image_folder",
        f"data.data_dir={folder}",
        "data.val_size=6",
        "data.samples_per_class=null",
        "data.batch_size=8",
        "model.num_classes=3",
        "trainer.max_epochs=4",
    ]


def test_a_crashed_run_with_loader_workers_resumes_exactly(train_cfg, tmp_path, data_dir):
    """`data.num_workers=2`: the resumed process built its loader iterators afresh, which drew
    from the global RNG after its state was restored, so the rest of the run shuffled, augmented
    and dropped out otherwise than the uninterrupted one (was: weights apart by up to 1e-3)."""
    from helpers.faults import Crash

    run = [
        *image_folder_run(small_image_folder(tmp_path / "images", data_dir)),
        "data.num_workers=2",
    ]
    train(train_cfg(*run, run_dir=tmp_path / "reference"))
    run_dir = tmp_path / "run"
    crash = ["+callbacks.crash._target_=helpers.faults.CrashAtStep", "+callbacks.crash.step=7"]
    with pytest.raises(Crash):
        train(train_cfg(*run, *crash, run_dir=run_dir))
    last = run_dir / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 6  # mid-way through epoch 1
    train(train_cfg(*run, f"resume={run_dir}", run_dir=run_dir))
    want = torch.load(tmp_path / "reference" / "checkpoints" / "last.ckpt", weights_only=True)
    got = torch.load(last, weights_only=True)
    assert got["global_step"] == want["global_step"] == 20
    for key, tensor in want["state_dict"].items():
        assert torch.equal(got["state_dict"][key], tensor), key


def test_loader_workers_and_validation_cadence_leave_a_seeded_run_as_it_is(
    train_cfg, tmp_path, data_dir
):
    """A loader iterator drew its workers' base seed from the global RNG, which dropout,
    augmentation and shuffling read: `data.num_workers=2` (persistent workers draw once) and
    validating every second epoch (each validation pass drew) trained another model from the same
    seed (was: weights apart by up to 1e-2)."""
    base = [
        *image_folder_run(small_image_folder(tmp_path / "images", data_dir)),
        "model.reg_every=1",  # held regulariser pulls are applied before validations
    ]
    variants = {
        "reference": ["data.num_workers=0"],
        "workers": ["data.num_workers=2"],
        "cadence": ["data.num_workers=0", "trainer.check_val_every_n_epoch=2"],
    }
    weights = {}
    for name, extra in variants.items():
        train(train_cfg(*base, *extra, run_dir=tmp_path / name))
        saved = torch.load(tmp_path / name / "checkpoints" / "last.ckpt", weights_only=True)
        weights[name] = saved["state_dict"]
    for name in ("workers", "cadence"):
        for key, tensor in weights["reference"].items():
            assert torch.equal(weights[name][key], tensor), (name, key)


def test_resuming_a_checkpoint_of_loaders_drawing_global_seeds_says_so(train_cfg, tmp_path, caplog):
    """A checkpoint of an sft before split_loader: its RNG states are of a stream the loaders
    drew from, so the rest of the run cannot be what that version would have trained."""
    run_dir = tmp_path / "run"
    train(train_cfg("trainer.max_epochs=1", "test=false", run_dir=run_dir))
    with caplog.at_level(logging.WARNING):
        train(train_cfg("trainer.max_epochs=2", "test=false", f"resume={run_dir}", run_dir=run_dir))
    assert "drew their seeds" not in caplog.text
    for checkpoint in run_dir.glob("checkpoints/*.ckpt"):  # the best one, tested, too
        state = torch.load(checkpoint, weights_only=True)
        (key,) = [k for k in state["callbacks"] if "ExactResume" in k]
        del state["callbacks"][key]["own_loader_generators"]
        torch.save(state, checkpoint)
    caplog.clear()
    with logs_warning(caplog, r"^this checkpoint was written by an sft whose data loaders drew"):
        train(train_cfg("trainer.max_epochs=3", "test=true", f"resume={run_dir}", run_dir=run_dir))
    assert caplog.text.count("drew their seeds") == 1  # fitting, not testing the best


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_a_run_from_a_checkpoint_past_its_schedules_end_says_so(
    schedule, train_cfg, tmp_path, caplog
):
    """ckpt_path= onto less data: the schedule spans this run's 9 steps from step 0, and the
    checkpoint's 12 steps are past its end, where a cosine starts over and a linear schedule
    trains at rate 0 (its checkpoint's rate too), without a word."""
    first = tmp_path / "first"
    scheduled = [f"model.scheduler._target_=transformers.get_{schedule}_schedule_with_warmup"]
    train(train_cfg(*scheduled, "trainer.max_epochs=2", "test=false", run_dir=first))  # 2 x 6
    fewer = ["data.samples_per_class=10", "trainer.max_epochs=3", "test=false"]  # 3 x 3 steps
    said = {
        "cosine": r"^the learning rates go from the checkpoint's to this run's at step 12 \(head "
        r"0 -> \S+, .*model\.scheduler spans 9 steps from step 0: .* apply; step 12 is past its end",
        "linear": r"^this run's schedule \(model\.scheduler\) spans 9 steps from step 0; step 12 "
        r"is past its end: the schedule's rate there is its end's \(0 for a linear schedule",
    }
    with logs_warning(caplog, said[schedule]):
        train(train_cfg(*scheduled, *fewer, f"ckpt_path={first / 'checkpoints' / 'last.ckpt'}"))


def test_a_run_continued_to_a_budget_below_its_steps_is_refused(tmp_path, monkeypatch, capsys):
    """`resume=` with trainer.max_steps below the steps the run has trained trained nothing,
    exited 0, and rewrote result.json with the lower budget beside the higher steps."""
    monkeypatch.chdir(tmp_path)
    task = ["sft-train", *FAST, "trainer.max_epochs=-1", "test=false", f"paths.log_dir={tmp_path}"]
    task.append("name=r")
    assert run_entry_point(sft.train.main, [*task, "+trainer.max_steps=4"]) == 0
    run_dir = only_run_dir(tmp_path / "train" / "r")
    record = (run_dir / "result.json").read_text()
    capsys.readouterr()
    argv = [*task, "+trainer.max_steps=2", f"resume={run_dir}"]
    assert run_entry_point(sft.train.main, argv) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: {run_dir / 'checkpoints' / 'last.ckpt'} has trained 0 epochs (4 steps), past "
        "trainer.max_steps=2: a run is continued to a budget of at least what it has trained "
        "(its own budget leaves it as it is)"
    )
    assert (run_dir / "result.json").read_text() == record
