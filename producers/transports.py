"""Where the Meter's background sender hands batches: Kafka or the pipeline's HTTP endpoint.

A transport sends one batch and says, per record, what became of it: sent, failed
(transport trouble: the Meter retries or spools it) or rejected (the receiver refused the
record itself: retrying cannot help, the Meter counts and logs it). A transport never
raises for transport trouble; it is called from one thread only.

A transport's ``destination`` names where it sends, canonically (the same brokers and
topic, or the same URL, give the same string): the Meter's spool keeps one destination's
events per slot. ``kept_in`` is set by the Meter to where failed events wait (its spool
slot), for the transport's log lines.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol
from urllib.parse import urlsplit, urlunsplit

from spendstream.errors import KafkaAuthError, KafkaClientError
from spendstream.kafka.settings import KafkaSettings, as_settings
from spendstream.log_filters import OncePer
from spendstream.producers.spool import ShortWrite, write_lines
from spendstream.topics import USAGE
from spendstream.wording import clipped, plural

if TYPE_CHECKING:
    from spendstream.kafka.producer import Producer

__all__ = [
    "FileTransport",
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
    """A ``spendstream.kafka`` producer: ``acks=all``, idempotent, lz4-compressed, keyed by the
    pipeline's key (murmur2, as the Java client hashes it).

    The batch waits for every acknowledgement (bounded by ``delivery_timeout_ms``), so the
    Meter knows which records reached the broker before it spools the rest. Through an
    outage shorter than ``delivery_timeout_ms`` (2 min, Kafka's default) the producer itself
    retries the batch in flight with its idempotent sequence numbers, so the broker keeps
    exactly one copy of a request whose answer was lost; meanwhile new events overflow the
    Meter's queue into the spool. Past that, the batch fails, is spooled and re-sent by a
    rebuilt producer: a record whose acknowledgement was lost then arrives twice (same
    event_id; the pipeline dedupes). A new producer first fetches the topic's metadata
    (at most ``max_block_ms``), so a broker that is away when sending starts fails the batch
    quickly; refused credentials (``KafkaAuthError``) fail it at once and are logged as errors.

    ``bootstrap_servers`` is an address or a ``KafkaSettings`` (SASL, TLS: see
    ``KafkaSettings.from_config``); other keywords are librdkafka settings, with dots or
    underscores (``linger_ms=20`` is ``linger.ms``).
    """

    name = "kafka"
    kept_in = "memory"  # the Meter's spool slot, once it has one

    def __init__(
        self,
        bootstrap_servers: str | list[str] | KafkaSettings,
        *,
        topic: str = USAGE,
        compression_type: str | None = "lz4",
        delivery_timeout_ms: int = 120_000,
        request_timeout_ms: int = 10_000,
        max_block_ms: int = 2_000,
        **producer_config: Any,
    ) -> None:
        self.topic = topic
        self.settings = as_settings(bootstrap_servers)
        self._config: dict[str, Any] = {
            "compression.type": compression_type or "none",
            "linger.ms": 5,
            "batch.size": 256 << 10,
            "delivery.timeout.ms": delivery_timeout_ms,
            "request.timeout.ms": request_timeout_ms,
            **{k.replace("_", "."): v for k, v in producer_config.items()},
        }
        self._producer: Producer | None = None
        self._connected = False
        self._max_block_s = max_block_ms / 1000
        self._flush_timeout_s = delivery_timeout_ms / 1000 + 2.0
        self._quiet = OncePer()

    @property
    def destination(self) -> str:
        """``kafka://<brokers>/<topic>``: brokers lower-cased, deduplicated and sorted, as
        any order of one cluster's bootstrap list reaches the same brokers."""
        servers = {s.strip().lower() for s in self.settings.bootstrap_servers.split(",")}
        return f"kafka://{','.join(sorted(s for s in servers if s))}/{self.topic}"

    def _ensure(self) -> Producer:
        if self._producer is None:
            from spendstream.kafka.producer import Producer

            self._producer = Producer(
                self.settings, client_id="spendstream-meter", config=self._config
            )
            self._connected = False
        if not self._connected:
            self._producer.check_connection(self._max_block_s, self.topic)
            self._connected = True
        return self._producer

    def _reset(self) -> None:
        if self._producer is not None:
            # Drop what it still holds, so no record it had is delivered behind the spool.
            self._producer.abort()
            self._producer = None

    def send(self, records: Sequence[Record]) -> SendResult:
        from spendstream.kafka.producer import OutRecord

        result = SendResult()
        try:
            producer = self._ensure()
            report = producer.send(
                [OutRecord(self.topic, rec.value, rec.key) for rec in records],
                self._flush_timeout_s,
            )
        except KafkaClientError as exc:  # away, refused, or misconfigured
            self._log_failure(exc, len(records))
            self._reset()
            result.failed = list(range(len(records)))
            return result
        if report.failed:
            self._log_failure(report.failed[0][1], len(report.failed))
            result.failed = [i for i, _ in report.failed]
            self._reset()
        return result

    def _log_failure(self, exc: KafkaClientError, count: int) -> None:
        # Said at every retry while the broker is away: once a minute for one kind of error.
        if not self._quiet.due((type(exc), getattr(exc, "code", None))):
            return
        level = logging.ERROR if isinstance(exc, KafkaAuthError) else logging.WARNING
        log.log(
            level,
            "Kafka did not take %s, kept for retry in %s: %s",
            plural(count, "event"),
            self.kept_in,
            exc,
        )

    def after_fork(self) -> None:
        # The parent's client threads do not exist here: destroying its handle would wait
        # for them forever. Keep it referenced, unused, and start afresh.
        if self._producer is not None:
            _FORK_ORPHANS.append(self._producer)
        self._producer = None

    def close(self) -> None:
        if self._producer is not None:
            # Nothing is pending here: the Meter spooled it already.
            self._producer.close(timeout_s=5)
            self._producer = None


_FORK_ORPHANS: list[Any] = []


def _rejected_lines(body: bytes, sent: int) -> list[tuple[int, str]] | None:
    """The (index, reason) of each event the endpoint's answer rejects, or None unless the
    answer accounts for every one of the ``sent`` lines (accepted + rejected)."""
    try:
        answer = json.loads(body)
        accepted = answer["accepted"]
        rejected = [(int(item["line"]) - 1, str(item["error"])) for item in answer["rejected"]]
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    if type(accepted) is not int or accepted + len(rejected) != sent:
        return None
    if any(not 0 <= i < sent for i, _ in rejected):
        return None
    return rejected


_WRONG_URL = (
    " (no spendstream ingest endpoint there: give Meter.http the server's base URL, e.g. "
    "http://host:8787, where `spendstream run` listens)"
)
_MISCONFIGURED = {
    401: " (the token is not the server's: Meter.http's token, $SPENDSTREAM_INGEST_TOKEN for "
    "Meter.from_env, against [http] token_env/token_file of `spendstream run`)",
    403: " (the token is not allowed)",
    404: _WRONG_URL,
    405: _WRONG_URL,
}


class HttpTransport:
    """POST ``<base_url>/v1/events``: a JSON Lines body, one event a line, bearer token.

    200 answers ``{"accepted": n, "rejected": [{"line": i, "error": "..."}]}`` (1-based
    lines). Connection errors, 5xx, 401/403 (a credential problem the operator must fix:
    keep the events), 404/405 (no ingest endpoint at that URL: the same), 408 and 429 are
    failures to retry; 413 sends the batch again in halves (one event alone: rejected);
    other 4xx reject the whole batch.
    """

    name = "http"
    kept_in = "memory"  # the Meter's spool slot, once it has one

    def __init__(self, base_url: str, token: str, *, timeout_s: float = 10.0) -> None:
        # The endpoint's own URL is what the OTLP docs show for /v1/traces: take it too.
        self.url = base_url.rstrip("/").removesuffix("/v1/events") + "/v1/events"
        self._token, self._timeout_s = token, timeout_s
        self._client = self._new_client()
        self._quiet = OncePer()

    @property
    def destination(self) -> str:
        """The endpoint's URL, scheme and host lower-cased, a default port dropped (the token
        is no part of it: it is written to disk)."""
        parts = urlsplit(self.url)
        scheme = parts.scheme.lower()
        host = (parts.hostname or "").lower()
        if ":" in host:
            host = f"[{host}]"  # an IPv6 literal
        default = {"http": 80, "https": 443}.get(scheme)
        netloc = host if parts.port in (None, default) else f"{host}:{parts.port}"
        return urlunsplit((scheme, netloc, parts.path, parts.query, ""))

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
            if self._quiet.due("unreachable"):  # once a minute while it stays so
                log.warning(
                    "ingest endpoint %s unreachable (%s): %s kept for retry in %s",
                    self.destination,
                    exc,
                    plural(len(records), "event"),
                    self.kept_in,
                )
            result.failed = list(range(len(records)))
            return result
        status = resp.status_code
        if status >= 500 or status in (401, 403, 404, 405, 408, 429):
            # 401/403: the token; 404/405: not an ingest endpoint at this URL. Both are the
            # operator's to fix, and no event is at fault: keep them all.
            level = logging.ERROR if status in _MISCONFIGURED else logging.WARNING
            if self._quiet.due(status):  # once a minute per status while it lasts
                log.log(
                    level,
                    "ingest endpoint %s answered %d%s: %s kept for retry in %s",
                    self.destination,
                    status,
                    _MISCONFIGURED.get(status, ""),
                    plural(len(records), "event"),
                    self.kept_in,
                )
            result.failed = list(range(len(records)))
        elif status == 413 and len(records) > 1:
            # Too large a body (a proxy's limit: nginx's is 1 MB), not bad events: halves.
            half = len(records) // 2
            first, second = self.send(records[:half]), self.send(records[half:])
            result.failed = first.failed + [half + i for i in second.failed]
            result.rejected = first.rejected + [(half + i, why) for i, why in second.rejected]
        elif status >= 400:
            reason = f"HTTP {status}: {resp.text[:200]}"
            result.rejected = [(i, reason) for i in range(len(records))]
        elif not 200 <= status < 300:
            # A redirect (a load balancer sending http to https; httpx follows none): the
            # events went nowhere. Counted as sent, they were lost without a word.
            if self._quiet.due(status):
                log.error(
                    "ingest endpoint %s answered %d%s: %s kept for retry in %s",
                    self.destination,
                    status,
                    f" (to {clipped(resp.headers['location'], 200)}: give Meter.http that URL)"
                    if "location" in resp.headers
                    else "",
                    plural(len(records), "event"),
                    self.kept_in,
                )
            result.failed = list(range(len(records)))
        else:
            rejected = _rejected_lines(resp.content, len(records))
            if rejected is None:
                # Not an answer of spendstream's endpoint (a proxy's page, `{}`): a success
                # that does not say what was taken. Counted as sent: sent again, a proxy that
                # always answers so would hold the batch at the spool's head for ever.
                if self._quiet.due("unread"):
                    log.error(
                        "ingest endpoint %s answered %d without saying what it took of %s (a "
                        'spendstream endpoint answers {"accepted": n, "rejected": [...]} '
                        "for every line: is something else at this URL?); counted as sent",
                        self.destination,
                        status,
                        plural(len(records), "event"),
                    )
            else:
                result.rejected = rejected
        return result

    def close(self) -> None:
        self._client.close()


class FileTransport:
    """Appends events as JSON Lines to a file, for the embedded pipeline: ``spendstream ingest
    FILE`` lands them (again and again: a replayed line is a duplicate by its event_id), and
    ``tail -F FILE | spendstream ingest -`` lands them as they come, with no server.

    One write per batch, in append mode: processes sharing the file add whole batches. A
    write the disk cuts short (a full disk) counts the lines it wrote whole as sent and keeps
    the rest for retry; a line it tore is ended before the next batch (one dead letter to
    ``ingest``, not glued to the first event sent again), and the retried events land once."""

    name = "file"
    kept_in = "memory"  # the Meter's spool slot, once it has one

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser().absolute()
        self.destination = f"file://{self.path}"
        self._quiet = OncePer(60.0)

    def send(self, records: Sequence[Record]) -> SendResult:
        lines = [rec.value + b"\n" for rec in records]
        try:
            with self.path.open("a+b", buffering=0) as f:
                if f.seek(0, os.SEEK_END) and _last_byte(f) != b"\n":
                    # A write cut short before (a full disk) left a torn line: ended here,
                    # it is one dead letter, not glued to the first event sent again.
                    lines[0] = b"\n" + lines[0]
                write_lines(f, lines)
        except OSError as exc:
            # Lines written whole landed: sent again, each would be a duplicate in the file.
            sent = exc.lines if isinstance(exc, ShortWrite) else 0
            if self._quiet.due("write"):
                log.warning(
                    "cannot append to %s (%s): %s kept for retry in %s",
                    self.path,
                    exc,
                    plural(len(records) - sent, "event"),
                    self.kept_in,
                )
            return SendResult(failed=list(range(sent, len(records))))
        return SendResult()

    def after_fork(self) -> None:
        pass  # nothing inherited to forget: the file is opened for each batch

    def close(self) -> None:
        pass


def _last_byte(f: Any) -> bytes:
    f.seek(-1, os.SEEK_END)
    last: bytes = f.read(1)
    return last
