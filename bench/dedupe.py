"""Dedupe store: probe + insert cost per key with an empty store and at 10M landed keys.

    .venv/bin/python -m bench.dedupe [--keys 10000000] [--batch 20000]

The store (warehouse/dedupe.py) classifies a batch of event_ids (hash, probe every in-window
day, first occurrence within the batch) and then records the new ones, as a commit does.
Measured per key, on batches of ``--batch`` fresh ids:

* ``empty``: the first batches into an empty store;
* ``history_10m``: after 10M landed keys spread over 30 days of event time, with the
  default 2-day window (what a warehouse holding 10M facts keeps in memory);
* ``window_10m``: the worst case, all 10M keys inside the window (10M events in 2 days).

Goal (issue 17): at 10M landed keys within 2x of empty. Baseline for context, from
PLATFORM-NOTES (same machine kind): the SQLite key store the warehouse used before cost
~2.5 us per random key empty and ~10 us at 3M keys.

Results: bench/results/dedupe.json and a line in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bench._common import machine, record
from spendstream.warehouse.dedupe import NEW, DedupeStore

NAME = "dedupe"
SQLITE_BASELINE_US = {"empty": 2.5, "at_3m_keys": 10.0}


def _ids(start: int, n: int) -> pa.Array:
    # UUID-like ids (36 chars), as producers send.
    nums = pa.array(np.arange(start, start + n)).cast(pa.string())
    return pc.binary_join_element_wise("0b6f3c1e-4d2a-4f7e-9a51-", pc.utf8_lpad(nums, 12, "0"), "")


def _store() -> DedupeStore:
    return DedupeStore(2, lambda day: (pa.array([], pa.string()), None))


def _fill(store: DedupeStore, keys: int, days: int, batch: int) -> float:
    t0 = time.perf_counter()
    for start in range(0, keys, batch):
        n = min(batch, keys - start)
        day = np.full(n, 20_000 + (start * days) // keys, np.int64)
        store.add(_ids(start, n), day, known_new=True)
    return time.perf_counter() - t0


def _measure(
    store: DedupeStore, first_id: int, day: int, batch: int, rounds: int
) -> dict[str, Any]:
    per_key = []
    for r in range(rounds):
        ids = _ids(first_id + r * batch, batch)
        days = np.full(batch, day, np.int64)
        t = time.perf_counter()
        codes = store.classify(ids, days)
        new = codes == NEW
        store.add(ids.filter(pa.array(new)), days[new], known_new=True)
        per_key.append((time.perf_counter() - t) / batch * 1e6)
        assert new.all()
    return {
        "median_us_per_key": round(statistics.median(per_key), 3),
        "p90_us_per_key": round(sorted(per_key)[int(len(per_key) * 0.9)], 3),
        "keys_in_memory": store.keys,
        "memory_mb": round(store.nbytes / 1e6, 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--keys", type=int, default=10_000_000)
    ap.add_argument("--batch", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    report: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(("spendstream", "numpy", "pyarrow")),
        "batch": args.batch,
        "keys": args.keys,
    }
    _measure(_store(), 10**12, 20_000, args.batch, 3)  # warm-up: imports, allocator, caches
    empty = _store()
    report["empty"] = _measure(empty, 10**11, 20_000, args.batch, args.rounds)
    print("empty", report["empty"])
    history = _store()
    report["history_fill_s"] = round(_fill(history, args.keys, 30, args.batch), 1)
    report["history_10m"] = _measure(history, 10**11, 20_000 + 29, args.batch, args.rounds)
    print("history", report["history_10m"])
    del history
    window = _store()
    report["window_fill_s"] = round(_fill(window, args.keys, 2, args.batch), 1)
    report["window_10m"] = _measure(window, 10**11, 20_000 + 1, args.batch, args.rounds)
    print("window", report["window_10m"])
    report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    e = report["empty"]["median_us_per_key"]
    h = report["history_10m"]["median_us_per_key"]
    w = report["window_10m"]["median_us_per_key"]
    report["history_vs_empty"] = round(h / e, 2)
    report["window_vs_empty"] = round(w / e, 2)
    report["sqlite_baseline_us"] = SQLITE_BASELINE_US
    m = report["machine"]
    cpu = " ".join(str(m["cpu_model"]).split()[:2])
    line = (
        f"- {NAME} ({report['when']}, {cpu}, {m['cores']} cores, load avg "
        f"{m['load_average'][0]:.1f}, batches of {args.batch:,}): "
        f"probe+insert {e} us/key empty; at {args.keys:,} landed keys over 30 days {h} us/key "
        f"({report['history_vs_empty']}x, {report['history_10m']['keys_in_memory']:,} keys / "
        f"{report['history_10m']['memory_mb']} MB in the 2-day window); all {args.keys:,} in "
        f"the window {w} us/key ({report['window_vs_empty']}x, "
        f"{report['window_10m']['memory_mb']} MB) (goal <= 2x); the SQLite key store before: "
        f"~2.5 us empty, ~10 us at 3M keys -> results/{NAME}.json"
    )
    record(NAME, report, line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
