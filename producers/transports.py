"""Where the Meter's background sender hands batches: Kafka or the pipeline's HTTP endpoint.

A transport sends one batch and says, per record, what became of it: sent, failed
(transport trouble: the Meter retries or spools it) or rejected (the receiver refused the
record itself: retrying cannot help, the Meter counts and logs it). A transport never
raises for transport trouble; it is called from one thread only.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from spendstream.topics import USAGE

__all__ = [
    "HttpTransport",
    "KafkaTransport",
    "Record",
    "SendResult",
    "Transport",
]

log = logging.getLogger("spendstream.producers")


class Record(NamedTuple):
    key: bytes  # spendstream.topics.partition_key(...)
    value: bytes  # the event's JSON, UTF-8


@dataclass(slots=True)
class SendResult:
    failed: list[int] = field(default_factory=list)  # indices to retry, in order
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (index, reason)


class Transport(Protocol):
    name: str

    def send(self, records: Sequence[Record]) -> SendResult: ...

    def close(self) -> None: ...

    def after_fork(self) -> None:
        """In a forked child: forget connections inherited from the parent (never close them)."""


class KafkaTransport:
    """kafka-python producer: ``acks=all``, idempotent, compressed, keyed by the pipeline's key.

    The batch waits for every acknowledgement (bounded by ``delivery_timeout_ms``), so the
    Meter knows which records reached the broker before it spools the rest. Through an
    outage shorter than ``delivery_timeout_ms`` (2 min, Kafka's default) the producer itself
    retries the batch in flight with its idempotent sequence numbers, so the broker keeps
    exactly one copy of a request whose answer was lost; meanwhile new events overflow the
    Meter's queue into the spool. Past that, the batch fails, is spooled and re-sent by a
    rebuilt producer: a record whose acknowledgement was lost then arrives twice (same
    event_id; the pipeline dedupes).
    """

    name = "kafka"

    def __init__(
        self,
        bootstrap_servers: str | list[str],
        *,
        topic: str = USAGE,
        compression_type: str | None = "gzip",
        delivery_timeout_ms: int = 120_000,
        request_timeout_ms: int = 10_000,
        max_block_ms: int = 2_000,
        **producer_config: Any,
    ) -> None:
        self.topic = topic
        self._config: dict[str, Any] = {
            "bootstrap_servers": bootstrap_servers,
            "acks": "all",
            "enable_idempotence": True,
            "compression_type": compression_type,
            "linger_ms": 5,
            "batch_size": 256 << 10,
            "delivery_timeout_ms": delivery_timeout_ms,
            "request_timeout_ms": request_timeout_ms,
            "max_block_ms": max_block_ms,
            "client_id": "spendstream-meter",
            **producer_config,
        }
        self._producer: Any = None
        self._flush_timeout_s = delivery_timeout_ms / 1000 + 2.0

    def _ensure(self) -> Any:
        if self._producer is None:
            from kafka import KafkaProducer

            self._producer = KafkaProducer(**self._config)
        return self._producer

    def _reset(self) -> None:
        if self._producer is not None:
            _force_close(self._producer)
            self._producer = None

    def send(self, records: Sequence[Record]) -> SendResult:
        result = SendResult()
        try:
            producer = self._ensure()
        except Exception as exc:  # NoBrokersAvailable and friends: the broker is away
            log.warning("Kafka unreachable (%s): %d events kept for retry", exc, len(records))
            result.failed = list(range(len(records)))
            return result
        futures: list[tuple[int, Any]] = []
        for i, rec in enumerate(records):
            try:
                futures.append((i, producer.send(self.topic, key=rec.key, value=rec.value)))
            except Exception as exc:  # metadata wait timed out: stop here to keep order
                log.warning("Kafka send failed (%s): %d events kept", exc, len(records) - i)
                result.failed.extend(range(i, len(records)))
                break
        try:
            # kafka-python can wait forever here after expiring batches on a dead broker:
            # bound the wait; what is not acknowledged by then counts as failed.
            producer.flush(timeout=self._flush_timeout_s)
        except Exception as exc:
            log.warning("Kafka did not acknowledge the batch in time (%s)", exc)
        for i, fut in futures:
            if not fut.is_done or fut.failed():
                result.failed.append(i)
        result.failed.sort()
        if result.failed:
            self._reset()
        return result

    def after_fork(self) -> None:
        # The parent's producer thread does not exist here, and its sockets are the parent's.
        self._producer = None

    def close(self) -> None:
        if self._producer is not None:
            try:
                self._producer.close(timeout=5)
            except Exception:  # nothing is pending here: the Meter spooled it already
                _force_close(self._producer)
            self._producer = None


def _force_close(producer: Any) -> None:
    """Stop a producer for good, so that no record it still holds is delivered later.

    ``KafkaProducer.close(timeout=0)`` raises from its flush before reaching its own force
    close when records are pending, leaving the sender thread alive: finish the job.
    """
    try:
        producer.close(timeout=0)
    except Exception:
        sender = getattr(producer, "_sender", None)
        if sender is not None and sender.is_alive():
            sender.force_close()


class HttpTransport:
    """POST ``<base_url>/v1/events``: a JSON Lines body, one event a line, bearer token.

    200 answers ``{"accepted": n, "rejected": [{"line": i, "error": "..."}]}`` (1-based
    lines). Connection errors, 5xx, 401/403 (a credential problem the operator must fix:
    keep the events) and 429 are failures to retry; other 4xx reject the whole batch.
    """

    name = "http"

    def __init__(self, base_url: str, token: str, *, timeout_s: float = 10.0) -> None:
        self.url = base_url.rstrip("/") + "/v1/events"
        self._token, self._timeout_s = token, timeout_s
        self._client = self._new_client()

    def _new_client(self) -> Any:
        import httpx

        return httpx.Client(
            timeout=self._timeout_s,
            headers={
                "Authorization": f"Bearer {self._token}",
                "Content-Type": "application/x-ndjson",
            },
        )

    def after_fork(self) -> None:
        # Pooled connections are the parent's: a fresh client, the old one left alone.
        self._client = self._new_client()

    def send(self, records: Sequence[Record]) -> SendResult:
        import httpx

        result = SendResult()
        body = b"".join(rec.value + b"\n" for rec in records)
        try:
            resp = self._client.post(self.url, content=body)
        except httpx.HTTPError as exc:
            log.warning("ingest endpoint unreachable (%s): %d events kept", exc, len(records))
            result.failed = list(range(len(records)))
            return result
        status = resp.status_code
        if status >= 500 or status in (401, 403, 408, 429):
            level = logging.ERROR if status in (401, 403) else logging.WARNING
            log.log(level, "ingest endpoint answered %d: %d events kept", status, len(records))
            result.failed = list(range(len(records)))
        elif status >= 400:
            reason = f"HTTP {status}: {resp.text[:200]}"
            result.rejected = [(i, reason) for i in range(len(records))]
        else:
            try:
                answer = json.loads(resp.content)
                for item in answer.get("rejected", []):
                    result.rejected.append((int(item["line"]) - 1, str(item["error"])))
            except (ValueError, KeyError, TypeError, AttributeError):
                log.warning("ingest endpoint answered 200 with an unreadable body")
        return result

    def close(self) -> None:
        self._client.close()
