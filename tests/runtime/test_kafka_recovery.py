"""kill -9 of a ``spendstream run`` worker mid-stream, twice: nothing lost, doubled or repeated."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spendstream.config import load_config
from spendstream.runtime.embedded import EmbeddedRunner
from tests.runtime.kafka_workers import (
    ALERT_SQL,
    BREAKER_SQL,
    FACT_SQL,
    Worker,
    event_lines,
    fact_count,
    kcat_produce,
    query,
    read_topic,
    wait_all_judged,
    wait_for,
    write_config,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

EVENTS = 6000


def test_kill9_twice_loses_nothing_doubles_nothing_and_repeats_no_alert(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    # Small batches: many commits, so each kill lands between some of them.
    config_path, prefix = write_config(tmp_path / "c.toml", kafka_bootstrap, batch_size=150)
    lines = event_lines(EVENTS, seed=11)
    kcat_produce(kafka_bootstrap, prefix + "spendstream.usage", lines, keyed=False)

    # The reference: the same events through the embedded runner.
    ref = tmp_path / "ref"
    EmbeddedRunner(ref, load_config(config_path)).run(("ref", line) for line in lines)

    wd = tmp_path / "kafka"
    w = Worker(wd, config_path, tmp_path).start()
    try:
        for at in (len(lines) // 4, len(lines) // 2):
            wait_for(lambda at=at: fact_count(wd) >= at, f"{at} facts never landed", w)
            w.kill9()
            w = Worker(wd, config_path, tmp_path).start()
        wait_all_judged(wd, kafka_bootstrap, prefix, len(lines), w)
    finally:
        w.stop()

    facts = query(wd, FACT_SQL)
    assert len(facts) == len({f[0] for f in facts}) == len(lines)  # none lost, none doubled
    assert facts == query(ref, FACT_SQL)
    alerts = query(wd, ALERT_SQL)
    assert alerts, "the workload is meant to raise alerts"
    assert len(alerts) == len({a[0] for a in alerts})  # no alert repeats in the warehouse
    assert alerts == query(ref, ALERT_SQL)  # and none was lost
    assert query(wd, BREAKER_SQL) == query(ref, BREAKER_SQL)
    # The alerts topic is at-least-once: every landed alert is on it, possibly more than once.
    on_topic = {
        json.loads(v)["alert_id"]
        for _, v in read_topic(kafka_bootstrap, prefix + "spendstream.alerts")
    }
    assert on_topic == {a[0] for a in alerts}
