"""Handing freed memory back to the OS (spendstream/runtime/memory.py)."""

from __future__ import annotations

import pyarrow as pa

from spendstream.runtime.memory import _malloc_trim, release_freed_memory


def test_glibc_trim_is_found_here() -> None:
    # The images this project ships (python:*-slim, Debian) use glibc: without the trim a
    # worker's heaps only grow, silently.
    assert _malloc_trim() is not None


def test_release_keeps_what_is_in_use() -> None:
    held = pa.array(range(1_000_000), pa.int64())
    before = pa.total_allocated_bytes()
    release_freed_memory()
    assert pa.total_allocated_bytes() == before
    assert held[999_999].as_py() == 999_999
