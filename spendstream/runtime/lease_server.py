"""The lease server: the ledger of ``spendstream.stream.leases`` behind Kafka.

``serve_leases(config, instance_id, stop)`` creates the lease topics if needed and answers
requests for the partitions its consumer group assigns it (``spendstream leases serve``);
``host_leases(config, instance_id)`` runs the same server as a thread of another process
(``spendstream run`` hosts one per worker). Run one or more; each needs a stable, distinct
``instance_id``. Every server counts the landed spend of the scopes it owns from the
``spendstream.facts`` topic the Kafka runtime publishes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from spendstream.config import Config
from spendstream.errors import KafkaClientError
from spendstream.kafka import KafkaSettings
from spendstream.kafka_leases import LeaseServer, LeaseTopics, ensure_lease_topics, utcnow
from spendstream.stream.leases import LeaseLedger, LeasePolicy, landed_spends

__all__ = ["HostedLeaseServer", "host_leases", "lease_server", "lease_topics", "serve_leases"]

log = logging.getLogger("spendstream.leases")


def lease_topics(config: Config) -> LeaseTopics:
    return LeaseTopics.with_prefix(config.kafka.topic_prefix)


def lease_server(
    config: Config,
    instance_id: str,
    kafka_options: Mapping[str, Any] | None = None,
    timeout_s: float = 30.0,
    clock: Callable[[], datetime] = utcnow,
) -> LeaseServer:
    """A server for ``config``'s hard budgets (topics created if missing; not yet running),
    with the ``[kafka]`` client settings (SASL/TLS; a missing secret is a ConfigError);
    ``kafka_options``: librdkafka settings for its clients; ``timeout_s``: how long creating
    the topics may wait for the brokers; ``clock``: the server's wall clock (UTC; tests)."""
    names = lease_topics(config)
    settings = KafkaSettings.from_config(config.kafka)
    ensure_lease_topics(
        settings,
        names,
        partitions=config.leases.partitions,
        reply_partitions=config.leases.reply_partitions,
        timeout_s=timeout_s,
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
        config=kafka_options,
        spends_of=landed_spends,  # landed spend from [kafka] topic_prefix + spendstream.facts
        clock=clock,
    )


def serve_leases(config: Config, instance_id: str, stop: threading.Event) -> None:
    """Answer lease requests until ``stop`` is set."""
    lease_server(config, instance_id).run(stop)


class HostedLeaseServer:
    """A lease server on a thread of its own, for a process that does other work.

    Its own consumer group (``[leases] group_id``) on the lease requests, its own
    transactional producer, its facts reader: nothing shared with the host but the
    configuration. ``start()`` returns at once (the topics are created on the thread);
    ``stop()`` ends it. A broker that cannot be reached (at start or later) is tried again
    every ``retry_s``; a server that fails for good (another instance with the same id
    fenced it, the broker refused its credentials) logs why and keeps ``error``; the host
    goes on, and its clients get ``LeaseUnavailable`` until another server owns the scopes.
    """

    def __init__(
        self,
        config: Config,
        instance_id: str,
        retry_s: float = 5.0,
        connect_timeout_s: float = 30.0,
    ) -> None:
        self.config = config
        self.instance_id = instance_id
        self.retry_s = retry_s
        self.connect_timeout_s = connect_timeout_s
        self.server: LeaseServer | None = None
        self.error: BaseException | None = None
        self._made = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"spendstream-lease-server-{instance_id}", daemon=True
        )

    def start(self) -> HostedLeaseServer:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    self.server = lease_server(
                        self.config, self.instance_id, timeout_s=self.connect_timeout_s
                    )
                    self._made.set()
                    self.server.run(self._stop)
                except KafkaClientError as exc:
                    if not exc.retriable:
                        raise
                    log.warning(
                        "the lease server %s: %s; trying again in %.0f s",
                        self.instance_id,
                        exc,
                        self.retry_s,
                    )
                    self._stop.wait(self.retry_s)
        except Exception as exc:
            self.error = exc
            log.error("the lease server %s stopped: %s", self.instance_id, exc)
        finally:
            self._made.set()

    def wait_ready(self, timeout_s: float) -> bool:
        """True once the server owns its partitions (restored, answering)."""
        if not self._made.wait(timeout_s) or self.server is None:
            return False
        return self.server.ready.wait(timeout_s)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Leave the group and close the clients (waits up to ``timeout_s``)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)


def host_leases(config: Config, instance_id: str) -> HostedLeaseServer | None:
    """A started ``HostedLeaseServer`` when there is something to serve: ``[leases]
    serve_in_run`` on and at least one ``[[budget]]`` with ``hard_limit``; else None."""
    if not config.leases.serve_in_run:
        return None
    if not any(b.hard_limit is not None for b in config.budget):
        return None
    return HostedLeaseServer(config, instance_id).start()
