"""The process environment as a test found it, around a run in the test's own process."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


@contextlib.contextmanager
def environment_kept() -> Iterator[None]:
    """Undo the block's changes to `os.environ`: a trainer=ddp_sim run in this process leaves
    Lightning's MASTER_PORT (the port its ranks met on) set, and a later test's DDP runs,
    subprocesses too, would inherit it and meet on that port instead of a free one."""
    before = dict(os.environ)
    try:
        yield
    finally:
        for name in set(os.environ) - set(before):
            del os.environ[name]
        os.environ.update(before)
