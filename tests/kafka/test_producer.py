"""The producer on a real broker: delivery reports, refusals per record, transactions."""

from __future__ import annotations

import time
import uuid

import pytest

from spendstream.errors import KafkaClientError, KafkaUnavailable
from spendstream.kafka.consumer import BEGINNING, Consumer
from spendstream.kafka.partitioner import partition_for
from spendstream.kafka.producer import OutRecord, Producer
from spendstream.local.kafka import find_free_port
from tests.kafka_fixtures import read_topic

pytestmark = pytest.mark.kafka


def _values(bootstrap: str, topic: str, *, read_committed: bool) -> list[bytes | None]:
    consumer = Consumer(bootstrap, read_committed=read_committed)
    consumer.assign({(topic, 0): BEGINNING})
    out: list[bytes | None] = []
    try:
        for _ in range(40):  # a bound, not a speed check
            batch = consumer.consume(100, 0.25)
            out += [m.value() for m in batch]
            if not batch and out:
                break
    finally:
        consumer.close()
    return out


def test_send_reports_each_record_and_headers_travel(kafka_bootstrap: str, topic_factory) -> None:  # type: ignore[no-untyped-def]
    topic = topic_factory(2)
    producer = Producer(kafka_bootstrap)
    report = producer.send(
        [
            OutRecord(topic, f"v{i}".encode(), f"k{i}".encode(), [("h", b"%d" % i)])
            for i in range(20)
        ],
        timeout_s=60,
    )
    producer.close()
    assert report.ok and report.delivered == 20 and report.total == 20
    got = {m.value(): m.headers() for m in read_topic(kafka_bootstrap, topic)}
    assert got == {f"v{i}".encode(): [("h", b"%d" % i)] for i in range(20)}


def test_a_record_refused_by_the_client_fails_alone(kafka_bootstrap: str, topic_factory) -> None:  # type: ignore[no-untyped-def]
    topic = topic_factory()
    producer = Producer(kafka_bootstrap, config={"message.max.bytes": 2000})
    report = producer.send(
        [OutRecord(topic, b"a"), OutRecord(topic, b"x" * 5000), OutRecord(topic, b"c")], 60
    )
    producer.close()
    assert [i for i, _ in report.failed] == [1]
    error = report.failed[0][1]
    assert type(error) is KafkaClientError and error.code == "MSG_SIZE_TOO_LARGE"
    with pytest.raises(KafkaClientError):
        report.raise_first()
    assert [m.value() for m in read_topic(kafka_bootstrap, topic)] == [b"a", b"c"]


def test_with_no_broker_every_record_fails_as_unavailable_and_abort_drops_them() -> None:
    producer = Producer(f"127.0.0.1:{find_free_port()}")
    with pytest.raises(KafkaUnavailable):
        producer.check_connection(1.0, "t")
    report = producer.send([OutRecord("t", b"a"), OutRecord("t", b"b")], timeout_s=1.0)
    assert [i for i, _ in report.failed] == [0, 1]
    assert all(isinstance(e, KafkaUnavailable) and e.retriable for _, e in report.failed)
    assert producer.pending() >= 2  # still queued: they would go once a broker answers
    producer.abort()
    # The purge does not block: a record the client's thread holds while it reconnects is
    # dropped once it lets go (a CI run saw one left after 0.5 s). Without the abort both
    # would wait for librdkafka's message.timeout.ms, 5 minutes.
    deadline = time.monotonic() + 10
    while producer.pending() and time.monotonic() < deadline:
        producer.poll(0.1)
    assert producer.pending() == 0
    assert producer.close(timeout_s=0) == 0


def test_transactions_commit_and_abort_as_read_committed_readers_see(
    kafka_bootstrap: str,
    topic_factory,  # type: ignore[no-untyped-def]
) -> None:
    source, sink = topic_factory(), topic_factory()
    group = f"txn-{uuid.uuid4().hex[:8]}"
    consumer = Consumer(kafka_bootstrap, group_id=group)
    producer = Producer(kafka_bootstrap, transactional_id=f"tx-{uuid.uuid4().hex[:8]}")
    producer.init_transactions(60)

    producer.begin_transaction()
    producer.produce(sink, b"kept")
    producer.send_offsets_to_transaction({(source, 0): 7}, consumer.group_metadata(), 60)
    producer.commit_transaction(60)

    producer.begin_transaction()
    producer.produce(sink, b"discarded")
    producer.flush(30)
    producer.abort_transaction(60)
    producer.close()

    assert consumer.committed([(source, 0)]) == {(source, 0): 7}  # offsets went with the commit
    consumer.close()
    assert _values(kafka_bootstrap, sink, read_committed=True) == [b"kept"]
    assert _values(kafka_bootstrap, sink, read_committed=False) == [b"kept", b"discarded"]


def test_a_record_goes_to_the_partition_named_whatever_its_key(
    kafka_bootstrap: str,
    topic_factory,  # type: ignore[no-untyped-def]
) -> None:
    topic = topic_factory(3)
    producer = Producer(kafka_bootstrap)
    for partition in (2, 0, 2):
        producer.produce(topic, b"p%d" % partition, b"same-key", partition=partition)
    assert producer.flush(30) == 0
    producer.close()
    got = sorted((m.partition(), m.value()) for m in read_topic(kafka_bootstrap, topic))
    assert got == [(0, b"p0"), (2, b"p2"), (2, b"p2")]


def test_a_fenced_transactional_producer_fails_and_is_not_merely_abortable(
    kafka_bootstrap: str,
    topic_factory,  # type: ignore[no-untyped-def]
) -> None:
    sink = topic_factory()
    txn_id = f"tx-{uuid.uuid4().hex[:8]}"
    old = Producer(kafka_bootstrap, transactional_id=txn_id)
    old.init_transactions(60)
    old.begin_transaction()
    old.produce(sink, b"from the old instance")
    old.flush(30)
    new = Producer(kafka_bootstrap, transactional_id=txn_id)
    new.init_transactions(60)  # fences the old one and aborts its open transaction
    with pytest.raises(KafkaClientError) as failed:
        old.commit_transaction(60)
    assert not failed.value.abortable
    new.begin_transaction()
    new.produce(sink, b"from the new instance")
    new.commit_transaction(60)
    new.close()
    assert _values(kafka_bootstrap, sink, read_committed=True) == [b"from the new instance"]


def test_partition_zero_is_a_partition_named_not_the_key_s(
    kafka_bootstrap: str,
    topic_factory,  # type: ignore[no-untyped-def]
) -> None:
    """Partition 0 is a partition like any other (a falsy one): keys that hash elsewhere
    still land in it, by ``produce`` and by ``send``."""
    topic = topic_factory(3)
    keys = [f"k{i}".encode() for i in range(6)]
    assert {partition_for(k, 3) for k in keys} - {0}  # some hash to another partition
    producer = Producer(kafka_bootstrap)
    for k in keys:
        producer.produce(topic, b"produced", k, partition=0)
    report = producer.send([OutRecord(topic, b"sent", k, partition=0) for k in keys], 60)
    assert producer.flush(30) == 0
    producer.close()
    assert report.ok
    got = [(m.partition(), m.value()) for m in read_topic(kafka_bootstrap, topic)]
    assert sorted(got) == [(0, b"produced")] * 6 + [(0, b"sent")] * 6


def test_close_drops_what_it_could_not_deliver() -> None:
    """With no broker, ``close`` gives up after its timeout and purges the queue: the
    record's report says it was purged (it is not sent should a broker appear later)."""
    producer = Producer(f"127.0.0.1:{find_free_port()}")
    errors: list[str] = []
    producer.produce("t", b"a", on_delivery=lambda err, _msg: errors.append(err.name()))
    assert producer.close(timeout_s=0.5) == 1
    for _ in range(100):  # a bound on the loop, not a speed check: the purge does not block
        if errors:
            break
        producer.poll(0.1)
    assert errors == ["_PURGE_QUEUE"]
    assert producer.pending() == 0
