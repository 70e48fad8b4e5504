"""The Kafka shell around :class:`AlertRouter`: read alerts and breaker transitions, route
them, and commit offsets only once every notification they caused was delivered or
dead-lettered (at-least-once; the router's state turns re-reads into no-ops).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from spendstream.records import Alert, BreakerEvent, alert_from_wire, breaker_from_wire
from spendstream.topics import ALERTS, BREAKERS

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

    def add(self, h: HandleSummary) -> None:
        self.triggered += h.triggered
        self.resolved += h.resolved
        self.dead_lettered += h.dead_lettered


class AlertConsumer:
    """A kafka-python consumer in group ``group_id`` over the alert and breaker topics."""

    def __init__(
        self,
        router: AlertRouter,
        bootstrap_servers: str,
        *,
        group_id: str = "spendstream-alerts",
        alerts_topic: str = ALERTS,
        breakers_topic: str = BREAKERS,
        max_records: int = 200,
        retry_budget_s: float = 300.0,
    ) -> None:
        from kafka import KafkaConsumer

        self.router = router
        self.alerts_topic = alerts_topic
        self.breakers_topic = breakers_topic
        self.max_records = max_records
        # One batch may wait out the retry budget of a few sinks; leaving the group meanwhile
        # would only cause a rebalance and a re-read, but there is no reason to provoke it.
        poll_interval_ms = max(300_000, int(retry_budget_s * 4 * 1000))
        self.consumer: Any = KafkaConsumer(
            bootstrap_servers=bootstrap_servers,
            group_id=group_id,
            client_id="spendstream-alerts",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=max_records,
            max_poll_interval_ms=poll_interval_ms,
            reconnect_backoff_max_ms=2000,
        )
        self.consumer.subscribe([alerts_topic, breakers_topic])

    def close(self) -> None:
        self.consumer.close(autocommit=False)

    def _parse(self, record: Any, alerts: list[Alert], breakers: list[BreakerEvent]) -> bool:
        raw = record.value
        if raw is None:
            return True  # a tombstone on the compacted breaker topic
        try:
            data = json.loads(raw)
            if record.topic == self.alerts_topic:
                alerts.append(alert_from_wire(data))
            else:
                breakers.append(breaker_from_wire(data))
        except (ValueError, KeyError, TypeError, AttributeError, AssertionError) as exc:
            text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw)
            error = f"not a valid {record.topic} record: {type(exc).__name__}: {exc}"
            log.error("%s@%d:%d %s", record.topic, record.partition, record.offset, error)
            self.router.state.bad_record(
                record.topic, record.partition, record.offset, text, error, datetime.now(UTC)
            )
            return False
        return True

    def poll_once(
        self, timeout_s: float = 1.0, stop: threading.Event | None = None
    ) -> ConsumeSummary:
        """One batch: poll, route and deliver, then commit what was read."""
        out = ConsumeSummary()
        batches = self.consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=self.max_records)
        if not batches:
            out.add(self.router.tick())
            return out
        alerts: list[Alert] = []
        breakers: list[BreakerEvent] = []
        for records in batches.values():
            for record in records:
                out.records += 1
                if not self._parse(record, alerts, breakers):
                    out.bad_records += 1
        out.alerts, out.breaker_events = len(alerts), len(breakers)
        out.add(self.router.handle(alerts, breakers))
        out.add(self.router.tick())
        if self._commit(stop):
            out.commits += 1
        return out

    def _commit(self, stop: threading.Event | None) -> bool:
        from kafka.errors import KafkaError

        delay = 0.2
        while True:
            try:
                self.consumer.commit()
                return True
            except KafkaError as exc:
                # Broker away or group rebalancing: the state already holds every delivery,
                # so a re-read after giving up here pages no one twice.
                log.warning(
                    "offset commit failed (%s); retrying in %.1fs", type(exc).__name__, delay
                )
                if exc.__class__.__name__ == "CommitFailedError" or (stop and stop.is_set()):
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
