"""The embedded runner's batch size changes its speed, never its results."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb

from spendstream.config import config_from_dict
from spendstream.runtime.embedded import EmbeddedRunner, read_lines
from spendstream.synthetic import DEMO_CONFIG_TOML, generate

FACTS = "SELECT event_id, cost_usd, price_source FROM usage_facts ORDER BY event_id"
ALERTS = "SELECT alert_id, kind, scope, ts, value, threshold FROM alerts ORDER BY alert_id"
BREAKERS = "SELECT scope, state, ts, reason FROM breaker_events ORDER BY scope, ts, state"


def _tables(workdir: Path) -> dict[str, list[tuple[object, ...]]]:
    con = duckdb.connect(str(workdir / "warehouse" / "spendstream.duckdb"), read_only=True)
    try:
        return {q: con.execute(q).fetchall() for q in (FACTS, ALERTS, BREAKERS)}
    finally:
        con.close()


def test_small_and_large_batches_land_the_same_facts_alerts_and_breakers(tmp_path: Path) -> None:
    import tomllib

    config = config_from_dict(tomllib.loads(DEMO_CONFIG_TOML), "demo")
    events = tmp_path / "events.jsonl"
    events.write_text("".join(json.dumps(e) + "\n" for e in generate(12_000, seed=3)))
    results = []
    for size in (20_000, 700):
        work = tmp_path / f"b{size}"
        summary = EmbeddedRunner(work, config, batch_size=size).run(read_lines([str(events)]))
        assert summary.landed == summary.read
        results.append(_tables(work))
    large, small = results
    assert large == small
    assert len(large[FACTS]) > 12_000 and large[ALERTS] and large[BREAKERS]
