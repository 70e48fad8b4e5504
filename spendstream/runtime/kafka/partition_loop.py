"""What both loops share: a consumer group whose partitions each belong to one warehouse
writer, resumed from that writer's last commit on assignment and rewound to it on failure.

A subclass names its topic, group and writer, opens a partition's state from the warehouse
(``_open``: an object with ``warehouse`` and ``landed``, the last offset landed) and handles
each turn's records (``_turn``). Kafka's committed offsets are advisory: reading starts right
after the writer's landed position (``on_assign`` returns it to the consumer). A partition
whose state cannot be opened (warehouse or broker down) waits and is tried again each turn;
the loop itself never ends on a failure.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from itertools import groupby
from operator import methodcaller
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from spendstream.config import Config
from spendstream.errors import SpendstreamError
from spendstream.kafka.consumer import Consumer, Message, Partition
from spendstream.kafka.producer import Producer
from spendstream.kafka.settings import KafkaSettings
from spendstream.runtime.http.metrics import WorkerMetrics
from spendstream.runtime.kafka.facts_reader import FactsReader
from spendstream.runtime.kafka.outputs import Outputs
from spendstream.runtime.kafka.topology import MAX_RECORD_BYTES, TopicNames
from spendstream.signing import load_breaker_signer
from spendstream.warehouse import Warehouse
from spendstream.warehouse.landing import SharedDedupe

__all__ = ["RETRY_S", "PartitionLoop", "PartitionState", "heartbeat_ms"]

log = logging.getLogger(__name__)

RETRY_S = 1.0  # pause before a partition that failed is tried again


class PartitionState(Protocol):
    warehouse: Warehouse
    landed: int


S = TypeVar("S", bound=PartitionState)


class PartitionLoop(Generic[S]):
    """One thread's loop over one topic's assigned partitions (see the module docstring)."""

    name = "loop"  # for logs and client ids

    def __init__(
        self,
        config: Config,
        workdir: Path,
        settings: KafkaSettings,
        names: TopicNames,
        metrics: WorkerMetrics,
        stop: threading.Event,
    ) -> None:
        self.config = config
        self.workdir = workdir
        self.settings = settings
        self.names = names
        self.metrics = metrics
        self.stop = stop
        self.signer = load_breaker_signer(config.breaker)
        self.parts: dict[int, S] = {}
        self._lag: list[tuple[str, int, int]] = []
        self._assigned: list[Partition] = []
        self._broken: set[int] = set()
        self.consumer: Consumer | None = None
        self.facts: FactsReader | None = None
        self.out: Outputs | None = None
        self.ready = threading.Event()
        # Writers that land facts share one dedupe store (warehouse.landing.SharedDedupe).
        self.dedupe: SharedDedupe | None = None

    # --- what a subclass says ----------------------------------------------------------

    @property
    def topic(self) -> str:
        raise NotImplementedError

    @property
    def group(self) -> str:
        raise NotImplementedError

    def writer(self, partition: int) -> str:
        raise NotImplementedError

    def _state(self, partition: int, warehouse: Warehouse) -> S:
        """Partition state from its writer's last commit (``warehouse.resume()``)."""
        raise NotImplementedError

    def _turn(self, msgs: Sequence[Message]) -> None:
        raise NotImplementedError

    def consume_max(self) -> int:
        return self.config.pipeline.batch_size

    def consumer_config(self) -> dict[str, Any]:
        """librdkafka settings of the loop's consumer, beyond the adapter's defaults."""
        kc = self.config.kafka
        return {
            "session.timeout.ms": int(kc.session_timeout_s * 1000),
            # A member hears of a rebalance in a heartbeat's answer, and a cooperative
            # one takes two rounds: at a tenth of the 30 s session (3 s), a worker
            # joining a busy group began landing ~7 s after it started.
            "heartbeat.interval.ms": heartbeat_ms(kc.session_timeout_s),
        }

    def processed(self, state: S) -> int:
        """The last offset of the partition this loop is done with (its records up to it
        need nothing more from this loop but, perhaps, a commit)."""
        raise NotImplementedError

    # --- shared ------------------------------------------------------------------------

    def position_key(self, partition: int) -> str:
        """The key of the partition's position in its writer's commits."""
        return f"{self.topic}/{partition}"

    def landed_position(self, warehouse: Warehouse, partition: int) -> int:
        return (warehouse.resume().positions or {}).get(self.position_key(partition), -1)

    def assigned(self) -> list[Partition]:
        return list(self._assigned)

    def lag(self) -> list[tuple[str, int, int]]:
        """(topic, partition, records not yet processed) per assigned partition, as of the
        loop's last turn (for /metrics, from another thread)."""
        return list(self._lag)

    def _measure_lag(self) -> None:
        # In the loop's own thread: the client's cached ends, no broker call.
        assert self.consumer is not None
        out = []
        for topic, p in self.assigned():
            state = self.parts.get(p)
            end = self.consumer.cached_end((topic, p))
            if state is not None and end is not None:
                out.append((topic, p, max(0, end - self.processed(state) - 1)))
        self._lag = out

    def _open(self, n: int) -> S:
        """Partition n as its writer's last commit left it."""
        old = self.parts.pop(n, None)
        if old is not None:
            old.warehouse.close()
        wh = Warehouse(
            self.workdir, writer=self.writer(n), config=self.config.warehouse, dedupe=self.dedupe
        )
        try:
            state = self._state(n, wh)
        except BaseException:
            wh.close()  # it is retried with a new one
            raise
        self.parts[n] = state
        return state

    def _on_assign(self, parts: list[Partition]) -> Mapping[Partition, int | None]:
        starts: dict[Partition, int | None] = {}
        t0 = time.monotonic()
        for topic, n in parts:
            while True:
                try:
                    state = self._open(n)
                    break
                except SpendstreamError as exc:
                    # The warehouse or the broker is down: the partition waits for them (an
                    # assignment must not be left half-made); the group sees us alive
                    # meanwhile through librdkafka's own heartbeats.
                    log.warning("%s %d: cannot resume (%s); retrying", self.name, n, exc)
                    if self.stop.wait(RETRY_S):
                        raise
            starts[(topic, n)] = state.landed + 1
        self._assigned = sorted({*self._assigned, *parts})
        if parts:  # when a worker joining a group begins, and what opening its writers cost
            log.info(
                "%s: assigned %s, resumed in %.2f s",
                self.name,
                sorted(n for _, n in parts),
                time.monotonic() - t0,
            )
        return starts

    def _release(self, n: int, state: S) -> None:
        """Partition n leaves this loop (revoked, or the loop ends) in good order: a
        subclass may land what it holds unlanded first."""
        state.warehouse.close()

    def _on_revoke(self, parts: list[Partition]) -> None:
        if parts:
            log.info("%s: revoked %s", self.name, sorted(n for _, n in parts))
        self._leave(parts, self._release)

    def _on_lost(self, parts: list[Partition]) -> None:
        # Another worker may own these already: nothing more is landed from here.
        if parts:
            log.info("%s: lost %s", self.name, sorted(n for _, n in parts))
        self._leave(parts, lambda _n, state: state.warehouse.close())

    def _leave(self, parts: list[Partition], release: Callable[[int, S], None]) -> None:
        for _, n in parts:
            state = self.parts.pop(n, None)
            if state is not None:
                release(n, state)
            self._broken.discard(n)
        self._assigned = sorted(set(self._assigned) - set(parts))

    def _rewind(self, n: int) -> None:
        """Back to partition n's last commit: what was in hand is read and done again."""
        assert self.consumer is not None
        try:
            state = self._open(n)
            self.consumer.seek((self.topic, n), state.landed + 1)
            self._broken.discard(n)
        except SpendstreamError as exc:
            log.warning("%s %d: cannot rewind yet (%s)", self.name, n, exc)
            self.parts.pop(n, None)
            self._broken.add(n)

    def run(self) -> None:
        client = f"spendstream-{self.name}"
        self.facts = FactsReader(self.settings, self.names.facts)
        producer = Producer(
            self.settings,
            client_id=client,
            # A loop hands a batch's records over at once and waits for their acks: a
            # linger would only add its 5 ms to every batch, twice per usage batch.
            config={"message.max.bytes": MAX_RECORD_BYTES + 65536, "linger.ms": 0},
        )
        self.out = Outputs(producer, self.names, self.signer)
        self.consumer = Consumer(
            self.settings,
            group_id=self.group,
            client_id=client,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
            config=self.consumer_config(),
        )
        try:
            self.consumer.subscribe([self.topic])
            self.ready.set()
            within = self.config.pipeline.batch_within_s
            while not self.stop.is_set():
                try:
                    msgs = self.consumer.consume(self.consume_max(), within)
                except SpendstreamError as exc:
                    log.warning("%s loop: %s", self.name, exc)
                    self.stop.wait(RETRY_S)
                    continue
                for n in sorted(self._broken):
                    self._rewind(n)
                self._turn(msgs)
                self._measure_lag()
        finally:
            for n, state in sorted(self.parts.items()):
                self._release(n, state)
            self.parts.clear()
            self.consumer.close()
            self.facts.close()
            self.out.producer.close(timeout_s=10)

    def _failed(self, n: int, what: str) -> None:
        """Whatever failed (broker, warehouse, a bug on a strange record), nothing of it is
        landed: pause, then do it again from the partition's last commit; never skip it."""
        state = self.parts.get(n)
        log.exception(
            "%s %d: %s failed; replaying from offset %d",
            self.name,
            n,
            what,
            (state.landed if state is not None else -1) + 1,
        )
        self.stop.wait(RETRY_S)
        self._rewind(n)


def heartbeat_ms(session_timeout_s: float) -> int:
    """The loops' heartbeat interval: a tenth of the session timeout, at most 1 s."""
    return max(100, min(1000, int(session_timeout_s * 100)))


def by_partition(msgs: Sequence[Message]) -> dict[int, list[Message]]:
    out: dict[int, list[Message]] = {}
    # A fetch hands records over in runs of one partition: one step per run, not per record.
    for p, run in groupby(msgs, _partition_of):
        out.setdefault(int(p or 0), []).extend(run)
    return out


_partition_of = methodcaller("partition")
