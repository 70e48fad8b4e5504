"""Records on the internal topics that no worker wrote (a tool pointed at the wrong topic,
a record of another pipeline) must not stop the pipeline: read on every replay, each would
fail the same way for ever. A scope owner dead-letters what it cannot read as a partials
record and goes on; a worker taking a usage partition passes over what is not a facts
record at the facts topic's tail."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from spendstream.config import load_config
from spendstream.kafka.producer import OutRecord, Producer
from spendstream.runtime.kafka.facts_reader import batch_ref
from spendstream.runtime.kafka.wire import KIND_HEADER, PARTIALS_KIND, encode_partials
from spendstream.stream.batch import decode_lines
from spendstream.stream.engine import LocalEngine, route
from spendstream.stream.partials import PARTIALS
from spendstream.stream.pipeline import Pipeline
from spendstream.topics import DEAD_LETTERS
from tests.runtime.kafka_workers import (
    Worker,
    fact_count,
    kcat_produce,
    query,
    read_topic,
    wait_for,
    write_config,
)
from tests.runtime.test_kafka_breaker_reset import SCOPE, _calls

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

LANES = 3


def _config(bootstrap: str, tmp_path: Path) -> tuple[Path, str]:
    """Three usage partitions; the team's $1 day budget opens its breaker (scope owners')."""
    return write_config(
        tmp_path / "c.toml",
        bootstrap,
        partitions=LANES,
        extra=(
            "[leases]\nserve_in_run = false\n"
            f'[[budget]]\nscope = "{SCOPE}"\nperiod = "day"\namount_usd = "1"\n'
            'hard_limit = "1.0"\n'
        ),
    )


def test_stray_records_on_internal_topics_are_dead_letters_and_detection_goes_on(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    config, prefix = _config(kafka_bootstrap, tmp_path)
    partials, facts = prefix + "spendstream.partials", prefix + "spendstream.facts"
    kind = [(KIND_HEADER, PARTIALS_KIND)]
    # Arrow IPC of PARTIALS, but with offsets no batch spans (last before first), offsets
    # no worker has read (past the usage partition's end: held, they made the owner drop
    # that partition's real batches as replays), a usage partition there is not.
    foreign = [
        encode_partials(1, 9, 0, PARTIALS.empty_table()),
        encode_partials(1, 10**6, 10**6 + 19, PARTIALS.empty_table()),
        encode_partials(LANES + 4, 0, 0, PARTIALS.empty_table()),
    ]
    strays = [OutRecord(partials, b"not arrow", headers=kind, partition=q) for q in range(LANES)]
    strays += [OutRecord(partials, value, headers=kind, partition=1) for value in foreign]
    strays += [OutRecord(facts, b'{"event_id": "x"}', partition=p) for p in range(LANES)]

    wd = tmp_path / "wd"
    w = Worker(wd, config, tmp_path).start()
    try:
        w.wait_ready(prefix)
        producer = Producer(kafka_bootstrap)
        producer.send(strays, 60).raise_first()
        producer.close()
        # A takeover reads each facts partition's tail (the strays) for unlanded batches.
        assert w.stop() == 0, w.log_tail()
        w = Worker(wd, config, tmp_path, name="w2").start()
        w.wait_ready(prefix)
        kcat_produce(kafka_bootstrap, prefix + "spendstream.usage", _calls(20), keyed=True)
        states = f"SELECT state FROM breaker_events WHERE scope = '{SCOPE}'"
        wait_for(lambda: bool(query(wd, states)), "the team's budget breaker never opened", w)
        assert query(wd, states)[0] == ("open",)
        wait_for(lambda: fact_count(wd) == 20, "not every call landed", w)
        dead = f"SELECT source, error FROM dead_letters WHERE source LIKE 'kafka:{partials}/%'"
        strayed = LANES + len(foreign)
        wait_for(lambda: len(query(wd, dead)) == strayed, "strays not dead-lettered", w)
        rows = sorted(query(wd, dead))
        assert [source for source, _ in rows] == sorted(
            [f"kafka:{partials}/{q}@0" for q in range(LANES)]
            + [f"kafka:{partials}/1@{o}" for o in range(1, len(foreign) + 1)]
        )
        assert all("not a partials record" in error for _, error in rows)
        errors = dict(rows)
        assert "usage partition 1, offsets 9..0" in errors[f"kafka:{partials}/1@1"]
        assert (
            f"it names offsets 1000000..1000019 of {prefix}spendstream.usage/1, past that "
            "partition's end ("
        ) in errors[f"kafka:{partials}/1@2"]
        assert f"spendstream.usage has no partition {LANES + 4}" in errors[f"kafka:{partials}/1@3"]
        assert all("wide-scope detection" in error for _, error in rows)
        # Once: the replays of a restart do not land them again.
        assert w.stop() == 0, w.log_tail()
        w = Worker(wd, config, tmp_path, name="w3").start()
        w.wait_ready(prefix)
        assert len(query(wd, dead)) == strayed
    finally:
        assert w.stop() == 0, w.log_tail()
    published = [
        json.loads(v)["source"] for _, v in read_topic(kafka_bootstrap, prefix + DEAD_LETTERS)
    ]
    assert sorted(set(published)) == sorted(source for source, _ in rows)


def test_partials_whose_facts_cannot_be_read_are_dead_letters_and_detection_goes_on(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    # Partials as a worker writes them, of a batch that crosses the team's budget, naming
    # a facts record that is not there (past the partition's end; the topic's retention
    # deletes one the same way): the owner must read the batch back to locate the
    # crossing. It timed out and retried that round for ever, and wide-scope detection of
    # every scope it owns stopped; now the record is a dead letter and the rest goes on.
    # Its usage offsets, 0..19 of partition 2, are records there (fillers), read by no
    # worker yet: offsets past the partition's end are refused before any merge.
    config, prefix = _config(kafka_bootstrap, tmp_path)
    usage = prefix + "spendstream.usage"
    partials, facts = prefix + "spendstream.partials", prefix + "spendstream.facts"
    cfg = load_config(config)
    now = datetime.now(UTC)
    priced = Pipeline(cfg).price_table(decode_lines(_calls(20), now, str).events, now)
    missing = batch_ref(2, 10**6)
    local = LocalEngine(cfg, 2).process(priced, missing).partials
    (q,) = [
        q
        for q, table in enumerate(route(local, LANES))
        if SCOPE in table["scope"].to_pylist() and table.num_rows
    ]
    forged = encode_partials(2, 0, 19, route(local, LANES)[q])
    fillers = 25  # more than the forged batch spans: the real one is no replay of it
    # Cheap calls of a team no budget names, all on usage partition 2.
    filler_lines = _calls(
        fillers, prefix="filler", team="filler", tokens=(10, 1), keys=1, key_prefix="filler"
    )

    wd = tmp_path / "wd"
    w = Worker(wd, config, tmp_path).start()
    try:
        w.wait_ready(prefix)  # the topics are made
        assert w.stop() == 0, w.log_tail()
        producer = Producer(kafka_bootstrap)
        producer.send(
            [OutRecord(usage, line, partition=2) for line in filler_lines]
            + [OutRecord(partials, forged, headers=[(KIND_HEADER, PARTIALS_KIND)], partition=q)],
            60,
        ).raise_first()
        producer.close()
        w = Worker(wd, config, tmp_path, name="w2").start()
        w.wait_ready(prefix)
        dead = f"SELECT source, error FROM dead_letters WHERE source LIKE 'kafka:{partials}/%'"
        wait_for(lambda: len(query(wd, dead)) == 1, "the partials were not dead-lettered", w)
        [(source, error)] = query(wd, dead)
        assert source == f"kafka:{partials}/{q}@0"
        assert error.startswith(
            f"the facts of its batch, {facts} record {missing}, cannot be read: "
            f"past the end of {facts}/2 ("
        ), error
        assert "; wide-scope detection" in error
        # The owner goes on: the team's own calls open its breaker.
        kcat_produce(kafka_bootstrap, usage, _calls(20), keyed=True)
        states = f"SELECT state FROM breaker_events WHERE scope = '{SCOPE}'"
        wait_for(lambda: bool(query(wd, states)), "the team's budget breaker never opened", w)
        assert query(wd, states)[0] == ("open",)
        wait_for(lambda: fact_count(wd) == 20 + fillers, "not every call landed", w)
        assert w.stop() == 0, w.log_tail()
        w = Worker(wd, config, tmp_path, name="w3").start()
        w.wait_ready(prefix)
        assert query(wd, dead) == [(source, error)]  # landed once
    finally:
        assert w.stop() == 0, w.log_tail()
