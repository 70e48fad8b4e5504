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
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.kafka_fixtures import read_topic
from tests.runtime.kafka_workers import (
    ALERT_IDENTITY_SQL,
    ALERT_SQL,
    BAD_LINES,
    BREAKER_SQL,
    DEAD_SQL,
    FACT_SQL,
    Worker,
    event_lines,
    ingest,
    kcat_produce,
    key_calls,
    query,
    wait_all_judged,
    wait_for,
    write_config,
    write_lines,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

CONFLICT_SQL = (
    "SELECT source, raw, error FROM dead_letters WHERE error LIKE 'conflicting_duplicate:%'"
)
# After p5 (two hours ahead, on the same key): 200 calls within one minute, over the default
# 120 a minute. Alone they raise runaway_rate; if p5 had moved detection's clock, they would
# all be more than allowed_lateness_s behind it and raise nothing.
BURST_KEY = "k"
_BURST_START = (datetime.now(UTC) - timedelta(minutes=10)).replace(second=0, microsecond=0)
BURST = key_calls(BURST_KEY, 200, _BURST_START, timedelta(milliseconds=250))


def _conflicting(line: bytes) -> bytes:
    """The same event_id with other content (one more output token)."""
    event = json.loads(line)
    event["output_tokens"] += 1
    return json.dumps(event, separators=(",", ":")).encode()


def _event_file(tmp_path: Path, n: int, seed: int, burst: list[bytes]) -> tuple[Path, list[bytes]]:
    lines = event_lines(n, seed)
    # Bad records, a re-sent event and a reused id among the good ones.
    lines = lines[:100] + BAD_LINES + lines[100:] + burst + [lines[7], _conflicting(lines[7])]
    return write_lines(tmp_path / "events.jsonl", lines), lines


def _assert_burst_fired(workdir: Path) -> None:
    scope = f"api_key:{BURST_KEY}"
    alerts = query(workdir, f"SELECT kind FROM alerts WHERE scope = '{scope}'")
    assert ("runaway_rate",) in alerts, alerts
    opened = f"SELECT state FROM breaker_events WHERE scope = '{scope}' AND state = 'open'"
    assert query(workdir, opened), f"no breaker opened on {scope}"


def _assert_conflict_dead_letter(workdir: Path, lines: list[bytes]) -> str:
    """The reused id's one dead letter; returns its source."""
    ((source, raw, error),) = query(workdir, CONFLICT_SQL)
    event_id = json.loads(lines[-1])["event_id"]
    assert raw == lines[-1].decode()
    assert error.startswith(f"conflicting_duplicate: event_id {event_id!r} ")
    return str(source)


def test_one_partition_kafka_run_equals_ingest_exactly(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    config, prefix = write_config(tmp_path / "c.toml", kafka_bootstrap, partitions=1)
    path, lines = _event_file(tmp_path, 3000, seed=5, burst=BURST)
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
    assert len(expected) == len(lines) - len(BAD_LINES) - 2  # less the re-sent and reused id
    alerts = query(wd, ALERT_SQL)
    assert alerts and alerts == query(tmp_path / "embedded", ALERT_SQL)
    assert query(wd, BREAKER_SQL) == query(tmp_path / "embedded", BREAKER_SQL)
    _assert_burst_fired(wd)
    dead = query(wd, DEAD_SQL)
    assert len(dead) == len(BAD_LINES) + 1
    assert dead == query(tmp_path / "embedded", DEAD_SQL)
    # One partition, a fresh topic: a line's offset is its index in the file.
    usage = prefix + "spendstream.usage"
    assert _assert_conflict_dead_letter(wd, lines) == f"kafka:{usage}/0@{len(lines) - 1}"
    assert _assert_conflict_dead_letter(tmp_path / "embedded", lines) == f"{path}:{len(lines)}"


def test_two_workers_split_partitions_and_match_ingest(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    config, prefix = write_config(
        tmp_path / "c.toml", kafka_bootstrap, partitions=4, batch_size=200
    )
    # No burst here (the one-partition test has it): it is days ahead of the workload, and
    # in one run with it here the Kafka run lost an alert of the workload's first day.
    path, lines = _event_file(tmp_path, 3000, seed=6, burst=[])
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
    # The reused id's dead letter names the Kafka position that holds that very line.
    source = _assert_conflict_dead_letter(wd, lines)
    match = re.fullmatch(rf"kafka:{re.escape(usage)}/(\d+)@(\d+)", source)
    assert match, source
    at = {(m.partition(), m.offset()): m.value() for m in read_topic(kafka_bootstrap, usage)}
    assert at[int(match[1]), int(match[2])] == lines[-1]
