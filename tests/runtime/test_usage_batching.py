"""How a usage partition's records are cut into batches: how many a batch takes
(``batch_target``: ``batch_size``, more while the partition is behind) and when a buffer
short of that lands (``short_batch_due``): the rules that let a backlog fill large batches
without starving a partition or delaying a live one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from spendstream.kafka.admin import Admin, TopicSpec
from spendstream.kafka.producer import OutRecord, Producer
from spendstream.runtime.batching import batch_target
from spendstream.runtime.kafka.usage_loop import MAX_WAIT_S, short_batch_due
from tests.runtime.kafka_workers import (
    key_calls,
    running_worker,
    usage_batches,
    wait_all_judged,
    write_config,
)


@pytest.mark.parametrize(
    ("unread", "target"),
    [
        (None, 50),  # the end is not known yet: a batch as configured
        (0, 50),
        (49, 50),
        (50, 50),  # a batch's worth unread: still one batch
        (51, 51),  # behind: all that is unread ...
        (399, 399),
        (400, 400),
        (401, 400),  # ... up to the backlog size
        (10**9, 400),
    ],
)
def test_a_partition_behind_takes_what_it_has_unread_up_to_the_backlog_size(
    unread: int | None, target: int
) -> None:
    assert batch_target(unread, batch_size=50, backlog_batch_size=400) == target


@pytest.mark.parametrize("backlog", [1, 49, 50])
def test_a_backlog_size_at_or_below_the_batch_size_changes_nothing(backlog: int) -> None:
    for unread in (None, 0, 50, 51, 10**6):
        assert batch_target(unread, batch_size=50, backlog_batch_size=backlog) == 50


def test_the_default_backlog_batch_is_ten_default_batches() -> None:
    # docs/configuration.md and docs/kafka.md give both defaults.
    from spendstream.config import PipelineConfig

    pipeline = PipelineConfig()
    assert (pipeline.batch_size, pipeline.backlog_batch_size) == (2000, 20_000)


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


@pytest.mark.kafka
def test_a_worker_catching_up_lands_backlog_sized_batches_exactly_once(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """2,000 calls waiting when the worker starts, batches of 50, backlog batches of 400:
    the backlog lands in batches of up to 400 records (most of them full), not in forty of
    50, and every call exactly once. Then a live call lands alone."""
    config, prefix = write_config(
        tmp_path / "c.toml", kafka_bootstrap, batch_size=50, backlog_batch_size=400
    )
    topic = prefix + "spendstream.usage"
    Admin(kafka_bootstrap).ensure_topics([TopicSpec(topic, 1)])
    calls = key_calls("k", 2001, datetime(2026, 3, 1, tzinfo=UTC), timedelta(seconds=2))
    _produce(kafka_bootstrap, topic, calls[:2000])
    wd = tmp_path / "wd"
    with running_worker(wd, config, prefix, tmp_path) as w:
        wait_all_judged(wd, kafka_bootstrap, prefix, 2000, w)
        _produce(kafka_bootstrap, topic, calls[2000:])
        wait_all_judged(wd, kafka_bootstrap, prefix, 2001, w)
    sizes = [n for _, n, _, _ in usage_batches(wd)]
    assert sum(sizes) == 2001
    backlog, live = sizes[:-1], sizes[-1]
    assert max(backlog) == 400, sizes
    # A few may be short (a fetch's end, the 2 s wait), but most are full: far fewer
    # commits than batches of 50 would make.
    assert len(backlog) <= 8, sizes
    assert live == 1, sizes


def _produce(bootstrap: str, topic: str, lines: list[bytes]) -> None:
    producer = Producer(bootstrap, client_id="spendstream-tests")
    try:
        producer.send([OutRecord(topic, v, partition=0) for v in lines], 60).raise_first()
    finally:
        producer.close(timeout_s=10)


def test_an_idle_advance_counts_the_breaker_events_it_publishes() -> None:
    # A quiet key's breaker half-opens and closes by the idle advance, which published the
    # events and counted them in breaker_events_total, not in events_out (a batch's are).
    from types import SimpleNamespace

    from spendstream.config import KafkaConfig
    from spendstream.records import BreakerEvent
    from spendstream.runtime.http.metrics import WorkerMetrics
    from spendstream.runtime.kafka.topology import topic_names
    from spendstream.runtime.kafka.usage_loop import UsageLoop

    ts = datetime(2026, 3, 2, tzinfo=UTC)
    events = [BreakerEvent("api_key:k", "half_open", "r", ts)]
    sent: list[object] = []
    out = SimpleNamespace(detection=lambda a, b: [*a, *b], send=sent.extend)
    part = SimpleNamespace(
        idle=SimpleNamespace(advance=lambda engine: events),
        engine=SimpleNamespace(snapshot=lambda: b""),
        warehouse=SimpleNamespace(commit=lambda **kw: None),
    )
    names = topic_names(KafkaConfig())
    loop = SimpleNamespace(out=out, metrics=WorkerMetrics(), names=names)
    UsageLoop._advance(loop, part)  # type: ignore[arg-type]
    assert sent == events
    body = loop.metrics.render().decode()
    assert f'spendstream_events_out_total{{topic="{names.breakers}"}} 1.0' in body
    assert 'spendstream_breaker_events_total{state="half_open"} 1.0' in body


def test_a_replayed_cut_is_landed_as_published_as_soon_as_it_is_all_read() -> None:
    # A batch published but not landed is replayed cut exactly so (scope owners may have
    # merged its partials): the cut's records and no others, and without waiting for a
    # record past it (a quiet partition would wait for new traffic).
    from spendstream.runtime.kafka.usage_loop import replayed_cut

    assert replayed_cut([10, 11, 12, 13, 14, 15], 14) == 5
    assert replayed_cut([15], 16) is None  # the cut 15-16 is not all read yet
    assert replayed_cut([15, 16], 16) == 2
    assert replayed_cut([], 16) is None


def test_a_replayed_cut_whose_records_are_gone_is_passed_over_not_landed_empty() -> None:
    # A batch published but not landed (cut 0-9), whose records the usage topic's
    # retention deleted before a worker landed it: reading resumes at the first record
    # kept (15), past the cut. Replayed as an empty batch, it failed at every try and the
    # partition never moved again. The next cut lost its first records the same way and
    # lands what is left of it, cut where it was.
    from collections import deque
    from types import SimpleNamespace

    from spendstream.runtime.kafka.usage_loop import UsageLoop

    class Record:
        def __init__(self, offset: int) -> None:
            self._offset = offset

        def offset(self) -> int:
            return self._offset

    landed: list[list[int]] = []
    loop = SimpleNamespace(
        names=SimpleNamespace(usage="spendstream.usage"),
        _process=lambda part, batch: landed.append([m.offset() for m in batch]),
        _land_batch=lambda part, batch: pytest.fail("a replayed cut is landed as it was cut"),
        _target=lambda part: 1000,
        _due=lambda part, now: False,
    )
    part = SimpleNamespace(
        number=0, cuts=deque([(0, 9), (10, 19)]), buffer=[Record(o) for o in range(15, 25)]
    )
    UsageLoop._drain(loop, part, 0.0)  # type: ignore[arg-type]
    assert landed == [[15, 16, 17, 18, 19]]
    assert not part.cuts
    assert [m.offset() for m in part.buffer] == list(range(20, 25))  # waits for a batch
