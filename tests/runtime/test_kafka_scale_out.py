"""Scale-out on a real broker: workers on six partitions, one killed (-9) and one added
mid-stream, then a rebalance storm (workers leaving, by SIGTERM or SIGKILL at random, and
joining); the tables equal an embedded ``spendstream ingest`` of the same events.

Facts are compared exactly (every cost column), dead letters exactly, alerts by identity
(alert_id, kind, scope, dedup_key) and each breaker scope's states: docs/kafka.md says why
alert ts/value may depend on the order in which keys of different partitions meet.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest

from spendstream.runtime.kafka.partition_loop import heartbeat_ms
from tests.runtime.kafka_workers import (
    ALERT_IDENTITY_SQL,
    BAD_LINES,
    DEAD_SQL,
    FACT_SQL,
    Worker,
    event_file,
    fact_count,
    ingest,
    kcat_produce,
    query,
    wait_all_judged,
    wait_for,
    write_config,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

PARTITIONS = 6
SCOPE_STATES = "SELECT DISTINCT scope, state FROM breaker_events ORDER BY ALL"


def test_workers_killed_added_and_storming_on_six_partitions_equal_ingest(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    config, prefix = write_config(
        tmp_path / "c.toml", kafka_bootstrap, partitions=PARTITIONS, batch_size=100
    )
    path, lines = event_file(tmp_path, 3000, seed=21)
    embedded = tmp_path / "embedded"
    ingest(path, config, embedded)
    expected = query(embedded, FACT_SQL)

    usage = prefix + "spendstream.usage"
    wd = tmp_path / "kafka"  # one machine: the workers share its workdir (SQLite catalog)
    names = iter(f"w{i}" for i in range(100))
    live = [Worker(wd, config, tmp_path, name=next(names)).start() for _ in range(3)]
    gone: list[Worker] = []
    rng = random.Random(18)
    try:

        def spread() -> bool:
            held = [{a for a in w.assigned() if a.startswith(usage + "/")} for w in live]
            return all(held) and len(set().union(*held)) == PARTITIONS

        wait_for(spread, "three workers never shared the six usage partitions", *live)
        third = len(lines) // 3
        kcat_produce(kafka_bootstrap, usage, lines[:third], keyed=True)
        wait_for(lambda: fact_count(wd) >= third // 2, "the first facts never landed", *live)
        # One killed and one added mid-stream.
        victim = live.pop(rng.randrange(len(live)))
        victim.kill9()
        gone.append(victim)
        live.append(Worker(wd, config, tmp_path, name=next(names)).start())
        kcat_produce(kafka_bootstrap, usage, lines[third : 2 * third], keyed=True)
        # The storm: leave (gracefully or not) and join, faster than a rebalance settles.
        for _ in range(4):
            time.sleep(rng.uniform(0.5, 3.0))
            victim = live.pop(rng.randrange(len(live)))
            if rng.random() < 0.5:
                victim.kill9()
            else:
                victim.stop()
            gone.append(victim)
            live.append(Worker(wd, config, tmp_path, name=next(names)).start())
        kcat_produce(kafka_bootstrap, usage, lines[2 * third :], keyed=True)
        wait_all_judged(wd, kafka_bootstrap, prefix, len(expected), *live)
    finally:
        # Every worker stopped before any is judged: the first that had exited failed the
        # assert, and the others ran on after the test (one for over an hour of a CI run).
        codes = [(w.stop(), w) for w in live]
        for code, w in codes:
            assert code == 0, w.log_tail()

    facts = query(wd, FACT_SQL)
    assert len(facts) == len({f[0] for f in facts})  # no event_id twice
    assert facts == expected
    alerts = query(wd, ALERT_IDENTITY_SQL)
    assert alerts, "the workload is meant to raise alerts"
    assert len({a[0] for a in alerts}) == len(alerts)  # no alert landed twice
    assert alerts == query(embedded, ALERT_IDENTITY_SQL)
    assert query(wd, SCOPE_STATES) == query(embedded, SCOPE_STATES)
    dead = query(wd, DEAD_SQL)
    assert len(dead) == len(BAD_LINES)
    assert json.dumps(dead, default=str) == json.dumps(query(embedded, DEAD_SQL), default=str)


def test_loops_heartbeat_every_tenth_of_the_session_and_at_least_every_second() -> None:
    # A member hears of a rebalance in a heartbeat's answer, and a cooperative one takes two
    # rounds: the interval is what a joining worker waits, twice, before it gets partitions.
    assert heartbeat_ms(6) == 600
    assert heartbeat_ms(9.99) == 999
    assert heartbeat_ms(10) == 1000
    assert heartbeat_ms(30) == 1000  # the default session: 3 s before
    assert heartbeat_ms(300) == 1000
