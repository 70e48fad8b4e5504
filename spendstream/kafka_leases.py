"""Budget leases over Kafka: the client's request/reply path and the lease server's loop.

Every Kafka client here is the project's adapter (``spendstream.kafka``): settings are
``KafkaSettings`` (``KafkaSettings.from_config`` for SASL/TLS), failures are
``spendstream.errors`` Kafka errors. Round 2 hosts the server loop in the scope-owning
worker of ``spendstream run``.

Topics (docs/budget-leases.md, "On Kafka"):

- ``spendstream.lease-requests``: requests, settlements and releases, keyed by the budget
  scope (murmur2, as Kafka's Java clients): every message for a scope reaches the one
  server that owns its partition, in order. Header ``reply-partition``: where to answer.
- ``spendstream.lease-replies``: grants and refusals, produced to the partition the client
  named (each client reads only its own partition, from where it stood when it started).
- ``spendstream.lease-ledger``: the ledger's changelog, compacted, partitioned like the
  requests (a scope's records sit in its request partition's number).

The server answers inside a Kafka transaction that also holds the ledger records the
answer changed and the consumed request offsets: a grant is never visible (clients read
``read_committed``) unless it is durable, and a server killed mid-batch leaves nothing half
done. On assignment a server rebuilds its scopes from the changelog before answering.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from spendstream import topics
from spendstream.errors import KafkaClientError, LeaseUnavailable, SpendstreamError
from spendstream.kafka import (
    Admin,
    Consumer,
    KafkaSettings,
    Message,
    Partition,
    Producer,
    TopicSpec,
    as_settings,
)
from spendstream.kafka.consumer import BEGINNING
from spendstream.producers.lease_protocol import (
    LeaseGrant,
    LeaseMessage,
    LeaseRefusal,
    LeaseRelease,
    LeaseReply,
    LeaseRequest,
    LeaseSettle,
    decode,
    encode,
)

__all__ = [
    "REPLY_PARTITION_HEADER",
    "KafkaLeaseService",
    "LeaseBook",
    "LeaseServer",
    "LeaseTopics",
    "RecordKey",
    "ensure_lease_topics",
    "read_ledger",
]

log = logging.getLogger("spendstream.leases.kafka")

REPLY_PARTITION_HEADER = "reply-partition"
MAX_DEAD_LETTER_RAW = 10_000

RecordKey = tuple[str, str, str]
# Clients inherited from a parent process: their threads exist only there, so destroying
# them in a forked child would wait forever. Kept referenced, never used.
_FORK_ORPHANS: list[object] = []


@dataclass(frozen=True, slots=True)
class LeaseTopics:
    requests: str = topics.LEASE_REQUESTS
    replies: str = topics.LEASE_REPLIES
    ledger: str = topics.LEASE_LEDGER
    dead_letters: str = topics.DEAD_LETTERS

    @classmethod
    def with_prefix(cls, prefix: str) -> LeaseTopics:
        names = (
            topics.LEASE_REQUESTS,
            topics.LEASE_REPLIES,
            topics.LEASE_LEDGER,
            topics.DEAD_LETTERS,
        )
        return cls(*(prefix + name for name in names))


def ensure_lease_topics(
    settings: KafkaSettings | str,
    names: LeaseTopics,
    *,
    partitions: int,
    reply_partitions: int,
    config: Mapping[str, Any] | None = None,
    timeout_s: float = 30.0,
) -> None:
    """Create the lease topics that do not exist yet (the changelog compacted) and wait
    until every partition has a leader."""
    admin = Admin(
        settings, client_id="spendstream-leases-admin", timeout_s=timeout_s, config=config
    )
    counts = admin.ensure_topics(
        [
            TopicSpec(names.requests, partitions),
            TopicSpec(names.replies, reply_partitions),
            TopicSpec(names.ledger, partitions, {"cleanup.policy": "compact"}),
        ]
    )
    if counts[names.requests] != counts[names.ledger]:
        raise SpendstreamError(
            f"{names.ledger} has {counts[names.ledger]} partitions and {names.requests} "
            f"{counts[names.requests]}: a scope's changelog must sit in its request partition"
        )


def _key_bytes(key: RecordKey) -> bytes:
    return json.dumps(list(key), separators=(",", ":")).encode()


def _key_of(data: bytes | None) -> RecordKey:
    parts = json.loads(data or b"null")
    if not (isinstance(parts, list) and len(parts) == 3 and all(isinstance(p, str) for p in parts)):
        raise ValueError(f"not a lease ledger record key: {data!r}")
    return (parts[0], parts[1], parts[2])


def read_ledger(
    settings: KafkaSettings | str,
    names: LeaseTopics,
    partitions: Iterable[int],
    *,
    timeout_s: float = 60.0,
    config: Mapping[str, Any] | None = None,
    client_id: str = "spendstream-lease-restore",
) -> dict[int, list[tuple[RecordKey, bytes | None]]]:
    """The committed changelog records of these ledger partitions, in order, per partition:
    what ``LeaseLedger.load`` rebuilds a server's scopes from."""
    reader = Consumer(
        settings,
        client_id=client_id,
        read_committed=True,
        partition_eof=True,
        config=config,
    )
    out: dict[int, list[tuple[RecordKey, bytes | None]]] = {}
    try:
        wanted = [(names.ledger, p) for p in partitions]
        for msg in reader.read_to_end(wanted, timeout_s):
            records = out.setdefault(int(msg.partition() or 0), [])
            records.append((_key_of(msg.key()), msg.value()))
    finally:
        reader.close()
    return out


# --- the client side ----------------------------------------------------------------------


class KafkaLeaseService:
    """A ``LeaseService`` that asks the lease server over Kafka (one per client process).

    ``settings``: an address or ``KafkaSettings`` (SASL/TLS); ``config``: librdkafka
    settings for its producer and consumer.
    """

    def __init__(
        self,
        settings: KafkaSettings | str,
        *,
        client_id: str,
        names: LeaseTopics | None = None,
        reply_partition: int | None = None,
        config: Mapping[str, Any] | None = None,
        metadata_timeout_s: float = 30.0,
    ) -> None:
        self.settings = as_settings(settings)
        self.names = names or LeaseTopics()
        self._config = dict(config or {})
        self._fixed_partition = reply_partition
        self._metadata_timeout_s = metadata_timeout_s
        self._start(client_id)

    def _start(self, client_id: str) -> None:
        name = f"spendstream-leases-{client_id}"
        self._producer = Producer(
            self.settings,
            client_id=name,
            # The server creates the topics with their partition counts; a client producing
            # first must not have the broker make a one-partition topic.
            config={"linger.ms": 0, "allow.auto.create.topics": False, **self._config},
        )
        count = self._reply_partitions()
        self.reply_partition = (
            zlib.crc32(client_id.encode()) % count
            if self._fixed_partition is None
            else self._fixed_partition
        )
        self._consumer = Consumer(
            self.settings,
            client_id=name,
            read_committed=True,  # only grants that are durable
            config={"fetch.wait.max.ms": 5, **self._config},
        )
        replies = (self.names.replies, self.reply_partition)
        try:
            _, high = self._consumer.watermarks(replies, self._metadata_timeout_s)
        except KafkaClientError as exc:
            raise LeaseUnavailable("global", f"lease replies unreadable: {exc}") from None
        # From the end as it stands now, before any request is sent: no answer can be missed.
        self._consumer.assign({replies: high})
        self._headers = [(REPLY_PARTITION_HEADER, str(self.reply_partition).encode())]
        self._waiting: dict[str, list[Any]] = {}  # request id -> [event, reply]
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._read, name="spendstream-lease-replies", daemon=True
        )
        self._thread.start()

    def _reply_partitions(self) -> int:
        """The reply topic's partition count, waiting for a server to create it."""
        deadline = time.monotonic() + self._metadata_timeout_s
        while True:
            left = max(0.01, deadline - time.monotonic())
            try:
                count = self._producer.check_connection(left, self.names.replies)
            except KafkaClientError as exc:
                raise LeaseUnavailable("global", f"no lease service reachable: {exc}") from None
            if count:
                return count
            if time.monotonic() >= deadline:
                raise LeaseUnavailable(
                    "global",
                    f"lease reply topic {self.names.replies} is missing: is a lease server "
                    "(spendstream leases serve) running on this cluster?",
                )
            time.sleep(0.2)

    def request(self, request: LeaseRequest, timeout_s: float) -> LeaseReply:
        slot: list[Any] = [threading.Event(), None]
        with self._lock:
            self._waiting[request.request_id] = slot
        try:
            self._send(request)
            if not slot[0].wait(timeout_s):
                raise LeaseUnavailable(
                    request.scope, f"the lease service did not answer within {timeout_s:.3g} s"
                )
            reply: LeaseReply = slot[1]
            return reply
        finally:
            with self._lock:
                self._waiting.pop(request.request_id, None)

    def settle(self, settle: LeaseSettle) -> None:
        self._send(settle)

    def release(self, release: LeaseRelease) -> None:
        self._send(release)

    def _send(self, message: LeaseMessage) -> None:
        try:
            # A full local queue is an outage: refuse at once rather than wait for it.
            self._producer.produce(
                self.names.requests,
                encode(message),
                message.scope.encode(),
                headers=self._headers,
                queue_timeout_s=0,
            )
        except KafkaClientError as exc:
            raise LeaseUnavailable(
                message.scope, f"cannot send to the lease service: {exc}"
            ) from None
        self._producer.poll(0)

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                msgs = self._consumer.consume(100, 0.05)
            except KafkaClientError as exc:  # the reader must outlive broker trouble
                log.warning("lease replies: %s", exc)
                self._stop.wait(0.5)
                continue
            self._producer.poll(0)
            for msg in msgs:
                try:
                    reply = decode(msg.value() or b"")
                except ValueError as exc:
                    log.warning("ignoring a malformed lease reply: %s", exc)
                    continue
                with self._lock:
                    slot = self._waiting.get(getattr(reply, "request_id", ""))
                if slot is not None:
                    slot[1] = reply
                    slot[0].set()

    def after_fork(self, client_id: str) -> None:
        """In a forked child: the parent's Kafka clients and reader thread are not ours."""
        _FORK_ORPHANS.extend((self._producer, self._consumer))
        self._start(client_id)

    def close(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)
        self._producer.close(timeout_s)
        self._consumer.close()


# --- the server side ----------------------------------------------------------------------


class LeaseBook(Protocol):
    """What the server hosts: ``spendstream.stream.leases.LeaseLedger`` (no import here)."""

    def handle(self, message: LeaseMessage, now: datetime) -> LeaseReply | None: ...

    def expire(self, now: datetime) -> None: ...

    def changes(self) -> list[tuple[RecordKey, bytes | None]]: ...

    def load(self, records: Iterable[tuple[RecordKey, bytes | None]]) -> None: ...

    def forget(self, scopes: Iterable[str]) -> None: ...


def _utcnow() -> datetime:
    return datetime.now(UTC)


class LeaseServer:
    """Answers lease requests for the partitions this instance is assigned.

    ``instance_id`` must be stable across restarts of the same server: it is its static
    group membership (a restarted server takes its partitions back at once) and its
    transactional id (starting fences the killed predecessor and aborts what it left open).
    ``settings``: an address or ``KafkaSettings``; ``config``: librdkafka settings for
    every client of the server.
    """

    def __init__(
        self,
        settings: KafkaSettings | str,
        book_factory: Callable[[], LeaseBook],
        *,
        instance_id: str,
        group_id: str = "spendstream-leases",
        names: LeaseTopics | None = None,
        config: Mapping[str, Any] | None = None,
        clock: Callable[[], datetime] = _utcnow,
        batch: int = 500,
        poll_s: float = 0.05,
        expire_every_s: float = 1.0,
        session_timeout_s: float = 10.0,
    ) -> None:
        self.settings = as_settings(settings)
        self.names = names or LeaseTopics()
        self.instance_id = instance_id
        self._config = dict(config or {})
        self._book_factory = book_factory
        self.book = book_factory()
        self._clock = clock
        self._batch = batch
        self._poll_s = poll_s
        self._expire_every_s = expire_every_s
        self._scope_partition: dict[str, int] = {}
        self.ready = threading.Event()  # assigned and restored at least once
        self.answered = 0
        client_id = f"spendstream-lease-server-{instance_id}"
        self._producer = Producer(
            self.settings,
            client_id=client_id,
            transactional_id=f"{group_id}-{instance_id}",
            config={
                "linger.ms": 0,
                # The broker answers CONCURRENT_TRANSACTIONS while the previous commit's
                # markers are being written; librdkafka's default 100 ms retry backoff then
                # made every other refill ~100 ms (measured: send_offsets p90 101 ms).
                "retry.backoff.ms": 2,
                **self._config,
            },
        )
        self._consumer = Consumer(
            self.settings,
            group_id=group_id,
            client_id=client_id,
            read_committed=True,
            auto_offset_reset="earliest",
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            config={
                "group.instance.id": instance_id,
                "session.timeout.ms": int(session_timeout_s * 1000),
                "fetch.wait.max.ms": 5,
                **self._config,
            },
        )

    # --- assignment -----------------------------------------------------------------------

    def _on_assign(self, partitions: list[Partition]) -> None:
        numbers = [p for _, p in partitions]
        self._restore(numbers)
        log.info("lease server %s owns partitions %s", self.instance_id, numbers)
        self.ready.set()

    def _on_revoke(self, partitions: list[Partition]) -> None:
        gone = {p for _, p in partitions}
        self.book.forget([s for s, p in self._scope_partition.items() if p in gone])
        self._scope_partition = {s: p for s, p in self._scope_partition.items() if p not in gone}

    def _restore(self, numbers: list[int], timeout_s: float = 60.0) -> None:
        """Rebuild the ledger of these partitions from the changelog's committed records."""
        by_partition = read_ledger(
            self.settings,
            self.names,
            numbers,
            timeout_s=timeout_s,
            config=self._config,
            client_id=f"spendstream-lease-restore-{self.instance_id}",
        )
        records: list[tuple[RecordKey, bytes | None]] = []
        for partition, recs in by_partition.items():
            for key, value in recs:
                records.append((key, value))
                self._scope_partition[key[0]] = partition
        self.book.load(records)
        self.book.changes()  # loading changes nothing the changelog does not hold

    # --- the loop -------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Serve until ``stop`` is set. A fenced server (a newer instance took over) raises."""
        self._producer.init_transactions(30)
        self._consumer.subscribe([self.names.requests])
        next_expiry = time.monotonic()
        try:
            while not stop.is_set():
                msgs = self._consumer.consume(self._batch, self._poll_s)
                expire = time.monotonic() >= next_expiry
                if expire:
                    next_expiry = time.monotonic() + self._expire_every_s
                if msgs or expire:
                    self._step(msgs, expire)
        finally:
            self._consumer.close()
            self._producer.close(5)

    def _step(self, msgs: list[Message], expire: bool) -> None:
        now = self._clock()
        if expire:
            self.book.expire(now)
        changes = self.book.changes()
        if not msgs and not changes:
            return
        try:
            self._producer.begin_transaction()
            for msg in msgs:
                self._answer(msg, now)
            self._write_changes(changes + self.book.changes())
            if msgs:
                positions = self._consumer.position(self._consumer.assignment())
                self._producer.send_offsets_to_transaction(
                    {p: o for p, o in positions.items() if o is not None and o >= 0},
                    self._consumer.group_metadata(),
                )
            self._producer.commit_transaction()
            self.answered += len(msgs)
        except KafkaClientError as exc:
            if not exc.abortable:
                raise  # fenced or fatal: another instance owns the work now
            log.warning("lease transaction aborted (%s): rewinding to the last commit", exc)
            self._producer.abort_transaction()
            self._rewind()

    def _answer(self, msg: Message, now: datetime) -> None:
        source = f"kafka:{msg.topic()}/{msg.partition()}@{msg.offset()}"
        try:
            message = decode(msg.value() or b"")
            if isinstance(message, LeaseGrant | LeaseRefusal):
                raise ValueError(f"{type(message).__name__} is a reply, not a request")
            key = (msg.key() or b"").decode("utf-8", errors="replace")
            if key != message.scope:
                # Keyed elsewhere, it may sit with another server that owns that scope too.
                raise ValueError(
                    f"record key {key!r} must be the message's scope {message.scope!r}"
                )
            reply_to = self._reply_partition(msg) if isinstance(message, LeaseRequest) else None
        except ValueError as exc:
            self._dead_letter(msg, str(exc), source, now)
            return
        self._scope_partition[message.scope] = int(msg.partition() or 0)
        reply = self.book.handle(message, now)
        if reply is not None and reply_to is not None:
            self._producer.produce(
                self.names.replies, encode(reply), message.client_id.encode(), partition=reply_to
            )

    @staticmethod
    def _reply_partition(msg: Message) -> int:
        for name, value in list(msg.headers() or []):
            if name == REPLY_PARTITION_HEADER and value is not None:
                try:
                    return int(value)
                except ValueError:
                    break
        raise ValueError(f"a lease request needs a numeric {REPLY_PARTITION_HEADER!r} header")

    def _dead_letter(self, msg: Message, error: str, source: str, now: datetime) -> None:
        raw = (msg.value() or b"").decode("utf-8", errors="replace")[:MAX_DEAD_LETTER_RAW]
        log.warning("lease message dead-lettered (%s): %s", source, error)
        value = {"raw": raw, "error": error, "source": source, "received_at": now.isoformat()}
        self._producer.produce(self.names.dead_letters, json.dumps(value).encode())

    def _write_changes(self, changes: list[tuple[RecordKey, bytes | None]]) -> None:
        for key, value in changes:
            partition = self._scope_partition.get(key[0])
            if partition is None:  # a scope this server never saw a message for: not its own
                log.warning("lease ledger record for unowned scope %r dropped", key[0])
                continue
            self._producer.produce(self.names.ledger, value, _key_bytes(key), partition=partition)

    def _rewind(self) -> None:
        """After an abort: the ledger and the positions go back to the last commit."""
        assigned = self._consumer.assignment()
        self.book = self._book_factory()
        self._scope_partition = {}
        self._restore([p for _, p in assigned])
        for partition, offset in self._consumer.committed(assigned, timeout_s=30).items():
            self._consumer.seek(partition, offset if offset is not None else BEGINNING)
