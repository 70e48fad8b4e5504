"""Detection alone: the columnar engine vs the per-event reference engine, on the same facts.

    .venv/bin/python -m bench.detection [--events 200000] [--batch 20000] [--seed 11] [--repeat 3]

The demo's synthetic workload (three days, five teams, sessions, retries, an unpriced
model, and the story's runaway loop, anomaly, blown budget and cache drop), priced once
with the pipeline's pricer and cut into Arrow batches of ``--batch`` rows (not timed). The
engine (``stream/engine.py``) then judges every batch; the per-event reference engine kept
in the tests as its oracle (``tests/stream/reference``) judges the same facts one at a time,
in the same run. Both must raise the same alerts and breaker events. Figures are CPU time
(``time.process_time``, the best of ``--repeat`` runs for the engine): the machine is shared.
Goal (issue 17): <= ~3 us per event on 20k-row batches.
"""

from __future__ import annotations

import argparse
import time
import tomllib
from datetime import UTC, datetime
from typing import Any

from bench._common import machine, record

NAME = "detection"


def _facts(events: int, seed: int, batch: int) -> tuple[Any, list[Any]]:
    import pyarrow as pa

    from spendstream.config import config_from_dict
    from spendstream.producers.event import UsageEvent
    from spendstream.records import Fact
    from spendstream.stream.pricing import Pricer
    from spendstream.synthetic import DEMO_CONFIG_TOML, generate
    from spendstream.table_schemas import facts_table

    config = config_from_dict(tomllib.loads(DEMO_CONFIG_TOML), "demo")
    parsed = [UsageEvent.model_validate(e) for e in generate(events, seed=seed)]
    costs = Pricer.from_config(config.prices).price_batch(parsed)
    now = datetime.now(UTC)
    facts = [Fact(e, c, now) for e, c in zip(parsed, costs, strict=True)]
    tables: list[pa.Table] = [
        facts_table(facts[i : i + batch]) for i in range(0, len(facts), batch)
    ]
    return config, tables


def _engine(config: Any, tables: list[Any]) -> tuple[float, float, list[Any], list[Any]]:
    from spendstream.stream.engine import Engine

    engine = Engine(config)
    alerts: list[Any] = []
    events: list[Any] = []
    cpu, wall = time.process_time(), time.perf_counter()
    for table in tables:
        d = engine.process(table)
        alerts += d.alerts
        events += d.breaker_events
    return time.process_time() - cpu, time.perf_counter() - wall, alerts, events


def _reference(config: Any, tables: list[Any]) -> tuple[float, float, list[Any], list[Any]]:
    from tests.stream.reference import ReferenceEngine

    engine = ReferenceEngine(config)
    alerts: list[Any] = []
    events: list[Any] = []
    cpu, wall = time.process_time(), time.perf_counter()
    for table in tables:
        a, e = engine.process(table)
        alerts += a
        events += e
    return time.process_time() - cpu, time.perf_counter() - wall, alerts, events


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)

    mach = machine(("spendstream", "pyarrow", "numpy"))
    config, tables = _facts(args.events, args.seed, args.batch)
    n = sum(t.num_rows for t in tables)
    runs = [_engine(config, tables) for _ in range(args.repeat)]
    cpu, wall, alerts, events = min(runs, key=lambda r: r[0])
    ref_cpu, ref_wall, ref_alerts, ref_events = _reference(config, tables)
    equal = alerts == ref_alerts and events == ref_events
    us = cpu / n * 1e6
    report: dict[str, Any] = {
        "name": NAME,
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": mach,
        "events": n,
        "batch_rows": args.batch,
        "engine": {
            "cpu_s": round(cpu, 3),
            "wall_s": round(wall, 3),
            "us_per_event": round(us, 2),
            "events_per_s": round(n / cpu),
            "cpu_s_of_each_run": [round(r[0], 3) for r in runs],
        },
        "reference": {
            "cpu_s": round(ref_cpu, 3),
            "wall_s": round(ref_wall, 3),
            "us_per_event": round(ref_cpu / n * 1e6, 2),
            "events_per_s": round(n / ref_cpu),
        },
        "ratio": round(ref_cpu / cpu, 1),
        "alerts": len(alerts),
        "breaker_events": len(events),
        "equal_to_reference": equal,
        "goal": "<= ~3 us/event (CPU) on 20k-row batches",
    }
    line = (
        f"- {NAME} ({report['when']}, {mach['cpu_model']}, {mach['cores']} cores, load avg "
        f"{mach['load_average'][0]:.1f}, {n:,} events in batches of {args.batch:,}): engine "
        f"{us:.2f} us/event ({report['engine']['events_per_s']}/s CPU) vs per-event reference "
        f"{report['reference']['us_per_event']} us/event = {report['ratio']}x; "
        f"{len(alerts)} alerts, {len(events)} breaker events, "
        f"{'equal to' if equal else 'DIFFERENT from'} the reference (goal <= ~3 us: "
        f"{'met' if us <= 3 else 'not met'}) -> results/{NAME}.json"
    )
    record(NAME, report, line)
    return 0 if equal else 1


if __name__ == "__main__":
    raise SystemExit(main())
