"""Atomic writes: whole files only, readable as the user's umask says."""

import errno
import os
import shutil
import time
from types import SimpleNamespace

import pytest

from sft.errors import SFTError
from sft.utils.io import atomic_write, atomic_write_text


def test_a_written_file_has_the_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "result.json", "{}\n")
    finally:
        os.umask(old)
    assert (tmp_path / "result.json").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path):
    path = tmp_path / "summary.csv"
    atomic_write_text(path, "old\n")

    def fail(f):
        f.write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(path, fail, text=True)
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.csv"]


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        # how torch.save's zip writer reports it
        RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0"),
    ],
)
def test_a_full_disk_is_one_error_naming_the_file(tmp_path, monkeypatch, error):
    """A checkpoint save on a full disk (was: torch's `unexpected pos` traceback, which never
    says the disk is full)."""
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: SimpleNamespace(free=4096))
    path = tmp_path / "last.ckpt"
    atomic_write_text(path, "old\n")

    def fail(f):
        f.write("half")
        raise error

    with pytest.raises(SFTError, match=rf"^{path} could not be written: its disk is full"):
        atomic_write(path, fail, text=True)
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_a_checkpoint_holding_objects_is_not_called_corrupt(tmp_path):
    """A checkpoint whose hparams hold Hydra's DictConfig (a user's model class saved them): a
    weights-only load refuses it, and the error said the file was corrupt."""
    import torch
    from omegaconf import OmegaConf

    from sft.utils.checkpoint_io import read_checkpoint

    path = tmp_path / "last.ckpt"
    torch.save({"hyper_parameters": {"backbone": OmegaConf.create({"name": "x"})}}, path)
    with pytest.raises(SFTError) as info:
        read_checkpoint(path)
    message = str(info.value)
    assert "Unsupported global" in message and "DictConfig" in message
    assert message.endswith(
        "it holds objects other than tensors and plain values, which sft does not load (never "
        "unpickling code from a file); a model's hparams must be plain values"
    )
    assert "corrupt" not in message


def test_a_new_only_write_keeps_a_file_that_appeared_while_it_was_written(tmp_path):
    """sft-predict checks `output=` before it predicts; a file written there meanwhile (another
    sft-predict given the same output, the user's own) was replaced without a word, and both
    commands said they wrote it. Now the later one is an error, and the file is kept."""
    path = tmp_path / "predictions.csv"

    def write(f) -> None:
        path.write_text("my precious results")  # another command, while this one writes
        f.write("id,pred\n")

    with pytest.raises(SFTError, match=r"predictions.csv was written by another command"):
        atomic_write(path, write, text=True, new_only=True)
    assert path.read_text() == "my precious results"
    assert [p.name for p in tmp_path.iterdir()] == ["predictions.csv"]  # no temp file left
    fresh = tmp_path / "fresh.csv"
    atomic_write(fresh, lambda f: f.write("id,pred\n"), text=True, new_only=True)
    assert fresh.read_text() == "id,pred\n"


def test_a_new_only_write_keeps_a_file_where_hard_links_fail(tmp_path, monkeypatch):
    """On a file system without hard links (vfat: EPERM), a file written meanwhile was
    replaced, as if new_only were not asked."""
    import errno

    def no_links(source, target) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    path = tmp_path / "predictions.csv"

    def write(f) -> None:
        path.write_text("my precious results")
        f.write("id,pred\n")

    with pytest.raises(SFTError, match=r"predictions.csv was written by another command"):
        atomic_write(path, write, text=True, new_only=True)
    assert path.read_text() == "my precious results"
    assert [p.name for p in tmp_path.iterdir()] == ["predictions.csv"]
    fresh = tmp_path / "fresh.csv"
    atomic_write(fresh, lambda f: f.write("id,pred\n"), text=True, new_only=True)
    assert fresh.read_text() == "id,pred\n"

    # a rename that fails there leaves neither the name it took nor the temporary file
    def failing_rename(source, target) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "replace", failing_rename)
    with pytest.raises(OSError):
        atomic_write(tmp_path / "later.csv", lambda f: f.write("id\n"), text=True, new_only=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh.csv", "predictions.csv"]


def test_ctrl_c_during_a_write_that_raises_over_it_stays_a_ctrl_c(tmp_path):
    """A second Ctrl-C while a checkpoint was saved: torch's zip writer, cut short, raised its
    own RuntimeError over the KeyboardInterrupt, and the run was recorded as failed with a
    traceback instead of stopping as a Ctrl-C does."""

    def write(f) -> None:
        try:
            f.write(b"half a checkpoint")
            raise KeyboardInterrupt
        finally:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos")

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "last.ckpt", write)
    assert list(tmp_path.iterdir()) == []  # nor its temporary

    # a write failing while a Ctrl-C is handled (its record written) stays its own error
    def fails(f) -> None:
        raise OSError(errno.EIO, "Input/output error")

    with pytest.raises(OSError, match="Input/output error"):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            atomic_write(tmp_path / "result.json", fails)


def test_a_resumed_run_removes_the_unfinished_checkpoint_files_of_a_killed_one(tmp_path, caplog):
    """A run killed while saving a checkpoint left its hidden temporary (up to a checkpoint's
    size, 360 MB for MiniLM) in checkpoints/, which nothing ever removed."""
    import logging

    from test_resume import make_run, run_start_config

    run = make_run(tmp_path / "outputs" / "train" / "exp", "2026-01-01_00-00-00", mtime=2e9)
    unfinished = run / "checkpoints" / ".last.ckpt.k2v9x1.tmp"
    unfinished.write_bytes(b"cut short")
    an_hour_ago = time.time() - 3600
    os.utime(unfinished, (an_hour_ago, an_hour_ago))
    # one still being written (recently changed: a run this one's lock did not keep out, on a
    # file system without locks) is left alone
    under_way = run / "checkpoints" / ".epoch_001.ckpt.a8c3q0.tmp"
    under_way.write_bytes(b"being written")
    with caplog.at_level(logging.INFO, logger="sft.runs.directories"):
        run_start_config([f"paths.log_dir={tmp_path / 'outputs'}", f"resume={run}"])
    assert not unfinished.exists() and (run / "checkpoints" / "last.ckpt").is_file()
    assert under_way.exists()
    assert "removed 1 unfinished checkpoint file(s) of a run killed while saving" in caplog.text
