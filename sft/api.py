"""sft's commands from Python: a notebook, a script, a loop of runs of one's own.

    from sft import api

    run = api.train("experiment=sst2_minilm", "seed=1")
    run.metrics["val/acc_best"], run.output_dir
    scored = api.evaluate(f"ckpt_path={run.output_dir}/checkpoints/last.ckpt")

Each call runs in this process what the command with those overrides runs: the same checks,
run directory, log and record (result.json; scores.json for `evaluate`), and returns that
record. A mistake the command would print as its `error:` line is raised as SFTError with it.
The logging a run sets up is undone afterwards, so runs can follow one another. One run per
call: a sweep is a loop over calls (or `sft-train -m` on the command line).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from hydra.core.global_hydra import GlobalHydra

from sft.errors import SFTError
from sft.runs.result import COMPLETED, PRUNED, RunRecorder, RunResult, record_file, recorders_made
from sft.utils.logs import logging_restored


def train(*overrides: str) -> RunResult:
    """`sft-train <overrides>`: the run's record (status completed), its metrics the final ones."""
    from sft.train import main

    return _run("train", main, overrides)


def evaluate(*overrides: str) -> RunResult:
    """`sft-eval <overrides>` (`ckpt_path=` and any others): its record, scores.json's."""
    from sft.eval import main

    return _run("eval", main, overrides)


class _ErrorLine:
    """A text stream that writes through to `stream` and keeps the last `error:` line."""

    def __init__(self, stream) -> None:
        self.stream, self.error, self._line = stream, None, ""

    def write(self, text: str) -> int:
        self._line += text
        *lines, self._line = self._line.split("\n")
        for line in lines:
            if line.startswith("error: "):
                self.error = line.removeprefix("error: ")
        return self.stream.write(text)

    def __getattr__(self, name: str):  # flush, isatty, encoding, fileno...
        return getattr(self.stream, name)


@contextlib.contextmanager
def _command_line(argv: list[str]) -> Iterator[None]:
    """sys.argv as the command's, and Hydra as if it had not run (it refuses a second
    initialisation in one process)."""
    saved, sys.argv = sys.argv, argv
    GlobalHydra.instance().clear()
    try:
        yield
    finally:
        sys.argv = saved
        GlobalHydra.instance().clear()


def _run(command: str, main: Callable[[], object], overrides: tuple[str, ...]) -> RunResult:
    flags = [o for o in overrides if o.startswith("-")]
    if flags:
        raise SFTError(
            f"{flags[0]}: sft.api runs one run, from overrides alone; a sweep is a loop over "
            f"calls (or sft-{command} -m on the command line), a config is shown by "
            f"sft-{command} --cfg job"
        )
    errors = _ErrorLine(sys.stderr)
    status = 0
    with (
        _command_line([f"sft-{command}", *overrides]),
        recorders_made() as recorders,
        logging_restored(),
        contextlib.redirect_stderr(errors),
    ):
        try:
            main()
        except SystemExit as exc:  # the command's exit status (1: its error line said why)
            status = exc.code if isinstance(exc.code, int) else 1
    record = _record(recorders)
    if status == 0 and record is not None and record.status in (COMPLETED, PRUNED):
        return record
    error = (record.error if record is not None else None) or errors.error
    raise SFTError(error or f"sft-{command} ended with exit status {status}")


def _record(recorders: list[RunRecorder]) -> RunResult | None:
    """The record of the run: as its recorder finished it, or, for a run that stood as it was
    (a finished run continued with nothing to train), the one in its directory."""
    if not recorders:  # refused before the run began (a mistaken override)
        return None
    recorder = recorders[-1]
    if recorder.finished:
        return recorder.result
    path = Path(recorder.result.output_dir) / record_file(recorder.result.task)
    return RunResult.read(path) if path.is_file() else None
