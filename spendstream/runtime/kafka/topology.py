"""Topic names, partition counts and cleanup policies of ``spendstream run``, and their creation."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from spendstream.config import KafkaConfig
from spendstream.errors import KafkaAuthError, KafkaClientError
from spendstream.kafka.admin import Admin, TopicSpec
from spendstream.kafka.settings import KafkaSettings
from spendstream.topics import ALERTS, BREAKERS, DEAD_LETTERS, FACTS, PARTIALS, USAGE

__all__ = [
    "MAX_RECORD_BYTES",
    "TopicNames",
    "TopicSpec",
    "ensure_topics",
    "grow_facts",
    "raise_record_limit",
    "topic_names",
    "topic_specs",
]

# A batch's facts record (and its partials) is one record: [pipeline] batch_size facts,
# compressed. Kafka's default limit (1 MiB) holds about 2,000 uncompressed facts; the runtime's
# topics allow 64 MiB, and its producers send up to that.
MAX_RECORD_BYTES = 64 * 1024 * 1024

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TopicNames:
    usage: str
    facts: str
    partials: str
    alerts: str
    breakers: str
    dead_letters: str


def topic_names(kafka: KafkaConfig) -> TopicNames:
    p = kafka.topic_prefix
    return TopicNames(
        p + USAGE, p + FACTS, p + PARTIALS, p + ALERTS, p + BREAKERS, p + DEAD_LETTERS
    )


def topic_specs(kafka: KafkaConfig, usage_partitions: int | None = None) -> list[TopicSpec]:
    """``usage_partitions``: the usage topic's actual count, when it exists already (the
    facts and partials topics follow it: facts partition p holds usage partition p's batches)."""
    names = topic_names(kafka)
    n = usage_partitions or kafka.usage_partitions
    return [
        TopicSpec(names.usage, kafka.usage_partitions),
        TopicSpec(names.facts, n, {"max.message.bytes": str(MAX_RECORD_BYTES)}),
        TopicSpec(names.partials, n, {"max.message.bytes": str(MAX_RECORD_BYTES)}),
        TopicSpec(names.alerts, 1),
        # Latest state per scope survives compaction; that is all a client needs.
        TopicSpec(names.breakers, 1, {"cleanup.policy": "compact"}),
        TopicSpec(names.dead_letters, 1),
    ]


def ensure_topics(
    settings: KafkaSettings | str, kafka: KafkaConfig, *, grow: bool = True
) -> dict[str, int]:
    """Create the missing topics; return every topic's actual partition count. ``grow``:
    give the facts topic a partition per usage partition (``grow_facts``; `run` does, a
    command that only publishes need not have the right to).

    The usage topic first: an existing one keeps its count (re-partitioning is the
    operator's decision), and the facts and partials topics are created with that count.
    Raises ``KafkaUnavailable`` or ``KafkaAuthError`` (spendstream.errors) naming the cause.
    """
    # Enough for a loaded broker, short enough that a wrong address fails promptly.
    admin = Admin(settings, client_id="spendstream-run", timeout_s=15)
    names = topic_names(kafka)
    specs = topic_specs(kafka)
    counts = admin.ensure_topics(specs[:1])
    usage = counts.get(names.usage, kafka.usage_partitions)
    if usage != kafka.usage_partitions:
        log.warning(
            "topic %s has %d partitions, configuration says %d; using %d",
            names.usage,
            usage,
            kafka.usage_partitions,
            usage,
        )
    counts.update(admin.ensure_topics(topic_specs(kafka, usage)[1:]))
    if grow and counts[names.facts] < usage:
        counts[names.facts] = grow_facts(admin, names, usage)
    if grow:
        raise_record_limit(admin, names.partials)
    return counts


def raise_record_limit(admin: Admin, topic: str, *, refused: bool = False) -> bool:
    """Give ``topic`` (the partials topic) ``max.message.bytes`` of ``MAX_RECORD_BYTES`` if it
    takes less; return whether it now does. A batch's partials record follows its facts
    record, which was published already: unlike the facts record (landed in halves), a
    partials record the topic refuses cannot be cut smaller, and its batch failed at
    every replay. Without the right to alter the topic, says what to run and returns False:
    an ERROR once a record was ``refused`` (a batch is stuck until it is done), a WARNING
    at `run`'s start (most batches' partials are far smaller than any limit, and a managed
    service's cap would otherwise read as a failure at every start)."""
    try:
        limit = int(admin.topic_configs(topic).get("max.message.bytes", MAX_RECORD_BYTES))
    except (KafkaClientError, ValueError) as exc:
        log.warning("cannot read max.message.bytes of %s (%s)", topic, exc)
        return False
    if limit >= MAX_RECORD_BYTES:
        return True
    log.warning(
        "topic %s takes records of at most %d bytes; raising its max.message.bytes to %d "
        "(a batch's partials record must fit in one record)",
        topic, limit, MAX_RECORD_BYTES,
    )  # fmt: skip
    try:
        admin.set_topic_config(topic, "max.message.bytes", str(MAX_RECORD_BYTES))
    except KafkaClientError as exc:
        log.log(
            logging.ERROR if refused else logging.WARNING,
            "%s. A batch whose partials record is more than %d bytes fails until %s takes it: "
            "kafka-configs.sh --alter --entity-type topics --entity-name %s --add-config "
            "max.message.bytes=%d, or allow this worker to alter its configs",
            exc, limit, topic, topic, MAX_RECORD_BYTES,
        )  # fmt: skip
        return False
    return True


def grow_facts(admin: Admin, names: TopicNames, usage_partitions: int) -> int:
    """Give the facts topic a partition for each usage partition (facts partition p holds
    usage partition p's batches); return its count. Partitions added to the usage topic
    left a worker assigned a new one retrying for ever on a facts partition that did not
    exist. The partials topic keeps its count: it is the number of scope owners, and
    each scope's state is kept by the owner its name hashes to among them."""
    log.warning(
        "topic %s has fewer partitions than %s (%d): adding partitions to it",
        names.facts, names.usage, usage_partitions,
    )  # fmt: skip
    try:
        return admin.grow_partitions(names.facts, usage_partitions)
    except KafkaAuthError as exc:
        raise KafkaAuthError(
            f"{exc}. Usage partition {usage_partitions - 1} needs partition "
            f"{usage_partitions - 1} of {names.facts}: give it {usage_partitions} partitions "
            f"(kafka-topics.sh --alter --topic {names.facts} --partitions {usage_partitions}), "
            "or allow this worker to alter it",
            code=exc.code,
        ) from None
