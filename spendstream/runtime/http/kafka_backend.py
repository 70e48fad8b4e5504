"""``KafkaBackend``: the HTTP server's ``WorkerBackend`` on the Kafka adapter.

- ``publish``: one ``spendstream.kafka.Producer`` (``acks=all``, idempotent, murmur2 keys like
  the Java client, so a record lands in the partition ``spendstream.topics.partition_key``
  promises) sends the usage records and the dead letters and waits for every delivery
  report; the dead letters are then landed by ``land_dead_letters`` (the runtime's own
  warehouse writer), or by a writer of this backend's own (``writer``) when none is given.
- ``breakers``: a ``producers.guard.BreakerView`` of the compacted breakers topic, kept
  with closed transitions (``keep_closed``), verifying signatures with the ``[breaker]``
  HMAC key when one is configured. The topic, not the warehouse, because: it is what
  ``guard()`` enforces, so ``GET /v1/breakers`` shows clients that cannot read Kafka exactly
  what clients that can are refused by; a transition is on the topic before it is in the
  warehouse (it is published before the warehouse commit), and a manual reset is visible at
  once; the view answers from memory, where a warehouse read per request is a catalog round
  trip and file reads (seconds on S3); and every worker's view holds every scope, whichever
  worker's loop moved it. A forged record (bad signature) is ignored as ``guard()`` ignores it.
- ``assigned``: a callable the runtime passes (its consumers' assignments).
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, cast

import orjson

from spendstream.errors import ConfigError, KafkaUnavailable
from spendstream.kafka.producer import OutRecord, Producer
from spendstream.kafka.settings import KafkaSettings
from spendstream.records import BreakerEvent, BreakerState, DeadLetter, dead_letter_to_wire
from spendstream.runtime.http.backend import UsageRecord
from spendstream.runtime.http.metrics import WorkerMetrics
from spendstream.topics import BREAKERS, DEAD_LETTERS, USAGE

if TYPE_CHECKING:
    from spendstream.config import Config
    from spendstream.producers.guard import BreakerView
    from spendstream.warehouse import Warehouse

__all__ = ["KafkaBackend", "LandDeadLetters"]

LandDeadLetters = Callable[[Sequence[DeadLetter]], object]


def _no_assignment() -> list[str]:
    return []


class KafkaBackend:
    """``WorkerBackend`` on Kafka: ``start()`` (the breaker view), then serve; ``close()``."""

    def __init__(
        self,
        config: Config,
        *,
        settings: KafkaSettings | None = None,
        producer: Producer | None = None,
        metrics: WorkerMetrics | None = None,
        land_dead_letters: LandDeadLetters | None = None,
        workdir: Path | None = None,
        writer: str | None = None,
        assigned: Callable[[], list[str]] = _no_assignment,
        send_timeout_s: float = 30.0,
        ready_timeout_s: float = 10.0,
    ) -> None:
        """``producer``: share the worker's producer (else one of its own, closed by
        ``close``); not a transactional one, whose records outside a transaction fail. Dead letters land through ``land_dead_letters`` when given, else through a
        warehouse writer of ``workdir`` named ``writer`` (default ``http/<host>-<pid>``: a
        writer name must be unique among running processes, or the second is fenced)."""
        if land_dead_letters is None and workdir is None:
            raise ConfigError("KafkaBackend needs land_dead_letters or a workdir to land in")
        self.config = config
        self.settings = settings or KafkaSettings.from_config(config.kafka)
        prefix = config.kafka.topic_prefix
        self.usage_topic = prefix + USAGE
        self.dead_letters_topic = prefix + DEAD_LETTERS
        self.breakers_topic = prefix + BREAKERS
        self._own_producer = producer is None
        self.producer = producer or Producer(self.settings, client_id="spendstream-http")
        self._metrics = metrics or WorkerMetrics(label_values=config.http.metrics_label_values)
        self._land = land_dead_letters
        self._workdir = workdir
        self._writer = writer or f"http/{socket.gethostname()}-{os.getpid()}"
        self._warehouse: Warehouse | None = None
        self._land_lock = threading.Lock()
        self._assigned = assigned
        self.send_timeout_s = send_timeout_s
        self.ready_timeout_s = ready_timeout_s
        self._view: BreakerView | None = None

    @property
    def metrics(self) -> WorkerMetrics:
        return self._metrics

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> KafkaBackend:
        """Start following the breakers topic (a ConfigError if the HMAC key is missing)."""
        if self._view is None:
            from spendstream.producers.guard import BreakerView
            from spendstream.signing import load_breaker_signer

            self._view = BreakerView(
                self.settings,
                self.breakers_topic,
                signer=load_breaker_signer(self.config.breaker),
                keep_closed=True,
            ).start()
        return self

    def close(self) -> None:
        if self._view is not None:
            self._view.close()
            self._view = None
        if self._own_producer:
            self.producer.close(timeout_s=10)
        with self._land_lock:
            if self._warehouse is not None:
                self._warehouse.close()
                self._warehouse = None

    def __enter__(self) -> KafkaBackend:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- WorkerBackend -------------------------------------------------------------------

    def publish(self, usage: Sequence[UsageRecord], dead_letters: Sequence[DeadLetter]) -> None:
        records = [OutRecord(self.usage_topic, value, key) for key, value in usage]
        records += [
            OutRecord(self.dead_letters_topic, orjson.dumps(dead_letter_to_wire(d)))
            for d in dead_letters
        ]
        if not records:
            return
        self.producer.send(records, timeout_s=self.send_timeout_s).raise_first()
        self._metrics.events_out.labels(self.usage_topic).inc(len(usage))
        if dead_letters:
            self._land_dead_letters(dead_letters)
            self._metrics.dead_letters.labels("http").inc(len(dead_letters))

    def _land_dead_letters(self, dead_letters: Sequence[DeadLetter]) -> None:
        if self._land is not None:
            self._land(dead_letters)
            return
        from spendstream.table_schemas import dead_letters_table
        from spendstream.warehouse import Warehouse

        with self._land_lock:  # one writer: its commits are a sequence
            if self._warehouse is None:
                assert self._workdir is not None
                self._warehouse = Warehouse(
                    self._workdir, writer=self._writer, config=self.config.warehouse
                )
            self._warehouse.commit(dead_letters=dead_letters_table(dead_letters))

    def breakers(self, include_closed: bool) -> list[BreakerEvent]:
        view = self._view
        if view is None:
            raise KafkaUnavailable("breaker states are not followed (backend not started)")
        if not view.ready and not view.wait_ready(self.ready_timeout_s):
            why = f": {view.error}" if view.error is not None else ""
            raise KafkaUnavailable(
                f"breaker states not read from {self.breakers_topic} yet{why}", retriable=True
            )
        out = []
        for scope, entry in sorted(view.latest(include_closed).items()):
            try:
                ts = datetime.fromisoformat(entry.ts)
            except ValueError:
                continue  # not a transition spendstream published: its ts is not an ISO time
            out.append(BreakerEvent(scope, cast(BreakerState, entry.state), entry.reason, ts))
        return out

    def assigned(self) -> list[str]:
        return list(self._assigned())
