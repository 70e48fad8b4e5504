"""Handing freed memory back to the operating system, for processes that run for days.

Arrow's allocator keeps pages it freed for reuse, and so does glibc's ``malloc`` (Python's
large objects, librdkafka's buffers, pyiceberg's metadata): a long-running worker's resident
size then follows the worst moment of its past rather than what it holds now.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from functools import cache

import pyarrow as pa

__all__ = ["release_freed_memory"]


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim`` (None elsewhere: musl, macOS). By its soname, not
    ``ctypes.util.find_library``, which runs ldconfig and finds nothing on slim images."""
    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim  # type: ignore[no-any-return]


def release_freed_memory() -> None:
    """Return what Arrow's pool and glibc's heaps hold free to the OS. It walks every heap
    arena under its lock (other threads wait for ``malloc`` meanwhile): callers time it
    (the usage loop's ``release_memory`` step) and call it rarely."""
    pa.default_memory_pool().release_unused()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
