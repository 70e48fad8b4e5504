"""The admin helper on a real broker."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from spendstream.errors import KafkaUnavailable
from spendstream.kafka.admin import Admin, TopicSpec
from spendstream.local.kafka import find_free_port
from tests.kafka_fixtures import produce

pytestmark = pytest.mark.kafka


def test_ensure_topics_creates_with_partitions_and_configs_and_keeps_existing_ones(
    kafka_bootstrap: str,
) -> None:
    admin = Admin(kafka_bootstrap, timeout_s=60)
    a, b = f"adm-a-{uuid.uuid4().hex[:8]}", f"adm-b-{uuid.uuid4().hex[:8]}"
    try:
        counts = admin.ensure_topics(
            [TopicSpec(a, 3, {"cleanup.policy": "compact"}, 1), TopicSpec(b, 1, {}, 1)]
        )
        assert counts == {a: 3, b: 1}
        assert admin.topic_configs(a)["cleanup.policy"] == "compact"
        assert admin.topic_configs(b)["cleanup.policy"] == "delete"
        # Asked again with other counts: the existing topics stay as they are.
        assert admin.ensure_topics([TopicSpec(a, 6, {}, 1), TopicSpec(b, 2, {}, 1)]) == counts
        assert admin.partition_counts([a, b, "no-such-topic"]) == {a: 3, b: 1}
    finally:
        admin.delete_topics([a, b])
    deadline = time.monotonic() + 30
    while a in admin.topics():
        assert time.monotonic() < deadline
        time.sleep(0.2)
    admin.delete_topics([a])  # already gone: no error


def test_group_offsets_reads_what_a_group_committed(kafka_bootstrap: str, topic_factory) -> None:  # type: ignore[no-untyped-def]
    from spendstream.kafka.consumer import Consumer

    topic = topic_factory(2)
    produce(kafka_bootstrap, topic, [(f"k{i}".encode(), b"v") for i in range(10)])
    group = f"g-{uuid.uuid4().hex[:8]}"
    consumer = Consumer(kafka_bootstrap, group_id=group)
    consumer.assign([(topic, 0), (topic, 1)])
    consumer.commit({(topic, 0): 3, (topic, 1): 4})
    consumer.close()
    assert Admin(kafka_bootstrap).group_offsets(group, [topic]) == {(topic, 0): 3, (topic, 1): 4}
    assert Admin(kafka_bootstrap).group_offsets(f"other-{group}", [topic]) == {}


def test_no_broker_is_kafka_unavailable_within_the_timeout() -> None:
    admin = Admin(f"127.0.0.1:{find_free_port()}", timeout_s=2)
    with pytest.raises(KafkaUnavailable, match=r"bootstrap_servers") as err:
        admin.topics()
    assert err.value.retriable and err.value.code in ("_TRANSPORT", "_ALL_BROKERS_DOWN")


def test_ensure_topics_racing_another_creator_is_no_error(kafka_bootstrap: str) -> None:
    """Workers starting together each find the topic missing and create it: the ones the
    broker answers TOPIC_ALREADY_EXISTS go on with the topic the first one made."""
    name = f"adm-race-{uuid.uuid4().hex[:8]}"
    admins = [Admin(kafka_bootstrap, timeout_s=60) for _ in range(6)]
    for admin in admins:
        assert name not in admin.topics()
    start = threading.Barrier(len(admins))
    failures: list[BaseException] = []

    def ensure(admin: Admin) -> None:
        start.wait()
        try:
            assert admin.ensure_topics([TopicSpec(name, 2, {}, 1)]) == {name: 2}
        except BaseException as exc:  # reported below, in the test's thread
            failures.append(exc)

    threads = [threading.Thread(target=ensure, args=(a,)) for a in admins]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert failures == []
    finally:
        admins[0].delete_topics([name])
