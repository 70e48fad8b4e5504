"""The standalone lease server: the ledger of ``spendstream.stream.leases`` behind Kafka.

``serve_leases(config, instance_id, stop)`` creates the lease topics if needed and answers
requests for the partitions its consumer group assigns it (``spendstream leases serve``).
Run one or more; each needs a stable, distinct ``instance_id``. Round 2 hosts the same loop
inside the scope-owning worker of ``spendstream run`` and feeds it landed spend.
"""

from __future__ import annotations

import threading

from spendstream.config import Config
from spendstream.kafka import KafkaSettings
from spendstream.kafka_leases import LeaseServer, LeaseTopics, ensure_lease_topics
from spendstream.stream.leases import LeaseLedger, LeasePolicy, landed_spends

__all__ = ["lease_server", "lease_topics", "serve_leases"]


def lease_topics(config: Config) -> LeaseTopics:
    return LeaseTopics.with_prefix(config.kafka.topic_prefix)


def lease_server(config: Config, instance_id: str) -> LeaseServer:
    """A server for ``config``'s hard budgets (topics created if missing; not yet running),
    with the ``[kafka]`` client settings (SASL/TLS; a missing secret is a ConfigError)."""
    names = lease_topics(config)
    settings = KafkaSettings.from_config(config.kafka)
    ensure_lease_topics(
        settings,
        names,
        partitions=config.leases.partitions,
        reply_partitions=config.leases.reply_partitions,
    )
    policy = LeasePolicy.from_config(config)
    budgets = list(config.budget)
    return LeaseServer(
        settings,
        lambda: LeaseLedger(budgets, policy),
        instance_id=instance_id,
        # Prefixed like the topics: two deployments on one cluster are two groups.
        group_id=config.kafka.topic_prefix + config.leases.group_id,
        names=names,
        spends_of=landed_spends,  # landed spend from [kafka] topic_prefix + spendstream.facts
    )


def serve_leases(config: Config, instance_id: str, stop: threading.Event) -> None:
    """Answer lease requests until ``stop`` is set."""
    lease_server(config, instance_id).run(stop)
