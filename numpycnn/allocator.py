"""Keep freed memory for reuse: ask the C library's malloc not to hand large blocks back.

Every training step allocates and frees the same few megabytes of temporaries (window
copies, gradients). glibc serves each block above its mmap threshold (128 KiB, raised only
by chance, when a freed block under 32 MiB happens to be larger) with a fresh mapping and
unmaps it when freed, or trims the heap below it, so the next step page-faults it all in
again, zeroed. When its heuristic has not adapted, that is about 630 page faults per
16-image step of the reference network here, a quarter of the step's time (240 -> 185 us
per image, one BLAS thread); whether it adapts depends on what the process allocated
before. Raising the mmap and trim thresholds makes the reuse certain. It costs at most the
largest step's temporaries kept mapped (a few MB), never more than the process used.

``keep_freed_blocks()`` is called by the commands, by ``numpycnn.train`` and by every
process of a ``WorkerPool``: it changes a process-wide setting, so the engine alone
(``Sequential``) never calls it. Elsewhere than glibc it does nothing.
"""

import ctypes
import functools
import os

#: Blocks up to this size come from the heap (glibc's own ceiling is 32 MiB on 64 bits).
MMAP_THRESHOLD = 16 * 2**20

#: Free memory at the top of the heap is returned to the system only beyond this.
TRIM_THRESHOLD = 64 * 2**20

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's <malloc.h>


def _glibc():
    try:
        return bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (AttributeError, ValueError, OSError):
        return False


@functools.cache
def keep_freed_blocks():
    """Raise glibc's mmap and trim thresholds for this process, once; True if applied."""
    if not _glibc():
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
