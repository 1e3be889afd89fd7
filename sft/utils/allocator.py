"""Keep the memory a training process frees for its next step instead of handing it back to the
OS (glibc malloc).

glibc returns large freed blocks to the OS at once: blocks above its mmap threshold are
unmapped, and the heap is trimmed once its free top passes the trim threshold. A training step
allocates its activations and gradients again, so every page of them faults back in and is
zero-filled by the kernel. `make train` on a 2-core Xeon: 28.2 M page faults and 56 s of kernel
time, 194 ms per step; with the thresholds raised 0.74 M, 10 s and 174 ms (experiments/runs.md).

PyTorch's CPU allocator has no cache of its own. The usual fix is to preload jemalloc or tcmalloc
(as Intel's `torch.backends.xeon.run_cpu` launcher does); `mallopt` gets the same reuse from the
allocator already loaded, with nothing to install or preload.
"""

from __future__ import annotations

import ctypes
import platform

# mallopt parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
# the largest value mallopt takes (an int): blocks under 2 GiB come from the heap, which is
# never trimmed below that
_KEEP_BELOW = 2**31 - 1


# glibc's defaults: 128 KiB thresholds, up to 65,536 mmapped blocks
_DEFAULTS = ((_M_TRIM_THRESHOLD, 128 * 1024), (_M_MMAP_THRESHOLD, 128 * 1024), (_M_MMAP_MAX, 65536))
_kept = False  # keep_freed_memory applied, and not yet given_back


def _glibc() -> ctypes.CDLL | None:
    """The C library this process already runs on, where it is glibc (not macOS, Windows or
    musl)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    return ctypes.CDLL(None)


def keep_freed_memory() -> bool:
    """Make this process's malloc keep freed blocks for reuse (its peak memory stays reserved)
    until `give_back_freed_memory`. False where the C library is not glibc or refused a
    setting."""
    global _kept
    libc = _glibc()
    if libc is None:
        return False
    trim = libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_BELOW) == 1
    # glibc before 2.35 refuses an mmap threshold above 32 MiB: there, no mmap at all
    heap_only = (
        libc.mallopt(_M_MMAP_THRESHOLD, _KEEP_BELOW) == 1 or libc.mallopt(_M_MMAP_MAX, 0) == 1
    )
    _kept = True
    return trim and heap_only


def give_back_freed_memory() -> None:
    """Undo keep_freed_memory (a run from sft.api ended: the process goes on): glibc's default
    thresholds (fixed at them: glibc has no way back to its moving mmap threshold), and the
    memory kept handed back to the OS now (was: kept for the rest of the process, and a later
    run's keep_freed_memory=false changed nothing)."""
    global _kept
    libc = _glibc()
    if not _kept or libc is None:
        return
    for parameter, value in _DEFAULTS:
        libc.mallopt(parameter, value)
    libc.malloc_trim(0)
    _kept = False
