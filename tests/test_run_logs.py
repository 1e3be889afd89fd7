"""What a run says where its output is not a terminal (a cluster job's log, nohup, CI): its
progress, each validation and its result, on the console and in its log file."""

import io
import logging
import os
import re
import sys
import warnings

from conftest import FAST, compose_config, run_entry_point

import sft.train
from sft.entry_points import run
from sft.utils.logs import log_to_files
from sft.utils.terminal import progress_bar_off_unless_terminal


def train_log(tmp_path, *args: str) -> tuple[int, str]:
    """sft-train FAST + `args` into tmp_path/run: (exit status, its log: train.log, or
    debug.log under debug=...)."""
    argv = ["sft-train", *FAST, *args, f"hydra.run.dir={tmp_path / 'run'}"]
    status = run_entry_point(sft.train.main, [*argv, f"paths.log_dir={tmp_path}"])
    (log_file,) = (tmp_path / "run").glob("*.log")
    return status, log_file.read_text()


def test_a_run_logs_its_progress_each_validation_and_its_result(tmp_path):
    """Without a progress bar, a line each tenth of an epoch; after each validation its val/
    metrics; at the end the scores (were: none of them, anywhere but Rich's last bar frame and
    the test table on the console)."""
    status, logged = train_log(tmp_path, "trainer.max_epochs=2")
    assert status == 0
    # 20 images of each of 10 classes: 6 full batches of 32 an epoch, under 10 (a line each)
    progress = re.findall(
        r"epoch (\d): (\d)/6 batches, train/loss [\d.]+, [\d.]+ batches/s", logged
    )
    assert progress == [(e, str(b)) for e in "01" for b in range(1, 7)]
    validations = re.findall(
        r"validation at epoch (\d), step (\d+): val/acc [\d.]+, val/acc_best [\d.]+, val/f1 "
        r"[\d.]+, val/loss [\d.]+\n",
        logged,
    )
    assert validations == [("0", "6"), ("1", "12")]
    assert re.search(
        r"metrics: test/acc [\d.]+, test/f1 [\d.]+, test/loss [\d.]+, val/acc [\d.]+, "
        r"val/acc_best [\d.]+, val/f1 [\d.]+, val/loss [\d.]+\n",
        logged,
    )


def test_a_refused_runs_error_line_is_in_its_log_file_too(tmp_path, capsys):
    status, logged = train_log(tmp_path, "model.num_classes=3")
    line = "error: model.num_classes=3 but the data has 10 classes"
    assert status == 1 and line in capsys.readouterr().err
    assert line in logged  # was: only on the console


def test_the_progress_bar_is_off_where_its_stream_is_not_a_terminal(tmp_path, monkeypatch):
    """A bar's frames fill a log (Rich printed one as the fit ended, its metrics' names and
    values on different lines): off where the stream it draws on (Rich: stdout, TQDM: stderr)
    is not a terminal; one the command line asks for stays."""
    cfg = compose_config("train", [], tmp_path)
    assert cfg.trainer.enable_progress_bar is True
    for rich, stdout_tty, stderr_tty, typed, kept in [
        (True, True, True, [], True),
        (True, False, True, [], False),
        (True, True, False, [], True),  # `2> warnings.log` on a terminal: Rich's bar stays
        (False, True, False, [], False),
        (False, False, True, [], True),
        (True, False, False, ["trainer.enable_progress_bar"], True),
    ]:
        monkeypatch.setattr(sys.stdout, "isatty", lambda t=stdout_tty: t, raising=False)
        monkeypatch.setattr(sys.stderr, "isatty", lambda t=stderr_tty: t, raising=False)
        trainer_cfg = cfg.trainer.copy()
        progress_bar_off_unless_terminal(trainer_cfg, typed, rich=rich)
        assert trainer_cfg.enable_progress_bar is kept


def test_a_run_under_future_warnings_as_errors_is_not_stopped_by_lightnings_own(tmp_path):
    """`-W error` (a CI's setting) stopped every run at fit start on Lightning's use of torch's
    deprecated LeafSpec, which no setting of the run changes."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        status, _ = train_log(tmp_path, "debug=fdr")
    assert status == 0


def test_a_command_writes_what_its_output_cannot_encode_as_escapes(monkeypatch, capsys):
    """Under PYTHONIOENCODING=ascii a run's accented name, or the progress bar's bullet as the
    fit ended, was a UnicodeEncodeError that failed the run."""
    out = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    monkeypatch.setattr(sys, "stdout", out)
    run(lambda: print("name: café • done"))
    out.flush()
    assert out.buffer.getvalue() == b"name: caf\\xe9 \\u2022 done\n"


def test_a_command_goes_on_when_its_outputs_reader_goes_away(monkeypatch, capsys):
    """`sft-train ... | head`: the first write after head's exit was a BrokenPipeError that
    failed the run at whatever it was doing ("could not load model ...: [Errno 32] Broken
    pipe"). Now the run goes on, its console output to os.devnull, its log file whole."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader gone
    with open(write_end, "w", buffering=1) as closed_pipe:
        monkeypatch.setattr(sys, "stdout", closed_pipe)
        monkeypatch.setattr(sys, "stderr", sys.stderr)  # run() wraps both: put back after the test
        logger = logging.getLogger("sft.tests.closed_reader")
        done = []

        def main() -> None:
            console = logging.StreamHandler(sys.stdout)  # Hydra's job logging: ext://sys.stdout
            logger.addHandler(console)
            try:
                for step in range(3):
                    print("step", step)
                    logger.warning("logged at step %d", step)
            finally:
                logger.removeHandler(console)
            done.append(True)

        run(main)
    assert done
    assert "Logging error" not in capsys.readouterr().err


def test_a_log_line_for_the_files_only_skips_the_console(tmp_path, capsys):
    """Through the file handlers the record would propagate to, at the logger's level."""
    logger = logging.getLogger("sft.tests.files_only")
    logger.setLevel(logging.INFO)
    file_handler = logging.FileHandler(tmp_path / "run.log")
    console = logging.StreamHandler(sys.stderr)
    logger.addHandler(console)
    logger.parent.addHandler(file_handler)  # propagated to: found there
    try:
        log_to_files(logger, logging.INFO, "for the file")
        log_to_files(logger, logging.DEBUG, "below the logger's level")
    finally:
        logger.removeHandler(console)
        logger.parent.removeHandler(file_handler)
        file_handler.close()
        logger.setLevel(logging.NOTSET)
    assert (tmp_path / "run.log").read_text() == "for the file\n"
    assert "for the file" not in capsys.readouterr().err


def test_the_root_log_level_quiets_lightnings_lines_too(tmp_path):
    """hydra.job_logging.root.level=WARNING left Lightning's INFO lines ("Seed set to 0", the
    GPU lines, "`Trainer.fit` stopped") in, its loggers pinned at INFO."""
    args = ["trainer.max_epochs=1", "test=false", "hydra.job_logging.root.level=WARNING"]
    status, logged = train_log(tmp_path, *args)
    assert status == 0
    assert not re.findall(r"\[lightning\.[\w.]+\]\[INFO\]", logged), logged
