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


def keep_freed_memory() -> bool:
    """Make this process's malloc keep freed blocks for reuse (for the rest of the process: its
    peak memory stays reserved). False where the C library is not glibc (macOS, Windows, musl)
    or refused a setting."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)  # the C library this process already runs on
    trim = libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_BELOW) == 1
    # glibc before 2.35 refuses an mmap threshold above 32 MiB: there, no mmap at all
    heap_only = (
        libc.mallopt(_M_MMAP_THRESHOLD, _KEEP_BELOW) == 1 or libc.mallopt(_M_MMAP_MAX, 0) == 1
    )
    return trim and heap_only
