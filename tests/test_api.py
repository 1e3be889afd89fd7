"""sft's commands from Python (sft.api): the command line's run, its record returned."""

import logging
import threading

import pytest
from conftest import FAST

from sft import api
from sft.errors import SFTError

LIMITS = ["+trainer.limit_test_batches=2"]
RUN = [*FAST, "trainer.max_steps=2", "data.val_size=64", *LIMITS]


def test_runs_from_python_return_their_records_and_leave_nothing_running(tmp_path):
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
    second = api.train(*RUN, "seed=1", f"hydra.run.dir={tmp_path / 'b'}")
    assert second.overrides[-1] == "seed=1" and second.output_dir == str(tmp_path / "b")
    scored = api.evaluate(
        f"ckpt_path={tmp_path / 'a' / 'checkpoints' / 'last.ckpt'}",
        "trainer.accelerator=cpu",
        *LIMITS,
        f"hydra.run.dir={tmp_path / 'eval'}",
    )
    assert (scored.task, scored.steps) == ("eval", 2)
    assert scored.metrics["test/acc"] == pytest.approx(first.metrics["test/acc"])
    with pytest.raises(SFTError, match=r"^unknown config key 'trainer\.max_step' \(did you mean"):
        api.train(*RUN, "trainer.max_step=3", f"hydra.run.dir={tmp_path / 'c'}")
    # a run's own failure: its record's error
    with pytest.raises(SFTError, match=r"holds a run"):
        api.train(*RUN, f"hydra.run.dir={tmp_path / 'a'}")
    with pytest.raises(SFTError, match=r"^-m: sft\.api runs one run"):
        api.train("-m", "seed=1,2")
    assert logging.getLogger().handlers == handlers
    assert threading.active_count() == threads
