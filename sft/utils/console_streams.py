"""stdout and stderr made fit for a run of hours: writing what their encoding lacks, and going
on when their reader goes away."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import IO, Any


def writable_in_any_encoding() -> None:
    """stdout writes what its encoding lacks as escapes (as Python's stderr does): under an
    ASCII one (PYTHONIOENCODING=ascii) a run's name or text with an accent, or the progress
    bar's bullet as the fit ended, were a UnicodeEncodeError that failed the run."""
    stream = sys.stdout
    if getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure"):
        stream.reconfigure(errors="backslashreplace")


class OutputWithoutReader:
    """A text stream that, once its pipe's reader is gone (`sft-train ... | head`, a `tee`
    stopped, an ssh session's pipe closed), sends what follows to os.devnull instead of raising
    BrokenPipeError (Python's recipe for a closed pipe, which ignores SIGPIPE). The run goes on:
    its log file holds every line. Before, the first write after `| head` failed the run at
    whatever it was doing ("could not load model ...: [Errno 32] Broken pipe")."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._to_devnull()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._to_devnull()

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def _to_devnull(self) -> None:
        # onto the stream's own descriptor: what its buffer still holds, and anything writing
        # to the descriptor itself (a child process started from here on, faulthandler), goes
        # there too
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, self._stream.fileno())
        finally:
            os.close(devnull)
        self._stream.flush()  # what the buffer held: to os.devnull now

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding, buffer ...
        if name == "_stream":  # not set yet (a copy being made): no endless lookup
            raise AttributeError(name)
        return getattr(self._stream, name)


def going_on_without_reader() -> None:
    """sys.stdout and sys.stderr as `OutputWithoutReader`s."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, OutputWithoutReader):
            setattr(sys, name, OutputWithoutReader(stream))
