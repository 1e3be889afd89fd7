"""A run's log: warnings that go in it (Lightning's `rank_zero_warn` sends them through Python's
`warnings`, which print on stderr only, so `train.log`, Hydra's file handler, never held them),
lines for its file alone (what the console shows already), the loggers' set-up carried to a
spawned DDP rank, and the Lightning-internal warnings a run leaves out."""

import logging
import sys
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from lightning_utilities.core.rank_zero import rank_zero_only  # Lightning's, without loading it


@rank_zero_only  # every DDP rank reads the data; one warning
def rank_zero_warning(logger: logging.Logger, message: str) -> None:
    """`message` at WARNING level through `logger`, on the global rank 0 only."""
    logger.warning(message)


def first_few(items: Iterable[object], n: int, sep: str = ", ") -> str:
    """The first `n` of `items`, `sep`-separated, and "<sep>..." when there are more: a message
    names some, not thousands."""
    items = list(items)
    return sep.join(map(str, items[:n])) + (f"{sep}..." if len(items) > n else "")


@contextmanager
def log_levels_kept() -> Iterator[None]:
    """The levels the run's logging config gave its loggers, kept through what runs inside:
    Lightning's import sets its loggers to INFO (lightning/pytorch/__init__.py, fabric's too),
    which dropped `debug=*`'s DEBUG lines once Lightning loaded after Hydra set up logging."""
    loggers = logging.Logger.manager.loggerDict
    levels = {name: lg.level for name, lg in loggers.items() if isinstance(lg, logging.Logger)}
    try:
        yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


@contextmanager
def info_left_out(logger: logging.Logger) -> Iterator[None]:
    """`logger`'s INFO lines left out while the block runs (its warnings are kept)."""
    level = logger.level
    logger.setLevel(max(logging.WARNING, logger.getEffectiveLevel()))
    try:
        yield
    finally:
        logger.setLevel(level)


def ignore_lightning_internal_warnings() -> None:
    """Warnings about Lightning's own code, which no setting of a run changes: its use of
    torch's deprecated LeafSpec, in every run (`-W error`, a CI's setting, made it a traceback
    at fit start), and its model summary's size estimate under the mixed precisions sft
    chooses. And its checkpoint callbacks' word, before a first validation, that the monitored
    key is not logged yet ("HINT: Did you call log(...)?"), printed beside sft's own: a monitor
    no validation logs is refused before fit starts (sft.callbacks.monitored_metrics), and a run
    that ended before its first validation, or has none, is said so. In each process that
    trains (a spawned DDP rank starts without these filters)."""
    warnings.filterwarnings("ignore", r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    warnings.filterwarnings("ignore", r"Precision \S+ is not supported by the model summary")
    warnings.filterwarnings("ignore", r"`ModelCheckpoint\(monitor=.*could not find the monitored")


def log_to_files(
    logger: logging.Logger, level: int, message: str, exc_info: BaseException | None = None
) -> None:
    """`message` through `logger`'s file handlers only (the run's log file): for what the
    console shows already, printed (an `error:` line, Hydra's traceback) or as a live progress
    bar. On the global rank 0 (DDP's ranks share the run's log file)."""
    if getattr(rank_zero_only, "rank", 0) != 0 or logger.disabled:
        return
    if not logger.isEnabledFor(level):
        return
    record = logger.makeRecord(logger.name, level, "(log_to_files)", 0, message, None, None)
    if exc_info is not None:
        record.exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    if not logger.filter(record):
        return
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if isinstance(handler, logging.FileHandler) and level >= handler.level:
                handler.handle(record)
        current = current.parent if current.propagate else None


def error_to_log_files(line: str, traced: BaseException | None = None) -> None:
    """A user error's `error:` line, printed on the console, in the run's log file too (with
    `traced`'s traceback)."""
    log_to_files(logging.getLogger("sft.errors"), logging.ERROR, line, exc_info=traced)


@contextmanager
def logging_restored() -> Iterator[None]:
    """Python's loggers (handlers, levels) as they were before: a run in this process (sft.api,
    a test) sets up Hydra's job logging, whose handlers, its log file's among them, would
    otherwise stay and take the next run's lines too. Handlers it added are closed."""
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    saved = {
        lg: (list(lg.handlers), lg.level, lg.propagate, lg.disabled)
        for lg in loggers
        if isinstance(lg, logging.Logger)
    }
    try:
        yield
    finally:
        for lg in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
            if not isinstance(lg, logging.Logger):
                continue
            handlers, level, propagate, disabled = saved.get(lg, ([], logging.NOTSET, True, False))
            for handler in lg.handlers:
                if handler not in handlers:
                    handler.close()
            lg.handlers[:] = handlers
            lg.setLevel(level)
            lg.propagate, lg.disabled = propagate, disabled


class LoggingSetup:
    """The handlers and levels of this process's loggers (Hydra's job logging: the console's
    format and the run's log file), picklable, to set up again in a process spawned for a DDP
    rank (`ddp_spawn`). Such a process starts with Python's defaults: its lines reached the
    console unformatted and the run's log not at all. Handlers other than files, stdout and
    stderr are left out."""

    def __init__(self) -> None:
        handlers: dict[int, tuple[str, str, str | None, str | None, int]] = {}
        self.loggers: dict[str, tuple[int, bool, list[int]]] = {}
        named = logging.Logger.manager.loggerDict.items()
        for name, logger in [("", logging.getLogger()), *named]:
            if not isinstance(logger, logging.Logger):
                continue
            own = [h for h in logger.handlers if _handler_spec(h) is not None]
            if own or logger.level != logging.NOTSET or not logger.propagate:
                for handler in own:
                    handlers[id(handler)] = _handler_spec(handler)
                self.loggers[name] = (logger.level, logger.propagate, [id(h) for h in own])
        self.handlers = handlers

    def apply(self) -> None:
        """Set these loggers up in this process (their handlers replaced)."""
        built = {key: _build_handler(*spec) for key, spec in self.handlers.items()}
        for name, (level, propagate, keys) in self.loggers.items():
            logger = logging.getLogger(name or None)
            logger.setLevel(level)
            logger.propagate = propagate
            logger.handlers = [built[key] for key in keys]


def _handler_spec(handler: logging.Handler) -> tuple[str, str, str | None, str | None, int] | None:
    """(kind, file name or stream, format, date format, level) of a handler of a file, stdout
    or stderr; None for another."""
    if isinstance(handler, logging.FileHandler):
        kind, target = "file", handler.baseFilename
    elif isinstance(handler, logging.StreamHandler) and handler.stream in (sys.stdout, sys.stderr):
        kind, target = "stream", "stdout" if handler.stream is sys.stdout else "stderr"
    else:
        return None
    formatter = handler.formatter
    fmt = formatter._fmt if formatter is not None else None
    datefmt = formatter.datefmt if formatter is not None else None
    return kind, target, fmt, datefmt, handler.level


def _build_handler(kind: str, target: str, fmt: Any, datefmt: Any, level: int) -> logging.Handler:
    if kind == "file":
        handler: logging.Handler = logging.FileHandler(target, mode="a")  # the run's, appended
    else:
        handler = logging.StreamHandler(sys.stdout if target == "stdout" else sys.stderr)
    handler.setFormatter(logging.Formatter(fmt, datefmt))
    handler.setLevel(level)
    return handler
