"""Handing freed memory back to the operating system, for processes that run for days.

Arrow's allocator keeps pages it freed for reuse, and so does glibc's ``malloc`` (Python's
large objects, librdkafka's buffers, pyiceberg's metadata): a long-running worker's resident
size then follows the worst moment of its past rather than what it holds now.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from functools import cache

import pyarrow as pa

__all__ = ["release_freed_memory"]


@cache
def _malloc_trim() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    """glibc's ``malloc_trim`` (None elsewhere: musl, macOS)."""
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def release_freed_memory() -> None:
    """Return what Arrow's pool and glibc's heaps hold free to the OS (a few ms)."""
    pa.default_memory_pool().release_unused()
    if os.environ.get("SPENDSTREAM_EXPERIMENT_NO_TRIM"):
        return
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
