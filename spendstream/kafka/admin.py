"""The admin helper: make sure topics exist (partitions, configs), read partition counts and a
group's committed offsets, delete topics."""

from __future__ import annotations

import time
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import confluent_kafka
import confluent_kafka.admin
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic

from spendstream.errors import KafkaUnavailable
from spendstream.kafka._errors import ErrorLatch, translate
from spendstream.kafka._waits import fetch_metadata, result
from spendstream.kafka.settings import KafkaSettings, as_settings, client_config

__all__ = ["Admin", "TopicSpec"]


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    configs: dict[str, str] = field(default_factory=dict)
    replication_factor: int = -1  # -1: the broker's default.replication.factor


class Admin:
    """One librdkafka admin client; every call waits at most ``timeout_s``."""

    def __init__(
        self,
        settings: KafkaSettings | str,
        *,
        client_id: str = "spendstream-admin",
        timeout_s: float = 15.0,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self.settings = as_settings(settings)
        self.timeout_s = timeout_s
        self._latch = ErrorLatch()
        conf = client_config(self.settings, client_id, {"error_cb": self._latch}, config)
        try:
            self._a = AdminClient(conf)
        except confluent_kafka.KafkaException as exc:
            raise translate(exc.args[0], "cannot create a Kafka admin client") from None

    def _metadata(self, topic: str | None = None) -> Any:
        return fetch_metadata(
            self._a.list_topics,
            lambda: self._a.poll(0),
            self._latch,
            topic,
            self.timeout_s,
            self.settings.describe(),
        )

    def _result(self, future: Any, context: str, ignore: Container[str] = ()) -> Any:
        return result(future, self.timeout_s + 5, context, self.settings.describe(), ignore)

    def topics(self) -> set[str]:
        """Every topic's name (internal ones included)."""
        return set(self._metadata().topics)

    def partition_counts(self, names: Iterable[str]) -> dict[str, int]:
        """Partition count of each named topic that exists."""
        topics = self._metadata().topics
        out: dict[str, int] = {}
        for name in names:
            meta = topics.get(name)
            if meta is not None and meta.error is None:
                out[name] = len(meta.partitions)
        return out

    def ensure_topics(self, specs: Sequence[TopicSpec]) -> dict[str, int]:
        """Create the missing topics and wait until every partition has a leader; return
        each topic's actual partition count (an existing topic is left as it is)."""
        existing = self.topics()
        missing = [s for s in specs if s.name not in existing]
        if missing:
            futures = self._a.create_topics(
                [
                    NewTopic(s.name, s.partitions, s.replication_factor, config=dict(s.configs))
                    for s in missing
                ],
                request_timeout=self.timeout_s,
                operation_timeout=self.timeout_s,
            )
            for name, fut in futures.items():
                # TOPIC_ALREADY_EXISTS: another process was first.
                self._result(fut, f"cannot create topic {name}", {"TOPIC_ALREADY_EXISTS"})
        return self._wait_for_leaders([s.name for s in specs])

    def grow_partitions(self, name: str, count: int) -> int:
        """Give topic ``name`` at least ``count`` partitions (Kafka adds partitions, never
        removes them) and wait until each has a leader; return its count."""
        if self.partition_counts([name]).get(name, 0) < count:
            futures = self._a.create_partitions(
                [NewPartitions(name, count)],
                request_timeout=self.timeout_s,
                operation_timeout=self.timeout_s,
            )
            for fut in futures.values():
                # INVALID_PARTITIONS: another process grew it first, to as many or more.
                self._result(fut, f"cannot add partitions to {name}", {"INVALID_PARTITIONS"})
        return self._wait_for_leaders([name])[name]

    def _wait_for_leaders(self, names: list[str]) -> dict[str, int]:
        deadline = time.monotonic() + self.timeout_s
        while True:
            topics = self._metadata().topics
            counts: dict[str, int] = {}
            for name in names:
                meta = topics.get(name)
                if (
                    meta is not None
                    and meta.error is None
                    and meta.partitions
                    and all(p.leader >= 0 for p in meta.partitions.values())
                ):
                    counts[name] = len(meta.partitions)
            if len(counts) == len(names):
                return counts
            if time.monotonic() >= deadline:
                waiting = sorted(set(names) - set(counts))
                raise KafkaUnavailable(
                    f"topic(s) {', '.join(waiting)} have no leader after {self.timeout_s:.0f}s "
                    f"({self.settings.describe()})",
                    code="LEADER_NOT_AVAILABLE",
                    retriable=True,
                )
            time.sleep(0.1)

    def topic_configs(self, name: str) -> dict[str, str]:
        """The topic's effective configuration (``cleanup.policy``, ``retention.ms``...)."""
        resource = confluent_kafka.admin.ConfigResource(
            confluent_kafka.admin.ResourceType.TOPIC, name
        )
        future = self._a.describe_configs([resource], request_timeout=self.timeout_s)[resource]
        entries = self._result(future, f"cannot describe topic {name}")
        return {k: e.value for k, e in entries.items() if e.value is not None}

    def set_topic_config(self, name: str, key: str, value: str) -> None:
        """Set one of the topic's configs (an incremental alter: its others stay as they are).
        ``KafkaAuthError`` without the right to alter it."""
        resource = confluent_kafka.admin.ConfigResource(
            confluent_kafka.admin.ResourceType.TOPIC,
            name,
            incremental_configs=[
                confluent_kafka.admin.ConfigEntry(
                    key, value, incremental_operation=confluent_kafka.admin.AlterConfigOpType.SET
                )
            ],
        )
        futures = self._a.incremental_alter_configs([resource], request_timeout=self.timeout_s)
        self._result(futures[resource], f"cannot set {key} of topic {name}")

    def delete_topics(self, names: Iterable[str]) -> None:
        """Delete topics; a topic that is already gone is no error."""
        names = list(names)
        if not names:
            return
        futures = self._a.delete_topics(names, operation_timeout=self.timeout_s)
        for name, fut in futures.items():
            self._result(fut, f"cannot delete topic {name}", {"UNKNOWN_TOPIC_OR_PART"})

    def group_offsets(self, group: str, topics: Iterable[str]) -> dict[tuple[str, int], int]:
        """The group's committed offsets (next offset to read) on ``topics``, per (topic,
        partition); partitions with nothing committed are left out.

        Read through a consumer of the group that never joins it, not the admin API:
        librdkafka's ListConsumerGroupOffsets dereferences a null pointer when the broker
        answers NOT_COORDINATOR (just after a broker restart), taking the process down
        (confluentinc/librdkafka#5040, confluent-kafka-python#1982, still so in 2.16).
        """
        from spendstream.kafka.consumer import Consumer

        consumer = Consumer(self.settings, group_id=group, client_id="spendstream-admin")
        try:
            parts = [
                (topic, p)
                for topic in topics
                for p in consumer.partitions_for(topic, self.timeout_s) or []
            ]
            committed = consumer.committed(parts, self.timeout_s)
        finally:
            consumer.close()
        return {tp: offset for tp, offset in committed.items() if offset is not None}
