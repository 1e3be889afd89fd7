"""Atomic file writes: a reader, a crash or a kill sees the old file or the whole new one, never a
part. The one way sft writes results, summaries, predictions, token caches and checkpoints.

A temp file in the same directory (so the rename is atomic), fsync, `os.replace`, fsync of the
directory (so the rename itself survives a power loss); on any failure the temp file is removed
and the previous file is untouched. mkstemp names are unique, so writers on several hosts
sharing one folder (DDP ranks, sweep jobs) never collide on the temp file. `check_not_written`
keeps a command from replacing results an earlier one wrote.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from sft.errors import SFTError


def file_in_the_way(path: Path) -> Path | None:
    """The file that keeps folder `path` from being made: `path` itself or the nearest existing
    folder above it, when that is not a folder."""
    for folder in (path, *path.parents):
        if folder.exists():
            return None if folder.is_dir() else folder
    return None


def expand_home(value: str | os.PathLike) -> Path:
    """`value` with a leading `~` or `~user` read as that home folder, as the shell reads it. A
    user unknown here leaves `~user` as it is: Path.expanduser raises for it, which reached users
    as a traceback (`data.data_dir='~nobody/sst2'`)."""
    return Path(os.path.expanduser(value))


def unused_name(path: Path) -> Path:
    """`path`, or `path` with `.1`, `.2`, ... added: the first that names nothing yet."""
    candidate, n = path, 0
    while candidate.exists() or candidate.is_symlink():
        n += 1
        candidate = path.with_name(f"{path.name}.{n}")
    return candidate


def path_setting(value: Any, key: str, expected: str) -> Path:
    """The path that the setting `key` gives; SFTError saying it expected `expected`, for null,
    an empty value (`key=$VAR` with the variable unset, which reads as `.`) or a list."""
    if isinstance(value, str | os.PathLike) and str(value).strip():
        return expand_home(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return Path(str(value))  # a file named 5
    got = "null" if value is None else "an empty value" if value == "" else repr(value)
    if isinstance(value, Sequence) and not isinstance(value, str):
        got = f"a list, {list(value)}"
    raise SFTError(f"{key}: expected {expected}, got {got}")


def checkpoint_path(value: Any, key: str = "ckpt_path") -> Path:
    """The checkpoint file that the setting `key` names (one line for null, empty or a list)."""
    return path_setting(value, key, "the path of one checkpoint file (<run>/checkpoints/last.ckpt)")


def check_checkpoint_file(path: str | Path) -> Path:
    """`path` when it is a file; one line for a folder (naming its run's last.ckpt) or nothing.
    Torch-free: sft-eval/-predict/-export say it before loading torch and Lightning."""
    path = Path(path)
    if path.is_dir():
        hint = path / "checkpoints" / "last.ckpt"
        raise SFTError(
            f"checkpoint {path}: a directory, not a checkpoint file"
            + (f" (its run's newest: {hint})" if hint.is_file() else "")
        )
    if not path.is_file():
        raise SFTError(f"checkpoint {path}: {missing_file(path)}")
    return path


def missing_file(path: Path) -> str:
    """Why `path`, expected to be a file, is not one: a folder, a link that leads nowhere or to
    itself (was: "no such file" of a link the user can see), something else (a FIFO), a path
    this user may not look into, or nothing there."""
    if path.is_dir():
        return "a directory, not a file"
    try:
        os.stat(path)
    except OSError as err:
        if err.errno == errno.ELOOP:
            return "a symbolic link that loops (it leads back to itself)"
        if err.errno != errno.ENOENT:
            return f"cannot be looked at ({err.strerror})"
        if path.is_symlink():  # the end of its chain of links, from the link's own folder
            return f"a symbolic link to {path.resolve()}, which does not exist"
        return "no such file"
    return "not a regular file"


def check_not_written(path: Path, setting: str) -> None:
    """SFTError when `path` exists: results already written are never replaced (`setting`: what
    the user changes to write elsewhere). Also when a folder it goes in is a file."""
    blocking = file_in_the_way(path.parent)
    if blocking is not None:
        raise SFTError(
            f"{blocking} is a file, not a folder: {path} cannot be written; give another {setting}"
        )
    # a dangling link too: written through, it would go elsewhere
    if path.exists() or path.is_symlink():
        raise SFTError(
            f"{path} already exists: give another {setting} (results already written are never "
            "replaced)"
        )


def check_not_a_folder(path: Path, given_as: str, example: str) -> None:
    """SFTError when `path`, given for a file to write, is a folder: named as one, with a file
    in it to give instead (`given_as`: how the user gave it, "output=" or "--csv ";
    `example`: a file name)."""
    if path.is_dir():
        raise SFTError(
            f"{given_as}{path} is a folder: {given_as.strip()} names the file to write, e.g. "
            f"{given_as}{path / example}"
        )


def atomic_write(
    path: str | os.PathLike,
    write: Callable[[IO], Any],
    *,
    text: bool = False,
    new_only: bool = False,
) -> None:
    """Call `write(f)` on a new file that then replaces `path` (text: UTF-8, newlines as
    written, which csv needs). `new_only`: put in place only where no file is there, SFTError
    otherwise (`check_not_written` looked before the work began; a file written there meanwhile,
    by another command given the same output, was replaced without a word)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:  # named by the file it was for, not its temporary's name
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would hide results from other users
    handling = sys.exc_info()[1]  # an exception being handled already (a Ctrl-C recorded)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") if text else os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if new_only:
            _link_new(tmp, path)
        else:
            os.replace(tmp, path)
    except BaseException as exc:
        full = isinstance(exc, Exception) and _out_of_space(exc, path.parent)
        Path(tmp).unlink(missing_ok=True)
        interrupt = _interrupt_in(exc, handling)
        if interrupt is not None and interrupt is not exc:
            # a second Ctrl-C while a checkpoint was saved: torch's zip writer, cut short, raised
            # its own error over it ("unexpected pos"), which then read as a failed run
            raise interrupt from None
        if full:
            raise SFTError(
                f"{path} could not be written: its disk is full ({exc}); free some space or "
                "write elsewhere"
            ) from exc
        if isinstance(exc, OSError) and exc.errno and exc.filename in (None, tmp):
            # named by the file it was for (a buffered write's error names none: a file too
            # large for ulimit -f, found by sft.errors)
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
    _fsync_dir(path.parent)


def _interrupt_in(exc: BaseException, outer: BaseException | None) -> KeyboardInterrupt | None:
    """The KeyboardInterrupt `exc` is, or was raised while handling, if any; not one from before
    the write (`outer`: handled when it began, e.g. the Ctrl-C whose record is written)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and current is not outer and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return current
        seen.add(id(current))
        current = current.__context__
    return None


UNFINISHED_WRITE = ".*.tmp"  # atomic_write's temporary files: `.<name>.<random>.tmp`


# a temporary file left this long unchanged is no write still under way
ABANDONED_AFTER_S = 600


def remove_unfinished_writes(folder: Path) -> list[Path]:
    """Remove the temporary files of atomic writes into `folder` that never finished (a process
    killed while it wrote, e.g. a checkpoint: up to its whole size each, never removed): those
    unchanged for ABANDONED_AFTER_S, for a folder no other process should write to (a run
    directory its lock holds, where the file system has locks)."""
    removed = []
    now = time.time()
    for tmp in folder.glob(UNFINISHED_WRITE) if folder.is_dir() else []:
        with contextlib.suppress(OSError):
            if now - tmp.stat().st_mtime > ABANDONED_AFTER_S:
                tmp.unlink()
                removed.append(tmp)
    return removed


def _link_new(tmp: str, path: Path) -> None:
    """Move `tmp` to `path` where no file is there (a hard link fails on an existing name; on a
    file system without hard links, vfat or some network mounts, the name is taken first with
    an exclusive create, then replaced: was replaced whatever was there)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise _written_meanwhile(path) from None
    except OSError:
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            raise _written_meanwhile(path) from None
        try:
            os.replace(tmp, path)
        except BaseException:  # the empty name taken is not left to refuse the next try
            if path.stat().st_size == 0:
                path.unlink()
            raise
        return
    os.unlink(tmp)


def _written_meanwhile(path: Path) -> SFTError:
    return SFTError(
        f"{path} was written by another command while this one ran: not written over; give "
        "this one another output path"
    )


# torch's zip writer reports a full disk as "RuntimeError: [enforce fail at
# inline_container.cc...] unexpected pos": what free space is left tells it apart
NEARLY_FULL_BYTES = 64 * 2**20


def _out_of_space(exc: Exception, folder: Path) -> bool:
    """Whether a failed write ran out of disk space (or quota)."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    try:
        free = shutil.disk_usage(folder).free
    except OSError:  # the original error is the one to report
        return False
    return isinstance(exc, RuntimeError) and free < NEARLY_FULL_BYTES


def atomic_write_text(path: str | os.PathLike, content: str) -> None:
    atomic_write(path, lambda f: f.write(content), text=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    if not hasattr(os, "O_DIRECTORY"):  # POSIX only; elsewhere the rename is as durable as it gets
        return
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
