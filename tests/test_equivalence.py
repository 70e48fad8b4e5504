"""The same event file through ``spendstream ingest`` (embedded) and through Kafka — produced
by kcat, a non-Python client — and ``spendstream run`` gives the same warehouse.

With one usage partition the detection engine sees the events in file order in both
runtimes, so alerts and breaker events match exactly (ids, ts, values, messages). With
several partitions and two workers, facts still match exactly; alerts are compared by
identity (alert_id, kind, scope, dedup_key), which by design does not depend on the order
in which events of different keys meet; their ts and value may (docs/kafka.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.stream.faust_workers import (
    ALERT_IDENTITY_SQL,
    ALERT_SQL,
    BAD_LINES,
    BREAKER_SQL,
    DEAD_SQL,
    FACT_SQL,
    Worker,
    event_file,
    ingest,
    kcat_produce,
    query,
    wait_all_judged,
    wait_for,
    write_config,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def test_one_partition_kafka_run_equals_ingest_exactly(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    config, prefix = write_config(tmp_path / "c.toml", kafka_bootstrap, partitions=1)
    path, lines = event_file(tmp_path, 3000, seed=5)
    ingest(path, config, tmp_path / "embedded")
    expected = query(tmp_path / "embedded", FACT_SQL)

    kcat_produce(kafka_bootstrap, prefix + "spendstream.usage", lines, keyed=False)
    wd = tmp_path / "kafka"
    w = Worker(wd, config, tmp_path).start()
    try:
        wait_all_judged(wd, kafka_bootstrap, prefix, len(expected), w)
    finally:
        assert w.stop() == 0, w.log_tail()

    assert query(wd, FACT_SQL) == expected
    assert len(expected) == len(lines) - len(BAD_LINES) - 1
    alerts = query(wd, ALERT_SQL)
    assert alerts and alerts == query(tmp_path / "embedded", ALERT_SQL)
    assert query(wd, BREAKER_SQL) == query(tmp_path / "embedded", BREAKER_SQL)
    dead = query(wd, DEAD_SQL)
    assert len(dead) == len(BAD_LINES)
    assert dead == query(tmp_path / "embedded", DEAD_SQL)


def test_two_workers_split_partitions_and_matchingest(kafka_bootstrap: str, tmp_path: Path) -> None:
    config, prefix = write_config(
        tmp_path / "c.toml", kafka_bootstrap, partitions=4, batch_size=200
    )
    path, lines = event_file(tmp_path, 3000, seed=6)
    ingest(path, config, tmp_path / "embedded")
    expected = query(tmp_path / "embedded", FACT_SQL)

    wd = tmp_path / "kafka"
    workers = [Worker(wd, config, tmp_path, name=n).start() for n in ("a", "b")]
    usage = prefix + "spendstream.usage"
    try:

        def split() -> bool:
            held = [{a for a in w.assigned() if a.startswith(usage + "/")} for w in workers]
            return all(held) and not held[0] & held[1] and len(held[0] | held[1]) == 4

        # Both hold usage partitions before any event exists, so both do part of the work.
        wait_for(split, "the two workers never split the usage partitions", *workers)
        kcat_produce(kafka_bootstrap, usage, lines, keyed=True)
        wait_all_judged(wd, kafka_bootstrap, prefix, len(expected), *workers)
        metrics = [w.get_text("/metrics") for w in workers]
    finally:
        for w in workers:
            w.stop()

    for text in metrics:
        landed = [ln for ln in text.splitlines() if ln.startswith("spendstream_facts_landed_total")]
        assert landed and float(landed[0].split()[-1]) > 0, "each worker lands part of the facts"
    assert query(wd, FACT_SQL) == expected
    assert query(wd, ALERT_IDENTITY_SQL) == query(tmp_path / "embedded", ALERT_IDENTITY_SQL)
    scope_states = "SELECT DISTINCT scope, state FROM breaker_events ORDER BY ALL"
    assert query(wd, scope_states) == query(tmp_path / "embedded", scope_states)
    ids = [r[0] for r in query(wd, "SELECT alert_id FROM alerts")]
    assert len(ids) == len(set(ids))
    assert json.dumps(query(wd, DEAD_SQL), default=str) == json.dumps(
        query(tmp_path / "embedded", DEAD_SQL), default=str
    )
