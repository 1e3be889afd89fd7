"""sft's commands from Python (sft.api): the command line's run, its record returned."""

import logging
import os
import threading

import pytest
from conftest import FAST

from sft import api
from sft.errors import SFTError

LIMITS = ["+trainer.limit_test_batches=2"]
RUN = [*FAST, "trainer.max_steps=2", "data.val_size=64", *LIMITS]


def test_runs_from_python_return_their_records_and_leave_nothing_running(tmp_path, capsys):
    """A notebook's runs, one after another: each as sft-train would run it (its run directory,
    result.json, train.log), its record returned; a mistake is the command's error line,
    raised; what a run sets up (log handlers, writer threads) does not outlive it."""
    handlers = list(logging.getLogger().handlers)
    threads = threading.active_count()
    first = api.train(*RUN, f"hydra.run.dir={tmp_path / 'a'}")
    assert (first.status, first.task, first.steps) == ("completed", "train", 2)
    assert first.output_dir == str(tmp_path / "a")
    assert (tmp_path / "a" / "result.json").is_file() and (tmp_path / "a" / "train.log").is_file()
    assert 0 <= first.metrics["test/acc"] <= 1
    # one list of overrides is taken as they are (was: AttributeError)
    second = api.train([*RUN, "seed=1", f"hydra.run.dir={tmp_path / 'b'}"])
    assert second.overrides[-1] == "seed=1" and second.output_dir == str(tmp_path / "b")
    scored = api.evaluate(
        f"ckpt_path={tmp_path / 'a' / 'checkpoints' / 'last.ckpt'}",
        "trainer.accelerator=cpu",
        *LIMITS,
        f"hydra.run.dir={tmp_path / 'eval'}",
    )
    assert (scored.task, scored.steps) == ("eval", 2)
    assert scored.metrics["test/acc"] == pytest.approx(first.metrics["test/acc"])
    capsys.readouterr()
    with pytest.raises(SFTError, match=r"^unknown config key 'trainer\.max_step' \(did you mean"):
        api.train(*RUN, "trainer.max_step=3", f"hydra.run.dir={tmp_path / 'c'}")
    assert "error:" not in capsys.readouterr().err  # raised, not printed too (was: both)
    # a run's own failure: its record's error
    with pytest.raises(SFTError, match=r"holds a run"):
        api.train(*RUN, f"hydra.run.dir={tmp_path / 'a'}")
    # a path or None for an override (were: AttributeError)
    with pytest.raises(SFTError, match=r'got PosixPath .* \(a checkpoint\? "ckpt_path='):
        api.evaluate(tmp_path / "a" / "checkpoints" / "last.ckpt")
    with pytest.raises(SFTError, match=r'^sft\.api\.train: overrides are strings such as "seed=1"'):
        api.train(None)
    with pytest.raises(SFTError, match=r"^-m: sft\.api runs one run"):
        api.train("-m", "seed=1,2")
    # a sweep through Hydra's mode: refused too (was: run, the last job's record returned)
    with pytest.raises(SFTError, match=r"^hydra\.mode=MULTIRUN: sft\.api runs one run"):
        api.train(*RUN, "hydra.mode=MULTIRUN", "seed=1,2")
    with pytest.raises(SFTError, match=r"^\+\+hydra\.mode=MULTIRUN: sft\.api runs one run"):
        api.train(*RUN, "++hydra.mode=MULTIRUN", "seed=1,2")
    # Hydra's own error, which has no `error:` line: its lines (was: "exit status 1" alone);
    # an SFTError, as no run began (was: a RunFailed whose record was None)
    with pytest.raises(SFTError, match=r"^Could not override 'foo\.bar'\. To append") as setup:
        api.train(*RUN, "foo.bar=1")
    assert not isinstance(setup.value, api.RunFailed)
    assert logging.getLogger().handlers == handlers
    assert threading.active_count() == threads


@pytest.mark.slow
def test_a_ddp_run_from_python_leaves_no_port_for_the_next(tmp_path, monkeypatch):
    """Lightning's DDP launcher sets MASTER_PORT in the calling process, and the notebook's
    next DDP run (and the processes it started) met on that port, not a free one; its seed
    stayed set too, which a later run with seed=null took up."""
    names = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "PL_GLOBAL_SEED", "PL_SEED_WORKERS")
    for name in names:
        monkeypatch.delenv(name, raising=False)
    record = api.train(*RUN, "trainer=ddp_sim", "test=false", f"hydra.run.dir={tmp_path}")
    assert record.status == "completed"
    assert not set(names) & set(os.environ)


def test_a_run_from_python_under_hydra_full_error_ends_alike(tmp_path, monkeypatch):
    """HYDRA_FULL_ERROR=1 (as under a debugger): Hydra raised the run's error itself, past
    RunFailed and its record."""
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(api.RunFailed, match=r"^data\.val_size must be in 1\.\.") as failed:
        api.train(*RUN, "data.val_size=-5", f"hydra.run.dir={tmp_path / 'v'}")
    assert failed.value.record.status == "failed"


def test_a_run_from_python_ends_as_python_expects(tmp_path):
    """Ctrl-C is a KeyboardInterrupt, a bug its own exception, a failure RunFailed with the
    run's record (were: each an SFTError of its line, so a notebook's `except SFTError` loop
    could not be stopped, and a bug could not be debugged); Hydra initialised by the notebook
    stays so."""
    from hydra import compose, initialize_config_dir

    from sft.train import CONF_DIR

    steps = [*RUN[:-3], "trainer.max_steps=4", *RUN[-2:]]
    signal = ["+callbacks.stop._target_=helpers.faults.SignalAtStep", "+callbacks.stop.step=2"]
    with pytest.raises(KeyboardInterrupt, match="interrupted by SIGINT"):
        api.train(
            *steps, *signal, "+callbacks.stop.signal=SIGINT", f"hydra.run.dir={tmp_path / 'i'}"
        )
    bug = ["+callbacks.bug._target_=helpers.faults.BugAtStep", "+callbacks.bug.step=1"]
    with pytest.raises(RuntimeError, match="a bug in a callback"):
        api.train(*steps, *bug, f"hydra.run.dir={tmp_path / 'b'}")
    nan = ["+callbacks.nan._target_=helpers.faults.NaNWeightsAtStep", "+callbacks.nan.step=1"]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        with pytest.raises(api.RunFailed) as failed:
            api.train(*steps, *nan, f"hydra.run.dir={tmp_path / 'n'}")
        assert failed.value.record.status == "failed"
        assert failed.value.record.output_dir == str(tmp_path / "n")
        assert "non-finite" in str(failed.value)
        assert compose(config_name="train").get("seed") is not None  # still initialised


def test_a_run_from_python_reads_configs_of_ones_own(tmp_path):
    """`--config-dir`, the README's way to one's own configs, was refused as a flag; a config
    there that makes the command a sweep (`hydra.mode: MULTIRUN`) is refused before any job
    runs (was: the sweep ran, then was refused)."""
    experiments = tmp_path / "conf" / "experiment"
    experiments.mkdir(parents=True)
    (experiments / "mine.yaml").write_text("# @package _global_\nseed: 7\n")
    (experiments / "swept.yaml").write_text(
        "# @package _global_\nhydra:\n  mode: MULTIRUN\n  sweeper:\n    params:\n      seed: 1,2\n"
    )
    own = ["--config-dir", str(tmp_path / "conf")]
    run = api.train(*own, "experiment=mine", *RUN, f"hydra.run.dir={tmp_path / 'a'}")
    assert run.status == "completed"
    assert "seed: 7" in (tmp_path / "a" / ".hydra" / "config.yaml").read_text()
    with pytest.raises(SFTError, match=r"^hydra\.mode=MULTIRUN, set in a config .* sft\.api runs"):
        api.train(*own, "experiment=swept", *RUN, f"hydra.sweep.dir={tmp_path / 's'}")
    assert not (tmp_path / "s").exists()
    with pytest.raises(SFTError, match=r"^--cfg: sft\.api runs one run"):
        api.train(f"--config-dir={tmp_path / 'conf'}", "--cfg", "job")


def test_a_failed_runs_data_loader_workers_end_with_it(tmp_path, data_dir):
    """A run from Python that failed after its loaders' workers started: they lived on while its
    error was held (a notebook holds the last one; a sweep, each failed job's), 600 MB each."""
    import multiprocessing

    from conftest import TINY_TEXT_WITH_WORKERS

    text = [*TINY_TEXT_WITH_WORKERS, "data.samples_per_class=20"]
    typo = "callbacks.early_stopping.monitor=val/accc"  # said after the sanity check
    with pytest.raises(api.RunFailed, match="val/accc") as failed:
        api.train(*text, typo, f"hydra.run.dir={tmp_path / 'run'}")
    assert failed.value.record.status == "failed"
    assert not [p for p in multiprocessing.active_children() if p.is_alive()]
