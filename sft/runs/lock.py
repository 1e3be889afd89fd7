"""A run or sweep directory in use by a process that is still running: no second one in it.

Hydra has no such guard, and sft's checks of a directory read what a run leaves when it ends
(`result.json`) or checkpoints: a run given another's `hydra.run.dir` before its first
checkpoint, a `resume=` of a run still training, or a second sweep into a `hydra.sweep.dir`
whose jobs were running trained in the same folders, mixing their checkpoints, records and
TensorBoard curves. A POSIX lock on `<dir>/.sft.lock` marks a directory in use: the system
drops it with its process (SIGKILL and crashes included), so none is left stale, and it holds
across the hosts of a shared file system that supports locks (NFSv4, Lustre). Where locks fail
(a file system without them) there is no guard, as before; an NFSv3 mount whose lock daemon
hangs can make the start wait on it.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sft.errors import SFTError

LOCK_FILE = ".sft.lock"
_BUSY = (errno.EACCES, errno.EAGAIN)

# the directories this process holds, with the descriptor of each lock file (a POSIX lock lasts
# while its file stays open in the process)
_held: dict[Path, int] = {}
# those this process made to hold them (removed again if nothing else was written there)
_made: set[Path] = set()

F = TypeVar("F", bound=Callable[..., Any])


def _open(folder: Path) -> int | None:
    try:
        return os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:  # a read-only folder: the run fails on its own there
        return None


def _holder_of(fd: int) -> str | None:
    """Lock the open lock file `fd`: None when this process got it; who holds it ("pid N on
    <host>") when another process does; "" on a file system without locks (no guard there, as
    before)."""
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in _BUSY:
            return ""
        return os.read(fd, 200).decode(errors="replace").strip() or "another process"
    return None


def holder(folder: str | Path) -> str | None:
    """Who holds `folder` ("pid N on <host>"), when another process does; None when none."""
    folder = Path(folder).resolve()
    if folder in _held or not (folder / LOCK_FILE).is_file():
        return None
    fd = _open(folder)
    if fd is None:
        return None
    who = _holder_of(fd)
    os.close(fd)  # (releases a lock this test got)
    return who or None


def hold(folder: str | Path, setting: str, made: bool = False) -> None:
    """Mark `folder` in use by this process until `release(folder)` or the process ends;
    SFTError naming the process that holds it, and `setting` to give instead. `made`: this
    process has just made the folder (removed again on release if nothing was written there)."""
    folder = Path(folder).resolve()
    if folder in _held:
        return
    made = made or not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # (the run directory's checks find most of these first)
        why = exc.strerror or exc
        raise SFTError(f"{folder} cannot be made: {why}; give another {setting}") from None
    fd = _open(folder)
    if fd is None:
        return
    who = _holder_of(fd)
    if who is not None:
        os.close(fd)
        if not who:
            return  # a file system without locks
        raise SFTError(
            f"{folder} is in use by an sft run or sweep still running ({who}): wait for it to "
            f"end, or give this one another {setting}"
        )
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode())
    _held[folder] = fd
    if made:
        _made.add(folder)


def release(folder: str | Path) -> None:
    """Let another process use `folder` (the lock file stays: removing it would race a process
    opening it)."""
    folder = Path(folder).resolve()
    fd = _held.pop(folder, None)
    if fd is None:
        return
    os.close(fd)
    if folder in _made:
        _made.discard(folder)
        # made for a run or sweep refused after it (e.g. by its sweeper): as it was. Removing
        # the lock file races only a process that opened it in the moment since, for a folder
        # that holds nothing: that one then holds a file no later process finds, a window of
        # no consequence for a folder no run wrote to
        try:
            if [p.name for p in folder.iterdir()] == [LOCK_FILE]:
                (folder / LOCK_FILE).unlink()
                folder.rmdir()
        except OSError:
            pass


def releasing_held_folders(main: F) -> F:
    """Decorate an entry point: whatever way it ends, the folders it held are released (a
    refusal's SystemExit passes by the Hydra callbacks' ends)."""

    @functools.wraps(main)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return main(*args, **kwargs)
        finally:
            for folder in list(_held):
                release(folder)

    return wrapper  # type: ignore[return-value]
