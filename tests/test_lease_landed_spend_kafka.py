"""The Kafka lease server counts landed spend from ``spendstream.facts``, once per fact.

Facts records are produced with ``facts_topic.encode`` as the Kafka runtime publishes them:
one per usage batch, partition p for usage partition p, a worker killed before its warehouse
commit publishing the batch again cut at other offsets. What a budget has left is read from
the server's own refusals (``left_usd`` = the cap - landed - what open leases hold).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest

from spendstream import facts_topic
from spendstream.config import Config, load_config
from spendstream.kafka import Admin, Producer, TopicSpec
from spendstream.kafka_leases import KafkaLeaseService, LeaseServer, ensure_lease_topics
from spendstream.producers.lease_protocol import LeaseGrant, LeaseRefusal, LeaseRequest
from spendstream.runtime.lease_server import lease_server, lease_topics
from spendstream.table_schemas import FACTS
from tests.test_budget_leases_kafka import write_config

pytestmark = pytest.mark.kafka
D = Decimal
SCOPE = "team:search"

# (usage offset, cost, team, lease id, priced)
Row = tuple[int, str, str, str | None, bool]


def facts_record(partition: int, rows: list[Row]) -> bytes:
    now = datetime.now(UTC)
    table = pa.Table.from_pylist(
        [
            {"event_id": f"e{partition}-{off}", "ts": now, "provider": "openai", "model": "m",
             "team": team, "cost_usd": D(cost), "lease_id": lease, "priced": priced}
            for off, cost, team, lease, priced in rows
        ],
        schema=FACTS,
    )  # fmt: skip
    offsets = pa.array([r[0] for r in rows], pa.int64())
    return facts_topic.encode(partition, table, offsets)


def publish(config: Config, partition: int, rows: list[Row]) -> None:
    """One facts record to ``partition``, as the runtime's usage loop publishes it."""
    producer = Producer(config.kafka.bootstrap_servers, client_id="facts-test")
    try:
        value = facts_record(partition, rows)
        producer.produce(lease_topics(config).facts, value, partition=partition)
        assert producer.flush(30) == 0
    finally:
        producer.close(10)


@contextmanager
def serving(config: Config, instance: str = "s0") -> Iterator[LeaseServer]:
    server = lease_server(config, instance)
    stop = threading.Event()
    thread = threading.Thread(target=server.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        stop.set()
        thread.join(30)


def left(service: KafkaLeaseService, scope: str = SCOPE) -> Decimal:
    """What the budget has left as its owner says: a request far past the cap is refused."""
    ask = LeaseRequest(scope, "c-facts", uuid.uuid4().hex, D(1000), D(1000))
    reply = service.request(ask, 10)
    assert isinstance(reply, LeaseRefusal), reply
    return reply.left_usd


def wait_left(
    service: KafkaLeaseService, expected: str, timeout_s: float = 60.0, scope: str = SCOPE
) -> None:
    """Until the server has read the facts just published (it answers from its own loop);
    a miscount never reaches ``expected`` and fails here."""
    deadline = time.monotonic() + timeout_s
    seen = left(service, scope)
    while seen != D(expected) and time.monotonic() < deadline:
        time.sleep(0.2)
        seen = left(service, scope)
    assert seen == D(expected), f"{scope}: {seen} left, not {expected}"


def create_facts_topic(config: Config, partitions: int) -> None:
    admin = Admin(config.kafka.bootstrap_servers, client_id="facts-test")
    admin.ensure_topics([TopicSpec(lease_topics(config).facts, partitions)])


def test_unleased_landed_spend_shrinks_grants_exactly_once_through_replays_and_a_restart(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    config = load_config(write_config(tmp_path, kafka_bootstrap, "10", ttl_s=600))
    create_facts_topic(config, 2)
    names = lease_topics(config)
    ensure_lease_topics(kafka_bootstrap, names, partitions=3, reply_partitions=4)
    service = KafkaLeaseService(kafka_bootstrap, client_id="c-facts", names=names)
    try:
        with serving(config) as server:
            wait_left(service, "10")
            # A usage batch: offsets 0-2 on the hard budget's scope, one on a soft one.
            publish(config, 0, [(0, "1", "search", None, True), (1, "2", "search", None, True),
                                (1, "100", "soft", None, True), (2, "0.5", "search", None, True)])  # fmt: skip
            wait_left(service, "6.5")
            # The same batch again after a worker was killed, cut at other offsets (1-4):
            # only 3 and 4 are new.
            publish(config, 0, [(1, "2", "search", None, True), (2, "0.5", "search", None, True),
                                (3, "0.25", "search", None, True), (4, "0.125", "search", None, True)])  # fmt: skip
            wait_left(service, "6.125")
            # Another usage partition has offsets of its own; an unpriced fact is no spend.
            publish(config, 1, [(0, "1", "search", None, True), (1, "5", "search", None, False),
                                (2, "0.003", "search", None, True)])  # fmt: skip
            wait_left(service, "5.122")
            # Spend under a lease counts inside the lease, not a second time.
            grant = service.request(LeaseRequest(SCOPE, "c-facts", "r1", D(1), D(1)), 10)
            assert isinstance(grant, LeaseGrant) and grant.amount_usd == D(1)
            wait_left(service, "4.122")
            publish(config, 0, [(5, "0.75", "search", grant.lease_id, True),
                                (7, "0.002", "search", None, True)])  # fmt: skip
            wait_left(service, "4.120")
            read = server.facts_read
        assert read >= 4
        # While no server runs: a replay of the last batch (5 and 7 counted already) with a
        # new fact at 8.
        publish(config, 0, [(5, "0.75", "search", grant.lease_id, True),
                            (7, "0.002", "search", None, True), (8, "0.02", "search", None, True)])  # fmt: skip
        with serving(config) as server:
            # Restored from the changelog: positions, the lease and what had landed.
            wait_left(service, "4.100")
            publish(config, 1, [(3, "0.1", "search", None, True)])
            wait_left(service, "4.000")
            # Read again from where each scope stood, not from the topic's beginning.
            assert server.facts_read == 2
    finally:
        service.close()
