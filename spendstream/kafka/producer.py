"""The producer: batched produce with a delivery report per record, flush with a timeout,
and Kafka transactions (for a runtime that commits offsets with its output).

Defaults: ``acks=all``, idempotence on, and keys hashed with murmur2 like the Java client
(``partitioner=murmur2_random``) so a key lands in the partition the contract says, whatever
client produced it. Records are ``OutRecord(topic, value, key, headers)``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import confluent_kafka

from spendstream.errors import KafkaClientError, KafkaUnavailable
from spendstream.kafka._errors import ErrorLatch, RdError, translate
from spendstream.kafka._waits import fetch_metadata
from spendstream.kafka.settings import KafkaSettings, as_settings, client_config

__all__ = ["DeliveryReport", "OutRecord", "Producer"]

Headers = Sequence[tuple[str, bytes]]
DeliveryCallback = Callable[[Any, Any], None]  # (KafkaError | None, Message)

_WAIT_SLICE_S = 0.2  # how often a wait looks at error_cb's news (refused credentials)


class OutRecord(NamedTuple):
    topic: str
    value: bytes | None
    key: bytes | None = None
    headers: Headers | None = None
    partition: int | None = None  # this partition, not the key's


@dataclass(slots=True)
class DeliveryReport:
    """What became of a batch: ``failed`` holds (index in the batch, why), in order."""

    total: int
    failed: list[tuple[int, KafkaClientError]] = field(default_factory=list)
    # Where each delivered record was written (None: not delivered).
    offsets: list[int | None] = field(default_factory=list)

    @property
    def delivered(self) -> int:
        return self.total - len(self.failed)

    @property
    def ok(self) -> bool:
        return not self.failed

    def raise_first(self) -> None:
        """Raise the first failure's error, if any."""
        if self.failed:
            raise self.failed[0][1]


class Producer:
    """One librdkafka producer. Thread-safe for ``produce``; ``send`` waits for its batch."""

    def __init__(
        self,
        settings: KafkaSettings | str,
        *,
        client_id: str = "spendstream",
        transactional_id: str | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self.settings = as_settings(settings)
        self._latch = ErrorLatch()
        defaults: dict[str, Any] = {
            "acks": "all",
            "enable.idempotence": True,
            "partitioner": "murmur2_random",
            "linger.ms": 5,
            "error_cb": self._latch,
        }
        if transactional_id is not None:
            defaults["transactional.id"] = transactional_id
        conf = client_config(self.settings, client_id, defaults, config)
        try:
            self._p = confluent_kafka.Producer(conf)
        except confluent_kafka.KafkaException as exc:
            raise translate(exc.args[0], "cannot create a Kafka producer") from None

    # --- producing ---------------------------------------------------------------------

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        *,
        headers: Headers | None = None,
        partition: int | None = None,
        on_delivery: DeliveryCallback | None = None,
        queue_timeout_s: float = 30.0,
    ) -> None:
        """Queue one record; waits (serving delivery reports) while the local queue is full.

        ``partition``: this partition, not the key's (a reply to where its reader listens)."""
        deadline = time.monotonic() + queue_timeout_s
        extra: dict[str, Any] = {}
        if headers:
            extra["headers"] = list(headers)
        if partition is not None:
            extra["partition"] = partition
        while True:
            try:
                self._p.produce(topic, value, key, on_delivery=on_delivery, **extra)
                return
            except BufferError:
                if time.monotonic() >= deadline:
                    raise KafkaUnavailable(
                        f"producer queue still full after {queue_timeout_s:.0f}s "
                        f"({self.settings.describe()})",
                        code="_QUEUE_FULL",
                        retriable=True,
                    ) from None
                self._p.poll(0.05)
            except confluent_kafka.KafkaException as exc:
                raise translate(exc.args[0], f"cannot produce to {topic}") from None

    def send(self, records: Sequence[OutRecord], timeout_s: float) -> DeliveryReport:
        """Produce every record and wait up to ``timeout_s`` for each delivery report.

        A record not reported by then counts as failed (``KafkaUnavailable``, or
        ``KafkaAuthError`` when the broker refused our credentials meanwhile): it may
        still be in the client's queue, so call ``abort()`` before re-sending it elsewhere.
        The wait ends early when the broker refuses our credentials.
        """
        report = DeliveryReport(len(records), offsets=[None] * len(records))
        results: list[RdError | bool | None] = [False] * len(records)  # False: no report yet
        offsets = report.offsets

        def reporter(i: int) -> DeliveryCallback:
            def done(err: Any, msg: Any) -> None:
                results[i] = err
                if err is None:
                    offsets[i] = msg.offset()

            return done

        deadline = time.monotonic() + timeout_s
        produced = len(records)
        for i, rec in enumerate(records):
            try:
                self.produce(
                    rec.topic,
                    rec.value,
                    rec.key,
                    headers=rec.headers,
                    partition=rec.partition,
                    on_delivery=reporter(i),
                    queue_timeout_s=max(0.0, deadline - time.monotonic()),
                )
            except KafkaUnavailable as exc:  # the queue stayed full: the rest cannot go
                report.failed.extend((j, exc) for j in range(i, len(records)))
                produced = i
                break
            except KafkaClientError as exc:  # this record alone (too large, say)
                report.failed.append((i, exc))
                results[i] = None
        pending = produced
        while pending:
            left = deadline - time.monotonic()
            self._p.flush(max(0.0, min(_WAIT_SLICE_S, left)))
            pending = sum(1 for r in results[:produced] if r is False)
            if left <= 0 or self._latch.blocking() is not None:
                break
        refused = {i for i, _ in report.failed}
        for i in range(produced):
            outcome = results[i]
            if outcome is None or i in refused:
                continue
            if outcome is False:
                report.failed.append((i, self._timeout_error(timeout_s)))
            else:
                assert not isinstance(outcome, bool)
                report.failed.append((i, self._delivery_error(outcome, records[i].topic)))
        report.failed.sort(key=lambda f: f[0])
        return report

    def _timeout_error(self, timeout_s: float) -> KafkaClientError:
        why = self._latch.reason()
        if why is not None:
            return translate(why, "not acknowledged", self.settings.describe())
        return KafkaUnavailable(
            f"not acknowledged within {timeout_s:.1f}s ({self.settings.describe()})",
            code="_TIMED_OUT",
            retriable=True,
        )

    def _delivery_error(self, err: RdError, topic: str) -> KafkaClientError:
        why = self._latch.blocking() if err.name() == "_MSG_TIMED_OUT" else None
        return translate(why or err, f"delivery to {topic} failed", self.settings.describe())

    def poll(self, timeout_s: float = 0.0) -> int:
        """Serve delivery reports (and error callbacks); returns how many were served."""
        return int(self._p.poll(timeout_s))

    def flush(self, timeout_s: float) -> int:
        """Wait for every queued record's report; returns how many are still pending."""
        return int(self._p.flush(timeout_s))

    def pending(self) -> int:
        """Records queued or in flight, and reports not yet served (``poll``)."""
        return len(self._p)

    def abort(self) -> None:
        """Drop every queued and in-flight record (their reports say so) so none is sent
        later; records already on the wire may still arrive."""
        self._p.purge(in_queue=True, in_flight=True, blocking=False)
        self._p.poll(0)

    def check_connection(self, timeout_s: float, topic: str | None = None) -> int:
        """Fetch metadata (of ``topic``, else the cluster) within ``timeout_s``: raises
        ``KafkaAuthError`` or ``KafkaUnavailable``; returns the topic's partition count
        (0 when it does not exist yet, or for the cluster)."""
        meta = fetch_metadata(
            self._p.list_topics,
            lambda: self._p.poll(0),
            self._latch,
            topic,
            timeout_s,
            self.settings.describe(),
        )
        if topic is None:
            return 0
        found = meta.topics.get(topic)
        return 0 if found is None or found.error is not None else len(found.partitions)

    def close(self, timeout_s: float = 10.0) -> int:
        """Deliver what is pending within ``timeout_s``, drop the rest; returns how many
        records were dropped."""
        left = self._p.flush(timeout_s)
        if left:
            self.abort()
        return int(left)

    # --- transactions (transactional_id given) ----------------------------------------

    def _txn(self, what: str, call: Callable[[], Any]) -> None:
        try:
            call()
        except confluent_kafka.KafkaException as exc:
            raise translate(exc.args[0], what, self.settings.describe()) from None

    def init_transactions(self, timeout_s: float = 30.0) -> None:
        self._txn("init_transactions", lambda: self._p.init_transactions(timeout_s))

    def begin_transaction(self) -> None:
        self._txn("begin_transaction", self._p.begin_transaction)

    def send_offsets_to_transaction(
        self, offsets: Mapping[tuple[str, int], int], group_metadata: Any, timeout_s: float = 30.0
    ) -> None:
        """Commit consumer positions (next offset to read) with the transaction."""
        tps = [confluent_kafka.TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        self._txn(
            "send_offsets_to_transaction",
            lambda: self._p.send_offsets_to_transaction(tps, group_metadata, timeout_s),
        )

    def commit_transaction(self, timeout_s: float = 30.0) -> None:
        """On error, call ``abort_transaction`` (the output and offsets are then discarded)."""
        self._txn("commit_transaction", lambda: self._p.commit_transaction(timeout_s))

    def abort_transaction(self, timeout_s: float = 30.0) -> None:
        self._txn("abort_transaction", lambda: self._p.abort_transaction(timeout_s))
