"""The console commands (`[project.scripts]`). Each imports its module only when it runs, so
that Ctrl-C while torch, Lightning and Hydra load (seconds), or before training starts, is one
line (`interrupted (Ctrl-C)`, status 130, the shell's for SIGINT), not a traceback through
whatever module was running. In fit and test sft-train says more (sft.callbacks.graceful_interrupt)."""

import importlib
import sys
from collections.abc import Callable

from sft.errors import TrainingInterrupted
from sft.utils.console_streams import going_on_without_reader, writable_in_any_encoding

INTERRUPTED = 130  # a shell's status for a command stopped by SIGINT


def run(main: Callable[[], object]) -> None:
    """`main()`; Ctrl-C (outside what sft-train saves on it) stops it with one line."""
    writable_in_any_encoding()
    going_on_without_reader()
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted (Ctrl-C)", file=sys.stderr)
        raise SystemExit(INTERRUPTED) from None
    except TrainingInterrupted as stop:  # its line, as Python prints a SystemExit's message
        if stop.message:
            print(stop.message, file=sys.stderr)
        raise SystemExit(stop.code) from None


def _command(module: str) -> Callable[[], None]:
    return lambda: run(lambda: importlib.import_module(module).main())


train = _command("sft.train")
evaluate = _command("sft.eval")
predict = _command("sft.predict")
export = _command("sft.export")
compare = _command("sft.compare")
