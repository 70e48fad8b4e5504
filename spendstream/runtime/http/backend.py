"""What a worker's HTTP server needs from the rest of the worker: the ``WorkerBackend`` protocol.

The server (``spendstream.runtime.http.server``) judges request bodies itself (``check_body``,
``receive_traces``), checks the bearer token, and hands the rest to a backend:

``publish(usage, dead_letters)``
    ``usage``: accepted records as ``(key, value)`` pairs — the key is
    ``spendstream.topics.partition_key`` of the record, the value its raw JSON — for the usage
    topic (``[kafka] topic_prefix`` + ``spendstream.usage``), in the order given.
    ``dead_letters``: rejected inputs (``DeadLetter``, source ``http:<request-id>#<line>`` or
    ``http:/v1/traces``) for the dead-letters topic (``records.dead_letter_to_wire`` as JSON)
    *and* the warehouse's ``dead_letters`` table.
    Returns only when every usage record and dead letter is acknowledged by the broker
    (``acks=all``) and the dead letters are landed; that is when the client is answered 200.
    Raises a ``SpendstreamError`` (``KafkaUnavailable``, ``KafkaAuthError``, a
    ``WarehouseError``) when that cannot be done; the server then answers 503 and the
    client re-sends (a record already on the topic is then a duplicate, which the usage
    loop drops by ``event_id``).
    The backend also counts the dead letters in ``spendstream_dead_letters_total{stage="http"}``
    (``metrics.dead_letters``).

``breakers(include_closed)``
    Each scope's latest breaker transition as ``BreakerEvent``s, sorted by scope; without
    ``include_closed`` only scopes whose breaker is ``open`` or ``half_open``. Raises
    ``KafkaUnavailable`` when the states cannot be known yet (the server answers 503).

``assigned()``
    The partitions this worker holds now, as ``"<topic>/<partition>"`` strings (for
    ``GET /healthz``; empty between assignments).

``metrics``
    The worker's ``WorkerMetrics`` (``spendstream.runtime.http.metrics``): ``GET /metrics``
    renders it, the server counts its requests in it (``http_records``, ``otel_spans``); the
    worker's loops count the rest (``observe_facts`` with an Arrow facts table, ...).

Threads: the server calls ``publish``, ``breakers`` and ``assigned`` from its own worker
threads (never on its event loop), possibly several at once: implementations must be
thread-safe and may block.

``spendstream.runtime.http.kafka_backend.KafkaBackend`` is the implementation on the Kafka
adapter that ``spendstream run`` uses; tests may pass any object with these members.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from spendstream.records import BreakerEvent, DeadLetter
    from spendstream.runtime.http.metrics import WorkerMetrics

__all__ = ["UsageRecord", "WorkerBackend"]

# (partition key, raw JSON of one usage event), as spendstream.topics keys the usage topic.
UsageRecord = tuple[bytes, bytes]


@runtime_checkable
class WorkerBackend(Protocol):
    """The rest of the worker, as the HTTP server sees it (see the module docstring)."""

    @property
    def metrics(self) -> WorkerMetrics: ...

    def publish(self, usage: Sequence[UsageRecord], dead_letters: Sequence[DeadLetter]) -> None:
        """Usage records to the usage topic, dead letters to their topic and the warehouse;
        returns once all are acknowledged and landed, raises a SpendstreamError if not."""
        ...

    def breakers(self, include_closed: bool) -> list[BreakerEvent]:
        """Each scope's latest breaker event, by scope (closed ones only if asked)."""
        ...

    def assigned(self) -> list[str]:
        """``topic/partition`` of every partition this worker holds now."""
        ...
