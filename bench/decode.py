"""Columnar decode + validate (stream/batch.py) vs per-event pydantic, on the same lines.

    .venv/bin/python -m bench.decode [--events 200000] [--batch 20000] [--seed 11]

Issue 17's target: parse + validate ~2 us/event (the per-event model is 6-7 us on an idle
machine). Both sides read the demo's synthetic workload from memory in batches of
``--batch`` lines (the embedded ingest batch; 2000 is the Kafka stage's) and keep what a
batch gives the next stage (a table; a list of events, as ``parse_records`` did); each is
timed in wall and CPU time (pyarrow's JSON reader may use both cores). Also measured, in the
same run: the content digest alone, the decoder with one pyarrow thread, with 1% bad lines
(each a different kind of bad), and with tags on every line (those rows take the model's
path). The two sides must accept the same events.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench._common import machine, record, write_synthetic

NAME = "decode"
_BAD = [
    b'{"event_id": "bad", "ts": ',
    b'{"event_id": "bad", "ts": "9999-12-31T23:59:59Z", "provider": "p", "model": "m", '
    b'"input_tokens": 1, "output_tokens": 1}',
    b'{"event_id": "bad", "ts": "2026-01-01T00:00:00Z", "provider": "p", "model": "m", '
    b'"input_tokens": 9223372036854775807, "output_tokens": 1}',
    b'{"event_id": "bad", "ts": "2026-01-01T00:00:00Z", "provider": "p", "model": "m", '
    b'"input_tokens": 1, "output_tokens": 1, "reported_cost_usd": "1e400"}',
    b'{"event_id": "bad", "ts": "2026-01-01T00:00:00Z", "provider": "p", "model": "m", '
    b'"input_tokens": "12", "output_tokens": 1}',
    b"[1, 2, 3]",
]


def _timed(fn: Callable[[], Any], repeat: int = 3) -> tuple[float, float, Any]:
    """Best (wall, cpu) seconds of ``repeat`` runs, and the last result."""
    best_wall = best_cpu = float("inf")
    out = None
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        best_wall = min(best_wall, time.perf_counter() - w)
        best_cpu = min(best_cpu, time.process_time() - c)
    return best_wall, best_cpu, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args(argv)

    import pyarrow as pa
    from pydantic import ValidationError

    from spendstream.producers.event import UsageEvent
    from spendstream.stream import batch as batch_module
    from spendstream.stream.batch import decode_lines
    from spendstream.stream.digest import digest_column

    mach = machine(("spendstream", "pydantic", "pyarrow", "numpy", "orjson"))
    with tempfile.TemporaryDirectory(prefix="bench-decode-") as tmp:
        path = Path(tmp) / "events.jsonl"
        write_synthetic(path, args.events, args.seed)
        lines = path.read_bytes().splitlines()
    n = len(lines)
    batches = [lines[i : i + args.batch] for i in range(0, n, args.batch)]
    now = datetime.now(UTC) + timedelta(days=1)

    def columnar(bs: list[list[bytes]] = batches) -> int:
        return sum(decode_lines(b, now, str).events.num_rows for b in bs)

    def per_event() -> int:
        # What the per-event path did (stream.pipeline.parse_records): each batch's events
        # kept for the stages after it, as the columnar path keeps its table.
        ok = 0
        validate = UsageEvent.model_validate_json
        for b in batches:
            events = []
            for raw in b:
                with contextlib.suppress(ValidationError):
                    events.append(validate(raw))
            ok += len(events)
        return ok

    pyd_wall, pyd_cpu, pyd_ok = _timed(per_event)
    col_wall, col_cpu, col_ok = _timed(columnar)
    if col_ok != pyd_ok:
        raise SystemExit(f"decoders disagree: columnar {col_ok}, pydantic {pyd_ok}")

    one_thread = pa.cpu_count()
    pa.set_cpu_count(1)
    try:
        st_wall, st_cpu, _ = _timed(columnar)
    finally:
        pa.set_cpu_count(one_thread)

    bad_batches = [
        [_BAD[(i // 100) % len(_BAD)] if i % 100 == 37 else raw for i, raw in enumerate(b)]
        for b in batches
    ]
    bad_wall, bad_cpu, _ = _timed(lambda: columnar(bad_batches))

    def tagged(raw: bytes) -> bytes:
        return raw[:-1] + b', "tags": {"plan": "pro", "region": "eu"}}'

    tag_batches = [[tagged(raw) for raw in b] for b in batches]
    tag_wall, tag_cpu, _ = _timed(lambda: columnar(tag_batches))

    tables = [decode_lines(b, now, str).events for b in batches]
    names = [name for name in tables[0].column_names if not name.startswith("_")]

    def digests() -> int:
        defaults = batch_module._DEFAULTS
        return sum(len(digest_column({c: t.column(c) for c in names}, defaults)) for t in tables)

    dig_wall, dig_cpu, _ = _timed(digests)
    seam_wall, seam_cpu, _ = _timed(
        lambda: sum(len(batch_module.events_from_table(t)) for t in tables)
    )

    def us(seconds: float) -> float:
        return round(seconds / n * 1e6, 3)

    report: dict[str, Any] = {
        "name": NAME,
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": mach,
        "events": n,
        "batch": args.batch,
        "us_per_event": {
            "pydantic_per_event": {"wall": us(pyd_wall), "cpu": us(pyd_cpu)},
            "columnar": {"wall": us(col_wall), "cpu": us(col_cpu)},
            "columnar_one_thread": {"wall": us(st_wall), "cpu": us(st_cpu)},
            "columnar_1pct_bad": {"wall": us(bad_wall), "cpu": us(bad_cpu)},
            "columnar_all_tagged": {"wall": us(tag_wall), "cpu": us(tag_cpu)},
            "digest_alone": {"wall": us(dig_wall), "cpu": us(dig_cpu)},
            "seam_events_from_table": {"wall": us(seam_wall), "cpu": us(seam_cpu)},
        },
        "speedup_wall": round(pyd_wall / col_wall, 2),
        "speedup_cpu": round(pyd_cpu / col_cpu, 2),
        "accepted": col_ok,
        "goal": "parse + validate ~2 us/event; 1% bad lines at most 2x the clean cost",
        "sample_line": json.loads(lines[0]),
    }
    u = report["us_per_event"]
    met = (
        u["columnar"]["wall"] <= 2.5 and u["columnar_1pct_bad"]["wall"] <= 2 * u["columnar"]["wall"]
    )
    line = (
        f"- {NAME} ({report['when']}, {mach['cpu_model']}, {mach['cores']} cores, load avg "
        f"{mach['load_average'][0]:.1f}, {n:,} events in batches of {args.batch}): decode_lines "
        f"{u['columnar']['wall']} us/event wall ({u['columnar']['cpu']} CPU; one thread "
        f"{u['columnar_one_thread']['wall']}) vs per-event pydantic "
        f"{u['pydantic_per_event']['wall']} us = {report['speedup_wall']}x wall, "
        f"{report['speedup_cpu']}x CPU (goal ~2 us, 1% bad <= 2x: {'met' if met else 'not met'}); "
        f"1% bad {u['columnar_1pct_bad']['wall']} us, "
        f"all tagged {u['columnar_all_tagged']['wall']} us; digest alone "
        f"{u['digest_alone']['wall']} us; seam to UsageEvent objects "
        f"{u['seam_events_from_table']['wall']} us -> results/{NAME}.json"
    )
    record(NAME, report, line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
