"""What both loops publish (alerts, signed breaker transitions, dead letters), and the idle
advance of breakers on a quiet stream they share."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import orjson

from spendstream.kafka.producer import OutRecord, Producer
from spendstream.records import (
    Alert,
    BreakerEvent,
    DeadLetter,
    alert_to_wire,
    breaker_to_wire,
    dead_letter_to_wire,
)
from spendstream.runtime.kafka.topology import TopicNames
from spendstream.signing import RecordSigner
from spendstream.stream.engine import LocalEngine, ScopeEngine

__all__ = ["SEND_TIMEOUT_S", "IdleClock", "Outputs"]

# How long a loop waits for the broker's acks before it replays its batch.
SEND_TIMEOUT_S = 30.0


@dataclass(slots=True)
class Outputs:
    """One loop's producer and the records it makes."""

    producer: Producer
    names: TopicNames
    signer: RecordSigner | None

    def alert(self, a: Alert) -> OutRecord:
        return OutRecord(self.names.alerts, orjson.dumps(alert_to_wire(a)), a.scope.encode())

    def breaker(self, event: BreakerEvent) -> OutRecord:
        """A breakers-topic record, signed when [breaker] has an HMAC key."""
        key, value = event.scope.encode(), orjson.dumps(breaker_to_wire(event))
        headers = None if self.signer is None else self.signer.headers("breaker", key, value)
        return OutRecord(self.names.breakers, value, key, headers)

    def dead_letter(self, d: DeadLetter) -> OutRecord:
        return OutRecord(self.names.dead_letters, orjson.dumps(dead_letter_to_wire(d)))

    def detection(
        self, alerts: Sequence[Alert], breaker_events: Sequence[BreakerEvent]
    ) -> list[OutRecord]:
        return [self.alert(a) for a in alerts] + [self.breaker(b) for b in breaker_events]

    def send(self, records: Sequence[OutRecord]) -> list[int | None]:
        """Publish and wait for every ack; raises the first failure (the caller replays).
        Returns where each record was written."""
        if not records:
            return []
        report = self.producer.send(records, SEND_TIMEOUT_S)
        if not report.ok:
            # Nothing queued may go out later, after the replay published it again.
            self.producer.abort()
            report.raise_first()
        return report.offsets


@dataclass(slots=True)
class IdleClock:
    """``[breaker] idle_advance_s``: when an engine has judged nothing for that long
    (processing time), its breakers move on by the quiet time, as if event time had passed
    (a key whose breaker stopped its only traffic must still close)."""

    wait_s: float
    clock: Callable[[], float] = time.monotonic
    judged_at: float = field(default=0.0)
    advanced_at: float = field(default=0.0)

    def __post_init__(self) -> None:
        self.judged_at = self.advanced_at = self.clock()

    def judged(self) -> None:
        self.judged_at = self.advanced_at = self.clock()

    def advance(self, engine: LocalEngine | ScopeEngine) -> list[BreakerEvent]:
        base = engine.breaker_time  # also an advance landed before a restart
        if not self.wait_s or base is None:
            return []
        now = self.clock()
        if now - self.judged_at < self.wait_s:
            return []
        events = engine.advance_breakers(base + timedelta(seconds=now - self.advanced_at))
        self.advanced_at = now
        return events
