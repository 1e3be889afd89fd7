"""The file system's limits and permissions: full disks, large files, long names, files this
user may not read, `~` and `${` in paths. Each test failed on the code before its fix (a trial
on real folders, a small tmpfs and a root without its file capabilities found them). The tests
run as root, which reads any file: a denied read is raised by the loading function itself."""

import errno
import logging
import os
import re
from pathlib import Path

import pytest
import torch
from conftest import FAST, run_entry_point
from PIL import Image

import sft.eval
import sft.train
from sft.data.cifar10 import load_batch
from sft.data.image_decode import ImageDecoder
from sft.data.image_folder import open_image_folder, undecodable
from sft.errors import SFTError, find_user_error
from sft.jobs.eval import PREDICTIONS, write_predictions
from sft.runs import resume
from sft.runs.directories import resumed_run_dir
from sft.runs.result import RunRecorder, RunResult
from sft.utils import checkpoint_io, io
from sft.utils.checkpoint_io import read_checkpoint
from sft.utils.overrides import quoting_hint


def denied(path: object) -> PermissionError:
    return PermissionError(errno.EACCES, "Permission denied", str(path))


def read_denied(path: object, *args: object, **kwargs: object) -> None:
    raise denied(path)


@pytest.mark.parametrize(
    ("error", "said"),
    [
        (OSError(errno.ENOSPC, "No space left on device", "/r/tb/events"), "its disk is full"),
        (OSError(errno.EDQUOT, "Disk quota exceeded", "/r/tb/events"), "its disk is full"),
        (OSError(errno.EFBIG, "File too large", "/r/tb/events"), "larger than this system lets"),
        (OSError(errno.ENAMETOOLONG, "File name too long", "/r/tb/events"), "longer than the"),
    ],
)
def test_a_file_systems_limit_is_one_line_naming_the_file(error, said):
    """Hydra's config, TensorBoard's events, an export's ONNX file, a run directory with a
    256-byte name: were tracebacks from wherever the write was."""
    wrapped = RuntimeError("while saving")
    wrapped.__cause__ = error
    user_error = find_user_error(wrapped)
    assert user_error is not None
    assert str(user_error).startswith("/r/tb/events")
    assert said in str(user_error)


def test_a_full_disk_that_names_no_file_says_so_or_is_shared_memory(monkeypatch):
    """A buffered write's error names no file (Python's); a full /dev/shm (DataLoader queues'
    locks) is not the output's disk."""
    nameless = OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr("sft.errors._shm_free", lambda: float("inf"))
    assert str(find_user_error(nameless)) == (
        "a file could not be written: its disk is full (No space left on device; the run's log "
        "has the traceback of the write); free some space or write elsewhere"
    )
    monkeypatch.setattr("sft.errors._shm_free", lambda: 0)
    assert "ran out of shared memory" in str(find_user_error(nameless))


def test_a_file_too_large_for_the_system_names_the_file(tmp_path):
    """`ulimit -f`: the buffered write's EFBIG names no file; the message names the one sft
    was writing."""

    def too_large(f):
        raise OSError(errno.EFBIG, "File too large")

    with pytest.raises(OSError) as info:
        io.atomic_write(tmp_path / "last.ckpt", too_large)
    assert str(find_user_error(info.value)).startswith(
        f"{tmp_path / 'last.ckpt'} could not be written: larger than this system lets a file be"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_long_run_name_is_one_error_line(tmp_path, capsys):
    status = run_entry_point(
        sft.train.main, ["sft-train", *FAST, f"paths.log_dir={tmp_path}", "name=" + "a" * 256]
    )
    assert status == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: {tmp_path}/train/{'a' * 256}")
    assert "longer than the file system takes" in err[-1]


def test_a_write_the_folder_refuses_names_the_file_not_its_temporary(tmp_path, monkeypatch):
    """`sft-predict output=<read-only folder>/p.csv` named `.p.csv.ta7lnwg9.tmp`."""

    def refuse(**kwargs):
        raise denied(Path(kwargs["dir"]) / ".p.csv.x.tmp")

    monkeypatch.setattr(io.tempfile, "mkstemp", refuse)
    with pytest.raises(PermissionError) as info:
        io.atomic_write_text(tmp_path / "p.csv", "id,pred\n")
    assert info.value.filename == str(tmp_path / "p.csv")
    assert str(find_user_error(info.value)).startswith(f"{tmp_path / 'p.csv'}: Permission denied")


def test_predictions_cut_short_by_a_full_disk_leave_no_file(tmp_path, monkeypatch):
    """sft-eval on a full disk left a predictions.csv cut mid-row (607 of 10,000 rows), which a
    re-run was then refused over."""
    real_writer = __import__("csv").writer

    def writer_that_fills_the_disk(f, **options):
        w = real_writer(f, **options)
        rows = []

        class Writer:
            def writerow(self, row):
                rows.append(row)
                if len(rows) > 2:
                    raise OSError(errno.ENOSPC, "No space left on device")
                w.writerow(row)

        return Writer()

    monkeypatch.setattr("sft.jobs.eval.csv.writer", writer_that_fills_the_disk)
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    with pytest.raises(
        SFTError, match=re.escape(f"{tmp_path / PREDICTIONS} could not be written: its disk")
    ):
        write_predictions(tmp_path / PREDICTIONS, probs, torch.tensor([0, 1, 0]), ["a", "b"])
    assert list(tmp_path.iterdir()) == []


def test_a_failure_record_that_cannot_be_written_leaves_the_failure_reported(tmp_path, caplog):
    """The full disk that failed sft-eval's predictions also failed its scores.json, and that
    second error was the one reported."""
    recorder = RunRecorder(tmp_path, [], None, task="eval")
    full = SFTError(f"{tmp_path}/scores.json could not be written: its disk is full")
    with pytest.MonkeyPatch.context() as mp:

        def write(self: RunResult, path: Path | None = None) -> None:
            raise full

        mp.setattr(RunResult, "write", write)
        with caplog.at_level(logging.WARNING):
            recorder.failed(SFTError("predictions.csv could not be written: its disk is full"))
    assert "the failure could not be recorded" in caplog.text
    with pytest.MonkeyPatch.context() as mp:  # a completed run's record is its result: raised
        mp.setattr(RunResult, "write", write)
        with pytest.raises(SFTError, match=r"scores\.json could not be written"):
            recorder.completed({})


def test_a_torchscript_export_cut_short_by_a_full_disk_leaves_no_file(tmp_path, monkeypatch):
    """torch's own writer aborted the process on a full disk (a C++ terminate, status 134),
    leaving a cut-off model.pt."""
    from sft.inference.exporters import export_torchscript

    def fill_the_disk(module, f):
        f.write(b"PK\x03\x04 half an archive")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch.jit, "save", fill_the_disk)
    module = torch.nn.Linear(4, 2).eval()
    with pytest.raises(SFTError, match=r"model\.pt could not be written: its disk is full"):
        export_torchscript(module, (torch.zeros(1, 4),), tmp_path / "model.pt")
    assert list(tmp_path.iterdir()) == []


def test_a_full_token_cache_costs_time_not_the_run(tmp_path, monkeypatch, caplog):
    """A full cache disk failed the run (atomic_write's SFTError), where a read-only cache
    only warned."""
    from sft.data import token_cache

    def full(split, path, key):
        raise SFTError(f"{path} could not be written: its disk is full")

    monkeypatch.setattr(token_cache, "save_split", full)
    monkeypatch.setattr(token_cache, "tokenize", lambda tokenizer, examples, n: examples)
    monkeypatch.setattr(token_cache, "tokenizer_digest", lambda tokenizer: "t")
    with caplog.at_level(logging.WARNING):
        split, _, hit = token_cache.cached_tokenize(
            tmp_path, "train", {"file": "x"}, lambda: ["read"], None, 16
        )
    assert (split, hit) == (["read"], False)
    assert "could not write the cache" in caplog.text


def test_a_checkpoint_this_user_may_not_read_is_not_called_corrupt(tmp_path, monkeypatch):
    """`chmod 000 last.ckpt`: "cannot be read (PermissionError ...); the file is corrupt or not
    a checkpoint" (sft-eval, -export, ckpt_path=)."""
    ckpt = tmp_path / "last.ckpt"
    torch.save({"hyper_parameters": {}}, ckpt)
    monkeypatch.setattr(checkpoint_io, "load_weights_only", read_denied)
    with pytest.raises(PermissionError) as info:
        read_checkpoint(ckpt)
    assert str(find_user_error(info.value)) == (
        f"{ckpt}: Permission denied: this user may not use it; give it access, or another path"
    )


def test_resuming_an_unreadable_last_checkpoint_keeps_every_earlier_one(tmp_path, monkeypatch):
    """A second resume of a run whose last.ckpt could not be read renamed the new unreadable
    file over the first one's `last.ckpt.unreadable` (that run's newest state, lost); a
    last.ckpt this user may not read was set aside as broken and training rolled back."""
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    last = checkpoints / "last.ckpt"
    torch.save({"global_step": 2}, checkpoints / "epoch_000.ckpt")
    for content in (b"first broken", b"second broken"):
        last.write_bytes(content)
        assert resume.readable_checkpoint(last)[1] == {"global_step": 2}
    assert (checkpoints / "last.ckpt.unreadable").read_bytes() == b"first broken"
    assert (checkpoints / "last.ckpt.unreadable.1").read_bytes() == b"second broken"

    torch.save({"global_step": 9}, last)
    monkeypatch.setattr(resume, "load_weights_only", read_denied)
    with pytest.raises(PermissionError):
        resume.readable_checkpoint(last)
    assert sorted(p.name for p in checkpoints.iterdir()) == [
        "epoch_000.ckpt",
        "last.ckpt",
        "last.ckpt.unreadable",
        "last.ckpt.unreadable.1",
    ]


def test_data_this_user_may_not_read_is_not_called_damaged_or_missing(tmp_path, monkeypatch):
    """A CIFAR-10 batch (was: "delete it and prepare it again"), an image (was: "cannot be
    decoded ... remove them"), a class folder (was: "hold no image files")."""
    monkeypatch.setattr("sft.data.cifar10._unpickle", read_denied)
    with pytest.raises(PermissionError):
        load_batch(tmp_path / "data_batch_1")

    image = tmp_path / "cat.png"
    monkeypatch.setattr("sft.data.image_decode.Image.open", read_denied)
    with pytest.raises(
        SFTError, match=re.escape(f"{image}: Permission denied: this user may not use it")
    ):
        ImageDecoder(32)(image)

    assert undecodable([image], 32) == [(str(image), "this user may not read it")]

    for name in ("cat", "dog"):
        (tmp_path / "train" / name).mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "train" / "cat" / "a.png")
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda path, mode: Path(path).name != "dog" and real_access(path, mode)
    )
    with pytest.raises(
        SFTError, match=re.escape("this user may not read the class folder(s) dog; give")
    ):
        open_image_folder(tmp_path / "train", ImageDecoder(32))


def test_home_folder_and_interpolation_signs_in_output_paths(tmp_path, monkeypatch, capsys):
    """A quoted `~/out` (SFT_OUTPUT_DIR, hydra.run.dir, resume=, sft-predict output=) made a
    folder named ~ in the working directory, or was no run directory; `${` in the output path
    was omegaconf's traceback, with a folder left."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SFT_OUTPUT_DIR", "~/out")
    argv = ["sft-train", *FAST, "debug=fdr", "test=false", "name=home"]
    assert run_entry_point(sft.train.main, argv) == 0
    (run_dir,) = (tmp_path / "out" / "debug" / "home").iterdir()
    assert not (tmp_path / "~").exists()
    assert resumed_run_dir(f"~/{run_dir.relative_to(tmp_path)}") == run_dir

    monkeypatch.setenv("SFT_OUTPUT_DIR", str(tmp_path / "d${x}"))
    assert run_entry_point(sft.train.main, argv) == 1
    assert "a folder whose path holds '${' cannot be a run's" in capsys.readouterr().err
    assert not (tmp_path / "d${x}").exists()


def test_a_broken_last_checkpoint_link_is_named_as_one(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").symlink_to(tmp_path / "elsewhere.ckpt")
    with pytest.raises(SFTError, match=r"last.ckpt is a link to .*elsewhere.ckpt, which is not"):
        resumed_run_dir(str(tmp_path))


def test_resuming_a_run_this_user_may_not_write_in_is_one_line(tmp_path, monkeypatch):
    """(was: Hydra's traceback opening the run's log)"""
    (tmp_path / "checkpoints").mkdir()
    torch.save({"global_step": 1}, tmp_path / "checkpoints" / "last.ckpt")
    monkeypatch.setattr("sft.runs.directories.os.access", lambda path, mode: False)
    with pytest.raises(SFTError, match=re.escape(f"this user may not write in {tmp_path}")):
        resumed_run_dir(str(tmp_path))


def test_the_quoting_hint_keeps_a_paths_comma():
    """`resume=/data/é a,b/run` was split into two quoted values: a sweep, refused."""
    hint = quoting_hint("resume=/data/é a,b/run")
    assert hint.endswith("\"resume='/data/é a,b/run'\"")
    assert quoting_hint("name=café,thé").endswith("\"name='café','thé'\"")
    sweep = quoting_hint("data.train_file=/data/é1.csv,/data/é2.csv")
    assert sweep.endswith("\"data.train_file='/data/é1.csv','/data/é2.csv'\"")


def test_a_home_folder_of_no_known_user_is_a_path_like_any_other(tmp_path, monkeypatch, capsys):
    """`data.data_dir='~nobody-here/data'`: Path.expanduser raises for a user unknown here, and
    the run ended in Hydra's traceback `RuntimeError: Could not determine home directory`; `~` is
    read one way (the shell's) in every path setting now."""
    monkeypatch.setenv("HOME", str(tmp_path))
    assert io.expand_home("~/data") == tmp_path / "data"
    assert io.expand_home("~sft-no-such-user/data") == Path("~sft-no-such-user/data")
    monkeypatch.setenv("SFT_OUTPUT_DIR", str(tmp_path / "out"))
    monkeypatch.chdir(tmp_path)  # a relative data dir: a failed download must leave none behind
    argv = ["sft-train", *FAST, "debug=fdr", "data.data_dir='~sft-no-such-user/data'"]
    assert run_entry_point(sft.train.main, argv) == 1
    err = capsys.readouterr().err
    assert "error: CIFAR-10 not found at" in err and "~sft-no-such-user/data" in err
    assert "Traceback" not in err and "home directory" not in err
    assert not (tmp_path / "~sft-no-such-user").exists()


def test_running_out_of_memory_is_one_line_with_what_to_lower(tmp_path, monkeypatch, capsys):
    """torch's allocator error in a training step was a traceback of 195 lines, and in a model
    being built Hydra's block; neither said what to lower."""
    monkeypatch.setenv("SFT_OUTPUT_DIR", str(tmp_path / "out"))
    oom = ["+callbacks.oom._target_=helpers.faults.OutOfMemoryAtStep", "+callbacks.oom.step=1"]
    assert run_entry_point(sft.train.main, ["sft-train", *FAST, "test=false", *oom]) == 1
    err = capsys.readouterr().err.strip()
    assert err.splitlines()[-1].startswith(
        "error: out of memory (RuntimeError: [enforce fail at alloc_cpu.cpp:127] data. "
        "DefaultCPUAllocator: can't allocate memory"
    ), err[-2000:]
    assert "set a smaller data.batch_size" in err and "Traceback" not in err
    gpu = type("OutOfMemoryError", (RuntimeError,), {})("CUDA out of memory. Tried to allocate")
    assert str(find_user_error(gpu)).startswith("out of GPU memory (OutOfMemoryError: CUDA out")
    assert "out of memory (MemoryError" in str(find_user_error(MemoryError()))
    mps = RuntimeError("MPS backend out of memory (MPS allocated: 1.2 GB)")
    assert str(find_user_error(mps)).startswith("out of GPU memory (RuntimeError: MPS backend")
    assert find_user_error(RuntimeError("the memory layout is not contiguous")) is None


def allocator_error(*args: object, **kwargs: object) -> None:
    raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9437184")


def test_out_of_memory_is_not_taken_for_another_fault(monkeypatch):
    """A first image batch too large for memory was "ResNet refused 224x224 images ... set
    model.backbone.input_size", and pretrained weights loading into too little memory "do not
    load into it as built": each said so, where the memory was the fault. The error goes on
    as raised (Lightning's BatchSizeFinder catches it), and the command says it in one line."""
    from sft.models.backbones.build_errors import model_build_errors
    from sft.models.classifier import SFTClassifier

    backbone = {"_target_": "sft.models.backbones.create_backbone", "name": "small_cnn"}
    model = SFTClassifier(backbone=backbone, num_classes=2)
    monkeypatch.setattr(model.backbone, "forward", allocator_error)
    with pytest.raises(RuntimeError) as raised:
        model._image_features(torch.zeros(2, 3, 32, 32))
    assert str(find_user_error(raised.value)).startswith("out of memory (RuntimeError: Default")
    with (
        pytest.raises(RuntimeError, match="DefaultCPUAllocator"),
        model_build_errors("torchvision", "resnet18", {}, True, lambda err: SFTError("download")),
    ):
        allocator_error()
