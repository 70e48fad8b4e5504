"""How ``spendstream run`` sets up its interpreter: Python's lock and its cyclic collector.

A worker's loops (usage, scopes, the fact-file writer, HTTP) share one interpreter lock,
and a worker is bound by it (docs/kafka.md, "Throughput"). Two defaults cost it:

* **The switch interval** (5 ms): a thread that asks for the lock while another thread
  runs Python waits up to that long. The usage loop gives the lock up hundreds of times a
  batch (every Arrow call, every Kafka wait) and waits again each time. At 0.5 ms: one
  worker over 1M events, five runs each, alternated: 50.3k events/s against 46.5k.
* **The cyclic collector's thresholds** (700, 10, 10): a worker allocates an object per
  Kafka record and holds a month of detection state, so full collections came every ~50k
  events and scanned the whole heap under the lock: ~20 of them, 2.6-2.9 s of a ~25 s run
  over 1M events, 3.4 s with the younger generations (measured with ``gc.callbacks``).
  With these thresholds and start-up's objects frozen: 0.5 s, no full collection.
  Cycles are still collected: the youngest generation every 50k net allocations, a full
  collection every ~10M (it was every ~70k).

Both together, three runs each, alternated: 50.9k events/s against 46.9k (47.6k against
42.4k per second of the worker's CPU).

``spendstream ingest`` keeps the defaults: one thread, and its collector took 0.95 s of a
14 s run over the same events (~0.4 s of it full collections).
"""

from __future__ import annotations

import gc
import sys

__all__ = ["GC_THRESHOLDS", "SWITCH_INTERVAL_S", "tune_for_worker"]

SWITCH_INTERVAL_S = 0.0005
GC_THRESHOLDS = (50_000, 20, 10)


def tune_for_worker() -> None:
    """Set the switch interval and the collector's thresholds, and exempt every object
    alive now (modules, classes, configuration: start-up's) from future collections."""
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    gc.set_threshold(*GC_THRESHOLDS)
    gc.collect()
    gc.freeze()
