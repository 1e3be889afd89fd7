"""Telling one signal delivered twice from a second Ctrl-C (GracefulInterrupt, the launchers)."""

import signal
import time

# a second SIGINT this soon after the first is that one delivered twice (`timeout -s INT`, and
# `kill -INT <pid>; kill -INT -<group>`, signal the process and then its group), not a second
# Ctrl-C: one process merges the two when they come before its handler runs, ddp_spawn's main
# process, waiting for its ranks, did not
SAME_SIGNAL_S = 0.1


def is_second_ctrl_c(signum: int, first: int | None, first_at: float) -> bool:
    """Whether SIGINT `signum`, after the signal `first` received at `first_at` (monotonic),
    is a second Ctrl-C (stop at once): not the first SIGINT delivered twice."""
    twice = first == signal.SIGINT and time.monotonic() - first_at < SAME_SIGNAL_S
    return first is not None and signum == signal.SIGINT and not twice
