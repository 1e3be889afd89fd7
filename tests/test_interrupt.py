"""SIGTERM / SIGINT save a checkpoint and say how to resume; a NaN loss stops with a clear line."""

import json
import logging
import os
import pickle
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import FAST, TINY_TEXT_WITH_WORKERS, run_entry_point, run_module
from hydra.core.override_parser.overrides_parser import OverridesParser
from test_resume import TESTS_DIR, only_run_dir, run_train_cli

from sft import entry_points
from sft.callbacks.graceful_interrupt import GracefulInterrupt, resume_command
from sft.errors import SFTError, TrainingInterrupted
from sft.jobs.train import train

QUICK = ["trainer.max_epochs=2", "test=false", "callbacks.step_checkpoint.every_n_train_steps=2"]


def run_sigterm_at(step: int, name: str, log_dir: Path) -> subprocess.CompletedProcess:
    """sft-train of FAST + QUICK as run `name` under `log_dir`, sent SIGTERM during the batch
    after `step` optimizer steps."""
    return run_train_cli(
        *FAST,
        *QUICK,
        f"paths.log_dir={log_dir}",
        f"name={name}",
        "+callbacks.term._target_=helpers.faults.SignalAtStep",
        f"+callbacks.term.step={step}",
        "+callbacks.term.signal=SIGTERM",
        cwd=log_dir,
    )


def test_sigterm_saves_a_checkpoint_and_resume_finishes_the_run(
    train_cfg, tmp_path, data_dir, caplog
):
    """Preemption: SIGTERM during step 4 -> that batch finishes, last.ckpt at step 4, exit 143 with
    the resume command and no traceback; resuming completes the run in the same directory."""
    result = run_sigterm_at(3, "preempted", tmp_path)
    assert result.returncode == 143, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    run_dir = only_run_dir(tmp_path / "train" / "preempted")
    last = run_dir / "checkpoints" / "last.ckpt"
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith(
        f"interrupted by SIGTERM at epoch 0 step 4: saved {last}; resume with: sft-train "
    ), message
    assert "name=preempted" in message and message.endswith(f"resume={run_dir}")
    # the overrides as typed (was: `++trainer.accelerator=cpu`, as sft passes it to Hydra)
    assert " trainer.accelerator=cpu " in message and "++" not in message
    assert torch.load(last, weights_only=True)["global_step"] == 4
    # the log file has the line as a warning, not as an error
    logged = (run_dir / "train.log").read_text()
    assert f"[WARNING] - {message}" in logged and "error:" not in logged

    with caplog.at_level(logging.INFO, logger="sft.runs.resume"):
        train(train_cfg(*QUICK, f"resume={run_dir}", run_dir=run_dir))
    assert f"resuming {run_dir} from {last} (epoch 0, step 4)" in caplog.text
    assert torch.load(last, weights_only=True)["global_step"] == 2 * 6


def test_sigterm_to_the_process_group_with_data_loader_workers_saves_a_checkpoint(
    tmp_path, data_dir
):
    """`timeout` and a cluster's preemption signal the whole process group: torch's workers died
    of SIGTERM while the main process finished its batch, whose validation then failed
    ("DataLoader worker ... exited unexpectedly"), status 1 and no last.ckpt. Nor may the
    workers, which now outlast the signal, keep the process from exiting."""
    # a 2-layer BERT on 200 SST-2 phrases
    text = [*TINY_TEXT_WITH_WORKERS, "data.samples_per_class=100", "trainer.limit_val_batches=1"]
    term = [
        "+callbacks.term._target_=helpers.faults.SignalAtStep",
        "+callbacks.term.step=3",
        "+callbacks.term.signal=SIGTERM",
        "+callbacks.term.to_group=true",
    ]
    path = os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path, "HYDRA_FULL_ERROR": "0", "PYTHONUNBUFFERED": "1"}
    argv = [*text, *QUICK, f"paths.log_dir={tmp_path}", "name=group", *term]
    result = subprocess.run(
        [sys.executable, "-m", "sft.train", *argv],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
        start_new_session=True,  # its own process group, which the callback signals
    )
    assert result.returncode == 143, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    last = only_run_dir(tmp_path / "train" / "group") / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 4


def test_sigterm_during_the_sanity_check_stops_after_the_first_batch_with_a_checkpoint(
    tmp_path, data_dir
):
    """A SIGTERM before the first training batch (the sanity check, right after the linear
    probe) reached Lightning's own handler: exit status 0, no checkpoint and no resume hint."""
    result = run_train_cli(
        *FAST,
        *QUICK,
        "trainer.num_sanity_val_steps=1",
        f"paths.log_dir={tmp_path}",
        "name=early",
        "+callbacks.term._target_=helpers.faults.SignalInSanityCheck",
        "+callbacks.term.signal=SIGTERM",
        cwd=tmp_path,
    )
    assert result.returncode == 143, result.stderr[-3000:]
    run_dir = only_run_dir(tmp_path / "train" / "early")
    last = run_dir / "checkpoints" / "last.ckpt"
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith(f"interrupted by SIGTERM at epoch 0 step 1: saved {last}"), message
    assert torch.load(last, weights_only=True)["global_step"] == 1


def test_the_resume_hint_of_a_ddp_rank_keeps_the_overrides(monkeypatch, tmp_path):
    """Ranks that DDP spawns have no Hydra config: the hint they printed lacked every override
    (`sft-train resume=<run>`, which then refused the run as another setup), once per rank."""
    from hydra.core.hydra_config import HydraConfig

    # ckpt_path= started the run: resume= refuses it beside it
    task = ["trainer=ddp_sim", "data.samples_per_class=200", "ckpt_path=x.ckpt"]
    job = SimpleNamespace(
        overrides=SimpleNamespace(task=task), runtime=SimpleNamespace(config_sources=[])
    )
    monkeypatch.setattr(HydraConfig, "get", staticmethod(lambda: job))
    callback = GracefulInterrupt()  # built where Hydra runs the job
    monkeypatch.undo()
    rank = pickle.loads(pickle.dumps(callback))  # a spawned rank's copy
    rank._received = signal.SIGINT
    trainer = SimpleNamespace(
        strategy=SimpleNamespace(reduce_boolean_decision=lambda decision, all: decision),
        save_checkpoint=lambda path, weights_only: None,
        callbacks=[],
        default_root_dir=str(tmp_path),
        current_epoch=1,
        global_step=7,
        is_global_zero=True,
        should_stop=False,
    )
    with pytest.raises(TrainingInterrupted) as stop:
        rank._stop_if_signalled(trainer)
    assert str(stop.value).endswith(
        f"resume with: sft-train trainer=ddp_sim data.samples_per_class=200 resume={tmp_path}"
    )
    trainer.is_global_zero = False
    with pytest.raises(TrainingInterrupted) as stop:
        rank._stop_if_signalled(trainer)
    assert stop.value.code == 130 and stop.value.message is None  # rank 0 alone says it


def check_ranks_stopped_with_a_checkpoint(
    result: subprocess.CompletedProcess, experiment_dir: Path, signame: str, status: int
) -> Path:
    """A trainer=ddp_sim run (under `experiment_dir`) whose main process alone got `signame` as
    the batch after step 3 started: it exited with `status` and no traceback, its ranks saved
    last.ckpt at one step, which its last line and result.json name; its run directory."""
    assert result.returncode == status, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    run_dir = only_run_dir(experiment_dir)
    last = run_dir / "checkpoints" / "last.ckpt"
    step = torch.load(last, weights_only=True)["global_step"]
    assert step in (4, 5)  # the batch it came in, or the next: its ranks agree on one
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith(f"interrupted by {signame} at epoch ") and (
        f" step {step}: saved {last}; resume with: sft-train " in message
    ), message
    record = json.loads((run_dir / "result.json").read_text())
    assert (record["status"], record["steps"], record["error"]) == ("interrupted", step, message)
    return run_dir


# SIGTERM's case is test_an_interrupted_ddp_spawn_run_keeps_its_metrics_command_and_curves's run
@pytest.mark.parametrize(("signame", "status", "times"), [("SIGINT", 130, 1), ("SIGINT", 130, 2)])
def test_a_signal_to_ddp_spawns_main_process_alone_stops_its_ranks_with_a_checkpoint(
    signame, status, times, tmp_path, data_dir
):
    """trainer=ddp_sim (ddp_spawn): the ranks train in processes the main one spawned, and a
    signal sent to that one alone (`kill <pid>`, `timeout`, `docker stop`) did not reach them.
    SIGTERM ended it at once, without a line, and the ranks lost every checkpoint (checked by
    test_an_interrupted_ddp_spawn_run_keeps_its_metrics_command_and_curves, which stops its run
    so); SIGINT was passed over by the ranks, which trained to the end while the line (and
    result.json) said "before the first training step: nothing to save". One SIGINT delivered
    twice (`timeout -s INT`: to the process, then its group) was a second Ctrl-C: "at once (a
    second Ctrl-C): not saved", while the ranks saved a later step."""
    name = f"spawn_{signame}_{times}"
    result = run_train_cli(
        *FAST,
        *QUICK,
        "trainer=ddp_sim",
        "trainer.max_epochs=4",
        f"paths.log_dir={tmp_path}",
        f"name={name}",
        "+callbacks.term._target_=helpers.faults.SignalAtStep",
        "+callbacks.term.step=3",
        f"+callbacks.term.signal={signame}",
        "+callbacks.term.to_parent=true",
        f"+callbacks.term.times={times}",
        cwd=tmp_path,
    )
    check_ranks_stopped_with_a_checkpoint(result, tmp_path / "train" / name, signame, status)


def test_an_interrupted_ddp_spawn_run_keeps_its_metrics_command_and_curves(tmp_path, data_dir):
    """trainer=ddp_sim stopped after its first validation by SIGTERM to its main process alone
    (`kill <pid>`), then resumed:
    - SIGTERM ended the main process at once, without a line, and the ranks, which it did not
      reach, lost every checkpoint (this run is the SIGTERM case of
      test_a_signal_to_ddp_spawns_main_process_alone_stops_its_ranks_with_a_checkpoint);
    - its result.json had no metrics (its ranks send the main process none when stopped), so it
      counted as a run that failed before logging, and
    - the resume wrote its own command over the run's `.hydra/` (not in `.hydra/resumed_*/`);
    - the test's spawned processes marked the resumed step again in TensorBoard, which then
      dropped every point the resumed fit logged (sft-compare showed no validation).
    The resume runs in this process (its ranks and the test's are spawned all the same)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    import sft.train

    task = [*FAST, "trainer=ddp_sim", "trainer.max_epochs=3", f"paths.log_dir={tmp_path}"]
    task += ["name=spawned", "callbacks.step_checkpoint.every_n_train_steps=2"]
    stop = ["+callbacks.term._target_=helpers.faults.SignalAtStep", "+callbacks.term.step=3"]
    stop += ["+callbacks.term.signal=SIGTERM", "+callbacks.term.to_parent=true"]
    result = run_train_cli(*task, *stop, cwd=tmp_path)
    run_dir = check_ranks_stopped_with_a_checkpoint(
        result, tmp_path / "train" / "spawned", "SIGTERM", 143
    )
    record = json.loads((run_dir / "result.json").read_text())
    assert {"val/acc", "val/acc_best", "val/loss"} <= set(record["metrics"]), record["metrics"]

    assert run_entry_point(sft.train.main, ["sft-train", *task, f"resume={run_dir}"]) == 0
    assert "resume=" not in (run_dir / ".hydra" / "overrides.yaml").read_text()
    (resumed,) = (run_dir / ".hydra").glob("resumed_*")
    assert f"resume={run_dir}" in (resumed / "overrides.yaml").read_text()
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    # a validation at each of the 3 epochs' ends (3 steps each), the test after them
    assert [e.step for e in events.Scalars("val/acc")] == [2, 5, 8]
    assert [e.step for e in events.Scalars("test/acc")] == [9]


def test_a_signal_to_ddp_spawns_main_process_after_its_ranks_last_check_stops_the_run(
    tmp_path, data_dir
):
    """SIGTERM to ddp_spawn's main process after its ranks' last check (their on_fit_end): the
    ranks finish, and the main process went on to the test (a sweep: its next job), exiting 0.
    Now the run stops there with the line and status of an interrupt, as one process does."""
    result = run_train_cli(
        *FAST,
        *QUICK,
        "trainer=ddp_sim",
        "trainer.max_epochs=1",
        f"paths.log_dir={tmp_path}",
        "name=late",
        "+callbacks.late._target_=helpers.faults.SignalInHook",
        "+callbacks.late.hook=on_fit_end",
        "+callbacks.late.signal=SIGTERM",
        "+callbacks.late.to_parent=true",
        cwd=tmp_path,
    )
    assert result.returncode == 143, result.stderr[-3000:]
    run_dir = only_run_dir(tmp_path / "train" / "late")
    last = run_dir / "checkpoints" / "last.ckpt"
    step = torch.load(last, weights_only=True)["global_step"]
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("interrupted by SIGTERM at epoch ") and (
        f" step {step}: saved {last}; resume with: sft-train " in message
    ), message
    assert json.loads((run_dir / "result.json").read_text())["status"] == "interrupted"


def test_an_interrupted_run_records_what_it_reached_and_its_hint_names_its_config_dir(
    tmp_path, data_dir
):
    """A run of the user's own configs (--config-dir) interrupted in its second epoch:
    - its result.json: interrupted (was: failed, as a crash), with the epoch it completed and
      the metrics of its first validation (was: epochs 0 and no metrics, so sft-compare and
      sweep summaries showed nothing of what it did);
    - the resume command it was told lacked --config-dir, which failed when pasted ("unknown
      option 'mine' for group 'experiment'")."""
    conf = tmp_path / "conf" / "experiment"
    conf.mkdir(parents=True)
    (conf / "mine.yaml").write_text("# @package _global_\nname: mine\n")
    result = run_train_cli(
        "--config-dir",
        str(tmp_path / "conf"),
        "experiment=mine",
        *FAST,
        *QUICK,
        f"paths.log_dir={tmp_path}",
        "+callbacks.term._target_=helpers.faults.SignalAtStep",
        "+callbacks.term.step=8",
        "+callbacks.term.signal=SIGTERM",
        cwd=tmp_path,
    )
    assert result.returncode == 143, result.stderr[-3000:]
    run_dir = only_run_dir(tmp_path / "train" / "mine")
    record = json.loads((run_dir / "result.json").read_text())
    assert (
        record["status"] == "interrupted" and "interrupted by SIGTERM at epoch 1" in record["error"]
    )
    assert record["epochs"] == 1
    assert f" step {record['steps']}: saved " in record["error"]  # the steps its line says
    assert {"val/acc", "val/acc_best", "val/loss"} <= set(record["metrics"])

    message = result.stderr.strip().splitlines()[-1]
    assert f"; resume with: sft-train --config-dir {tmp_path / 'conf'} experiment=mine " in message
    assert message.endswith(f" resume={run_dir}"), message


def test_ctrl_c_saves_a_checkpoint_and_exits(train_cfg, tmp_path, data_dir):
    run_dir = tmp_path / "run"
    cfg = train_cfg(
        *QUICK,
        "+callbacks.int._target_=helpers.faults.SignalAtStep",
        "+callbacks.int.step=2",
        "+callbacks.int.signal=SIGINT",
        run_dir=run_dir,
    )
    handler_before = signal.getsignal(signal.SIGINT)
    with pytest.raises(SystemExit) as exit_info:
        train(cfg)
    assert exit_info.value.code == 130  # a shell's status for a command Ctrl-C stopped
    message = str(exit_info.value)
    last = run_dir / "checkpoints" / "last.ckpt"
    assert message.startswith(f"interrupted by SIGINT at epoch 0 step 3: saved {last}")
    assert torch.load(last, weights_only=True)["global_step"] == 3
    # the handler in place before fit is back once fit is over
    assert signal.getsignal(signal.SIGINT) is handler_before


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(
    train_cfg, tmp_path, data_dir
):
    run_dir = tmp_path / "run"
    cfg = train_cfg(
        *QUICK,
        "+callbacks.poison._target_=helpers.faults.NaNWeightsAtStep",
        "+callbacks.poison.step=3",
        run_dir=run_dir,
    )
    last = run_dir / "checkpoints" / "last.ckpt"
    with pytest.raises(SFTError) as error:
        train(cfg)
    assert str(error.value).startswith(
        f"non-finite loss (nan) at epoch 0, step 3; last good checkpoint: {last}"
    )
    state = torch.load(last, weights_only=True)
    assert state["global_step"] == 2
    assert all(
        torch.isfinite(t).all() for t in state["state_dict"].values() if t.is_floating_point()
    )


def run_with_signals(
    tmp_path: Path,
    name: str,
    *signal_settings: str,
    test: bool = False,
    overrides: Sequence[str] = (),
    status: int = 130,
) -> tuple[str, Path]:
    """sft-train of FAST + QUICK (and a test: `test`; then `overrides`) as run `name` with
    SignalInHook's `signal_settings` (SIGINT): exit status `status` and no traceback; its last
    line and run directory."""
    result = run_train_cli(
        *FAST,
        *QUICK,
        *(["test=true"] if test else []),
        *overrides,
        f"paths.log_dir={tmp_path}",
        f"name={name}",
        "+callbacks.int._target_=helpers.faults.SignalInHook",
        *(f"+callbacks.int.{setting}" for setting in signal_settings),
        cwd=tmp_path,
    )
    assert result.returncode == status, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return result.stderr.strip().splitlines()[-1], only_run_dir(tmp_path / "train" / name)


@pytest.mark.parametrize(("signal_name", "status"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_signal_before_training_says_nothing_was_saved(tmp_path, data_dir, signal_name, status):
    """Ctrl-C while the data is set up (or the linear probe runs) reached Lightning's handler:
    "Detected KeyboardInterrupt", exit 1 and no word of what was kept; result.json's error
    was 'SystemExit: 1'. SIGTERM there killed the process: no line, no result.json."""
    message, run_dir = run_with_signals(
        tmp_path, "setup", "hook=setup", f"signal={signal_name}", status=status
    )
    assert (
        message == f"interrupted by {signal_name} before the first training step: nothing to save"
    )
    record = json.loads((run_dir / "result.json").read_text())
    assert record["status"] == "interrupted" and record["error"] == message
    assert not (run_dir / "checkpoints" / "last.ckpt").exists()


def test_ctrl_c_before_a_resumed_run_trains_says_its_checkpoint_is_kept(tmp_path, data_dir):
    """Ctrl-C while a resumed run sets up its data: "before the first training step: nothing
    to save", as if the run's last.ckpt, which stays as it was, were lost. The run to resume is
    trained in this process: only the resumed one is signalled."""
    import sft.train

    first = ["sft-train", *FAST, *QUICK, f"paths.log_dir={tmp_path}", "name=again"]
    assert run_entry_point(sft.train.main, first) == 0
    run_dir = only_run_dir(tmp_path / "train" / "again")
    message, _ = run_with_signals(
        tmp_path, "again", "hook=setup", overrides=["trainer.max_epochs=3", f"resume={run_dir}"]
    )
    last = run_dir / "checkpoints" / "last.ckpt"
    assert message.startswith(
        f"interrupted by SIGINT before training continued: {last} is kept as it was; "
        "resume with: sft-train "
    ), message
    assert message.endswith(f"resume={run_dir}")


def test_a_second_ctrl_c_stops_at_once_and_names_the_checkpoint_to_resume(tmp_path, data_dir):
    """A second Ctrl-C while the batch finishes stops without saving: the line says so, and
    that the step checkpoint of an earlier step resumes the run."""
    message, run_dir = run_with_signals(
        tmp_path, "twice", "hook=on_train_batch_start", "times=2", "step=3"
    )
    last = run_dir / "checkpoints" / "last.ckpt"
    assert message.startswith(
        "interrupted by SIGINT at epoch 0 step 3, at once (a second Ctrl-C): not saved; "
        f"{last} holds step 2, an earlier one; resume with: sft-train "
    ), message
    assert message.endswith(f"resume={run_dir}")
    assert torch.load(last, weights_only=True)["global_step"] == 2


def test_ctrl_c_in_the_test_names_the_checkpoint_to_test(tmp_path, data_dir):
    message, run_dir = run_with_signals(tmp_path, "test", "hook=on_test_batch_start", test=True)
    assert message.startswith(
        "interrupted by SIGINT during the test (training had finished): test with sft-eval "
        f"ckpt_path={run_dir / 'checkpoints'}"
    ), message
    assert Path(message.split("ckpt_path=")[1]).is_file()

    # Ctrl-C in sft-eval's test of it (was: Lightning's status 1, without a word)
    hook = "{_target_:helpers.faults.SignalInHook,hook:on_test_batch_start}"
    path = os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")])
    result = run_module(
        "sft.eval",
        message.split("sft-eval ")[1].split(";")[0],
        f"+trainer.callbacks=[{hook}]",
        f"hydra.run.dir={tmp_path / 'eval'}",
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": path},
    )
    assert result.returncode == 130, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == (
        f"interrupted by SIGINT before the scores were written: {tmp_path / 'eval'} holds no "
        "metrics or predictions"
    )
    assert not (tmp_path / "eval" / "predictions.csv").exists()


def test_ctrl_c_while_sft_train_loads_its_libraries_is_recorded(tmp_path, monkeypatch, capsys):
    """Ctrl-C while torch and Lightning load, after Hydra made the run directory: it was left
    without a record (sft-compare did not list it; the README says result.json records it)."""
    import importlib.abc

    import sft.train

    class InterruptedLoad(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "sft.jobs.train":
                raise KeyboardInterrupt

    monkeypatch.delitem(sys.modules, "sft.jobs.train")
    monkeypatch.setattr(sys, "meta_path", [InterruptedLoad(), *sys.meta_path])
    run = tmp_path / "run"
    argv = ["sft-train", *FAST, f"hydra.run.dir={run}"]
    assert run_entry_point(lambda: entry_points.run(sft.train.main), argv) == 130
    assert capsys.readouterr().err.endswith("interrupted (Ctrl-C)\n")
    record = json.loads((run / "result.json").read_text())
    assert (record["status"], record["error"]) == ("interrupted", "interrupted by SIGINT (Ctrl-C)")


def test_ctrl_c_while_a_command_loads_is_one_line(capsys):
    """Ctrl-C in the seconds torch and Lightning take to import was a traceback through
    whichever library was loading."""

    def loading() -> None:
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as exit_info:
        entry_points.run(loading)
    assert exit_info.value.code == 130
    assert capsys.readouterr().err == "interrupted (Ctrl-C)\n"
    # the console commands are these, and load the libraries only inside run()
    # (as installed: read from the package's metadata, not pyproject.toml, which Python 3.10
    # has no reader for)
    commands = metadata.distribution("sft").entry_points.select(group="console_scripts")
    assert set(commands.names) == {
        "sft-train",
        "sft-eval",
        "sft-predict",
        "sft-export",
        "sft-compare",
    }
    for command in commands:
        assert command.module == "sft.entry_points"
        assert callable(getattr(entry_points, command.attr))
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, sft.entry_points; print('torch' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert loaded.stdout.strip() == "False"


def test_ctrl_c_while_the_last_checkpoints_are_saved_still_stops(tmp_path, data_dir):
    """A Ctrl-C after the last batch's check (at the end of the last epoch, while its
    checkpoints are saved) was dropped: the run completed with status 0, and a sweep went on
    to its next job."""
    message, run_dir = run_with_signals(
        tmp_path, "late", "hook=on_train_epoch_end", overrides=["trainer.max_epochs=1"]
    )
    assert message.startswith("interrupted by SIGINT at epoch "), message
    assert f"saved {run_dir / 'checkpoints' / 'last.ckpt'}; resume with: sft-train " in message


def test_an_interrupted_sweep_job_says_how_to_continue_the_sweep(tmp_path, data_dir):
    """SIGTERM in a sweep's job: the hint resumed that job alone, as a single run, and the rest
    of the grid was never mentioned; the sweep run again continues every job. The sweep's
    summary.md lists the job and why the sweep stopped (it was never written: Hydra calls its
    callbacks only for jobs that end or raise an Exception)."""
    sweep = tmp_path / "sweep"
    result = run_train_cli(
        "-m",
        *FAST,
        *QUICK,
        "+callbacks.term._target_=helpers.faults.SignalAtStep",
        "+callbacks.term.step=3",
        "+callbacks.term.signal=SIGTERM",
        "seed=0,1",
        f"hydra.sweep.dir={sweep}",
        "hydra.sweeper.max_batch_size=4",
        cwd=tmp_path,
    )
    assert result.returncode == 143, result.stderr[-3000:]
    message = result.stderr.strip().splitlines()[-1]
    # with the sweeper's settings (a study continued without its name was another study)
    command = "sft-train -m hydra.sweeper.max_batch_size=4 "
    assert message.startswith(
        f"interrupted by SIGTERM at epoch 0 step 4: saved {sweep / '0' / 'checkpoints' / 'last.ckpt'}"
        f"; continue the sweep (each job from its last.ckpt) with: {command}"
    ), message
    assert message.endswith(f"seed=0,1 hydra.sweep.dir={sweep}")
    summary = (sweep / "summary.md").read_text()
    assert "1 job, 0 completed, 1 interrupted, 0 failed" in summary  # was: 1 failed
    assert (
        "The sweep was interrupted in job 0: jobs it had not started are not listed; continue "
        f"the sweep (each job from its last.ckpt) with: {command}"
    ) in summary
    assert message.replace("|", "\\|") in summary


def test_a_second_ctrl_c_in_a_sweep_job_says_how_to_continue_the_sweep(tmp_path, data_dir):
    """It said to resume the job alone (`resume=<job>`), which loses the rest of the grid."""
    sweep = tmp_path / "sweep"
    result = run_train_cli(
        "-m",
        *FAST,
        *QUICK,
        "+callbacks.int._target_=helpers.faults.SignalInHook",
        "+callbacks.int.hook=on_train_batch_start",
        "+callbacks.int.times=2",
        "+callbacks.int.step=3",
        "seed=0,1",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert result.returncode == 130, result.stderr[-3000:]
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith(
        "interrupted by SIGINT at epoch 0 step 3, at once (a second Ctrl-C): not saved; "
        f"{sweep / '0' / 'checkpoints' / 'last.ckpt'} holds step 2, an earlier one; continue the "
        "sweep "
        "(each job from its last.ckpt) with: sft-train -m "
    ), message
    assert message.endswith(f"seed=0,1 hydra.sweep.dir={sweep}")
    assert "The sweep was interrupted in job 0" in (sweep / "summary.md").read_text()


def test_an_interrupt_crosses_processes_whole():
    """A launcher or process pool sends a job's exception back pickled: TrainingInterrupted
    could not be rebuilt (TypeError), which turned an interrupt into a crash."""
    import copy
    import pickle

    stop = TrainingInterrupted("interrupted by SIGTERM at epoch 0 step 4: saved x", signal.SIGTERM)
    for again in (pickle.loads(pickle.dumps(stop)), copy.copy(stop)):
        assert (again.code, again.message) == (143, stop.message)


def test_only_a_sigint_soon_after_a_sigint_is_the_same_ctrl_c():
    """One SIGINT delivered twice within SAME_SIGNAL_S is one Ctrl-C; a SIGINT after a SIGTERM,
    however soon, or after a SIGINT later on, is a second one (stop at once)."""
    from sft.utils.signals import SAME_SIGNAL_S, is_second_ctrl_c

    now = time.monotonic()
    assert not is_second_ctrl_c(signal.SIGINT, signal.SIGINT, now)
    assert is_second_ctrl_c(signal.SIGINT, signal.SIGINT, now - 2 * SAME_SIGNAL_S)
    assert is_second_ctrl_c(signal.SIGINT, signal.SIGTERM, now)
    assert not is_second_ctrl_c(signal.SIGTERM, signal.SIGINT, now - 1)
    assert not is_second_ctrl_c(signal.SIGINT, None, now)


def test_ctrl_c_again_while_the_sweep_summary_is_written_is_passed_over(
    tmp_path, monkeypatch, capsys
):
    """A second Ctrl-C as the stopped job writes the sweep summary (0.13 s after the first
    under local_jobs): a KeyboardInterrupt in the middle of it, no summary.md, and a bare
    "interrupted (Ctrl-C)" as the sweep's last line, without what was saved or how to go on."""
    import sft.runs.sweep_summary as sweep_summary
    from sft.train import main

    write = sweep_summary.write_summary_of_stopped_sweep

    def pressed_again(*args):
        os.kill(os.getpid(), signal.SIGINT)
        write(*args)

    monkeypatch.setattr(sweep_summary, "write_summary_of_stopped_sweep", pressed_again)
    # Ctrl-C's default action, also where the tests run in the background (it is ignored there)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    sweep = tmp_path / "sweep"
    try:
        code = run_entry_point(
            lambda: entry_points.run(main),  # as the console script: its last line
            [
                "sft-train",
                "-m",
                *FAST,
                *QUICK,
                "+callbacks.int._target_=helpers.faults.SignalAtStep",
                "+callbacks.int.step=3",
                "+callbacks.int.signal=SIGINT",
                "seed=0,1",
                f"hydra.sweep.dir={sweep}",
            ],
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 130
    assert line.startswith("interrupted by SIGINT at epoch 0 step 4: saved "), line
    assert "The sweep was interrupted in job 0" in (sweep / "summary.md").read_text()


def test_ctrl_c_as_a_sweep_job_starts_says_how_to_continue_the_sweep(tmp_path, monkeypatch, capsys):
    """Ctrl-C while a sweep's job loads the training code (seconds): the console ended in a
    bare "interrupted (Ctrl-C)" and no summary.md was written, so nothing said how to go on."""
    import contextlib

    import sft.train as train_module

    @contextlib.contextmanager
    def pressed(*args):
        raise KeyboardInterrupt
        yield

    monkeypatch.setattr(train_module, "log_levels_kept", pressed)
    sweep = tmp_path / "sweep"
    argv = ["sft-train", "-m", *FAST, *QUICK, "seed=0,1", f"hydra.sweep.dir={sweep}"]
    code = run_entry_point(lambda: entry_points.run(train_module.main), argv)
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 130
    assert line.startswith(
        "interrupted by SIGINT (Ctrl-C); continue the sweep (each job from its "
        "last.ckpt) with: sft-train -m "
    ), line
    assert line.endswith(f"seed=0,1 hydra.sweep.dir={sweep}")
    summary = (sweep / "summary.md").read_text()
    assert "1 job, 0 completed, 1 interrupted, 0 failed" in summary
    # a search's line ends with its command too (was: a note after it, which, pasted, was a
    # shell syntax error)
    search = [
        "hydra/sweeper=sft_optuna",
        "model.lr_head=interval(1e-3,0.3)",
        "hydra.sweeper.n_trials=1",
    ]
    argv = ["sft-train", "-m", *FAST, *QUICK, *search, f"hydra.sweep.dir={tmp_path / 'search'}"]
    assert run_entry_point(lambda: entry_points.run(train_module.main), argv) == 130
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert (
        "; continue the search (it adds hydra.sweeper.n_trials new trials; an interrupted " in line
    )
    assert line.endswith(f"hydra.sweep.dir={tmp_path / 'search'}"), line


@pytest.mark.parametrize(
    "folder", ["/runs/my tiny é/2026-12-05_23-19-31", "/o d,x=1/0", "/runs/a~b/1", "/plain/1"]
)
def test_the_printed_resume_command_reads_the_run_directory_back(folder):
    """The resume command an interrupted run prints quoted its directory for the shell only: a
    folder with a non-ASCII letter, a space, '=', ',' or '~' failed to parse as `resume=<dir>`
    (LexerNoViableAltException). A plain path stays unquoted."""
    command = shlex.split(resume_command(folder, ["data.batch_size=8"]))
    override = OverridesParser.create().parse_overrides([command[-1]])[0]
    assert (override.key_or_group, override.value()) == ("resume", folder)
    assert (command[-1] == f"resume={folder}") == (folder == "/plain/1")


def test_ctrl_c_in_a_forked_data_loader_worker_is_left_to_the_main_process(monkeypatch, caplog):
    """Ctrl-C reaches the whole process group; DataLoader workers, forked with the handler,
    each said "received SIGINT: stopping after this batch" too (3 lines with 2 workers)."""
    import sft.callbacks.graceful_interrupt as graceful

    callback = graceful.GracefulInterrupt()
    main_pid = os.getpid()
    monkeypatch.setattr(graceful.os, "getpid", lambda: main_pid + 1)  # in a forked worker
    with caplog.at_level(logging.WARNING):
        callback._handler(signal.SIGINT, None)
    assert callback._received is None and "received SIGINT" not in caplog.text
    monkeypatch.setattr(graceful.os, "getpid", lambda: main_pid)
    with caplog.at_level(logging.WARNING):
        callback._handler(signal.SIGINT, None)
    assert callback._received == signal.SIGINT and "received SIGINT" in caplog.text


def test_a_second_signal_after_the_first_ones_save_says_the_checkpoint_holds_this_step(tmp_path):
    """Two Ctrl-C 0.3 s apart on a ddp_sim run: the first's save had ended, and the line said
    last.ckpt held "an earlier step" (it held the step the run stopped at)."""
    from sft.callbacks.graceful_interrupt import kept_step

    last = tmp_path / "last.ckpt"
    torch.save({"global_step": 13, "state_dict": {"w": torch.zeros(2)}}, last)
    assert kept_step(last, 13) == f"{last} holds this step"
    assert kept_step(last, 14) == f"not saved; {last} holds step 13, an earlier one"
    last.write_bytes(b"not a checkpoint")
    assert kept_step(last, 14) == f"not saved; {last} holds an earlier step"


def test_a_signal_that_comes_mid_write_to_the_console_is_said_without_a_traceback(capsys):
    """The "received SIGINT" line, logged from the signal handler while this thread was
    writing to the console: the second write into the same stream is a RuntimeError
    ("reentrant call", seen under Ray's stream wrapper), which logging printed as a traceback
    (a sweep's job failed its no-traceback check). That console's copy is dropped; the run's
    log file keeps the line."""

    class MidWrite:  # the console stream, interrupted in its write
        def write(self, text):
            raise RuntimeError("reentrant call inside <_io.BufferedWriter name=1>")

        def flush(self):
            pass

    console, kept = logging.StreamHandler(MidWrite()), []
    log_file = logging.Handler()
    log_file.emit = lambda record: kept.append(record.getMessage())
    logger = logging.getLogger("sft.callbacks.graceful_interrupt")
    for handler in (console, log_file):
        logger.addHandler(handler)
    try:
        callback = GracefulInterrupt()
        callback._handling_pid = os.getpid()
        callback._handler(signal.SIGINT, None)
    finally:
        for handler in (console, log_file):
            logger.removeHandler(handler)
    assert "Traceback" not in capsys.readouterr().err
    assert kept == ["received SIGINT: stopping after this batch"]
