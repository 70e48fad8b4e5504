"""The Kafka shell around :class:`AlertRouter`: read alerts and breaker transitions, route
them, and commit offsets only once every notification they caused was delivered or
dead-lettered (at-least-once; the router's state turns re-reads into no-ops).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from spendstream.errors import KafkaAuthError, KafkaClientError
from spendstream.kafka.settings import KafkaSettings
from spendstream.producers import wire_json
from spendstream.records import (
    Alert,
    BreakerEvent,
    alert_from_wire,
    breaker_from_wire,
    ts_bound_error,
)
from spendstream.signing import RecordSigner
from spendstream.topics import ALERTS, BREAKERS

if TYPE_CHECKING:
    from spendstream.kafka.consumer import Message

from .router import AlertRouter, HandleSummary

__all__ = ["AlertConsumer", "ConsumeSummary"]

log = logging.getLogger("spendstream.alerts.consumer")


@dataclass(slots=True)
class ConsumeSummary:
    records: int = 0
    alerts: int = 0
    breaker_events: int = 0
    bad_records: int = 0
    triggered: int = 0
    resolved: int = 0
    dead_lettered: int = 0
    commits: int = 0
    # Dead letters a sink back from an outage took meanwhile (not this batch's alerts).
    replayed: int = 0
    replay_superseded: int = 0

    def add(self, h: HandleSummary) -> None:
        self.triggered += h.triggered
        self.resolved += h.resolved
        self.dead_lettered += h.dead_lettered
        self.replayed += h.replayed
        self.replay_superseded += h.replay_superseded


class AlertConsumer:
    """A ``spendstream.kafka`` consumer in group ``group_id`` over the alert and breaker topics.

    With a ``signer`` (``[breaker] hmac_key_env``/``hmac_key_file``), a breaker record
    whose signature does not verify is a bad record (kept in the router's state, never
    routed): a forged ``closed`` cannot resolve a page.
    """

    def __init__(
        self,
        router: AlertRouter,
        bootstrap_servers: str | KafkaSettings,
        *,
        group_id: str = "spendstream-alerts",
        alerts_topic: str = ALERTS,
        breakers_topic: str = BREAKERS,
        max_records: int = 200,
        retry_budget_s: float = 300.0,
        signer: RecordSigner | None = None,
        max_future_skew_s: int = 300,
    ) -> None:
        from spendstream.kafka.consumer import Consumer

        self.router = router
        # ``[detection] max_future_skew_s``: the pipeline dates nothing later than that past
        # its receipt, so a record further ahead of this clock is not its own. Kept, a
        # ``closed`` breaker dated years ahead would make every later alert of its scope stale.
        self.max_future_skew_s = max_future_skew_s
        self.alerts_topic = alerts_topic
        self.breakers_topic = breakers_topic
        self.max_records = max_records
        self.signer = signer
        # One batch may wait out the retry budget of a few sinks (each once at most: a sink
        # that gives up is down, and dead-lettered without an attempt, for the rest of the
        # batch and the next ones: ``RetryPolicy.sink_down_s``, the same as under ``ingest``);
        # leaving the group meanwhile would only cause a rebalance and a re-read, but there
        # is no reason to provoke it.
        poll_interval_ms = max(300_000, int(retry_budget_s * 4 * 1000))
        self.consumer = Consumer(
            bootstrap_servers,
            group_id=group_id,
            client_id="spendstream-alerts",
            auto_offset_reset="earliest",
            config={"max.poll.interval.ms": poll_interval_ms},
        )
        self.consumer.subscribe([alerts_topic, breakers_topic])

    def close(self) -> None:
        self.consumer.close()

    def _bad(self, record: Message, text: str, error: str) -> None:
        topic, partition, offset = record.topic() or "", record.partition(), record.offset()
        log.error("%s@%s:%s %s", topic, partition, offset, error)
        self.router.state.bad_record(
            topic, partition or 0, offset or 0, text, error, datetime.now(UTC)
        )

    def _parse(self, record: Message, alerts: list[Alert], breakers: list[BreakerEvent]) -> bool:
        raw = record.value()
        topic = record.topic()
        signer = self.signer if topic == self.breakers_topic else None
        if signer and not signer.verify_headers(
            "breaker", record.key(), raw or b"", record.headers()
        ):
            text = (raw or b"").decode("utf-8", errors="replace")
            self._bad(record, text, "breaker record not signed with the [breaker] HMAC key")
            return False
        if raw is None:
            return True  # a tombstone on the compacted breaker topic
        try:
            data = wire_json.loads_text(raw)
            read: Alert | BreakerEvent = (
                alert_from_wire(data) if topic == self.alerts_topic else breaker_from_wire(data)
            )
            problem = ts_bound_error(read.ts, datetime.now(UTC), self.max_future_skew_s)
            if problem is not None:
                raise ValueError(problem)
        except (ValueError, KeyError, TypeError, AttributeError, AssertionError) as exc:
            text = raw.decode("utf-8", errors="replace")
            self._bad(record, text, f"not a valid {topic} record: {type(exc).__name__}: {exc}")
            return False
        if isinstance(read, Alert):
            alerts.append(read)
        else:
            breakers.append(read)
        return True

    def poll_once(
        self, timeout_s: float = 1.0, stop: threading.Event | None = None
    ) -> ConsumeSummary:
        """One batch: poll, route and deliver, then commit what was read.

        Raises ``KafkaAuthError`` when the broker refuses our credentials."""
        out = ConsumeSummary()
        records = self.consumer.consume(self.max_records, timeout_s)
        if not records:
            out.add(self.router.tick())
            return out
        alerts: list[Alert] = []
        breakers: list[BreakerEvent] = []
        for record in records:
            out.records += 1
            if not self._parse(record, alerts, breakers):
                out.bad_records += 1
        out.alerts, out.breaker_events = len(alerts), len(breakers)
        out.add(self.router.handle(alerts, breakers))
        out.add(self.router.tick())
        if self._commit(records, stop):
            out.commits += 1
        return out

    def _commit(self, records: list[Message], stop: threading.Event | None) -> bool:
        # Exactly what was read and handled: the position may already be past it.
        offsets: dict[tuple[str, int], int] = {}
        for r in records:
            offsets[(r.topic() or "", r.partition() or 0)] = (r.offset() or 0) + 1
        delay = 0.2
        while True:
            try:
                self.consumer.commit(offsets)
                return True
            except KafkaAuthError:
                raise
            except KafkaClientError as exc:
                # Broker away or group rebalancing: the state already holds every delivery,
                # so a re-read after giving up here pages no one twice.
                log.warning("offset commit failed (%s); retrying in %.1fs", exc.code, delay)
                if not exc.retriable or (stop and stop.is_set()):
                    return False
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def run(
        self,
        stop: threading.Event,
        *,
        on_batch: Callable[[ConsumeSummary], None] | None = None,
    ) -> ConsumeSummary:
        total = ConsumeSummary()
        while not stop.is_set():
            s = self.poll_once(stop=stop)
            for name in ConsumeSummary.__slots__:
                setattr(total, name, getattr(total, name) + getattr(s, name))
            if on_batch and s.records:
                on_batch(s)
        return total
