"""When a usage partition's buffer, short of a full batch, lands (``short_batch_due``): the
rule that lets a backlog fill batches without starving a partition or delaying a live one."""

from __future__ import annotations

import pytest

from spendstream.runtime.kafka.usage_loop import MAX_WAIT_S, short_batch_due


def test_caught_up_lands_at_once() -> None:
    # The newest buffered record is the last the broker had at the fetch: nothing to wait for.
    assert short_batch_due(last=99, end=100, since=10.0, now=10.0)
    # The cached end can lag the records already read (fetched after the watermark was cached).
    assert short_batch_due(last=120, end=100, since=10.0, now=10.0)


def test_end_not_known_yet_lands_at_once() -> None:
    assert short_batch_due(last=5, end=None, since=None, now=0.0)


def test_backlog_waits_for_more_records() -> None:
    # One record behind the high watermark: more are coming, so the batch keeps filling.
    assert not short_batch_due(last=98, end=100, since=10.0, now=10.0)
    assert not short_batch_due(last=0, end=1_000_000, since=10.0, now=10.0 + MAX_WAIT_S / 2)


@pytest.mark.parametrize(
    ("waited", "due"),
    [(MAX_WAIT_S - 1e-6, False), (MAX_WAIT_S, True), (MAX_WAIT_S + 1e-6, True)],
)
def test_backlog_lands_what_it_has_after_max_wait(waited: float, due: bool) -> None:
    assert short_batch_due(last=0, end=1_000, since=100.0, now=100.0 + waited) is due


def test_max_wait_is_two_seconds() -> None:
    # docs/kafka.md promises a partition short of a batch lands within 2 s of its last batch.
    assert MAX_WAIT_S == 2.0


def test_never_waiting_buffer_is_not_due_behind_the_end() -> None:
    assert not short_batch_due(last=0, end=10, since=None, now=1e9)


def test_records_are_grouped_by_partition_in_offset_order() -> None:
    # Real client messages, as consume() returns them: runs of one partition, a partition
    # coming back after another's run, and one message alone.
    from confluent_kafka import Message

    from spendstream.runtime.kafka.partition_loop import by_partition

    layout = [0, 0, 3, 3, 3, 0, 5, 3, 0]
    msgs = [Message(topic="u", partition=p, offset=i, value=b"{}") for i, p in enumerate(layout)]
    grouped = by_partition(msgs)
    assert list(grouped) == [0, 3, 5]
    assert {p: [m.offset() for m in ms] for p, ms in grouped.items()} == {
        0: [0, 1, 5, 8],
        3: [2, 3, 4, 7],
        5: [6],
    }
    assert by_partition([]) == {}


def test_the_usage_consumer_fetches_a_resumed_partition_without_a_second_of_backoff() -> None:
    # Pacing pauses and resumes partitions all through a backlog; librdkafka's 1 s default
    # fetch.queue.backoff.ms left a worker with nothing to read for up to 0.6 s at a time
    # (bench.kafka_pipeline). The loop's consumer must carry the lower value, under a name
    # this librdkafka knows (a misspelt property makes the client refuse the config).
    from confluent_kafka import Consumer as RdConsumer

    from spendstream.config import Config
    from spendstream.runtime.kafka.usage_loop import FETCH_QUEUE_BACKOFF_MS, UsageLoop

    loop = object.__new__(UsageLoop)
    loop.config = Config()
    conf = loop.consumer_config()
    assert conf["fetch.queue.backoff.ms"] == FETCH_QUEUE_BACKOFF_MS <= 100
    assert conf["session.timeout.ms"] == int(loop.config.kafka.session_timeout_s * 1000)
    RdConsumer({"group.id": "g", "bootstrap.servers": "127.0.0.1:1", **conf}).close()
