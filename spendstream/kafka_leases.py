"""Budget leases over Kafka: the client's request/reply path and the lease server's loop.

Every Kafka client here is the project's adapter (``spendstream.kafka``): settings are
``KafkaSettings`` (``KafkaSettings.from_config`` for SASL/TLS), failures are
``spendstream.errors`` Kafka errors. ``spendstream.runtime.lease_server`` runs the server
as ``spendstream leases serve`` or as a thread of ``spendstream run``.

Topics (docs/budget-leases.md, "On Kafka"):

- ``spendstream.lease-requests``: requests, settlements and releases, keyed by the budget
  scope (murmur2, as Kafka's Java clients): every message for a scope reaches the one
  server that owns its partition, in order. Header ``reply-partition``: where to answer.
  Stamped by the broker (LogAppendTime): the ledger's clock while a server catches up.
- ``spendstream.lease-replies``: grants and refusals, produced to the partition the client
  named (each client reads only its own partition, from where it stood when it started).
- ``spendstream.lease-ledger``: the ledger's changelog, compacted, partitioned like the
  requests (a scope's records sit in its request partition's number).
- ``spendstream.facts`` (read only): landed spend. Every server reads every partition and
  counts the rows of the hard scopes it owns, past the usage offset each scope has applied.

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
from typing import TYPE_CHECKING, Any, Protocol

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
from spendstream.kafka.partitioner import partition_for
from spendstream.kafka.read_clock import ReadClock
from spendstream.producers import wire_json
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
    shown,
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
    "utcnow",
]

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger("spendstream.leases.kafka")

REPLY_PARTITION_HEADER = "reply-partition"
MAX_DEAD_LETTER_RAW = 10_000

RecordKey = tuple[str, str, str]
# A facts table and the scopes to count -> the ledger's Spend for them
# (spendstream.stream.leases.landed_spends; passed in: this module does not import stream).
SpendsOf = Callable[["pa.Table", list[str]], list[Any]]
# Clients inherited from a parent process: their threads exist only there, so destroying
# them in a forked child would wait forever. Kept referenced, never used.
_FORK_ORPHANS: list[object] = []


@dataclass(frozen=True, slots=True)
class LeaseTopics:
    requests: str = topics.LEASE_REQUESTS
    replies: str = topics.LEASE_REPLIES
    ledger: str = topics.LEASE_LEDGER
    dead_letters: str = topics.DEAD_LETTERS
    # Read, never written, by the lease server: landed spend (spendstream.facts_topic).
    facts: str = topics.FACTS

    @classmethod
    def with_prefix(cls, prefix: str) -> LeaseTopics:
        names = (
            topics.LEASE_REQUESTS,
            topics.LEASE_REPLIES,
            topics.LEASE_LEDGER,
            topics.DEAD_LETTERS,
            topics.FACTS,
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
            # The broker stamps each request: a server behind its requests reads them at
            # the time they reached Kafka, whatever the clients' clocks say (LeaseServer).
            TopicSpec(names.requests, partitions, {"message.timestamp.type": "LogAppendTime"}),
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
    try:
        parts = wire_json.loads(data or b"null")
    except ValueError:
        parts = None
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
            try:
                key = _key_of(msg.key())
            except ValueError as exc:
                # No server wrote it: failing here would fail every restore, at every start.
                log.warning(
                    "passed over %s/%s@%s while restoring budget leases: %s",
                    msg.topic(), msg.partition(), msg.offset(), exc,
                )  # fmt: skip
                continue
            records.append((key, msg.value()))
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

    def load(self, records: Iterable[tuple[RecordKey, bytes | None]]) -> list[str]: ...

    @property
    def now(self) -> datetime | None: ...

    @property
    def scopes(self) -> frozenset[str]: ...

    def land(self, source: str, position: int, spends: Iterable[Any], now: datetime) -> int: ...

    def position(self, scope: str, source: str) -> int: ...

    def mark(self, scope: str, source: str, position: int) -> None: ...


def utcnow() -> datetime:
    """The lease server's wall clock (UTC)."""
    return datetime.now(UTC)


def _asks(msg: Message) -> bool:
    """Whether a lease message waits for an answer (a request; or unreadable: it is
    dead-lettered, so it is handled now)."""
    try:
        return isinstance(decode(msg.value() or b""), LeaseRequest)
    except ValueError:
        return True


class _EndWatcher:
    """Asks the broker where each request partition ends, once per ``every_s``, on a thread
    and a client of its own: a slow or unreachable partition leader never holds up answering.
    Each answer is (partition, wall time taken before asking, end offset)."""

    def __init__(
        self,
        settings: KafkaSettings,
        client_id: str,
        config: Mapping[str, Any],
        clock: Callable[[], datetime],
        every_s: float,
    ) -> None:
        self.partitions: list[Partition] = []  # replaced whole by the server
        self._clock = clock
        self._every_s = every_s
        self._answers: list[tuple[Partition, datetime, int]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._consumer = Consumer(settings, client_id=client_id, read_committed=True, config=config)
        self._thread = threading.Thread(target=self._run, name=f"{client_id}-ends", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.wait(self._every_s):
                for partition in list(self.partitions):
                    if self._stop.is_set():
                        break
                    at = self._clock()
                    try:
                        _, end = self._consumer.watermarks(partition, self._every_s)
                    except KafkaClientError:
                        continue  # asked again next time; until then it stands where it was
                    with self._lock:
                        self._answers.append((partition, at, end))
        finally:
            # Here, on its own thread: never closed under a query still running.
            self._consumer.close()

    def answers(self) -> list[tuple[Partition, datetime, int]]:
        with self._lock:
            out, self._answers = self._answers, []
        return out

    def close(self) -> None:
        self._stop.set()
        if self._thread.ident is None:  # never started: nobody else closes its client
            self._consumer.close()
        else:
            self._thread.join(self._every_s + 5)


class LeaseServer:
    """Answers lease requests for the partitions this instance is assigned.

    ``instance_id`` must be stable across restarts of the same server: it is its static
    group membership (a restarted server takes its partitions back at once) and its
    transactional id (starting fences the killed predecessor and aborts what it left open).
    ``settings``: an address or ``KafkaSettings``; ``config``: librdkafka settings for
    every client of the server.

    Each request partition owned has a ledger of its own, whose clock is the time up to
    which the server has read that partition, not the wall clock: a server that comes back,
    takes a partition over, stalls or is paused is behind its requests, and a lease past
    ``expires_at + grace_s`` by the wall clock may have its holder's release (what it used)
    still unread. A partition stands at the broker's stamp of the last record read from it,
    or at the wall time it was last confirmed read to its end (asked of the broker once per
    expiry tick, on a thread of its own), whichever is later (``spendstream.kafka.
    read_clock``). So a lease closes only once everything its holder sent before that has
    been read, and what a closed lease frees is never granted twice. A partition's ledger is
    restored from its own changelog partition and dropped whole when the partition goes.
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
        clock: Callable[[], datetime] = utcnow,
        batch: int = 500,
        poll_s: float = 0.05,
        expire_every_s: float = 1.0,
        session_timeout_s: float = 10.0,
        spends_of: SpendsOf | None = None,
    ) -> None:
        self.settings = as_settings(settings)
        self.names = names or LeaseTopics()
        self.instance_id = instance_id
        self._config = dict(config or {})
        self._book_factory = book_factory
        self._scopes = book_factory().scopes  # the hard-budget scopes
        # A ledger per request partition owned, on that partition's own clock (class
        # docstring); its changelog records go to the same partition of the ledger topic.
        self._books: dict[int, LeaseBook] = {}
        self._clock = clock
        self._batch = batch
        self._poll_s = poll_s
        self._expire_every_s = expire_every_s
        self._owned: dict[str, int] = {}  # hard-budget scope -> its request partition, if ours
        self._request_partitions = 0
        self._reply_partitions = 0  # asked again when a request names one past them
        self._replies_asked_at = float("-inf")  # monotonic
        self._spends_of = spends_of
        self._facts_stale = True  # the facts assignment must follow what we own
        self._facts_assigned = False
        self.ready = threading.Event()  # assigned and restored at least once
        self.answered = 0
        self.facts_read = 0  # facts records committed with their landed spend
        # Set to a list to have each transaction's phases appended (bench/lease_refill.py):
        # (records, newest record's age when its transaction began ms (ms clock of its
        # producer), answer ms, offsets ms, commit ms).
        self.timings: list[tuple[int, float, float, float, float]] | None = None
        self.defer_untold = True  # False: a transaction per batch, as before (bench A/B)
        self._held: list[tuple[Message, datetime]] = []  # read, applied at the next transaction
        self._read_clock = ReadClock()  # each ledger's clock (class docstring)
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
            partition_eof=True,  # where each request partition's end is: the ledger's clock
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            config={
                "group.instance.id": instance_id,
                "session.timeout.ms": int(session_timeout_s * 1000),
                "fetch.wait.max.ms": 5,
                **self._config,
            },
        )
        self._ends = _EndWatcher(
            self.settings, f"{client_id}-ends", self._config, clock, expire_every_s
        )
        # Landed spend: every partition of the facts topic, each server for its own scopes
        # (no group: where to resume is in the ledger, per scope, committed with the rest).
        self._facts: Consumer | None = None
        if spends_of is not None:
            self._facts = Consumer(
                self.settings,
                client_id=f"{client_id}-facts",
                read_committed=True,
                config={"fetch.wait.max.ms": 5, **self._config},
            )

    @property
    def partitions(self) -> list[int]:
        """The request partitions this server owns now (their scopes are its own)."""
        return sorted(self._books)

    # --- assignment -----------------------------------------------------------------------

    def _on_assign(self, partitions: list[Partition]) -> None:
        numbers = [p for _, p in partitions]
        self._read_clock.assigned(partitions)
        self._ends.partitions = self._read_clock.partitions
        self._restore(numbers)
        self._own(numbers)
        if numbers:  # cooperative rebalancing also calls with nothing new
            log.info("lease server %s owns partitions %s", self.instance_id, sorted(numbers))
        self.ready.set()

    def _on_revoke(self, partitions: list[Partition]) -> None:
        gone = {p for _, p in partitions}
        # Held messages of a partition leaving us are read again by its next owner.
        self._held = [(m, t) for m, t in self._held if int(m.partition() or 0) not in gone]
        self._read_clock.revoked(partitions)
        self._ends.partitions = self._read_clock.partitions
        if gone:
            log.info("lease server %s gives up partitions %s", self.instance_id, sorted(gone))
        for p in gone:
            self._books.pop(p, None)
        self._owned = {s: p for s, p in self._owned.items() if p not in gone}
        self._facts_stale = True

    def _own(self, numbers: list[int]) -> None:
        """The hard-budget scopes whose request partition is among ``numbers`` are ours:
        their landed spend is counted here, whether or not a client has asked yet."""
        if not self._request_partitions:
            return
        for scope in self._scopes:
            partition = partition_for(scope.encode(), self._request_partitions)
            if partition in numbers:
                self._owned[scope] = partition
        self._facts_stale = True

    def _restore(self, numbers: list[int], timeout_s: float = 60.0) -> None:
        """Rebuild the ledger of each of these partitions from its changelog partition's
        committed records. Its clock starts at the newest grant it restores: where its
        previous owner had read the partition to."""
        by_partition = read_ledger(
            self.settings,
            self.names,
            numbers,
            timeout_s=timeout_s,
            config=self._config,
            client_id=f"spendstream-lease-restore-{self.instance_id}",
        )
        for partition in numbers:
            book = self._book_factory()
            for problem in book.load(by_partition.get(partition, [])):
                log.warning("passed over a lease ledger record while restoring: %s", problem)
            book.changes()  # loading changes nothing the changelog does not hold
            self._books[partition] = book

    # --- the loop -------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Serve until ``stop`` is set. A fenced server (a newer instance took over) raises.
        Its clients are closed when it returns or raises, also before its loop began (a
        hosted server builds new ones for each try)."""
        try:
            self._producer.init_transactions(30)
            self._request_partitions = len(
                self._consumer.partitions_for(self.names.requests, timeout_s=30) or []
            )
            self._reply_partitions = len(
                self._consumer.partitions_for(self.names.replies, timeout_s=30) or []
            )
            self._consumer.subscribe([self.names.requests])
            self._ends.start()
            next_expiry = time.monotonic()
            while not stop.is_set():
                events = self._consumer.consume(self._batch, self._poll_s, ends=True)
                wall = self._clock()
                msgs = self._read_clock.read(events, wall, self._holds())
                for partition, at, end in self._ends.answers():
                    self._read_clock.confirm(partition, at, end)
                expire = time.monotonic() >= next_expiry
                if expire:
                    next_expiry = time.monotonic() + self._expire_every_s
                elif events and not msgs:
                    # Only partitions' ends: nothing to apply, and the held settlements keep
                    # waiting for the request that usually follows them (a refill).
                    continue
                facts = self._read_facts(expire)
                quiet = msgs and not facts and not expire and self.defer_untold
                if quiet and not any(_asks(m) for m, _ in msgs):
                    # Settlements and releases wait for the next transaction (a request's,
                    # or the next tick's): nobody waits on their answer, and a request right
                    # behind them (a refill gives the old lease back first) then costs one
                    # transaction, not two.
                    self._held.extend(msgs)
                    continue
                if self._held:
                    msgs, self._held = self._held + msgs, []
                if msgs or facts or expire:
                    self._step(msgs, expire, facts, wall)
        finally:
            self._ends.close()
            self._consumer.close()
            if self._facts is not None:
                self._facts.close()
            self._producer.close(5)

    def _read_facts(self, look: bool) -> list[Message]:
        if self._facts is None:
            return []
        # A facts topic that does not exist yet (no worker has run) is looked for again
        # at every expiry tick.
        if self._facts_stale or (look and not self._facts_assigned and self._owned):
            self._assign_facts()
        return self._facts.consume(self._batch, 0) if self._facts_assigned else []

    def _assign_facts(self) -> None:
        """Read each facts partition from the oldest record one of our scopes has not read."""
        assert self._facts is not None
        self._facts_stale = False
        parts = self._facts.partitions_for(self.names.facts, timeout_s=5) if self._owned else None
        if not parts:
            self._facts.assign({})
            self._facts_assigned = False
            return
        starts: dict[Partition, int | None] = {}
        for p in parts:
            mark = self._facts_mark(p)
            read = [self._books[q].position(s, mark) for s, q in self._owned.items()]
            starts[(self.names.facts, p)] = BEGINNING if min(read) < 0 else min(read) + 1
        self._facts.assign(starts)
        self._facts_assigned = True

    def _facts_mark(self, partition: int) -> str:
        return f"{self.names.facts}/{partition}"

    def _holds(self) -> dict[Partition, datetime | None]:
        return {(self.names.requests, p): book.now for p, book in self._books.items()}

    def _now(self, partition: int, wall: datetime) -> datetime:
        """Where ``partition``'s ledger stands: how far the partition has been read."""
        book = self._books[partition]
        return self._read_clock.now((self.names.requests, partition), wall, book.now)

    def _expire(self, wall: datetime) -> None:
        for partition, book in self._books.items():
            if book.now is not None:  # a ledger never given a time holds no lease yet
                book.expire(self._now(partition, wall))

    def _changes(self) -> list[tuple[int, RecordKey, bytes | None]]:
        return [(p, key, value) for p, book in self._books.items() for key, value in book.changes()]

    def _step(
        self,
        msgs: list[tuple[Message, datetime]],
        expire: bool,
        facts: list[Message],
        wall: datetime,
    ) -> None:
        """One transaction: ``msgs`` each at its own time, then the facts and the expiry,
        each partition's ledger at its own time: a release read in this batch counts before
        its lease can close."""
        changes: list[tuple[int, RecordKey, bytes | None]] = []
        tick_alone = not msgs and not facts
        if tick_alone:  # a transaction only if expiry changed something
            if expire:
                self._expire(wall)
            changes = self._changes()
            if not changes:
                return
        try:
            t0, wall0 = time.perf_counter(), time.time()
            self._producer.begin_transaction()
            for msg, at in msgs:
                self._answer(msg, at)
            for msg in facts:
                self._land(msg, wall)
            if expire and not tick_alone:  # after what was read: its releases count first
                self._expire(wall)
            self._write_changes(changes + self._changes())
            t1 = time.perf_counter()
            if msgs:
                positions = self._consumer.position(self._consumer.assignment())
                self._producer.send_offsets_to_transaction(
                    {p: o for p, o in positions.items() if o is not None and o >= 0},
                    self._consumer.group_metadata(),
                )
            t2 = time.perf_counter()
            self._producer.commit_transaction()
            if self.timings is not None:
                t3 = time.perf_counter()
                # The newest record's: what the batch's transaction waited for last.
                age = min((wall0 * 1000 - m.timestamp()[1] for m, _ in msgs), default=0.0)
                ms = 1000.0
                self.timings.append(
                    (len(msgs), age, (t1 - t0) * ms, (t2 - t1) * ms, (t3 - t2) * ms)
                )
            self.answered += len(msgs)
            self.facts_read += len(facts)
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
                    f"record key {shown(key)} must be the message's scope {shown(message.scope)}"
                )
            home = partition_for(key.encode(), self._request_partitions or 1)
            if self._request_partitions and int(msg.partition() or 0) != home:
                # Its ledger is the one of its home partition: another would grant it anew.
                raise ValueError(
                    f"{shown(message.scope)} belongs in partition {home} of {msg.topic()} (murmur2 "
                    f"of the scope over {self._request_partitions} partitions), not "
                    f"{msg.partition()}: sent with another partitioner, or the topic's "
                    "partitions changed (restart the lease servers after adding partitions)"
                )
            reply_to = self._reply_partition(msg) if isinstance(message, LeaseRequest) else None
        except ValueError as exc:
            self._dead_letter(msg, str(exc), source, now)
            return
        book = self._books.get(int(msg.partition() or 0))
        if book is None:  # its partition was taken away while the batch was read
            return
        reply = book.handle(message, now)
        if reply is not None and reply_to is not None:
            self._producer.produce(
                self.names.replies, encode(reply), message.client_id.encode(), partition=reply_to
            )

    def _land(self, msg: Message, wall: datetime) -> None:
        """One facts record: each of our scopes lands its rows past the usage offset it has
        applied (a replayed batch, cut anywhere, counts once), and marks the record read."""
        from spendstream import facts_topic  # pyarrow: only where facts are read

        assert self._spends_of is not None
        offset = int(msg.offset() or 0)
        mark = self._facts_mark(int(msg.partition() or 0))
        books = {s: self._books[p] for s, p in self._owned.items()}
        unread = [s for s, book in books.items() if book.position(s, mark) < offset]
        if not unread:
            return  # read before a rewind or by a scope that moved here: nothing new
        try:
            batch = facts_topic.decode(msg.value() or b"")
        except ValueError as exc:
            source = f"kafka:{msg.topic()}/{msg.partition()}@{offset}"
            self._dead_letter(msg, str(exc), source, wall)
            batch = None
        if batch is not None and batch.facts.num_rows:
            source = f"usage/{batch.usage_partition}"
            for scope in unread:
                book = books[scope]
                rows = batch.after(book.position(scope, source))
                spends = self._spends_of(rows, [scope]) if rows.num_rows else []
                if spends:
                    now = self._now(self._owned[scope], wall)
                    book.land(source, int(batch.last_offset or 0), spends, now)
        for scope in unread:
            books[scope].mark(scope, mark, offset)

    def _reply_partition(self, msg: Message) -> int:
        """Where the request's answer goes. One no partition of the replies topic takes
        is refused here: produced in the transaction, it failed it, and the request was
        read again after the abort, for ever (past int32, it raised OverflowError)."""
        for name, value in list(msg.headers() or []):
            if name == REPLY_PARTITION_HEADER and value is not None:
                try:
                    partition = int(value)
                except ValueError:
                    break
                if 0 <= partition < self._reply_partitions:
                    return partition
                # Partitions may have been added since (or were not known at the start): the
                # broker is asked again, at most every few seconds once a count is known (a
                # stream of such requests must not cost a call each). Asking cannot fail the
                # transaction: a broker that does not answer leaves the count as it was.
                due = not self._reply_partitions or time.monotonic() >= self._replies_asked_at + 5
                if 0 <= partition < 2**31 and due:
                    self._replies_asked_at = time.monotonic()
                    try:
                        found = self._consumer.partitions_for(self.names.replies, timeout_s=2)
                    except KafkaClientError as exc:
                        log.warning("cannot ask for %s's partitions: %s", self.names.replies, exc)
                        found = None
                    self._reply_partitions = max(self._reply_partitions, len(found or []))
                    if partition < self._reply_partitions:
                        return partition
                raise ValueError(
                    f"{REPLY_PARTITION_HEADER} {partition} is not a partition of "
                    f"{self.names.replies} ({self._reply_partitions} partitions)"
                )
        raise ValueError(f"a lease request needs a numeric {REPLY_PARTITION_HEADER!r} header")

    def _dead_letter(self, msg: Message, error: str, source: str, now: datetime) -> None:
        raw = (msg.value() or b"").decode("utf-8", errors="replace")[:MAX_DEAD_LETTER_RAW]
        error = error[:MAX_DEAD_LETTER_RAW]  # the reason may quote the record
        log.warning("lease message dead-lettered (%s): %s", source, error)
        value = {"raw": raw, "error": error, "source": source, "received_at": now.isoformat()}
        self._producer.produce(self.names.dead_letters, json.dumps(value).encode())

    def _write_changes(self, changes: list[tuple[int, RecordKey, bytes | None]]) -> None:
        for partition, key, value in changes:
            self._producer.produce(self.names.ledger, value, _key_bytes(key), partition=partition)

    def _rewind(self) -> None:
        """After an abort: the ledger and the positions go back to the last commit."""
        assigned = self._consumer.assignment()
        self._held = []  # read again from the committed offsets
        self._read_clock.rewound()
        self._books = {}
        self._owned = {}
        self._restore([p for _, p in assigned])
        self._own([p for _, p in assigned])
        for partition, offset in self._consumer.committed(assigned, timeout_s=30).items():
            self._consumer.seek(partition, offset if offset is not None else BEGINNING)
