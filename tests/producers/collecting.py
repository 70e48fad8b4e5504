"""A Meter transport that keeps what it is sent (like quix-streams' ListSink), for tests."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import Any

from spendstream.producers.meter import Meter
from spendstream.producers.transports import Record, SendResult


class CollectingTransport:
    name = "collect"

    def __init__(self) -> None:
        self.records: list[Record] = []
        self._lock = threading.Lock()

    def send(self, records: Sequence[Record]) -> SendResult:
        with self._lock:
            self.records.extend(records)
        return SendResult()

    def close(self) -> None:
        pass

    def after_fork(self) -> None:
        pass

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [json.loads(r.value) for r in self.records]


def collecting_meter(**defaults: Any) -> tuple[Meter, CollectingTransport]:
    transport = CollectingTransport()
    return Meter(transport, spool_dir=None, linger_s=0.001, defaults=defaults), transport


def flushed(meter: Meter, transport: CollectingTransport) -> list[dict[str, Any]]:
    assert meter.flush(timeout_s=30)
    return transport.events()
