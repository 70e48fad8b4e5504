"""Topic names, partition counts and cleanup policies of the Kafka runtime, and their creation."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from spendstream.config import KafkaConfig
from spendstream.kafka.admin import TopicSpec
from spendstream.kafka.settings import KafkaSettings
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


def ensure_topics(settings: KafkaSettings | str, specs: list[TopicSpec]) -> dict[str, int]:
    """Create the missing topics; return every topic's actual partition count.

    An existing topic is kept as it is (its partition count may differ from the config:
    the runtime works with any count, and re-partitioning is the operator's decision).
    Raises ``KafkaUnavailable`` or ``KafkaAuthError`` (spendstream.errors) naming the cause.
    """
    from spendstream.kafka.admin import Admin

    # Enough for a loaded broker, short enough that a wrong address fails promptly.
    counts = Admin(settings, client_id="spendstream-run", timeout_s=15).ensure_topics(specs)
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
