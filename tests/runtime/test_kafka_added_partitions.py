"""Partitions added to the usage topic (scaling out, an operator's `kafka-topics --alter`):
facts partition p holds usage partition p's batches, so the facts topic must grow with it.
It did not: a worker assigned a new usage partition retried opening it for ever (its
facts partition did not exist), and no record of that partition ever landed. The partials
topic keeps its count: it is the number of scope owners, which each scope's state follows."""

from __future__ import annotations

from pathlib import Path

import pytest

from spendstream.config import load_config
from spendstream.kafka.admin import Admin
from spendstream.kafka.producer import OutRecord, Producer
from spendstream.kafka.settings import KafkaSettings
from spendstream.runtime.kafka.topology import ensure_topics
from spendstream.runtime.kafka.worker import Worker
from tests.runtime.kafka_workers import event_lines, fact_count, wait_for, write_config

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def test_a_usage_partition_added_after_the_topics_were_made_lands_its_records(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    path, prefix = write_config(tmp_path / "c.toml", kafka_bootstrap, partitions=2, batch_size=100)
    config = load_config(path)
    settings = KafkaSettings.from_config(config.kafka)
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
    path, prefix = write_config(tmp_path / "c.toml", kafka_bootstrap, partitions=2)
    config = load_config(path)
    settings = KafkaSettings.from_config(config.kafka)
    usage, facts, partials = (prefix + f"spendstream.{t}" for t in ("usage", "facts", "partials"))
    ensure_topics(settings, config.kafka)
    Admin(settings, timeout_s=60).grow_partitions(usage, 5)
    counts = ensure_topics(settings, config.kafka)
    assert (counts[usage], counts[facts], counts[partials]) == (5, 5, 2)
