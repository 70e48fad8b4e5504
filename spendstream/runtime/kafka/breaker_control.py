"""Breaker state for people and for clients that cannot read Kafka, and manual resets.

The state of a scope is its latest landed breaker event. A manual reset goes three ways:
a ``closed`` event on the compacted breakers topic (clients see it at once), the same event
in the warehouse, and a reset command to the loop that owns the scope's breaker, where it
meets the facts in order and forgets the open breaker (its own ``closed`` event has the same
scope, reason and ts, so the warehouse lands it once):

- ``api_key:K``: the usage topic, keyed ``K`` like the key's events (``topics.partition_key``),
  so it reaches the usage partition whose ``LocalEngine`` holds the breaker;
- ``session:S``: every usage partition (a session's events are keyed by their api key, which
  the command does not know; the partitions that do not hold the breaker ignore it);
- every other scope: the partials topic, at the partition of its scope owner
  (``stream.engine.owner_of``).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import orjson

from spendstream.config import Config
from spendstream.kafka.settings import KafkaSettings
from spendstream.records import BreakerEvent, breaker_to_wire
from spendstream.runtime.kafka.topology import ensure_topics, topic_names
from spendstream.runtime.kafka.wire import encode_reset
from spendstream.signing import load_breaker_signer
from spendstream.stream.engine import owner_of

__all__ = ["MANUAL_RESET", "latest_breakers", "publish_reset"]

MANUAL_RESET = "manual reset"  # the reason stream.breakers uses for a reset by hand

_LATEST_SQL = """
SELECT scope, arg_max(state, ts) AS state, arg_max(reason, ts) AS reason, max(ts) AS ts
FROM breaker_events GROUP BY scope ORDER BY scope
"""


def latest_breakers(
    workdir: Path, include_closed: bool = True, config: Config | None = None
) -> list[BreakerEvent]:
    """Each scope's latest breaker event from the warehouse (``ConfigError`` when there is
    none at ``workdir``: a read does not create one)."""
    from spendstream.warehouse.reading import connect

    con = connect(Path(workdir), None if config is None else config.warehouse)
    try:
        rows = con.execute(_LATEST_SQL).fetchall()  # type: ignore[attr-defined]
    finally:
        con.close()  # type: ignore[attr-defined]
    out = [BreakerEvent(scope=s, state=st, reason=r, ts=ts) for s, st, r, ts in rows]
    return out if include_closed else [b for b in out if b.state != "closed"]


def publish_reset(config: Config, workdir: Path, scope: str, ts: datetime) -> BreakerEvent:
    """Close ``scope``'s breaker by hand: topic, control command, then warehouse.

    Every record is signed when ``[breaker]`` has an HMAC key. Raises ``KafkaUnavailable``
    or ``KafkaAuthError`` (spendstream.errors) when Kafka cannot take them.
    """
    from spendstream.kafka.producer import OutRecord, Producer
    from spendstream.warehouse import Warehouse

    settings = KafkaSettings.from_config(config.kafka)
    signer = load_breaker_signer(config.breaker)
    names = topic_names(config.kafka)
    counts = ensure_topics(settings, config.kafka, grow=False)
    event = BreakerEvent(scope=scope, state="closed", reason=MANUAL_RESET, ts=ts)
    key, value = scope.encode(), orjson.dumps(breaker_to_wire(event))
    records = [
        OutRecord(
            names.breakers, value, key, signer.headers("breaker", key, value) if signer else None
        )
    ]
    kind, _, name = scope.partition(":")
    if kind == "api_key":
        command, headers = encode_reset(scope, ts, name.encode(), signer)
        records.append(OutRecord(names.usage, command, name.encode(), headers))
    elif kind == "session":
        command, headers = encode_reset(scope, ts, name.encode(), signer)
        records += [
            OutRecord(names.usage, command, name.encode(), headers, p)
            for p in range(counts[names.usage])
        ]
    else:
        command, headers = encode_reset(scope, ts, key, signer)
        owner = owner_of(scope, counts[names.partials])
        records.append(OutRecord(names.partials, command, key, headers, owner))
    producer = Producer(settings, client_id="spendstream-breakers")
    try:
        producer.send(records, timeout_s=30).raise_first()
    finally:
        producer.close(timeout_s=10)
    with Warehouse(Path(workdir), writer="breakers-cli", config=config.warehouse) as wh:
        wh.commit(breaker_events=[event])
    return event
