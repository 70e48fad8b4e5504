"""The consumer: batch ``consume(n, timeout_s)``, explicit assignment and seeks, positions and
watermarks, synchronous commits, cooperative-sticky rebalance callbacks, and ``read_to_end``
(a changelog restore: every committed record up to where the partitions end now).

Partitions are plain ``(topic, partition)`` tuples and offsets plain ints, so callers never
import the client library. ``consume`` returns the client's own message objects (the cheap
path: no copy per record); read them with ``topic()``, ``partition()``, ``offset()``,
``key()``, ``value()``, ``headers()``, ``timestamp()`` (the ``Message`` protocol below).

Offsets are never committed behind the caller's back (``enable.auto.commit`` is off): a
caller commits what it has made durable. ``read_committed=True`` hides records of aborted
and open transactions.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol

import confluent_kafka

from spendstream.errors import KafkaClientError, KafkaUnavailable
from spendstream.kafka._errors import AUTH_ERRORS, ErrorLatch, translate
from spendstream.kafka._waits import fetch_metadata
from spendstream.kafka.settings import KafkaSettings, as_settings, client_config

__all__ = [
    "BEGINNING",
    "END",
    "AssignCallback",
    "Consumer",
    "Message",
    "Partition",
    "RebalanceCallback",
]

log = logging.getLogger("spendstream.kafka")

Partition = tuple[str, int]
RebalanceCallback = Callable[[list[Partition]], None]
# on_assign may return where to start each new partition (next offset to read; a partition
# left out, or None, starts at the group's committed offset, else auto_offset_reset).
AssignCallback = Callable[[list[Partition]], "Mapping[Partition, int | None] | None"]

# Logical offsets for assign()/seek(): the first record kept, the next one written.
BEGINNING: int = confluent_kafka.OFFSET_BEGINNING
END: int = confluent_kafka.OFFSET_END
# librdkafka's "offset not set": where a partition's position is still unknown.
_INVALID = confluent_kafka.OFFSET_INVALID
# Errors on a message that are news, not failures: end of partition, a topic not created yet.
_BENIGN = frozenset({"_PARTITION_EOF", "UNKNOWN_TOPIC_OR_PART", "_UNKNOWN_TOPIC"})


class Message(Protocol):
    """The read side of ``confluent_kafka.Message`` that spendstream uses."""

    def topic(self) -> str | None: ...

    def partition(self) -> int | None: ...

    def offset(self) -> int | None: ...

    def key(self) -> bytes | None: ...

    def value(self) -> bytes | None: ...

    def headers(self) -> Any: ...  # list[tuple[str, bytes]] | None, as produced here

    def timestamp(self) -> tuple[int, int]: ...  # (kind: 0 none, 1 create, 2 log append; ms)

    def error(self) -> Any: ...  # None for a record; a partition end with consume(ends=True)


def _tp(p: Partition, offset: int | None = None) -> Any:
    if offset is None:
        return confluent_kafka.TopicPartition(p[0], p[1])
    return confluent_kafka.TopicPartition(p[0], p[1], offset)


def _parts(tps: Iterable[Any]) -> list[Partition]:
    return [(tp.topic, tp.partition) for tp in tps]


class Consumer:
    """One librdkafka consumer, used from one thread."""

    def __init__(
        self,
        settings: KafkaSettings | str,
        *,
        group_id: str | None = None,
        client_id: str = "spendstream",
        auto_offset_reset: str = "earliest",
        read_committed: bool = False,
        on_assign: AssignCallback | RebalanceCallback | None = None,
        on_revoke: RebalanceCallback | None = None,
        on_lost: RebalanceCallback | None = None,
        partition_eof: bool = False,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        """``group_id`` None: no group at all (assign partitions yourself, nothing to commit).
        ``partition_eof``: the client reports reaching a partition's end (``read_to_end``)."""
        self.settings = as_settings(settings)
        self.group_id = group_id
        self.partition_eof = partition_eof
        self._latch = ErrorLatch()
        self._subscribed = False
        self._on_assign, self._on_revoke, self._on_lost = on_assign, on_revoke, on_lost
        defaults: dict[str, Any] = {
            # librdkafka insists on a group id; without a group it is never used (no
            # subscribe, no commit), so a unique throwaway one is harmless.
            "group.id": group_id or f"spendstream-nogroup-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "auto.offset.reset": auto_offset_reset,
            "isolation.level": "read_committed" if read_committed else "read_uncommitted",
            "partition.assignment.strategy": "cooperative-sticky",
            "fetch.wait.max.ms": 100,
            "enable.partition.eof": partition_eof,
            "error_cb": self._latch,
        }
        conf = client_config(self.settings, client_id, defaults, config)
        try:
            self._c = confluent_kafka.Consumer(conf)
        except confluent_kafka.KafkaException as exc:
            raise translate(exc.args[0], "cannot create a Kafka consumer") from None

    # --- what to read --------------------------------------------------------------------

    def subscribe(self, topics: Iterable[str]) -> None:
        """Join the group on ``topics``; the rebalance callbacks see incremental changes."""
        if self.group_id is None:
            raise KafkaClientError("subscribe needs a group_id; use assign() without a group")
        self._subscribed = True
        self._c.subscribe(
            list(topics), on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._lost
        )

    def _assigned(self, consumer: Any, tps: list[Any]) -> None:
        if self._on_assign is None:
            return  # the client assigns (incrementally, cooperative-sticky) on return
        starts = self._on_assign(_parts(tps))
        if starts:
            # Where to start reading each new partition (the caller's own positions, say
            # from its sink): assigned here with those offsets, so no record is fetched
            # from the group's committed offset first.
            self._c.incremental_assign(
                [_tp((tp.topic, tp.partition), starts.get((tp.topic, tp.partition))) for tp in tps]
            )

    def _revoked(self, consumer: Any, tps: list[Any]) -> None:
        if self._on_revoke is not None:
            self._on_revoke(_parts(tps))

    def _lost(self, consumer: Any, tps: list[Any]) -> None:
        if self._on_lost is not None:
            self._on_lost(_parts(tps))
        elif self._on_revoke is not None:
            self._on_revoke(_parts(tps))

    def assign(self, positions: Mapping[Partition, int | None] | Iterable[Partition]) -> None:
        """Read exactly these partitions (no group), from the given offsets where given
        (``None``: the committed offset, else ``auto_offset_reset``)."""
        if isinstance(positions, Mapping):
            tps = [_tp(p, o) for p, o in positions.items()]
        else:
            tps = [_tp(p) for p in positions]
        self._c.assign(tps)

    def seek(self, partition: Partition, offset: int) -> None:
        """Next record of an assigned partition to read (retries while it is being fetched)."""
        deadline = time.monotonic() + 10.0
        while True:
            try:
                self._c.seek(_tp(partition, offset))
                return
            except confluent_kafka.KafkaException as exc:
                if time.monotonic() > deadline:
                    raise translate(exc.args[0], f"cannot seek {partition}") from None
                time.sleep(0.05)

    def seek_to_beginning(self, partitions: Iterable[Partition]) -> None:
        for p in partitions:
            self.seek(p, BEGINNING)

    def assignment(self) -> list[Partition]:
        return _parts(self._c.assignment())

    def pause(self, partitions: Iterable[Partition]) -> None:
        self._c.pause([_tp(p) for p in partitions])

    def resume(self, partitions: Iterable[Partition]) -> None:
        self._c.resume([_tp(p) for p in partitions])

    # --- reading -------------------------------------------------------------------------

    def consume(self, n: int, timeout_s: float, *, ends: bool = False) -> list[Message]:
        """Up to ``n`` records: waits at most ``timeout_s`` for the first, then takes what
        is already fetched, without waiting to fill the batch (the client's own batch call
        waits out its whole timeout for ``n``: fine for throughput, 200 ms too slow for a
        breaker to take effect).

        Raises ``KafkaAuthError`` when the broker refused our credentials (or an ACL the
        topic or group), ``KafkaClientError`` for a fatal client error; partition ends and
        topics that do not exist yet are not errors. ``ends`` (a consumer made with
        ``partition_eof=True``): each time a partition's end is reached, a message whose
        ``error()`` is ``_PARTITION_EOF`` comes among the records, after that partition's last.
        """
        return self._poll(n, timeout_s, ends=ends)

    def _poll(self, n: int, timeout_s: float, *, ends: bool = True) -> list[Any]:
        """``consume``'s records, with the client's per-partition news (``_PARTITION_EOF``)
        still among them if ``ends``; errors that are failures raised, the rest logged and
        dropped."""
        try:
            first = self._c.poll(timeout_s)
            if first is None:
                msgs = []
            elif n > 1:
                msgs = [first, *self._c.consume(n - 1, 0)]
            else:
                msgs = [first]
        except confluent_kafka.KafkaException as exc:
            raise translate(exc.args[0], "consume failed", self.settings.describe()) from None
        blocking = self._latch.blocking()
        if blocking is not None:
            self._latch.clear()  # reported once; a new call looks again
            raise translate(blocking, "consume failed", self.settings.describe())
        out: list[Any] = []
        for m in msgs:
            err = m.error()
            if err is None:
                out.append(m)
                continue
            name = err.name()
            if name in AUTH_ERRORS or err.fatal():
                raise translate(err, "consume failed", self.settings.describe())
            if name == "_PARTITION_EOF":
                if ends:
                    out.append(m)
            elif name not in _BENIGN:
                log.warning("kafka consumer: %s [%s]", err.str(), name)
        return out

    def read_to_end(self, partitions: Iterable[Partition], timeout_s: float) -> Iterator[Message]:
        """Every record of ``partitions`` from the first one kept up to their end as it
        stands when the read starts, then stop: a changelog restore.

        With ``read_committed`` the end is the last stable offset: records of aborted
        transactions and transaction markers are skipped, and a transaction still open ends
        the read before it. Replaces the assignment; needs ``partition_eof=True``. Raises
        ``KafkaUnavailable`` when the end is not reached within ``timeout_s``.
        """
        if not self.partition_eof:
            raise KafkaClientError("read_to_end needs a Consumer made with partition_eof=True")
        deadline = time.monotonic() + timeout_s
        ends: dict[Partition, int] = {}
        for p in partitions:
            low, high = self.watermarks(p, max(0.01, deadline - time.monotonic()))
            if high > low:
                ends[p] = high
        self.assign(dict.fromkeys(ends, BEGINNING))
        while ends:
            if time.monotonic() > deadline:
                raise KafkaUnavailable(
                    f"could not read {sorted(ends)} to their end within {timeout_s:.0f}s "
                    f"({self.settings.describe()})",
                    code="_TIMED_OUT",
                    retriable=True,
                )
            for m in self._poll(1000, 0.2):
                p = (m.topic(), int(m.partition() or 0))
                if m.error() is not None:  # _PARTITION_EOF: nothing more to read there
                    ends.pop(p, None)
                    continue
                if p in ends:
                    yield m
                    if int(m.offset() or 0) + 1 >= ends[p]:
                        ends.pop(p, None)

    # --- where we are --------------------------------------------------------------------

    def position(self, partitions: Iterable[Partition]) -> dict[Partition, int | None]:
        """The next offset to read per partition (None: not known yet)."""
        out: dict[Partition, int | None] = {}
        for tp in self._c.position([_tp(p) for p in partitions]):
            out[(tp.topic, tp.partition)] = None if tp.offset == _INVALID else tp.offset
        return out

    def watermarks(self, partition: Partition, timeout_s: float = 10.0) -> tuple[int, int]:
        """(low, high): the first offset kept and the next offset to be written. Retriable
        failures are retried until ``timeout_s``: a topic just created answers only once its
        partition leader serves it."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = max(0.01, deadline - time.monotonic())
            try:
                low, high = self._c.get_watermark_offsets(_tp(partition), timeout=left)
                return int(low), int(high)
            except confluent_kafka.KafkaException as exc:
                error = self._why(exc, f"cannot read the watermarks of {partition}")
                if not error.retriable or time.monotonic() >= deadline:
                    raise error from None
            time.sleep(0.1)

    def cached_end(self, partition: Partition) -> int | None:
        """The partition's high watermark as the last fetch reported it (no broker call;
        safe from another thread); None before any fetch."""
        try:
            _, high = self._c.get_watermark_offsets(_tp(partition), cached=True)
        except (confluent_kafka.KafkaException, RuntimeError):
            return None
        return None if high < 0 else int(high)

    def committed(
        self, partitions: Iterable[Partition], timeout_s: float = 10.0
    ) -> dict[Partition, int | None]:
        """The group's committed offsets (None: nothing committed)."""
        try:
            tps = self._c.committed([_tp(p) for p in partitions], timeout=timeout_s)
        except confluent_kafka.KafkaException as exc:
            raise self._why(exc, "cannot read committed offsets") from None
        return {(tp.topic, tp.partition): None if tp.offset < 0 else tp.offset for tp in tps}

    def partitions_for(self, topic: str, timeout_s: float = 10.0) -> list[int] | None:
        """The topic's partition ids, or None when it does not exist (yet)."""

        def serve() -> None:
            if not self._subscribed and not self._c.assignment():
                self._c.poll(0)  # nothing to read yet: safe to serve error_cb here

        meta = fetch_metadata(
            self._c.list_topics, serve, self._latch, topic, timeout_s, self.settings.describe()
        )
        found = meta.topics.get(topic)
        if found is None or found.error is not None:
            return None
        return sorted(found.partitions)

    def _why(self, exc: Any, context: str) -> KafkaClientError:
        why = self._latch.reason() or exc.args[0]
        return translate(why, context, self.settings.describe())

    # --- committing ----------------------------------------------------------------------

    def commit(
        self, offsets: Mapping[Partition, int] | None = None, *, asynchronous: bool = False
    ) -> None:
        """Commit ``offsets`` (next offset to read per partition) or, when None, the current
        position of every assigned partition; synchronously unless ``asynchronous`` (then
        a failure is not reported: for offsets that are only advisory)."""
        try:
            tps = None if offsets is None else [_tp(p, o) for p, o in offsets.items()]
            if tps is None and asynchronous:
                self._c.commit(asynchronous=True)
            elif tps is None:
                self._c.commit(asynchronous=False)
            elif asynchronous:
                self._c.commit(offsets=tps, asynchronous=True)
            else:
                self._c.commit(offsets=tps, asynchronous=False)
        except confluent_kafka.KafkaException as exc:
            err = exc.args[0]
            if err.name() == "_NO_OFFSET":
                return  # nothing read since the last commit
            raise translate(err, "offset commit failed", self.settings.describe()) from None

    def group_metadata(self) -> Any:
        """For ``Producer.send_offsets_to_transaction``."""
        return self._c.consumer_group_metadata()

    def close(self) -> None:
        """Leave the group (without committing) and release the client."""
        with contextlib.suppress(RuntimeError):  # closed already
            self._c.close()
