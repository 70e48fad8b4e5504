"""Breaker state for people and for clients that cannot read Kafka, and manual resets.

The state of a scope is its latest landed breaker event. A manual reset goes three ways:
a ``closed`` event on the compacted breakers topic (clients see it at once), the same event
in the warehouse, and a reset command on the priced topic, where the one detection engine
meets it in order with the facts and forgets the open breaker (its own ``closed`` event has
the same scope, reason and ts, so the warehouse lands it once).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import orjson

from spendstream.config import Config
from spendstream.records import BreakerEvent, breaker_to_wire
from spendstream.stream.kafka.topology import ensure_topics, topic_names, topic_specs
from spendstream.stream.kafka.wire import encode_reset

__all__ = ["MANUAL_RESET", "latest_breakers", "publish_reset"]

MANUAL_RESET = "manual reset"  # the reason stream.breakers uses for a reset by hand

_LATEST_SQL = """
SELECT scope, arg_max(state, ts) AS state, arg_max(reason, ts) AS reason, max(ts) AS ts
FROM breaker_events GROUP BY scope ORDER BY scope
"""


def latest_breakers(
    workdir: Path, include_closed: bool = True, config: Config | None = None
) -> list[BreakerEvent]:
    """Each scope's latest breaker event from the warehouse."""
    from spendstream.errors import ConfigError
    from spendstream.warehouse.reading import connect

    try:
        con = connect(Path(workdir), None if config is None else config.warehouse)
    except ConfigError:
        return []  # nothing landed yet; a read must not create the warehouse
    try:
        rows = con.execute(_LATEST_SQL).fetchall()  # type: ignore[attr-defined]
    finally:
        con.close()  # type: ignore[attr-defined]
    out = [BreakerEvent(scope=s, state=st, reason=r, ts=ts) for s, st, r, ts in rows]
    return out if include_closed else [b for b in out if b.state != "closed"]


def publish_reset(config: Config, workdir: Path, scope: str, ts: datetime) -> BreakerEvent:
    """Close ``scope``'s breaker by hand: topic, control command, then warehouse."""
    from kafka import KafkaProducer

    from spendstream.warehouse import Warehouse

    bootstrap = config.kafka.bootstrap_servers
    names = topic_names(config.kafka)
    ensure_topics(bootstrap, topic_specs(config.kafka))
    event = BreakerEvent(scope=scope, state="closed", reason=MANUAL_RESET, ts=ts)
    producer = KafkaProducer(bootstrap_servers=bootstrap.split(","), acks="all")
    try:
        producer.send(
            names.breakers, key=scope.encode(), value=orjson.dumps(breaker_to_wire(event))
        ).get(timeout=30)
        producer.send(names.priced, value=encode_reset(scope, ts)).get(timeout=30)
    finally:
        producer.close(timeout=10)
    with Warehouse(Path(workdir), writer="breakers-cli", config=config.warehouse) as wh:
        wh.commit(breaker_events=[event])
    return event
