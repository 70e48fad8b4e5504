"""Topic names, partition counts and cleanup policies of the Kafka runtime, and their creation."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field

from spendstream.config import KafkaConfig
from spendstream.topics import ALERTS, BREAKERS, DEAD_LETTERS, USAGE

__all__ = ["PRICED", "TopicNames", "TopicSpec", "ensure_topics", "topic_names", "topic_specs"]

log = logging.getLogger(__name__)

# Internal: stage 1 -> stage 2. One partition, so a single detection engine sees every
# priced fact (and every manual breaker reset) in one order.
PRICED = "spendstream.priced"


@dataclass(frozen=True, slots=True)
class TopicNames:
    usage: str
    priced: str
    alerts: str
    breakers: str
    dead_letters: str


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    configs: dict[str, str] = field(default_factory=dict)


def topic_names(kafka: KafkaConfig) -> TopicNames:
    p = kafka.topic_prefix
    return TopicNames(p + USAGE, p + PRICED, p + ALERTS, p + BREAKERS, p + DEAD_LETTERS)


def topic_specs(kafka: KafkaConfig) -> list[TopicSpec]:
    names = topic_names(kafka)
    return [
        TopicSpec(names.usage, kafka.usage_partitions),
        TopicSpec(names.priced, 1),
        TopicSpec(names.alerts, 1),
        # Latest state per scope survives compaction; that is all a client needs.
        TopicSpec(names.breakers, 1, {"cleanup.policy": "compact"}),
        TopicSpec(names.dead_letters, 1),
    ]


def ensure_topics(bootstrap: str, specs: list[TopicSpec]) -> dict[str, int]:
    """Create the missing topics; return every topic's actual partition count.

    An existing topic is kept as it is (its partition count may differ from the config:
    the runtime works with any count, and re-partitioning is the operator's decision).
    """
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    # Enough for a loaded broker, short enough that a wrong address fails promptly.
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap.split(","),
        client_id="spendstream-run",
        request_timeout_ms=15000,
        bootstrap_timeout_ms=10000,
    )
    try:
        existing = set(admin.list_topics())
        missing = [
            NewTopic(s.name, s.partitions, 1, topic_configs=s.configs)
            for s in specs
            if s.name not in existing
        ]
        if missing:
            # Another worker may have created them first.
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(missing, validate_only=False)
        counts: dict[str, int] = {}
        for meta in admin.describe_topics([s.name for s in specs]):
            counts[meta["name"]] = len(meta["partitions"])
        for s in specs:
            if counts.get(s.name) not in (None, s.partitions) and s.name.endswith(USAGE):
                log.warning(
                    "topic %s has %d partitions, configuration says %d; using %d",
                    s.name,
                    counts[s.name],
                    s.partitions,
                    counts[s.name],
                )
        return counts
    finally:
        admin.close()
