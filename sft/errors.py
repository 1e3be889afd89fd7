"""User-facing errors: things a user can fix (paths, config values, offline hub access).

Entry points print an `SFTError` as one line without a traceback (set HYDRA_FULL_ERROR=1 for the
trace); any other exception is a bug and keeps its traceback.
"""

import errno
import os
import re
import shutil
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple, TypeVar

try:  # here, not where the open-file limit is reached: importing it opens a file
    import resource
except ImportError:  # not POSIX
    resource = None  # type: ignore[assignment]

T = TypeVar("T")


class SFTError(Exception):
    """A mistake in the user's input or environment, reported as one clear line."""


class MachineLimit(SFTError):
    """A limit of the machine a run reached (shared memory, open files, memory): one line, and
    the traceback in the run's log file (it may also be a leak's)."""


class RunInTheWay(SFTError):
    """A run refused because its directory holds a run it must not replace (a sweep job's
    refusal is recorded in the sweep directory: its own holds the other run's record)."""


class TrainingInterrupted(SystemExit):
    """A run stopped by a signal after it said what was kept. Its exit status is the shell's
    for that signal, 128 + its number (130 for Ctrl-C, 143 for SIGTERM), as for a command the
    signal ended; the console command prints `message`, its one line (sft.entry_points)."""

    def __init__(self, message: str | None, signum: int) -> None:
        super().__init__(128 + signum)
        self.message = message

    def __str__(self) -> str:
        return self.message or f"interrupted by {signal.Signals(self.code - 128).name}"

    def __reduce__(self) -> tuple:
        # pickled and copied whole (a process pool or launcher sending it back): the default,
        # from `args` (the status alone), cannot call __init__
        return type(self), (self.message, self.code - 128)


# what a launcher attaches to the stop it raises: {job number: JobReturn} of the jobs that had
# ended by then, for a sweeper to tell their values (hydra_plugins.sft_optuna_sweeper)
ENDED_JOBS = "ended_jobs"


class StoppedJob(NamedTuple):
    """What a launcher's job process sends back when a signal stopped it: its interrupt, which
    the launcher raises once every job has stopped. (submitit and Ray send back only an
    Exception: a job's KeyboardInterrupt or TrainingInterrupted left no result.)"""

    stop: KeyboardInterrupt | TrainingInterrupted


def stop_of_jobs(
    results: Mapping[int, object], received: Sequence[int]
) -> KeyboardInterrupt | TrainingInterrupted | None:
    """What a launcher raises once its jobs ended: the first stopped job's interrupt (its line
    says how to continue the sweep), with the other jobs' `results` (by job number) attached
    as ENDED_JOBS; else, for a signal the launcher itself `received`, a stop of its own; None
    for jobs that all ended on their own."""
    stops = [result.stop for result in results.values() if isinstance(result, StoppedJob)]
    if stops:
        ended = {num: r for num, r in results.items() if not isinstance(r, StoppedJob)}
        setattr(stops[0], ENDED_JOBS, ended)
        return stops[0]
    if received:  # after every job had ended: the sweep stops here
        name = signal.Signals(received[0]).name
        return TrainingInterrupted(f"interrupted by {name} as its jobs ended", received[0])
    return None


def first_line(err: BaseException) -> str:
    """The first line of an exception's message: the part a one-line error can quote."""
    lines = str(err).strip().splitlines()
    return lines[0] if lines else ""


def find_user_error(exc: BaseException) -> SFTError | None:
    """The SFTError behind `exc`, if any (Hydra's instantiate wraps errors raised in __init__),
    or one made for a file or folder this user may not use."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, SFTError):
            return exc
        if (raised := _raised_in_a_spawned_rank(exc)) is not None:
            return raised
        if (limit := _machine_limit(exc)) is not None:
            return limit
        if (full := _file_system_limit(exc)) is not None:
            return full
        if (memory := out_of_memory(exc)) is not None:
            return memory
        if isinstance(exc, PermissionError) and exc.filename:
            # a file or folder this user may not read or write (was: a traceback; as root the
            # tests cannot make one, so it is the one case told by its type, not by sft)
            return denied_access(exc)
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def denied_access(exc: PermissionError) -> SFTError:
    """`<path>: Permission denied: this user may not use it; ...`."""
    return SFTError(
        f"{exc.filename}: {exc.strerror or 'permission denied'}: this user may not use it; give "
        "it access, or another path"
    )


def _machine_limit(exc: BaseException) -> MachineLimit | None:
    """A limit of the machine that DataLoader workers reached, told by torch's message (was: a
    traceback, a worker's flattened into the record): shared memory full (Docker's default
    /dev/shm is 64 MB), the open-file limit, a worker the system killed (out of memory)."""
    text = str(exc)
    killed = re.search(r"DataLoader worker \(pid[^)]*\) is killed by signal: ([^.]+)", text)
    signal_name = killed.group(1).strip() if killed else None
    # a worker's bus error: torch's sign of shared memory full too
    if "unable to allocate shared memory" in text or signal_name == "Bus error":
        return _shm_full()
    too_many = isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE)
    if too_many or "Too many open files" in text or "received 0 items of ancdata" in text:
        limit = _open_file_limit()
        said = f" (ulimit -n: {limit})" if limit else ""
        return MachineLimit(
            f"too many open files{said}: raise the limit (ulimit -n 65536), or set a lower "
            "data.num_workers (DataLoader workers hand their batches over through open files)"
        )
    if signal_name == "Killed":  # SIGKILL: the system's out-of-memory killer, most likely
        # (Terminated: a stop of the whole job; Segmentation fault, Aborted: a bug, traced)
        return MachineLimit(
            "a DataLoader worker was killed by the system (signal Killed), most likely for want "
            "of memory: set a lower data.num_workers or data.batch_size"
        )
    return None


def out_of_memory(exc: BaseException) -> MachineLimit | None:
    """Memory the run asked for and did not get: torch's CPU allocator ("can't allocate
    memory"), a device's (torch.OutOfMemoryError, "CUDA error: out of memory", "MPS backend out
    of memory"), Python's MemoryError, a failed mmap or fork (was: a traceback of 195 lines, or
    Hydra's block when the model was being built, no advice). Code that turns a layer's
    RuntimeError into a message of its own lets this one through."""
    text = first_line(exc)
    device = type(exc).__name__ == "OutOfMemoryError" or re.search(
        r"(CUDA|MPS)\b.*out of memory", text
    )
    cpu = "can't allocate memory" in text or isinstance(exc, MemoryError)
    system = isinstance(exc, OSError) and exc.errno == errno.ENOMEM  # mmap, a worker's fork
    if not (device or cpu or system):
        return None
    said = " ".join(text.split())[:160]
    return MachineLimit(
        f"out of {'GPU ' if device else ''}memory ({type(exc).__name__}{': ' * bool(said)}{said}):"
        " set a smaller data.batch_size (trainer.accumulate_grad_batches=<n> keeps the batch each "
        "optimizer step sees), or for a text model a smaller data.max_length, "
        "model.backbone.gradient_checkpointing=true, or method=lora"
        + ("; fewer data.num_workers use less" if system else "")
        + "; the run's log has the traceback"
    )


# free shared memory below which a nameless "no space left" is /dev/shm's
SHM_NEARLY_FULL_BYTES = 16 * 2**20


def _file_system_limit(exc: BaseException) -> MachineLimit | None:
    """A write the file system refused for its limits: a full disk or quota, a file larger than
    it (or `ulimit -f`) allows, a name longer than it takes (were: tracebacks from wherever the
    write was, Hydra's config, TensorBoard's events, an export, a run directory's name). A
    MachineLimit: the traceback goes to the run's log, which says where a write that names no
    file (a buffered write's error has none) was."""
    if not isinstance(exc, OSError):
        return None
    where = exc.filename
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        if where is None and _shm_free() < SHM_NEARLY_FULL_BYTES:  # DataLoader queues' locks
            return _shm_full()
        return MachineLimit(
            f"{where or 'a file'} could not be written: its disk is full ({exc.strerror}"
            + ("" if where else "; the run's log has the traceback of the write")
            + "); free some space or write elsewhere"
        )
    if exc.errno == errno.EFBIG:
        return MachineLimit(
            f"{where or 'a file'} could not be written: larger than this system lets a file be "
            "(ulimit -f, or the file system's largest file: 4 GiB on FAT32); write elsewhere"
        )
    if exc.errno == errno.ENAMETOOLONG:
        return MachineLimit(
            f"{where or 'a path'}: longer than the file system takes (255 bytes for a folder's "
            "or file's name); give a shorter name or path"
        )
    return None


def _shm_full() -> MachineLimit:
    return MachineLimit(
        f"the DataLoader workers ran out of shared memory ({_shm_size()}): set "
        "data.num_workers=0, or smaller data.batch_size / data.eval_batch_size, or give the "
        "machine more (in Docker: --shm-size=2g)"
    )


def _shm_free() -> float:
    """Free bytes in /dev/shm (infinite where there is none)."""
    usage = _shm_usage()
    return float("inf") if usage is None else usage[1]


def _open_file_limit() -> int | None:
    """This process's limit of open files (ulimit -n); None where the system has no such."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0] if resource is not None else None


def _shm_size() -> str:
    """`/dev/shm: 64 MB`, or what else says where shared memory is."""
    usage = _shm_usage()
    if usage is None:
        return "no /dev/shm"
    total, free = usage
    return f"/dev/shm: {total / 2**20:.0f} MB, {free / 2**20:.0f} MB free"


def _shm_usage() -> tuple[int, int] | None:
    """(total, free) bytes of /dev/shm; None where there is none."""
    try:
        usage = shutil.disk_usage("/dev/shm")
    except OSError:
        return None
    return usage.total, usage.free


def _raised_in_a_spawned_rank(exc: BaseException) -> SFTError | None:
    """The SFTError a rank of ddp_spawn (trainer=ddp_sim) raised: torch raises a
    ProcessRaisedException in the main process, whose message is the rank's traceback (was:
    printed whole)."""
    if type(exc).__name__ != "ProcessRaisedException":
        return None
    text = _raised_message(str(exc))
    return SFTError(text) if text is not None else None


def _raised_message(traceback: str) -> str | None:
    """The message of the SFTError a traceback's text ends in (`sft.errors.SFTError: ...`);
    None when it ends in another exception."""
    name, _, text = traceback.rstrip().rpartition("\n")[2].partition(": ")
    return text if name.endswith("SFTError") and text else None


def report_user_errors(
    fn: Callable[[], T], logged: Callable[[str, BaseException | None], None] | None = None
) -> T:
    """Run `fn`; a user error exits with status 1 and one line on stderr, bugs raise as usual.
    `logged(line, traced)`: where else the line goes (a run's log file), with the exception
    whose traceback belongs there too: a machine limit's (a leak would show in it)."""
    try:
        return fn()
    except Exception as exc:
        user_error = find_user_error(exc)
        if user_error is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        line = f"error: {worker_message(str(user_error))}"
        print(line, file=sys.stderr)
        if logged is not None:
            logged(line, exc if isinstance(user_error, MachineLimit) else None)
        raise SystemExit(1) from None


def worker_message(message: str) -> str:
    """The message of an SFTError raised in a DataLoader worker: torch raises it again in the
    main process with the worker's traceback as its message (was: printed whole)."""
    if not (message.startswith("Caught ") and "\nOriginal Traceback" in message):
        return message
    return _raised_message(message) or message
