"""What both loops publish: alerts, signed breaker transitions, dead letters."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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

__all__ = ["SEND_TIMEOUT_S", "Outputs"]

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
