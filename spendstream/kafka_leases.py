"""Budget leases over Kafka: the client's request/reply path and the lease server's loop.

PORT AT MERGE: this is the one module of the lease work that uses ``confluent_kafka``
directly; it moves onto the project's Kafka adapter (``spendstream/kafka/``) when that lands,
and the server loop into the scope-owning worker of ``spendstream run`` (round 2).

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

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from spendstream import topics
from spendstream.errors import LeaseUnavailable, SpendstreamError
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
    "ensure_lease_topics",
]

log = logging.getLogger("spendstream.leases.kafka")

REPLY_PARTITION_HEADER = "reply-partition"
# Java clients' default partitioner: a scope lands where Kafka Streams or any JVM producer
# (and round 2's scope-keyed aggregate topic) would put it.
_PARTITIONER = "murmur2_random"

RecordKey = tuple[str, str, str]
_NO_LEADER_YET = (KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE)


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
    bootstrap: str,
    names: LeaseTopics,
    *,
    partitions: int,
    reply_partitions: int,
    options: Mapping[str, Any] | None = None,
    timeout_s: float = 30.0,
) -> None:
    """Create the lease topics that do not exist yet (the changelog compacted)."""
    admin = AdminClient({"bootstrap.servers": bootstrap, **(options or {})})
    wanted = [
        NewTopic(names.requests, partitions, 1),
        NewTopic(names.replies, reply_partitions, 1),
        NewTopic(names.ledger, partitions, 1, config={"cleanup.policy": "compact"}),
    ]
    existing = admin.list_topics(timeout=timeout_s).topics
    missing = [t for t in wanted if t.topic not in existing]
    for name, future in (
        admin.create_topics(missing, operation_timeout=timeout_s).items() if missing else []
    ):
        try:
            future.result(timeout_s)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise SpendstreamError(f"cannot create lease topic {name}: {exc}") from None
    deadline = time.monotonic() + timeout_s
    while True:  # created topics answer only once every partition has a leader
        have = admin.list_topics(timeout=timeout_s).topics
        leaderless = [
            name
            for name in (names.requests, names.replies, names.ledger)
            if name not in have or any(p.leader < 0 for p in have[name].partitions.values())
        ]
        if not leaderless or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    requests = have.get(names.requests)
    ledger = have.get(names.ledger)
    if (
        requests is not None
        and ledger is not None
        and len(requests.partitions) != len(ledger.partitions)
    ):
        raise SpendstreamError(
            f"{names.ledger} has {len(ledger.partitions)} partitions and {names.requests} "
            f"{len(requests.partitions)}: a scope's changelog must sit in its request partition"
        )


def _key_bytes(key: RecordKey) -> bytes:
    return json.dumps(list(key), separators=(",", ":")).encode()


def _key_of(data: bytes | None) -> RecordKey:
    parts = json.loads(data or b"null")
    if not (isinstance(parts, list) and len(parts) == 3 and all(isinstance(p, str) for p in parts)):
        raise ValueError(f"not a lease ledger record key: {data!r}")
    return (parts[0], parts[1], parts[2])


def _watermarks(consumer: Consumer, tp: TopicPartition, timeout_s: float) -> tuple[int, int]:
    """(low, high) offsets, waiting out a topic just created (its leader not serving yet)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            low, high = consumer.get_watermark_offsets(tp, timeout=timeout_s)
            return int(low), int(high)
        except KafkaException as exc:
            error = exc.args[0]
            if (not error.retriable() and error.code() not in _NO_LEADER_YET) or (
                time.monotonic() > deadline
            ):
                raise
            time.sleep(0.1)


def _take(consumer: Consumer, most: int, timeout_s: float) -> list[Message]:
    """Up to ``most`` messages, returning as soon as one is there (``consume`` would wait
    the whole timeout for a full batch: a lease refill must not)."""
    first = consumer.poll(timeout_s)
    if first is None:
        return []
    return [first, *consumer.consume(num_messages=most - 1, timeout=0)] if most > 1 else [first]


# --- the client side ----------------------------------------------------------------------


class KafkaLeaseService:
    """A ``LeaseService`` that asks the lease server over Kafka (one per client process)."""

    def __init__(
        self,
        bootstrap: str,
        *,
        client_id: str,
        names: LeaseTopics | None = None,
        reply_partition: int | None = None,
        options: Mapping[str, Any] | None = None,
        metadata_timeout_s: float = 30.0,
    ) -> None:
        self._args = (bootstrap, names, reply_partition, options, metadata_timeout_s)
        self.names = names or LeaseTopics()
        common = {"bootstrap.servers": bootstrap, **(options or {})}
        self._producer = Producer(
            {
                **common,
                "enable.idempotence": True,
                "linger.ms": 0,
                "partitioner": _PARTITIONER,
                # The server creates the topics with their partition counts; a client
                # producing first must not have the broker make a one-partition topic.
                "allow.auto.create.topics": False,
                "client.id": f"spendstream-leases-{client_id}",
            }
        )
        deadline = time.monotonic() + metadata_timeout_s
        while True:  # the server creates the topics: a client may start first
            meta = self._producer.list_topics(self.names.replies, timeout=metadata_timeout_s)
            found = meta.topics.get(self.names.replies)
            if found is not None and found.error is None and found.partitions:
                break
            if time.monotonic() > deadline:
                raise LeaseUnavailable(
                    "global",
                    f"lease reply topic {self.names.replies} is missing: is a lease server "
                    "(spendstream leases serve) running on this cluster?",
                )
            time.sleep(0.2)
        count = len(found.partitions)
        self.reply_partition = (
            zlib.crc32(client_id.encode()) % count if reply_partition is None else reply_partition
        )
        self._consumer = Consumer(
            {
                **common,
                "group.id": "spendstream-lease-clients",  # assign() only: never joins or commits
                "enable.auto.commit": False,
                "isolation.level": "read_committed",  # only grants that are durable
                "fetch.wait.max.ms": 5,
                "client.id": f"spendstream-leases-{client_id}",
            }
        )
        tp = TopicPartition(self.names.replies, self.reply_partition)
        try:
            _, high = _watermarks(self._consumer, tp, metadata_timeout_s)
        except KafkaException as exc:
            raise LeaseUnavailable("global", f"lease replies unreadable: {exc}") from None
        # From the end as it stands now, before any request is sent: no answer can be missed.
        self._consumer.assign([TopicPartition(self.names.replies, self.reply_partition, high)])
        self._headers: list[tuple[str, str | bytes | None]] = [
            (REPLY_PARTITION_HEADER, str(self.reply_partition).encode())
        ]
        self._waiting: dict[str, list[Any]] = {}  # request id -> [event, reply]
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._read, name="spendstream-lease-replies", daemon=True
        )
        self._thread.start()

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
            self._producer.produce(
                self.names.requests,
                value=encode(message),
                key=message.scope.encode(),
                headers=self._headers,
            )
        except BufferError as exc:
            raise LeaseUnavailable(message.scope, f"lease messages are piling up: {exc}") from None
        except KafkaException as exc:
            raise LeaseUnavailable(
                message.scope, f"cannot send to the lease service: {exc}"
            ) from None
        self._producer.poll(0)

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                msgs = _take(self._consumer, 100, 0.05)
            except KafkaException as exc:  # the reader must outlive broker trouble
                log.warning("lease replies: %s", exc)
                self._stop.wait(0.5)
                continue
            self._producer.poll(0)
            for msg in msgs:
                if msg.error() is not None:
                    continue
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
        bootstrap, names, reply_partition, options, timeout_s = self._args
        self.__init__(  # type: ignore[misc]
            bootstrap,
            client_id=client_id,
            names=names,
            reply_partition=reply_partition,
            options=options,
            metadata_timeout_s=timeout_s,
        )

    def close(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)
        self._producer.flush(timeout_s)
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
    """

    def __init__(
        self,
        bootstrap: str,
        book_factory: Callable[[], LeaseBook],
        *,
        instance_id: str,
        group_id: str = "spendstream-leases",
        names: LeaseTopics | None = None,
        options: Mapping[str, Any] | None = None,
        clock: Callable[[], datetime] = _utcnow,
        batch: int = 500,
        poll_s: float = 0.05,
        expire_every_s: float = 1.0,
        session_timeout_s: float = 10.0,
    ) -> None:
        self.names = names or LeaseTopics()
        self.instance_id = instance_id
        self._common = {"bootstrap.servers": bootstrap, **(options or {})}
        self._book_factory = book_factory
        self.book = book_factory()
        self._clock = clock
        self._batch = batch
        self._poll_s = poll_s
        self._expire_every_s = expire_every_s
        self._scope_partition: dict[str, int] = {}
        self._restored: set[int] = set()
        self.ready = threading.Event()  # assigned and restored at least once
        self.answered = 0
        self._producer = Producer(
            {
                **self._common,
                "transactional.id": f"{group_id}-{instance_id}",
                "linger.ms": 0,
                # The broker answers CONCURRENT_TRANSACTIONS while the previous commit's
                # markers are being written; librdkafka's default 100 ms retry backoff then
                # made every other refill ~100 ms (measured: send_offsets p90 101 ms).
                "retry.backoff.ms": 2,
                "client.id": f"spendstream-lease-server-{instance_id}",
            }
        )
        self._consumer = Consumer(
            {
                **self._common,
                "group.id": group_id,
                "group.instance.id": instance_id,
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "auto.offset.reset": "earliest",
                "session.timeout.ms": int(session_timeout_s * 1000),
                "fetch.wait.max.ms": 5,
                "client.id": f"spendstream-lease-server-{instance_id}",
            }
        )

    # --- assignment -----------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        numbers = [tp.partition for tp in partitions]
        self._restore(numbers)
        log.info("lease server %s owns partitions %s", self.instance_id, numbers)
        self.ready.set()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        gone = {tp.partition for tp in partitions}
        self.book.forget([s for s, p in self._scope_partition.items() if p in gone])
        self._scope_partition = {s: p for s, p in self._scope_partition.items() if p not in gone}
        self._restored -= gone

    def _restore(self, numbers: list[int], timeout_s: float = 60.0) -> None:
        """Rebuild the ledger of these partitions from the changelog's committed records."""
        reader = Consumer(
            {
                **self._common,
                "group.id": f"spendstream-lease-restore-{self.instance_id}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "enable.partition.eof": True,
            }
        )
        try:
            ends = {}
            for p in numbers:
                low, high = _watermarks(reader, TopicPartition(self.names.ledger, p), timeout_s)
                if high > low:
                    ends[p] = high
            reader.assign([TopicPartition(self.names.ledger, p, OFFSET_BEGINNING) for p in ends])
            records: list[tuple[RecordKey, bytes | None]] = []
            deadline = time.monotonic() + timeout_s
            while ends:
                if time.monotonic() > deadline:
                    raise SpendstreamError(f"lease changelog restore of {sorted(ends)} timed out")
                for msg in reader.consume(num_messages=1000, timeout=0.2):
                    err = msg.error()
                    partition = int(msg.partition() or 0)
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            ends.pop(partition, None)
                        continue
                    key = _key_of(msg.key())
                    records.append((key, msg.value()))
                    self._scope_partition[key[0]] = partition
                    if int(msg.offset() or 0) + 1 >= ends.get(partition, 0):
                        ends.pop(partition, None)
            self.book.load(records)
            self.book.changes()  # loading changes nothing the changelog does not hold
            self._restored.update(numbers)
        finally:
            reader.close()

    # --- the loop -------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Serve until ``stop`` is set. A fenced server (a newer instance took over) raises."""
        self._producer.init_transactions(30)
        self._consumer.subscribe(
            [self.names.requests], on_assign=self._on_assign, on_revoke=self._on_revoke
        )
        next_expiry = time.monotonic()
        try:
            while not stop.is_set():
                msgs = _take(self._consumer, self._batch, self._poll_s)
                expire = time.monotonic() >= next_expiry
                if expire:
                    next_expiry = time.monotonic() + self._expire_every_s
                if msgs or expire:
                    self._step(msgs, expire)
        finally:
            self._consumer.close()
            self._producer.flush(5)

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
                positions = [
                    tp
                    for tp in self._consumer.position(self._consumer.assignment())
                    if tp.offset >= 0
                ]
                self._producer.send_offsets_to_transaction(
                    positions, self._consumer.consumer_group_metadata()
                )
            self._producer.commit_transaction()
            self.answered += len(msgs)
        except KafkaException as exc:
            error = exc.args[0]
            if not error.txn_requires_abort():
                raise  # fenced or fatal: another instance owns the work now
            log.warning("lease transaction aborted (%s): rewinding to the last commit", error)
            self._producer.abort_transaction()
            self._rewind()

    def _answer(self, msg: Message, now: datetime) -> None:
        err = msg.error()
        if err is not None:
            if err.fatal():
                raise KafkaException(err)  # e.g. fenced by a newer instance of this server
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("lease requests: %s", err)
            return
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
                self.names.replies,
                value=encode(reply),
                key=message.client_id.encode(),
                partition=reply_to,
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
        raw = (msg.value() or b"").decode("utf-8", errors="replace")[:10_000]
        log.warning("lease message dead-lettered (%s): %s", source, error)
        value = {"raw": raw, "error": error, "source": source, "received_at": now.isoformat()}
        self._producer.produce(self.names.dead_letters, value=json.dumps(value).encode())

    def _write_changes(self, changes: list[tuple[RecordKey, bytes | None]]) -> None:
        for key, value in changes:
            partition = self._scope_partition.get(key[0])
            if partition is None:  # a scope this server never saw a message for: not its own
                log.warning("lease ledger record for unowned scope %r dropped", key[0])
                continue
            self._producer.produce(
                self.names.ledger, key=_key_bytes(key), value=value, partition=partition
            )

    def _rewind(self) -> None:
        """After an abort: the ledger and the positions go back to the last commit."""
        assigned = self._consumer.assignment()
        self.book = self._book_factory()
        self._scope_partition = {}
        self._restore([tp.partition for tp in assigned])
        committed = self._consumer.committed(assigned, timeout=30)
        for tp in committed:
            self._consumer.seek(
                TopicPartition(
                    tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
                )
            )
