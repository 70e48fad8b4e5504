"""The garbage collector's pace while a runtime pushes batches through the core.

CPython collects its youngest generation every 700 container allocations, and every few
of those sweeps the older ones. A batch of 20,000 events allocates hundreds of thousands of
short-lived containers (the detectors' state snapshot alone is tens of thousands of
lists), so at the default pace the collector walks the process's long-lived heap (the
detectors' state, pyiceberg's and pydantic's objects) over and over: on the 1M-event ingest
benchmark that was ~3 us of every ~22 us per event (bench/RESULTS.md, ingest). A larger
first threshold keeps the collector doing the same job, with cycles still freed, just less
often; memory stays bounded by it (tests and the 10M-event run measure the peak).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["BATCH_THRESHOLDS", "batch_pace"]

# (generation 0, 1, 2) thresholds while batches run; measured on bench.ingest, where
# 20,000 allocations between young collections took GC from ~3 us to ~0.1 us per event.
BATCH_THRESHOLDS = (20_000, 10, 10)


@contextmanager
def batch_pace() -> Iterator[None]:
    """Collect at ``BATCH_THRESHOLDS`` inside the block, at the previous pace after it
    (never lowering thresholds a caller already raised)."""
    before = gc.get_threshold()
    gc.set_threshold(*(max(a, b) for a, b in zip(before, BATCH_THRESHOLDS, strict=True)))
    try:
        yield
    finally:
        gc.set_threshold(*before)
