"""Reading facts records back (``FactsReader``), as a scope owner does to locate a crossing:
on a real broker, records larger than a fetch's default 1 MiB per partition, in any order."""

from __future__ import annotations

import json
import random
import time
from datetime import UTC, datetime

import pyarrow as pa
import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

from spendstream import facts_topic
from spendstream.config import Config
from spendstream.kafka.producer import OutRecord, Producer
from spendstream.kafka.settings import as_settings
from spendstream.runtime.kafka.facts_reader import FactsReader, batch_ref
from spendstream.runtime.kafka.topology import MAX_RECORD_BYTES
from spendstream.stream.batch import decode_lines
from spendstream.stream.partials import FactsUnreadable
from spendstream.stream.pipeline import Pipeline
from spendstream.synthetic import generate
from tests.kafka_fixtures import TopicFactory


def _facts(events: int, seed: int) -> pa.Table:
    lines = [json.dumps(e, separators=(",", ":")).encode() for e in generate(events, seed=seed)]
    now = datetime.now(UTC)
    decoded = decode_lines(lines, now, lambda i: f"test:{i}")
    return Pipeline(Config()).price_table(decoded.events, now)


def test_records_read_back_in_any_order_and_nothing_fetched_between_reads(
    kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    topic = topic_factory(2, configs={"max.message.bytes": str(MAX_RECORD_BYTES)})
    # One record past a fetch's 1 MiB per partition, the rest small.
    tables = [_facts(12000, 18)] + [_facts(50 + i, i) for i in range(7)]
    records = [
        OutRecord(
            topic,
            facts_topic.encode(
                i % 2, t, pa.array(range(t.num_rows), pa.int64()), (0, t.num_rows - 1)
            ),
            partition=i % 2,
        )
        for i, t in enumerate(tables)
    ]
    assert len(records[0].value or b"") > 1 << 20
    producer = Producer(kafka_bootstrap, config={"message.max.bytes": MAX_RECORD_BYTES + 65536})
    report = producer.send(records, 60)
    report.raise_first()
    producer.close()
    refs = [
        batch_ref(r.partition or 0, o or 0) for r, o in zip(records, report.offsets, strict=True)
    ]
    order = list(range(len(refs)))
    random.Random(7).shuffle(order)

    reader = FactsReader(as_settings(kafka_bootstrap), topic)
    try:
        for i in order:
            got = reader.facts_of(refs[i])
            assert got.column("event_id").to_pylist() == tables[i].column("event_id").to_pylist()
            assert got.column("cost_usd").equals(tables[i].column("cost_usd"))
            # Nothing stays assigned: the reader does not fetch what follows in the background.
            assert reader.consumer.assignment() == []
        assert reader.fetched == len(refs)
        reader.facts_of(refs[order[-1]])  # the newest read is kept decoded
        assert reader.fetched == len(refs)
    finally:
        reader.close()


def _published(
    bootstrap: str, topic_factory: TopicFactory, *records: tuple[int, int] | bytes
) -> str:
    """A one-partition facts topic holding, in order, a facts record of usage partition 0
    for each (first, last) cut and each bytes value as it is (a stray no worker wrote)."""
    topic = topic_factory(1)
    t = _facts(5, 3)
    rows = pa.array(range(t.num_rows), pa.int64())
    producer = Producer(bootstrap)
    producer.send(
        [
            OutRecord(
                topic,
                r if isinstance(r, bytes) else facts_topic.encode(0, t, rows, r),
                partition=0,
            )
            for r in records
        ],
        60,
    ).raise_first()
    producer.close()
    return topic


def test_unlanded_cuts_are_the_published_batches_past_the_landed_one_strays_passed_over(
    kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    # A worker published three batches of usage partition 0 and landed only the first; a
    # stray record (no worker wrote it) sits between them and at the tail. The next
    # reader of the partition must replay the two unlanded batches cut as published, not
    # fail on every takeover at the stray.
    topic = _published(
        kafka_bootstrap, topic_factory, (0, 9), (10, 19), b'{"not": "arrow"}', (20, 29), b"\x00"
    )
    reader = FactsReader(as_settings(kafka_bootstrap), topic)
    try:
        assert reader.unlanded_cuts(0, 9) == [(10, 19), (20, 29)]
        assert reader.unlanded_cuts(0, 19) == [(20, 29)]
        assert reader.unlanded_cuts(0, 29) == []
        assert reader.unlanded_cuts(0, -1) == [(0, 9), (10, 19), (20, 29)]
        # A usage partition that ends at 30 holds offsets 0..29: each cut is a batch of it.
        assert reader.unlanded_cuts(0, 9, usage_end=30) == [(10, 19), (20, 29)]
    finally:
        reader.close()


def test_a_cut_past_the_usage_partitions_end_is_passed_over(
    kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    # A well-formed facts record naming usage offsets no one wrote yet (up to 10^15): as
    # a cut to replay, the partition waited for offset 10^15, holding all it read, at
    # every takeover.
    topic = _published(kafka_bootstrap, topic_factory, (0, 9), (10, 19), (20, 10**15))
    reader = FactsReader(as_settings(kafka_bootstrap), topic)
    try:
        assert reader.unlanded_cuts(0, 9, usage_end=25) == [(10, 19)]
        assert reader.unlanded_cuts(0, 19, usage_end=25) == []
        assert reader.unlanded_cuts(0, 19) == [(20, 10**15)]  # what no end told it
    finally:
        reader.close()


def test_unlanded_cuts_start_over_where_a_later_worker_published_again(
    kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    # Batches published past the landed position (9) by workers that died in turn: what is
    # replayed is one unbroken run of cuts from offset 10, the newest publisher's where it
    # started over; a cut overlapping the run elsewhere, or after a gap, ends it.
    topic = topic_factory(3)
    t = _facts(5, 4)
    rows = pa.array(range(t.num_rows), pa.int64())
    published = {
        # a second worker took over at 10 and cut differently: its cut is the one
        0: [(10, 19), (20, 29), (10, 24)],
        # a cut from the middle of the run: nothing to trust, replay afresh
        1: [(10, 19), (15, 24), (25, 29)],
        # a gap (20..24 never published): the run ends before it
        2: [(10, 19), (25, 29), (30, 39)],
    }
    producer = Producer(kafka_bootstrap)
    producer.send(
        [
            OutRecord(topic, facts_topic.encode(p, t, rows, cut), partition=p)
            for p, cuts in published.items()
            for cut in cuts
        ],
        60,
    ).raise_first()
    producer.close()
    reader = FactsReader(as_settings(kafka_bootstrap), topic)
    try:
        assert reader.unlanded_cuts(0, 9) == [(10, 24)]
        assert reader.unlanded_cuts(1, 9) == []
        assert reader.unlanded_cuts(2, 9) == [(10, 19)]
    finally:
        reader.close()


def test_a_batch_that_cannot_be_read_is_facts_unreadable_at_once_not_a_timeout(
    kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    # A scope owner retried a merge for ever when a batch's facts would never come: each
    # try waited out the 30 s timeout and failed as "Kafka unavailable", retriable.
    topic = _published(
        kafka_bootstrap, topic_factory, (0, 9), (10, 19), b'{"not": "arrow"}', (20, 29)
    )
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    # The topic's retention deleted the first record.
    admin.delete_records([TopicPartition(topic, 0, 1)])[TopicPartition(topic, 0, 1)].result(30)
    reader = FactsReader(as_settings(kafka_bootstrap), topic)
    cases = {
        batch_ref(
            0, 0
        ): f"before the first record {topic}/0 keeps (1): the topic's retention deleted it",
        batch_ref(0, 4): f"past the end of {topic}/0 (4)",
        batch_ref(0, 10**12): f"past the end of {topic}/0 (4)",
        batch_ref(7, 0): f"{topic} has no partition 7",
        batch_ref(0, 2): "not a spendstream.facts record",
    }
    try:
        for ref, why in cases.items():
            t0 = time.monotonic()
            with pytest.raises(FactsUnreadable) as caught:
                reader.facts_of(ref)
            assert caught.value.batch == ref
            assert why in caught.value.why, caught.value.why
            assert time.monotonic() - t0 < 20, ref  # told, not timed out (30 s)
        # The records still there read back.
        n = reader.facts_of(batch_ref(0, 1)).num_rows
        assert n > 0 and reader.facts_of(batch_ref(0, 3)).num_rows == n
        assert reader.unlanded_cuts(0, 9) == [(10, 19), (20, 29)]
    finally:
        reader.close()
