"""Topics as an operator left them. Partitions added to the usage topic (scaling out, an operator's `kafka-topics --alter`):
facts partition p holds usage partition p's batches, so the facts topic must grow with it.
It did not: a worker assigned a new usage partition retried opening it for ever (its
facts partition did not exist), and no record of that partition ever landed. The partials
topic keeps its count: it is the number of scope owners, which each scope's state follows.
A facts topic taking records smaller than a batch's facts record gets the batch in halves;
a partials topic taking less than `run` gives it is raised to that (its records cannot be
cut: a batch's partials follow its published facts)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

from spendstream import facts_topic
from spendstream.config import Config, load_config
from spendstream.kafka.admin import Admin, TopicSpec
from spendstream.kafka.producer import OutRecord, Producer
from spendstream.kafka.settings import KafkaSettings
from spendstream.runtime.kafka.topology import MAX_RECORD_BYTES, ensure_topics, raise_record_limit
from spendstream.runtime.kafka.worker import Worker
from tests.runtime.kafka_workers import (
    event_lines,
    fact_count,
    key_calls,
    read_topic,
    wait_for,
    write_config,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def _pipeline(
    bootstrap: str, tmp_path: Path, *, partitions: int, batch_size: int = 500
) -> tuple[Config, KafkaSettings, str]:
    """A config on fresh topics (not made yet), its client settings and topic prefix."""
    path, prefix = write_config(
        tmp_path / "c.toml", bootstrap, partitions=partitions, batch_size=batch_size
    )
    config = load_config(path)
    return config, KafkaSettings.from_config(config.kafka), prefix


def _events_in(worker: Worker, at_least: int) -> int:
    """``events_in`` once it counts ``at_least``: it is counted after its batch's commit,
    whose facts a reader sees before the worker gets there (the batch's alerts and dead
    letters land after them), so reading it as soon as the facts were in raced the worker.
    An event counted twice (at a replay) is counted before its batch lands: no wait hides it."""
    wait_for(lambda: worker.metrics.totals()["events in"] >= at_least, "events_in never got there")
    return worker.metrics.totals()["events in"]


def test_a_usage_partition_added_after_the_topics_were_made_lands_its_records(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    config, settings, prefix = _pipeline(kafka_bootstrap, tmp_path, partitions=2, batch_size=100)
    usage, facts, partials = (prefix + f"spendstream.{t}" for t in ("usage", "facts", "partials"))
    counts = ensure_topics(settings, config.kafka)
    admin = Admin(settings, timeout_s=60)
    assert admin.grow_partitions(usage, 3) == 3
    # A worker that read the counts before the partition was added (its group then
    # assigns it the new one at the next rebalance): the same as one that was running.
    wd = tmp_path / "wd"
    worker = Worker(config, wd, settings, counts, http=None).start()
    lines = event_lines(300, seed=5)
    producer = Producer(kafka_bootstrap)
    try:
        producer.send(
            [OutRecord(usage, line, partition=i % 3) for i, line in enumerate(lines)], 60
        ).raise_first()
        wait_for(lambda: fact_count(wd) == len(lines), "usage partition 2 never landed")
    finally:
        producer.close()
        worker.stop()
    assert admin.partition_counts([usage, facts, partials]) == {usage: 3, facts: 3, partials: 2}
    # Started again, `run` finds the counts as they now are.
    assert ensure_topics(settings, config.kafka)[facts] == 3


def test_run_gives_the_facts_topic_a_partition_per_usage_partition_at_start(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    config, settings, prefix = _pipeline(kafka_bootstrap, tmp_path, partitions=2)
    usage, facts, partials = (prefix + f"spendstream.{t}" for t in ("usage", "facts", "partials"))
    ensure_topics(settings, config.kafka)
    Admin(settings, timeout_s=60).grow_partitions(usage, 5)
    counts = ensure_topics(settings, config.kafka)
    assert (counts[usage], counts[facts], counts[partials]) == (5, 5, 2)


def test_a_facts_topic_taking_smaller_records_gets_the_batch_in_smaller_batches(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    # A facts topic made before `run` (by an operator, a managed service's cap) with a
    # smaller max.message.bytes than run gives it (64 MiB): a backlog's batch of 3,000
    # events (~250 kB of facts record) failed at every replay, and nothing more landed.
    config, settings, prefix = _pipeline(kafka_bootstrap, tmp_path, partitions=1, batch_size=1000)
    usage, facts = prefix + "spendstream.usage", prefix + "spendstream.facts"
    limit = 60_000
    Admin(settings, timeout_s=60).ensure_topics(
        [TopicSpec(facts, 1, {"max.message.bytes": str(limit)})]
    )
    counts = ensure_topics(settings, config.kafka)
    lines = event_lines(3000, seed=6)
    producer = Producer(kafka_bootstrap)
    try:  # all there before the worker starts: its first batch is a backlog's
        producer.send([OutRecord(usage, line, partition=0) for line in lines], 60).raise_first()
    finally:
        producer.close()
    wd = tmp_path / "wd"
    worker = Worker(config, wd, settings, counts, http=None).start()
    try:
        wait_for(lambda: fact_count(wd) == len(lines), "the backlog never landed")
        # Each event counted in once, however often its batch was halved.
        assert _events_in(worker, len(lines)) == len(lines)
    finally:
        worker.stop()
    records = [value for _, value in read_topic(kafka_bootstrap, facts)]
    assert len(records) >= 4 and all(len(r) <= limit for r in records)
    assert sum(facts_topic.decode(r).facts.num_rows for r in records) == len(lines)


def test_records_gone_before_they_landed_and_a_topic_made_again_are_logged_not_silent(
    kafka_bootstrap: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The usage topic's retention deleted records before a worker landed them; later the
    # topic was deleted and made again. Both passed records over without a word.
    config, settings, prefix = _pipeline(kafka_bootstrap, tmp_path, partitions=1)
    usage = prefix + "spendstream.usage"
    counts = ensure_topics(settings, config.kafka)
    start = datetime.now(UTC) - timedelta(hours=1)
    lines = key_calls("k", 100, start, timedelta(seconds=20))  # all valid, distinct
    producer = Producer(kafka_bootstrap)
    producer.send([OutRecord(usage, line, partition=0) for line in lines], 60).raise_first()
    client = AdminClient({"bootstrap.servers": kafka_bootstrap})
    client.delete_records([TopicPartition(usage, 0, 40)])[TopicPartition(usage, 0, 40)].result(30)
    wd = tmp_path / "wd"
    worker = Worker(config, wd, settings, counts, http=None).start()
    try:
        wait_for(lambda: fact_count(wd) == 60, "the records kept never landed")
    finally:
        worker.stop()
    assert f"usage 0: records 0..39 are no longer on {usage}" in caplog.text
    admin = Admin(settings, timeout_s=60)
    admin.delete_topics([usage])
    wait_for(lambda: usage not in admin.topics(), "the usage topic was never deleted")
    counts = ensure_topics(settings, config.kafka)
    producer.send([OutRecord(usage, line, partition=0) for line in lines[:10]], 60).raise_first()
    producer.close()
    worker = Worker(config, wd, settings, counts, http=None).start()
    try:
        wait_for(
            lambda: f"landed up to offset 99, but {usage} ends at 10" in caplog.text,
            "a usage topic made again went unsaid",
        )
    finally:
        worker.stop()
    assert fact_count(wd) == 60  # passed over, as the log says


def _record_limit(admin: Admin, topic: str) -> int:
    return int(admin.topic_configs(topic)["max.message.bytes"])


def test_run_raises_a_partials_topic_that_takes_smaller_records_at_start(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    # Made before `run` with a managed service's or an operator's 1 MiB: a batch's
    # partials record past it failed at every replay (its facts record, published
    # first, fixes how the batch is cut).
    config, settings, prefix = _pipeline(kafka_bootstrap, tmp_path, partitions=1)
    partials = prefix + "spendstream.partials"
    admin = Admin(settings, timeout_s=60)
    admin.ensure_topics([TopicSpec(partials, 1, {"max.message.bytes": "60000"})])
    ensure_topics(settings, config.kafka, grow=False)  # a command that only publishes
    assert _record_limit(admin, partials) == 60_000
    ensure_topics(settings, config.kafka)
    assert _record_limit(admin, partials) == MAX_RECORD_BYTES


def test_a_partials_topic_lowered_under_a_running_worker_is_raised_and_its_batch_lands(
    kafka_bootstrap: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config, settings, prefix = _pipeline(kafka_bootstrap, tmp_path, partitions=1, batch_size=200)
    usage, partials = prefix + "spendstream.usage", prefix + "spendstream.partials"
    counts = ensure_topics(settings, config.kafka)
    wd = tmp_path / "wd"
    worker = Worker(config, wd, settings, counts, http=None).start()
    admin = Admin(settings, timeout_s=60)
    # Less than any partials record (its Arrow schema alone is more): every batch's
    # partials are refused until the limit is raised again.
    admin.set_topic_config(partials, "max.message.bytes", "512")
    wait_for(lambda: _record_limit(admin, partials) == 512, "the limit was never lowered")
    lines = event_lines(600, seed=7)
    producer = Producer(kafka_bootstrap)
    try:
        producer.send([OutRecord(usage, line, partition=0) for line in lines], 60).raise_first()
        wait_for(lambda: fact_count(wd) == len(lines), "the batches never landed")
        # Each event counted in once, though its batch was replayed after its facts record
        # was published.
        assert _events_in(worker, len(lines)) == len(lines)
    finally:
        producer.close()
        worker.stop()
    assert _record_limit(admin, partials) == MAX_RECORD_BYTES
    assert "raising its max.message.bytes" in caplog.text
    assert all(len(value) > 512 for _, value in read_topic(kafka_bootstrap, partials))


def test_a_partials_topic_that_takes_enough_is_left_alone(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    _config, settings, prefix = _pipeline(kafka_bootstrap, tmp_path, partitions=1)
    admin = Admin(settings, timeout_s=60)
    for i, limit in enumerate((MAX_RECORD_BYTES, 2 * MAX_RECORD_BYTES)):
        topic = f"{prefix}enough-{i}"
        admin.ensure_topics([TopicSpec(topic, 1, {"max.message.bytes": str(limit)})])
        assert raise_record_limit(admin, topic) is True
        assert _record_limit(admin, topic) == limit  # never lowered to run's own


def test_a_topic_whose_configs_cannot_be_read_is_not_altered_blind(
    kafka_bootstrap: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _config, settings, prefix = _pipeline(kafka_bootstrap, tmp_path, partitions=1)
    admin = Admin(settings, timeout_s=10)
    missing = f"{prefix}no-such-topic"
    assert raise_record_limit(admin, missing) is False
    assert f"cannot read max.message.bytes of {missing}" in caplog.text
    assert missing not in admin.topics()


def test_a_worker_asks_to_raise_the_partials_limit_at_most_once_a_minute_until_it_is_raised(
    kafka_bootstrap: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A refused batch replays every second: each replay was one more admin client, describe
    # and (without the right to alter) ERROR line.
    from spendstream.runtime.kafka.topology import topic_names
    from spendstream.runtime.kafka.usage_loop import LIMIT_RETRY_S, UsageLoop

    config, settings, _prefix = _pipeline(kafka_bootstrap, tmp_path, partitions=1)
    names = topic_names(config.kafka)
    loop = UsageLoop.__new__(UsageLoop)  # the method's state only: no consumer, no warehouse
    loop.settings, loop.names, loop._limit_asked_at = settings, names, None
    asked = "cannot read max.message.bytes"
    for _ in range(3):  # the partials topic is not there yet: cannot be read
        loop._raise_partials_limit()
    assert caplog.text.count(asked) == 1
    assert loop._limit_asked_at is not None
    loop._limit_asked_at -= LIMIT_RETRY_S
    loop._raise_partials_limit()
    assert caplog.text.count(asked) == 2
    # Raised: asked again at the next refusal, however soon.
    admin = Admin(settings, timeout_s=60)
    admin.ensure_topics([TopicSpec(names.partials, 1, {"max.message.bytes": "512"})])
    loop._limit_asked_at -= LIMIT_RETRY_S
    loop._raise_partials_limit()
    assert loop._limit_asked_at is None
    wait_for(lambda: _record_limit(admin, names.partials) == MAX_RECORD_BYTES, "not raised")
