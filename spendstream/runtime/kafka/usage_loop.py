"""The usage loop: usage records in batches -> facts, per-key detection, partials -> warehouse.

One consumer in group ``<app_id>`` on the usage topic (cooperative-sticky). Per assigned
usage partition p it holds a ``LocalEngine`` and the warehouse writer ``usage/<p>``, whose
last commit holds the partition's position and the engine's state: on assignment the
engine is restored from it and reading starts right after it (Kafka's committed offsets are
only advisory). Per batch of partition p:

1. decode, bound and dedupe the records (``stream.batch.judge_lines``; a bad record is a
   dead letter at ``kafka:<topic>/<p>@<offset>``), price the new ones (``price_table``);
2. publish the facts as one record to partition p of the facts topic and wait for its ack
   (its offset names the batch for scope owners: ``DetailSource``);
3. ``LocalEngine.process``: per-key alerts and breaker transitions, and the batch's partials
   for wide scopes; publish partials to the partials topic (partition ``owner_of(scope)``,
   the clock row to every partition), alerts, signed breaker events and dead letters, and
   wait for every ack;
4. commit to the warehouse: facts, dead letters, alerts, breaker events, the engine state and
   the position, in one exactly-once commit; then (advisory) the group offset.

A failure anywhere (the broker, the warehouse) rewinds the partition to its last commit and
replays the batch: nothing is skipped, and no input can stop the loop (a poison record is a
dead letter). A replayed batch republishes its outputs: alerts are idempotent by alert_id,
scope owners drop partials of a batch they merged by its usage offsets, and batches that
were published but not landed are replayed cut exactly as they were (their facts records
say how), so a scope owner never sees two different cuts of the same records.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from spendstream import facts_topic
from spendstream.config import Config
from spendstream.errors import KafkaClientError, SpendstreamError, WriterFenced
from spendstream.kafka.admin import Admin
from spendstream.kafka.consumer import Message, Partition
from spendstream.kafka.producer import OutRecord
from spendstream.kafka.settings import KafkaSettings
from spendstream.pricedata import load_price_data
from spendstream.records import BreakerEvent
from spendstream.runtime.batching import batch_target
from spendstream.runtime.http.metrics import WorkerMetrics
from spendstream.runtime.idle_clock import IdleClock
from spendstream.runtime.kafka.facts_reader import batch_ref
from spendstream.runtime.kafka.partition_loop import PartitionLoop, by_partition
from spendstream.runtime.kafka.topology import (
    MAX_RECORD_BYTES,
    TopicNames,
    grow_facts,
    raise_record_limit,
)
from spendstream.runtime.kafka.wire import (
    KIND_HEADER,
    PARTIALS_KIND,
    RESET,
    decode_reset,
    encode_partials,
    kind_of,
)
from spendstream.runtime.memory import release_freed_memory
from spendstream.stream.batch import DIGEST, ROW, judge_lines
from spendstream.stream.engine import LocalEngine, route
from spendstream.stream.pipeline import Pipeline
from spendstream.table_schemas import alerts_table, breaker_events_table, dead_letters_table
from spendstream.warehouse import Warehouse
from spendstream.warehouse.landing import SharedDedupe

__all__ = [
    "AHEAD_S",
    "FETCH_QUEUE_BACKOFF_MS",
    "MAX_WAIT_S",
    "STALLED_S",
    "Pace",
    "UsageLoop",
    "held_back",
    "replayed_cut",
    "short_batch_due",
    "usage_writer",
]

log = logging.getLogger(__name__)


# A partition with a backlog lands full batches (``runtime.batching.batch_target``): each
# batch costs a facts record, partials to every owner and a warehouse commit, whatever its
# size. One short of a batch this long after its last batch lands what it has, so a busy
# worker cannot starve a partition.
MAX_WAIT_S = 2.0
RELEASE_EVERY_S = 60.0
# Event-time pacing of a worker's partitions. Scope owners merge every usage partition's
# partials in event-time order, holding what arrives ahead of the least advanced partition;
# partitions read at the same record rate drift apart in event time when their keys are
# uneven (a 10M-event backlog left owners holding ~6,000 slices, and their memory). So of
# the partitions with a backlog, one more than ``AHEAD_S`` of event time ahead of the least
# advanced waits (and stops fetching once it holds a batch), as Kafka Streams picks the
# partition with the earliest record (``held_back``). A partition that has landed nothing
# for ``STALLED_S`` holds no one back: one stuck partition must not stall the rest.
AHEAD_S = 60.0
STALLED_S = 10.0


# Event-time pacing pauses and resumes partitions many times a minute during a backlog, and
# librdkafka drops a paused partition's prefetched records, so a resumed one is fetched
# anew. With the fetch queue's thresholds crossed meanwhile, librdkafka postponed fetches
# by ``fetch.queue.backoff.ms`` (1 s by default): a worker catching up on 1M events waited
# 1.1-2.9 s in all with nothing to read (7-19 waits of up to 0.6 s). At 50 ms: ~0, and one
# worker landed 90.7-92.1k events/s against 68.7-82.9k in three alternated pairs (10 ms:
# no waits either, but 80.5-83.9k: fetches retried that often cost CPU).
FETCH_QUEUE_BACKOFF_MS = 50


def replayed_cut(offsets: Sequence[int], last: int) -> int | None:
    """How many buffered records (by offset) a replayed batch ending at ``last`` takes: it
    is cut exactly as published (scope owners may have merged its partials), and lands as
    soon as its last record is read, not when one past it arrives (a quiet partition would
    wait for new traffic). None while ``last`` is not read yet."""
    if not offsets or offsets[-1] < last:
        return None
    return sum(1 for offset in offsets if offset <= last)


def short_batch_due(last: int, end: int | None, since: float | None, now: float) -> bool:
    """Whether a partition's buffer, short of a batch, lands now. ``last`` is the offset of
    its newest buffered record, ``end`` the partition's high watermark at the last fetch
    (None: not known yet), ``since`` when the buffer started waiting. It lands when it holds
    all the partition had (a live stream waits for nothing), or has waited ``MAX_WAIT_S``
    (a backlog fills batches; one partition must not starve)."""
    if end is None or last + 1 >= end:
        return True
    return since is not None and now - since >= MAX_WAIT_S


@dataclass(frozen=True, slots=True)
class Pace:
    """What pacing knows of one partition."""

    clock: int | None  # watermark of its last batch, us (None: no batch yet)
    backlog: bool  # a batch or more unread
    progress_at: float  # when it last landed a batch, or was assigned (monotonic s)


def held_back(parts: Mapping[int, Pace], now: float) -> set[int]:
    """Partitions whose next batch waits: those with a backlog more than ``AHEAD_S`` of event
    time past the least advanced clock among partitions with a backlog that landed within
    ``STALLED_S``. A caught-up partition is live: it is never held (its per-key alerts must
    not wait for a backfill elsewhere) and holds no one back (a live partition whose events
    are old must not throttle the rest); nor does one without a clock, or a stalled one."""
    paced = {p: x.clock for p, x in parts.items() if x.backlog and x.clock is not None}
    floor = min(
        (c for p, c in paced.items() if now - parts[p].progress_at < STALLED_S), default=None
    )
    if floor is None:
        return set()
    ahead_us = int(AHEAD_S * 1_000_000)
    return {p for p, clock in paced.items() if clock - floor > ahead_us}


# librdkafka's names for a record the broker (or the client) will never take for its size.
_TOO_LARGE = frozenset({"MSG_SIZE_TOO_LARGE", "_MSG_SIZE_TOO_LARGE"})


LIMIT_RETRY_S = 60.0  # between two tries at raising the partials topic's record limit


class _TooLarge(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(f"a facts record of {size} bytes is too large for its topic")
        self.size = size


def usage_writer(partition: int) -> str:
    return f"usage/{partition}"


@dataclass(slots=True)
class _Partition:
    number: int
    warehouse: Warehouse
    engine: LocalEngine
    landed: int  # last usage offset landed (-1: none)
    idle: IdleClock
    cuts: deque[tuple[int, int]] = field(default_factory=deque)  # unlanded batches to replay
    buffer: list[Message] = field(default_factory=list)
    since: float | None = None  # when the oldest record in the buffer was read


class UsageLoop(PartitionLoop[_Partition]):
    """One thread's loop over the usage topic (see the module docstring)."""

    name = "usage"

    def __init__(
        self,
        config: Config,
        workdir: Path,
        settings: KafkaSettings,
        names: TopicNames,
        partials_partitions: int,
        metrics: WorkerMetrics,
        stop: threading.Event,
    ) -> None:
        super().__init__(config, workdir, settings, names, metrics, stop)
        self.owners = partials_partitions
        self.pipeline = Pipeline(config, price_data=load_price_data(workdir))
        self.dedupe = SharedDedupe(config.warehouse.dedupe_window_days)
        self._released_at = 0.0
        self._paused: set[int] = set()
        # partition -> when it last landed a batch (or was assigned): not reset by a rewind,
        # so a partition failing over and over counts as stalled.
        self._progress: dict[int, float] = {}
        self._limit_asked_at: float | None = None  # raise_record_limit, at most once a minute

    @property
    def topic(self) -> str:
        return self.names.usage

    def consumer_config(self) -> dict[str, Any]:
        return {**super().consumer_config(), "fetch.queue.backoff.ms": FETCH_QUEUE_BACKOFF_MS}

    @property
    def group(self) -> str:
        return self.config.kafka.app_id

    def consume_max(self) -> int:
        pipeline = self.config.pipeline
        return max(pipeline.batch_size, pipeline.backlog_batch_size)

    def writer(self, partition: int) -> str:
        return usage_writer(partition)

    def _state(self, p: int, warehouse: Warehouse) -> _Partition:
        landed = self.landed_position(warehouse, p)
        engine = LocalEngine(self.config, p, warehouse.resume().state)
        assert self.facts is not None and self.consumer is not None
        # Asked at every opening, not once: the facts reader's metadata request is also
        # what makes its client know a partition just added (its watermarks, read below
        # by unlanded_cuts, failed as an unknown partition until librdkafka's own refresh).
        facts = self.facts.consumer.partitions_for(self.names.facts, timeout_s=5)
        if facts is not None and p not in facts:  # partitions were added to the usage topic
            usage = self.consumer.partitions_for(self.names.usage, timeout_s=5) or []
            admin = Admin(self.settings, client_id="spendstream-usage", timeout_s=15)
            if grow_facts(admin, self.names, max(len(usage), p + 1)) <= p:
                raise KafkaClientError(
                    f"{self.names.facts} still has no partition {p} for usage partition {p}",
                    retriable=True,
                )
        usage_start, usage_end = self.consumer.watermarks((self.names.usage, p))
        if landed + 1 > usage_end:
            # Not read again from the start on its own (docs/kafka.md, Operating notes):
            # scope owners would take the new topic's batches for replays of merged ones.
            log.error(
                "usage %d: landed up to offset %d, but %s ends at %d: the topic was made "
                "again or replaced; its records up to offset %d are passed over (docs/kafka.md, "
                "Operating notes)",
                p, landed, self.names.usage, usage_end, landed,
            )  # fmt: skip
        elif landed + 1 < usage_start:
            log.error(
                "usage %d: records %d..%d are no longer on %s (its retention deleted them "
                "before they landed): reading on from %d",
                p, landed + 1, usage_start - 1, self.names.usage, usage_start,
            )  # fmt: skip
        cuts = deque(self.facts.unlanded_cuts(p, landed, usage_end))
        if cuts:
            log.info("usage %d: replaying %d unlanded batch(es) as cut: %s", p, len(cuts), cuts)
        part = _Partition(
            p, warehouse, engine, landed, IdleClock(self.config.breaker.idle_advance_s)
        )
        part.cuts = cuts
        self._progress.setdefault(p, time.monotonic())
        return part

    def _turn(self, msgs: Sequence[Message]) -> None:
        now = time.monotonic()
        for p, records in by_partition(msgs).items():
            part = self.parts.get(p)
            if part is None:
                continue  # revoked, or waiting to be rewound: re-read from its position
            if (records[0].offset() or 0) > part.landed:  # in offset order: all of them
                part.buffer.extend(records)
            else:  # read again after a rewind
                part.buffer.extend(r for r in records if (r.offset() or 0) > part.landed)
            if part.buffer and part.since is None:
                part.since = now
        held = self._held_back(now)
        for p, part in sorted(self.parts.items()):
            if p in held and not part.cuts:  # a replay is landed as cut, whatever its time
                continue
            try:
                self._drain(part, now)
            except Exception:
                self._failed(p, "batch")
        self._pace(self._held_back(now))
        self._idle()
        # Allocators keep freed pages for reuse; a worker that lands batch after batch for
        # days hands them back now and then (not every turn: pages handed back are faulted
        # in again by the next batch).
        if now - self._released_at >= RELEASE_EVERY_S:
            t0 = time.perf_counter()
            release_freed_memory()
            self.metrics.step_seconds.labels("release_memory").inc(time.perf_counter() - t0)
            self._released_at = now

    def _drain(self, part: _Partition, now: float) -> None:
        while part.buffer:
            if part.cuts:
                n = replayed_cut([m.offset() or 0 for m in part.buffer], part.cuts[0][1])
                if n is None:
                    return
                first, last = part.cuts.popleft()
                if n == 0:
                    # Read from past it: the usage topic's retention deleted its records
                    # before it landed (an empty batch failed at every replay).
                    log.error(
                        "usage %d: records %d..%d, published as a batch but never landed, "
                        "are no longer on %s (its retention deleted them): not landed",
                        part.number, first, last, self.names.usage,
                    )  # fmt: skip
                    continue
                batch, part.buffer = part.buffer[:n], part.buffer[n:]
                # Cut exactly as published (its facts record fit then): never in halves.
                land = self._process
            else:
                size = self._target(part)
                if len(part.buffer) < size and not self._due(part, now):
                    return
                batch, part.buffer = part.buffer[:size], part.buffer[size:]
                land = self._land_batch
            land(part, batch)
            # What is left over waits for the next batch from now (a backlog refills it).
            part.since = now if part.buffer else None

    def _held_back(self, now: float) -> set[int]:
        size = self.config.pipeline.batch_size
        paces = {}
        for p, part in self.parts.items():
            unread = self._unread(part)
            backlog = len(part.buffer) >= size or (unread is not None and unread >= size)
            paces[p] = Pace(part.engine.watermark_us, backlog, self._progress.get(p, now))
        return held_back(paces, now)

    def _pace(self, held: set[int]) -> None:
        """Stop fetching for a held partition that has a batch in hand; fetch again for the
        rest (a resumed partition is fetched again from the record after its last read).
        A partition paused and then rewound or reopened is resumed like any other."""
        assert self.consumer is not None
        self._paused &= {n for _, n in self.assigned()}
        want = {
            p
            for p in held
            if p in self.parts and len(self.parts[p].buffer) >= self._target(self.parts[p])
        }
        topic = self.names.usage
        try:
            if want - self._paused:
                self.consumer.pause((topic, p) for p in sorted(want - self._paused))
        except Exception as exc:  # pausing only saves memory: go on without it
            log.warning("usage: cannot pause %s (%s)", sorted(want - self._paused), exc)
        resume = self._paused - want
        try:
            if resume:
                self.consumer.resume((topic, p) for p in sorted(resume))
        except Exception as exc:  # kept as paused: resumed again next turn
            log.warning("usage: cannot resume %s (%s); trying again", sorted(resume), exc)
            want |= resume
        self._paused = want

    def _leave(self, parts: list[Partition], release: Callable[[int, _Partition], None]) -> None:
        # A partition assigned again later starts fetching (the client forgets its pause).
        for _, n in parts:
            self._paused.discard(n)
            self._progress.pop(n, None)
        super()._leave(parts, release)

    def _end(self, part: _Partition) -> int | None:
        """The partition's high watermark at the last fetch (no broker call)."""
        assert self.consumer is not None
        return self.consumer.cached_end((self.names.usage, part.number))

    def _unread(self, part: _Partition) -> int | None:
        """Offsets past the last landed one, up to that watermark (None: not known yet)."""
        end = self._end(part)
        return None if end is None else end - 1 - part.landed

    def _target(self, part: _Partition) -> int:
        pipeline = self.config.pipeline
        return batch_target(self._unread(part), pipeline.batch_size, pipeline.backlog_batch_size)

    def _due(self, part: _Partition, now: float) -> bool:
        return short_batch_due(part.buffer[-1].offset() or 0, self._end(part), part.since, now)

    def _land_batch(self, part: _Partition, msgs: list[Message]) -> None:
        """Land ``msgs`` as one batch, or in halves while its facts record is more than the
        facts topic takes (a topic made with a smaller ``max.message.bytes`` than `run`
        gives it: the same batch failed at every replay). Nothing of a batch is published
        before its facts record, so the halves are batches like any other."""
        try:
            self._process(part, msgs)
        except _TooLarge as exc:
            half = len(msgs) // 2
            log.warning(
                "usage %d: the facts record of %d events (%d bytes) is more than %s takes; "
                "landing them in two batches (raise its max.message.bytes to %d)",
                part.number, len(msgs), exc.size, self.names.facts, MAX_RECORD_BYTES,
            )  # fmt: skip
            self._land_batch(part, msgs[:half])
            self._land_batch(part, msgs[half:])

    def _process(self, part: _Partition, msgs: list[Message]) -> None:
        assert self.out is not None
        p, names, out, steps = part.number, self.names, self.out, self.metrics.step_seconds
        t0 = time.perf_counter()
        now = datetime.now(UTC)
        # A reset control record is the only record that is not a usage event; anything
        # else (whatever its headers) is judged as one, so a bad record is a dead letter.
        resets = [h is not None and kind_of(h) == RESET for h in [m.headers() for m in msgs]]
        controls = [m for m, reset in zip(msgs, resets, strict=True) if reset]
        events = (
            [m for m, reset in zip(msgs, resets, strict=True) if not reset] if controls else msgs
        )
        topic = names.usage
        positions = [m.offset() for m in events]
        judged = judge_lines(
            [m.value() or b"" for m in events],
            now,
            lambda i: f"kafka:{topic}/{p}@{positions[i]}",
            part.warehouse.classify,
            self.config.detection.max_future_skew_s,
        )
        facts = self.pipeline.price_table(judged.new, now)
        digests = judged.new.column(DIGEST).combine_chunks()
        # The facts' files are written while the batch is published and detected on.
        prewritten = part.warehouse.prewrite(facts, digests) if facts.num_rows else None
        try:
            offsets = pa.array(positions, pa.int64()).take(judged.new.column(ROW).combine_chunks())
            first, last = int(msgs[0].offset() or 0), int(msgs[-1].offset() or 0)
            t1 = time.perf_counter()
            record = facts_topic.encode(p, facts, offsets, (first, last))
            try:
                (facts_offset,) = out.send([OutRecord(names.facts, record, partition=p)])
            except KafkaClientError as exc:
                if exc.code in _TOO_LARGE and len(msgs) > 1:
                    raise _TooLarge(len(record)) from exc
                raise
            assert facts_offset is not None
            t2 = time.perf_counter()
            local = part.engine.process(facts, batch_ref(p, facts_offset))
            alerts = list(local.detection.alerts)
            breakers = list(local.detection.breaker_events)
            breakers += self._resets(part, controls, now)
            records: list[OutRecord] = [
                OutRecord(
                    names.partials,
                    encode_partials(p, first, last, table),
                    str(p).encode(),
                    [(KIND_HEADER, PARTIALS_KIND)],
                    q,
                )
                # Every owner hears of every batch, even one without facts (no rows): how far
                # each usage partition is read is what alignment waits for.
                for q, table in enumerate(route(local.partials, self.owners))
            ]
            records += out.detection(alerts, breakers)
            records += [out.dead_letter(d) for d in judged.dead_letters]
            t3 = time.perf_counter()
            try:
                out.send(records)
            except KafkaClientError as exc:
                if exc.code in _TOO_LARGE:  # the replay is sent where it fits, if it can be
                    self._raise_partials_limit()
                raise
            t4 = time.perf_counter()
            try:
                result = part.warehouse.commit(
                    facts,
                    alerts_table(alerts),
                    breaker_events_table(breakers),
                    dead_letters_table(judged.dead_letters),
                    positions={self.position_key(p): last},
                    state=part.engine.snapshot(),
                    digests=digests,
                    prewritten=prewritten,
                )
            except WriterFenced:
                # Another worker holds this partition now: what it landed is the truth.
                log.warning("usage %d: another worker took the partition over; rewinding", p)
                raise
            t5 = time.perf_counter()
            part.landed = last
            self._progress[p] = time.monotonic()
            if facts.num_rows:
                part.idle.judged()
            assert self.consumer is not None
            try:
                self.consumer.commit({(names.usage, p): last + 1}, asynchronous=True)
            except SpendstreamError as exc:  # advisory: the warehouse holds the position
                log.info("usage %d: offset commit failed (%s)", p, exc)
            m = self.metrics
            # Usage events only (a breaker reset's control record becomes no fact, duplicate
            # or dead letter: counted, it read as an event gone missing in the status line),
            # once the batch has landed (a batch landed in halves, or replayed after a later
            # step failed, was taken twice).
            m.events_in.inc(len(events))
            steps.labels("usage_decode_price").inc(t1 - t0)
            steps.labels("usage_publish_facts").inc(t2 - t1)
            steps.labels("usage_detect").inc(t3 - t2)
            steps.labels("usage_publish").inc(t4 - t3)
            steps.labels("usage_land").inc(t5 - t4)
            m.batches.labels("usage").inc()
            m.observe_facts(facts, result.facts)
            m.duplicates.inc(judged.duplicates + result.duplicates)
            m.dead_letters.labels("usage").inc(len(judged.dead_letters))
            m.events_out.labels(names.facts).inc(facts.num_rows)
            m.events_out.labels(names.alerts).inc(len(alerts))
            m.events_out.labels(names.breakers).inc(len(breakers))
            m.observe_detection(alerts, breakers)
            m.late.inc(local.detection.late)
        finally:
            if prewritten is not None:
                prewritten.discard()  # unless the commit took its files

    def _raise_partials_limit(self) -> None:
        """``raise_record_limit`` on the partials topic, at most once a minute: a batch
        refused replays every second, and without the right to alter the topic each try
        was one more admin client, describe and ERROR line."""
        now = time.monotonic()
        if self._limit_asked_at is not None and now - self._limit_asked_at < LIMIT_RETRY_S:
            return
        self._limit_asked_at = now
        admin = Admin(self.settings, client_id="spendstream-usage", timeout_s=15)
        if raise_record_limit(admin, self.names.partials, refused=True):
            self._limit_asked_at = None  # raised: a later refusal is asked about at once

    def _resets(
        self, part: _Partition, controls: list[Message], now: datetime
    ) -> list[BreakerEvent]:
        """``breakers reset`` of a per-key scope, applied after the batch's facts."""
        events = []
        skew = self.config.detection.max_future_skew_s
        for m in controls:
            try:
                cmd = decode_reset(m.key(), m.value() or b"", m.headers(), self.signer, now, skew)
            except ValueError as exc:
                log.warning(
                    "usage %d: ignoring a breaker reset at offset %s: %s",
                    part.number,
                    m.offset(),
                    exc,
                )
                continue
            event = part.engine.reset_breaker(cmd.scope, cmd.ts)
            if event is not None:
                events.append(event)
        return events

    # --- a quiet stream ----------------------------------------------------------------

    def _idle(self) -> None:
        """Breakers' idle advance on a quiet stream."""
        for p, part in list(self.parts.items()):
            if part.buffer or part.cuts:
                continue
            try:
                self._advance(part)
            except Exception:
                self._failed(p, "idle advance")

    def _advance(self, part: _Partition) -> None:
        assert self.out is not None
        events = part.idle.advance(part.engine)
        if not events:
            return
        self.out.send(self.out.detection([], events))
        part.warehouse.commit(
            breaker_events=breaker_events_table(events), state=part.engine.snapshot()
        )
        self.metrics.observe_detection([], events)
        self.metrics.events_out.labels(self.names.breakers).inc(len(events))

    def processed(self, part: _Partition) -> int:
        return part.landed
