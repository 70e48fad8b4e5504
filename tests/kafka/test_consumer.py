"""The consumer on a real broker: assignment, seeks, positions, watermarks, commits and
cooperative-sticky rebalancing."""

from __future__ import annotations

import time
import uuid

import pytest

from spendstream.errors import KafkaClientError
from spendstream.kafka.consumer import BEGINNING, Consumer, Partition
from spendstream.kafka.producer import Producer
from tests.kafka_fixtures import produce

pytestmark = pytest.mark.kafka


def _drain(consumer: Consumer, want: int) -> list[int]:
    offsets: list[int] = []
    for _ in range(120):  # a bound on the loop, not a speed check
        offsets += [m.offset() for m in consumer.consume(100, 0.25)]
        if len(offsets) >= want:
            break
    return offsets


def test_assign_seek_position_and_watermarks(kafka_bootstrap: str, topic_factory) -> None:  # type: ignore[no-untyped-def]
    topic = topic_factory()
    tp = (topic, 0)
    produce(kafka_bootstrap, topic, [(None, f"v{i}".encode()) for i in range(10)])
    consumer = Consumer(kafka_bootstrap)
    try:
        assert consumer.partitions_for(topic) == [0]
        assert consumer.partitions_for("no-such-topic-" + uuid.uuid4().hex) is None
        assert consumer.watermarks(tp) == (0, 10)
        consumer.assign({tp: 4})
        assert _drain(consumer, 6) == [4, 5, 6, 7, 8, 9]
        assert consumer.position([tp]) == {tp: 10}
        consumer.seek(tp, 2)
        assert _drain(consumer, 8) == list(range(2, 10))
        consumer.seek_to_beginning([tp])
        assert _drain(consumer, 10)[0] == 0
        assert consumer.assignment() == [tp]
    finally:
        consumer.close()


def test_commit_is_explicit_and_committed_reads_it_back(
    kafka_bootstrap: str, topic_factory
) -> None:  # type: ignore[no-untyped-def]
    topic = topic_factory()
    tp = (topic, 0)
    produce(kafka_bootstrap, topic, [(None, b"v")] * 5)
    group = f"g-{uuid.uuid4().hex[:8]}"
    consumer = Consumer(kafka_bootstrap, group_id=group)
    try:
        consumer.assign({tp: BEGINNING})
        assert len(_drain(consumer, 5)) == 5
        assert consumer.committed([tp]) == {tp: None}  # nothing committed behind our back
        consumer.commit()  # the current positions
        assert consumer.committed([tp]) == {tp: 5}
        consumer.commit({tp: 2})
        assert consumer.committed([tp]) == {tp: 2}
    finally:
        consumer.close()
    again = Consumer(kafka_bootstrap, group_id=group)
    try:
        again.assign([tp])  # no offset given: resumes from the committed one
        assert _drain(again, 3) == [2, 3, 4]
    finally:
        again.close()


def test_cooperative_rebalance_moves_only_what_the_newcomer_takes(
    kafka_bootstrap: str,
    topic_factory,  # type: ignore[no-untyped-def]
) -> None:
    topic = topic_factory(4)
    group = f"coop-{uuid.uuid4().hex[:8]}"
    events: dict[str, list[tuple[str, list[Partition]]]] = {"a": [], "b": []}

    def consumer(name: str) -> Consumer:
        c = Consumer(
            kafka_bootstrap,
            group_id=group,
            on_assign=lambda ps: events[name].append(("assign", sorted(ps))),
            on_revoke=lambda ps: events[name].append(("revoke", sorted(ps))),
        )
        c.subscribe([topic])
        return c

    def held(name: str) -> set[Partition]:
        out: set[Partition] = set()
        for kind, ps in events[name]:
            out = out | set(ps) if kind == "assign" else out - set(ps)
        return out

    a = consumer("a")
    try:
        for _ in range(240):
            a.consume(10, 0.25)
            if len(held("a")) == 4:
                break
        assert held("a") == {(topic, p) for p in range(4)}
        b = consumer("b")
        try:
            for _ in range(240):
                a.consume(10, 0.1)
                b.consume(10, 0.1)
                if held("a") and held("b") and len(held("a")) + len(held("b")) == 4:
                    break
            assert held("a") | held("b") == {(topic, p) for p in range(4)}
            assert held("a") and held("b") and not held("a") & held("b")
            # Incremental: a gave up exactly what b took, and was never stripped of the rest.
            revoked = [p for kind, ps in events["a"] if kind == "revoke" for p in ps]
            assert sorted(revoked) == sorted(held("b"))
            assert set(a.assignment()) == held("a")
        finally:
            b.close()
    finally:
        a.close()


def test_a_subscribed_topic_that_does_not_exist_yet_is_no_error(kafka_bootstrap: str) -> None:
    consumer = Consumer(kafka_bootstrap, group_id=f"g-{uuid.uuid4().hex[:8]}")
    try:
        consumer.subscribe(["not-created-yet-" + uuid.uuid4().hex])
        for _ in range(8):
            assert consumer.consume(10, 0.25) == []
    finally:
        consumer.close()


def test_subscribe_needs_a_group(kafka_bootstrap: str) -> None:
    consumer = Consumer(kafka_bootstrap)
    try:
        with pytest.raises(KafkaClientError, match="group_id"):
            consumer.subscribe(["t"])
    finally:
        consumer.close()


def test_read_to_end_reads_what_is_committed_and_stops_before_an_open_transaction(
    kafka_bootstrap: str,
    topic_factory,  # type: ignore[no-untyped-def]
) -> None:
    topic = topic_factory(2)  # partition 1 stays empty
    writer = Producer(kafka_bootstrap, transactional_id=f"rte-{uuid.uuid4().hex[:8]}")
    writer.init_transactions(60)

    def transaction(values: list[bytes], commit: bool | None) -> None:
        writer.begin_transaction()
        for v in values:
            writer.produce(topic, v, partition=0)
        writer.flush(30)
        if commit is True:
            writer.commit_transaction(60)
        elif commit is False:
            writer.abort_transaction(60)

    transaction([b"a", b"b"], commit=True)
    transaction([b"aborted"], commit=False)
    transaction([b"c"], commit=True)
    transaction([b"open"], commit=None)  # still open: the last stable offset is before it
    reader = Consumer(kafka_bootstrap, read_committed=True, partition_eof=True)
    try:
        got = [m.value() for m in reader.read_to_end([(topic, 0), (topic, 1)], 60)]
        assert got == [b"a", b"b", b"c"]
        writer.commit_transaction(60)
        again = [m.value() for m in reader.read_to_end([(topic, 0)], 60)]
        assert again == [b"a", b"b", b"c", b"open"]
    finally:
        reader.close()
        writer.close()


def test_read_to_end_needs_a_consumer_that_reports_partition_ends(kafka_bootstrap: str) -> None:
    consumer = Consumer(kafka_bootstrap)
    try:
        with pytest.raises(KafkaClientError, match="partition_eof=True"):
            list(consumer.read_to_end([("t", 0)], 1))
    finally:
        consumer.close()


def test_consume_gives_records_only_even_where_partition_ends_are_reported(
    kafka_bootstrap: str, topic_factory
) -> None:  # type: ignore[no-untyped-def]
    topic = topic_factory()
    tp = (topic, 0)
    produce(kafka_bootstrap, topic, [(None, b"a"), (None, b"b")])
    consumer = Consumer(kafka_bootstrap, partition_eof=True)
    try:
        consumer.assign({tp: BEGINNING})
        got = []
        for _ in range(40):  # past the end too: the client reports it, consume drops it
            got += consumer.consume(100, 0.25)
        assert [(m.error(), m.value()) for m in got] == [(None, b"a"), (None, b"b")]
    finally:
        consumer.close()


def test_consume_with_ends_reports_each_partition_end_after_its_records(
    kafka_bootstrap: str, topic_factory
) -> None:  # type: ignore[no-untyped-def]
    """A subscribed group: the empty partition's end comes too (the lease server's clock
    waits for every partition it is assigned to report one), and the broker's append time
    stamps a LogAppendTime topic's records."""
    topic = topic_factory(2, configs={"message.timestamp.type": "LogAppendTime"})
    before_ms = time.time() * 1000
    producer = Producer(kafka_bootstrap)
    try:
        producer.produce(topic, b"a", partition=0)
        producer.produce(topic, b"b", partition=0)
        assert producer.flush(30) == 0
    finally:
        producer.close()
    consumer = Consumer(kafka_bootstrap, group_id=f"g-{uuid.uuid4().hex[:8]}", partition_eof=True)
    try:
        consumer.subscribe([topic])
        got: list[tuple[int, bytes | None, str | None]] = []
        stamps = []
        for _ in range(120):  # a bound on the loop, not a speed check
            for m in consumer.consume(100, 0.25, ends=True):
                err = m.error()
                if err is None:
                    got.append((m.partition() or 0, m.value(), None))
                    stamps.append(m.timestamp())
                else:
                    got.append((m.partition() or 0, None, err.name()))
            if len([g for g in got if g[2]]) == 2:
                break
        assert sorted(g for g in got if g[0] == 1) == [(1, None, "_PARTITION_EOF")]
        assert [(v, e) for p, v, e in got if p == 0] == [
            (b"a", None),
            (b"b", None),
            (None, "_PARTITION_EOF"),
        ]
        assert [kind for kind, _ in stamps] == [2, 2]  # TIMESTAMP_LOG_APPEND_TIME
        assert all(before_ms - 1000 <= ms <= time.time() * 1000 + 1000 for _, ms in stamps)
    finally:
        consumer.close()


def test_consume_gives_at_most_n_records_and_more_than_one_when_there(
    kafka_bootstrap: str,
    topic_factory,  # type: ignore[no-untyped-def]
) -> None:
    topic = topic_factory()
    produce(kafka_bootstrap, topic, [(None, b"%d" % i) for i in range(30)])
    for n in (2, 3):
        consumer = Consumer(kafka_bootstrap)
        sizes: list[int] = []
        try:
            consumer.assign({(topic, 0): BEGINNING})
            for _ in range(200):  # a bound on the loop, not a speed check
                sizes.append(len(consumer.consume(n, 0.25)))
                if sum(sizes) >= 30:
                    break
        finally:
            consumer.close()
        assert sum(sizes) == 30 and max(sizes) == n, (n, sizes)


def test_on_assign_says_where_a_new_partition_is_read_from(
    kafka_bootstrap: str,
    topic_factory,  # type: ignore[no-untyped-def]
) -> None:
    """Offsets ``on_assign`` returns are where reading starts, not the group's committed
    offset (nor ``auto_offset_reset``)."""
    topic = topic_factory()
    tp = (topic, 0)
    produce(kafka_bootstrap, topic, [(None, b"%d" % i) for i in range(10)])
    group = f"g-{uuid.uuid4().hex[:8]}"
    committer = Consumer(kafka_bootstrap, group_id=group)
    committer.assign([tp])
    committer.commit({tp: 2})
    committer.close()
    consumer = Consumer(
        kafka_bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        on_assign=lambda ps: dict.fromkeys(ps, 7),
    )
    try:
        consumer.subscribe([topic])
        assert _drain(consumer, 3) == [7, 8, 9]
    finally:
        consumer.close()


def test_partitions_lost_go_to_on_revoke_when_there_is_no_on_lost(
    kafka_bootstrap: str,
    topic_factory,  # type: ignore[no-untyped-def]
) -> None:
    """A consumer that stops polling past max.poll.interval.ms leaves the group: its
    partitions are lost, and a caller that gave only ``on_revoke`` hears of them there."""
    topic = topic_factory()
    events: list[tuple[str, list[Partition]]] = []
    consumer = Consumer(
        kafka_bootstrap,
        group_id=f"g-{uuid.uuid4().hex[:8]}",
        on_assign=lambda ps: events.append(("assign", sorted(ps))),
        on_revoke=lambda ps: events.append(("revoke", sorted(ps))),
        config={"session.timeout.ms": 6000, "max.poll.interval.ms": 6000},
    )
    try:
        consumer.subscribe([topic])
        for _ in range(240):  # a bound on the loop, not a speed check
            consumer.consume(10, 0.25)
            if events:
                break
        assert events == [("assign", [(topic, 0)])]
        time.sleep(8)  # not polling: past max.poll.interval.ms, the client leaves the group
        for _ in range(240):
            consumer.consume(10, 0.25)
            if len(events) > 1:
                break
        assert events[1:] == [("revoke", [(topic, 0)])]
    finally:
        consumer.close()
