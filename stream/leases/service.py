"""The lease service in process: the ledger behind a lock, on the wall clock.

For the embedded runtime and tests: clients in the same process call it directly (no
network, no durability: a restart starts from ``snapshot()`` if the host kept one). The
Kafka path (``spendstream.kafka_leases``) runs the same ledger behind a topic.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from spendstream.producers.lease_protocol import (
    LeaseRelease,
    LeaseReply,
    LeaseRequest,
    LeaseSettle,
)
from spendstream.stream.leases.lease import Spend
from spendstream.stream.leases.ledger import LeaseLedger

__all__ = ["LocalLeaseService"]


def _utcnow() -> datetime:
    return datetime.now(UTC)


class LocalLeaseService:
    """A ``LeaseService`` answering from a ``LeaseLedger`` in this process (thread-safe)."""

    def __init__(self, ledger: LeaseLedger, clock: Callable[[], datetime] = _utcnow) -> None:
        self.ledger = ledger
        self._clock = clock
        self._lock = threading.Lock()

    def request(self, request: LeaseRequest, timeout_s: float) -> LeaseReply:
        # In process the answer is immediate: the timeout bounds nothing here.
        with self._lock:
            return self.ledger.request(request, self._clock())

    def settle(self, settle: LeaseSettle) -> None:
        with self._lock:
            self.ledger.settle(settle, self._clock())

    def release(self, release: LeaseRelease) -> None:
        with self._lock:
            self.ledger.release(release, self._clock())

    def land(self, source: str, position: int, spends: Iterable[Spend]) -> int:
        """One landed batch (``LeaseLedger.land``), e.g. from the embedded runtime."""
        with self._lock:
            return self.ledger.land(source, position, spends, self._clock())

    def snapshot(self) -> bytes:
        with self._lock:
            return self.ledger.snapshot()

    def close(self) -> None:
        """Nothing to release: the ledger lives as long as its owner keeps it."""
