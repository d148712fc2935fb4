"""Keep freed image buffers in the process for the next image (glibc's malloc settings).

Every method allocates and frees float arrays of a few to a few tens of MB per image (the
1024 px crop as float64 is 8 MB a plane). glibc serves blocks that large with a fresh
``mmap`` and gives them back with ``munmap`` (or trims its heap top) as soon as they are
freed, so the next image faults every page in again: measured on a 1 MP image, 16 ms of
prnu's and 24 ms of texture's CPU were the kernel zeroing pages (``getrusage``: ~2,000-4,000
minor faults per call, none once tuned). Raising the mmap and trim thresholds keeps those
blocks in the heap for reuse. The cost is that up to ``TRIM_THRESHOLD`` of freed memory stays
in the process between images — below what one image's peak uses anyway; arrays larger than
``MMAP_THRESHOLD`` (a whole 80 MP image) are still mapped and unmapped at once.

Only glibc has these knobs: elsewhere (musl, macOS) nothing happens.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging

log = logging.getLogger("skygate.startup")

# mallopt parameter numbers (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 32 * 1024 * 1024
TRIM_THRESHOLD = 128 * 1024 * 1024

@functools.cache
def keep_freed_buffers() -> bool:
    """Set the thresholds in this process (once; fork children inherit them). Returns whether
    glibc took them."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc: its own allocator's defaults stand
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    ok = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    if not ok:
        log.info("malloc thresholds not taken: large buffers are mapped per image")
    return ok
