"""The scope loop: partials of wide scopes in aligned rounds -> alerts and breaker transitions.

One consumer in group ``<app_id>-scopes`` on the partials topic. Per assigned partials
partition q it holds a ``ScopeEngine`` and the warehouse writer ``scopes/<q>``, whose last
commit holds the engine state, the usage offsets merged per usage partition, and the
position in partition q.

Partition q receives, from every usage batch with facts, that batch's partials of the
scopes q owns plus the batch's clock row (its watermarks). They are merged in *rounds*:
each usage partition's clock is the watermark its last batch reached, and a round releases
every held batch whose watermark is at or below the least advanced clock, so batches of
different partitions meet in event-time order (``stream.engine``'s docstring says what
that makes equal to one process). A usage partition stops holding the others back when its
reader says it has read everything (an idle marker), or after ``[pipeline] align_idle_s``
of silence (its worker died; another takes it over).

A batch whose last usage offset is at or below what was merged (or is held) for its usage
partition is a replay of a batch merged already (its worker died before landing it) and is
dropped. Where a merge may cross a threshold, ``DetailSource`` reads the source batch's
facts back from the facts topic. Alerts and signed breaker events are published before the
warehouse commit (alerts, breaker events, state, position); a failure rewinds partition q
to its last commit and replays.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from spendstream.config import Config
from spendstream.errors import SpendstreamError
from spendstream.kafka.consumer import Message
from spendstream.kafka.settings import KafkaSettings
from spendstream.records import Alert, BreakerEvent, DeadLetter
from spendstream.runtime.http.metrics import WorkerMetrics
from spendstream.runtime.idle_clock import IdleClock
from spendstream.runtime.kafka.partition_loop import PartitionLoop, by_partition
from spendstream.runtime.kafka.topology import TopicNames
from spendstream.runtime.kafka.wire import (
    PARTIALS_KIND,
    RESET,
    PartialsBatch,
    decode_partials,
    decode_reset,
    kind_of,
)
from spendstream.stream.batch import stored_raw
from spendstream.stream.engine import ScopeEngine
from spendstream.stream.partials import FactsUnreadable, split_ref
from spendstream.stream.rounds import round_of, slices_of
from spendstream.table_schemas import alerts_table, breaker_events_table, dead_letters_table
from spendstream.warehouse import Warehouse

__all__ = ["COMMIT_QUIET_S", "ScopeLoop", "lands_now", "scope_writer"]

log = logging.getLogger(__name__)

_STATE_VERSION = 1
# A round (or a position) that moved without output is landed at most this often: alerts
# and breaker events land at once; merged state alone need not (a restart merges again
# from the last commit, which holds the state and the position together). Every landing
# is a commit to the facts table, racing the usage writers': at once a second per owner,
# six owners' commits took a third of a core and most of the table's snapshots in a
# 10M-event run; every 5 s, still ~1.7 s of the scope thread per 1M events (every 15 s:
# ~1.05 s, in four alternated pairs).
COMMIT_QUIET_S = 15.0
_ENDS_TTL_S = 0.1  # how long a usage partition's end offset read here is trusted ...
_BEHIND_TTL_S = 2.0  # ... and one that says records are still to come (an end grows)


def lands_now(output: bool, changed: bool, now: float, landed_at: float) -> bool:
    """Whether a scope owner lands now: at once when a round raised alerts or breaker
    events (``output``); with merged state or a moved position alone (``changed``), once
    ``COMMIT_QUIET_S`` has passed since its last commit (at ``landed_at``)."""
    return output or (changed and now - landed_at >= COMMIT_QUIET_S)


def scope_writer(partition: int) -> str:
    return f"scopes/{partition}"


class _FactsGone(ValueError):
    """A partials record whose batch's facts cannot be read back (``FactsUnreadable``)."""


@dataclass(slots=True)
class _Held:
    offset: int  # in the partials partition
    batch: PartialsBatch  # its partials: one slice's (stream.rounds)
    lo: int | None  # watermark of its first row (us; None: no facts, no clock yet)
    hi: int | None  # ... and of its last
    index: int  # the slice's, in its batch
    last: bool  # the batch's last slice


@dataclass(slots=True)
class _Owner:
    number: int
    warehouse: Warehouse
    engine: ScopeEngine
    landed: int  # last partials offset landed (-1: none)
    merged: dict[int, int]  # usage partition -> last usage offset merged
    # usage partition -> (last usage offset of a batch merged in part, its last slice merged)
    partly: dict[int, tuple[int, int]]
    clocks: dict[int, int]  # usage partition -> watermark of its last batch (us)
    resets_upto: int  # partials offset of the last reset applied
    idle: IdleClock
    seen_at: dict[int, float] = field(default_factory=dict)  # processing time of a lane's news
    held: list[_Held] = field(default_factory=list)
    read: int = -1  # last partials offset read
    landed_at: float = 0.0
    dirty: bool = False  # merged, or read a reset, since the last commit
    # usage partition -> watermark of its last merged slice: what a commit keeps of
    # ``clocks`` (held slices are read again after a restart and raise it again)
    merged_clocks: dict[int, int] = field(default_factory=dict)
    # Records of the partials topic no worker wrote, read since the last commit: they land
    # with it (the dead-letter topic and table), so the position never passes one silently.
    dead: list[DeadLetter] = field(default_factory=list)


class ScopeLoop(PartitionLoop[_Owner]):
    """One thread's loop over the partials topic (see the module docstring)."""

    name = "scopes"

    def __init__(
        self,
        config: Config,
        workdir: Path,
        settings: KafkaSettings,
        names: TopicNames,
        usage_partitions: int,
        metrics: WorkerMetrics,
        stop: threading.Event,
        clock: Any = time.monotonic,
    ) -> None:
        super().__init__(config, workdir, settings, names, metrics, stop)
        self.lanes = usage_partitions
        self.clock = clock
        self._ends: dict[int, tuple[int, float]] = {}  # usage partition -> (end, read at)
        # Facts batches a merge could not read (reference -> why): partials naming them
        # are dead letters (kept per process: a new owner finds out again, in one round).
        self._unreadable: dict[str, str] = {}

    @property
    def topic(self) -> str:
        return self.names.partials

    @property
    def group(self) -> str:
        return f"{self.config.kafka.app_id}-scopes"

    def writer(self, partition: int) -> str:
        return scope_writer(partition)

    def consume_max(self) -> int:
        return 5000

    def _state(self, q: int, warehouse: Warehouse) -> _Owner:
        resume = warehouse.resume()
        landed = self.landed_position(warehouse, q)
        state: dict[str, Any] = orjson.loads(resume.state) if resume.state else {}
        if state.get("version") != _STATE_VERSION:
            state = {}
        now = self.clock()
        clocks = {int(k): int(v) for k, v in state.get("clocks", {}).items()}
        return _Owner(
            q,
            warehouse,
            ScopeEngine(self.config, state.get("engine")),
            landed,
            {int(k): int(v) for k, v in state.get("merged", {}).items()},
            {int(k): (int(v[0]), int(v[1])) for k, v in state.get("partly", {}).items()},
            dict(clocks),
            int(state.get("resets_upto", -1)),
            IdleClock(self.config.breaker.idle_advance_s, self.clock),
            seen_at=dict.fromkeys(range(self.lanes), now),
            read=landed,
            landed_at=now,
            merged_clocks=clocks,
        )

    def _turn(self, msgs: Sequence[Message]) -> None:
        by_part = by_partition(msgs)
        for q, owner in list(self.parts.items()):
            try:
                self._step(owner, by_part.get(q, []))
            except FactsUnreadable as exc:
                # The same round would fail so at every replay: from the last commit, the
                # partials records of that batch are set aside as dead letters instead.
                self._unreadable[exc.batch] = exc.why
                self._failed(q, "round")
            except Exception:
                self._failed(q, "round")

    def _step(self, owner: _Owner, msgs: list[Message]) -> None:
        alerts: list[Alert] = []
        breakers: list[BreakerEvent] = []
        now = self.clock()
        for m in msgs:
            offset = int(m.offset() or 0)
            if offset <= owner.read:
                continue
            owner.read = offset
            kind = kind_of(m.headers())
            if kind == PARTIALS_KIND:
                self._take(owner, offset, m.value() or b"", now)
            elif kind == RESET and offset > owner.resets_upto:
                owner.resets_upto = offset
                # A reset applies after what came before. It is state to land like a merge:
                # slices held before it are read again after a restart, and so is the reset,
                # which must then not apply a second time (nor what this round merged).
                self._round(owner, alerts, breakers)
                owner.dirty = True
                try:
                    cmd = decode_reset(
                        m.key(),
                        m.value() or b"",
                        m.headers(),
                        self.signer,
                        datetime.now(UTC),
                        self.config.detection.max_future_skew_s,
                    )
                except ValueError as exc:
                    log.warning(
                        "scopes %d: ignoring a breaker reset at offset %d: %s",
                        owner.number,
                        offset,
                        exc,
                    )
                    continue
                event = owner.engine.reset_breaker(cmd.scope, cmd.ts)
                if event is not None:
                    breakers.append(event)
        merged = self._round(owner, alerts, breakers)
        if not merged and not owner.held:
            breakers += owner.idle.advance(owner.engine)
        self.metrics.held.set(sum(len(o.held) for o in self.parts.values()))
        owner.dirty |= merged
        output = bool(alerts or breakers or owner.dead)
        if lands_now(output, self._unlanded(owner), now, owner.landed_at):
            self._land(owner, alerts, breakers)

    def processed(self, state: _Owner) -> int:
        # Read and merged; what is held for alignment waits for the other partitions.
        return state.held[0].offset - 1 if state.held else state.read

    @staticmethod
    def _unlanded(owner: _Owner) -> bool:
        """Whether the owner merged, or read past what it holds, since its last commit."""
        moved = owner.read > owner.landed and (
            not owner.held or owner.held[0].offset - 1 > owner.landed
        )
        return owner.dirty or moved or bool(owner.dead)

    def _release(self, n: int, state: _Owner) -> None:
        # State merged within the quiet interval lands now, so the partition's next owner
        # (or this worker after a restart) does not merge it again.
        if self._unlanded(state):
            try:
                self._land(state, [], [])
            except Exception as exc:  # its next owner merges again from the last commit
                log.warning("scopes %d: could not land merged state on leaving (%s)", n, exc)
        super()._release(n, state)

    def _take(self, owner: _Owner, offset: int, value: bytes, now: float) -> None:
        """Hold the partials record at ``offset``, or dead-letter it."""
        try:
            batch = self._partials(value)
            self._check_end(batch)
        except ValueError as exc:
            owner.dead.append(self._stray(owner, offset, value, exc))
            return
        gone = self._gone(batch)
        if gone is not None:
            owner.dead.append(self._stray(owner, offset, value, gone))
            # Held without its rows, the batch still tells how far its usage partition was
            # read: left out, a partition with nothing after it held every round back.
            batch = replace(batch, partials=batch.partials.slice(0, 0))
        self._hold(owner, offset, batch, now)

    def _check_end(self, batch: PartialsBatch) -> None:
        """``ValueError`` when no worker can have written ``batch``: it names usage offsets
        at or past its usage partition's end (a worker publishes a batch after reading its
        records), or a usage partition that does not exist. Held, it would move what the
        owner counts as merged for that partition past the real batches, which would then
        be dropped as replays. The end cached for alignment is trusted only when it clears
        the batch: a cached end is never too high (ends only grow), but may be too low."""
        p = batch.usage_partition
        cached = self._ends.get(p)
        if cached is not None and batch.last_offset < cached[0]:
            return
        assert self.facts is not None
        try:
            if p < self.lanes:  # a partition the usage topic had when this worker started
                end: int | None = self.facts.consumer.watermarks(
                    (self.names.usage, p), timeout_s=5
                )[1]
            else:
                end = self.facts.end_of(self.names.usage, p)
        except SpendstreamError as exc:
            # Held unchecked: a slow broker or a partition without a leader for now is far
            # likelier than a forged record, and failing the round replayed it (~11 s a
            # try) where alignment itself waits such a partition out (_caught_up).
            log.warning(
                "scopes: cannot read the end of usage partition %d to check a partials "
                "record against (%s); held unchecked",
                p,
                exc,
            )
            return
        if end is None:
            raise ValueError(
                f"not a partials record of this pipeline: {self.names.usage} has no partition {p}"
            )
        self._ends[p] = (end, self.clock())
        if batch.last_offset >= end:
            raise ValueError(
                f"not a partials record of this pipeline: it names offsets "
                f"{batch.first_offset}..{batch.last_offset} of {self.names.usage}/{p}, past that "
                f"partition's end ({end}), which no worker has read (or the usage topic was "
                "deleted and made again, which docs/kafka.md warns against)"
            )

    def _gone(self, batch: PartialsBatch) -> _FactsGone | None:
        """Why the batch's facts cannot be read back (``FactsUnreadable`` in a merge)."""
        if not self._unreadable:
            return None
        refs: set[str] = set()
        for ref in pc.unique(batch.partials["batch"]).drop_null().to_pylist():
            refs |= {ref, split_ref(ref)[0]}  # a slice's rows, or its whole batch
        gone = sorted(refs & self._unreadable.keys())
        if not gone:
            return None
        return _FactsGone(
            f"the facts of its batch, {self.names.facts} record {gone[0]}, cannot be read: "
            f"{self._unreadable[gone[0]]}"
        )

    def _partials(self, value: bytes) -> PartialsBatch:
        """The record's batch; ``ValueError`` if no worker of this pipeline wrote it."""
        batch = decode_partials(value)
        # A usage partition past the count this worker started with is not refused: after
        # partitions are added to the usage topic, the new ones' batches come from workers
        # that see them before this one restarts.
        if batch.usage_partition < 0 or not 0 <= batch.first_offset <= batch.last_offset:
            raise ValueError(
                f"not a partials record of this pipeline: usage partition "
                f"{batch.usage_partition}, offsets {batch.first_offset}..{batch.last_offset}"
            )
        return batch

    def _stray(self, owner: _Owner, offset: int, value: bytes, exc: ValueError) -> DeadLetter:
        # Skipping it is the only way on: it would fail the same way on every replay, and
        # the facts its batch held (if a worker wrote it) are landed by their usage
        # partition's writer whatever happens here; only wide-scope detection lacks them.
        source = f"kafka:{self.names.partials}/{owner.number}@{offset}"
        why = str(exc)
        if not isinstance(exc, _FactsGone):  # the record is the stray, not its facts
            why += (
                f". Only spendstream workers of one version should produce to {self.names.partials}"
            )
        error = (
            f"{why}; wide-scope detection (team, feature, user, project, "
            "global, budgets) went on without this record"
        )
        log.error("scopes %d: dead-lettered %s: %s", owner.number, source, error)
        return DeadLetter(stored_raw(value), error, source, datetime.now(UTC))

    def _hold(self, owner: _Owner, offset: int, batch: PartialsBatch, now: float) -> None:
        p = batch.usage_partition
        have = max(
            owner.merged.get(p, -1),
            max(
                (h.batch.last_offset for h in owner.held if h.batch.usage_partition == p),
                default=-1,
            ),
        )
        if batch.last_offset <= have:
            return  # a replay of a batch merged (or held) already
        done = owner.partly.get(p)
        skip = done[1] if done is not None and done[0] == batch.last_offset else -1
        if not batch.partials.num_rows:
            skip = -1  # one slice, no rows (or all set aside, _take): what is left of it
        for piece in slices_of(batch.partials):
            if piece.index <= skip:
                continue  # a replay of a batch whose first slices were merged already
            lo, hi = piece.lo, piece.hi
            if hi is not None:
                owner.clocks[p] = max(owner.clocks.get(p, hi), hi)
            else:  # no facts: nothing to order, after the lane's earlier batches
                lo = hi = owner.clocks.get(p)
            held = replace(batch, partials=piece.partials)
            owner.held.append(_Held(offset, held, lo, hi, piece.index, piece.last))
        owner.seen_at[p] = now

    def _bound(self, owner: _Owner) -> tuple[bool, int | None]:
        """(hold everything, else release batches whose watermark is at most this; None:
        every held batch).

        Every usage partition (lane) with records not yet seen here holds the others back,
        however long it is silent (its worker died: it waits for the partition's next
        reader), so no batch is ever merged after a later one of another lane. A lane that
        has nothing unread (its usage partition's end is at or below the last offset its
        batches covered) does not hold the others back. Only when the usage topic's end
        cannot be read does a lane silent for ``[pipeline] align_idle_s`` stop holding.
        """
        now = self.clock()
        seen = dict(owner.merged)
        for h in owner.held:
            p = h.batch.usage_partition
            seen[p] = max(seen.get(p, -1), h.batch.last_offset)
        # A lane whose every record is here (held or merged) knows its clock for now: its
        # held batches go in the round that reaches their time; the others bound the round.
        active = [
            p for p in range(self.lanes) if not self._caught_up(p, seen.get(p, -1), now, owner)
        ]
        if any(p not in owner.clocks for p in active):
            return True, None
        marks = [owner.clocks[p] for p in active]
        return False, (min(marks) if marks else None)

    def _caught_up(self, p: int, seen: int, now: float, owner: _Owner) -> bool:
        end = self._ends.get(p)
        # A stale end may say caught up when it is not; one saying not caught up stays true
        # while the end only grows, so a lane behind is asked again only now and then (it
        # was asked every round: a query per lane per owner turn under load).
        if end is not None and end[0] - 1 > seen and end[1] >= now - _BEHIND_TTL_S:
            return False
        if end is None or end[1] < now - _ENDS_TTL_S:
            assert self.facts is not None
            try:
                high = self.facts.consumer.watermarks((self.names.usage, p), timeout_s=5)[1]
            except SpendstreamError as exc:
                log.warning("scopes: cannot read the end of usage partition %d (%s)", p, exc)
                return now - owner.seen_at.get(p, now) >= self.config.pipeline.align_idle_s
            self._ends[p] = end = (high, now)
        return end[0] - 1 <= seen

    def _round(self, owner: _Owner, alerts: list[Alert], breakers: list[BreakerEvent]) -> bool:
        """Merge the held batches alignment releases; whether any was merged."""
        if not owner.held:
            return False
        hold, bound = self._bound(owner)
        if hold:
            return False
        take = round_of([(h.lo, h.hi) for h in owner.held], bound)
        if not take:
            return False
        released = [owner.held[i] for i in take]
        chosen = set(take)
        owner.held = [h for i, h in enumerate(owner.held) if i not in chosen]
        t0 = time.perf_counter()
        table = pa.concat_tables([h.batch.partials for h in released])
        detection = owner.engine.merge(table, self.facts) if table.num_rows else None
        for h in released:  # a lane's slices are released in order
            p, last = h.batch.usage_partition, h.batch.last_offset
            if h.hi is not None:
                owner.merged_clocks[p] = max(owner.merged_clocks.get(p, h.hi), h.hi)
            if h.last:
                owner.merged[p] = max(owner.merged.get(p, -1), last)
                owner.partly.pop(p, None)
            else:
                owner.partly[p] = (last, h.index)
        if detection is not None:
            alerts.extend(detection.alerts)
            breakers.extend(detection.breaker_events)
            owner.idle.judged()
        self.metrics.step_seconds.labels("scope_merge").inc(time.perf_counter() - t0)
        self.metrics.batches.labels("scopes").inc()
        return True

    def _snapshot(self, owner: _Owner) -> bytes:
        return orjson.dumps(
            {
                "version": _STATE_VERSION,
                "engine": owner.engine.snapshot().decode(),
                "merged": owner.merged,
                "partly": owner.partly,
                "clocks": owner.merged_clocks,
                "resets_upto": owner.resets_upto,
            },
            option=orjson.OPT_NON_STR_KEYS,
        )

    def _land(self, owner: _Owner, alerts: list[Alert], breakers: list[BreakerEvent]) -> None:
        assert self.out is not None
        t0 = time.perf_counter()
        self.out.send(
            self.out.detection(alerts, breakers) + [self.out.dead_letter(d) for d in owner.dead]
        )
        # Held batches are read again after a restart (replays of merged ones are dropped).
        position = owner.held[0].offset - 1 if owner.held else owner.read
        position = max(position, owner.landed)
        owner.warehouse.commit(
            alerts=alerts_table(alerts),
            breaker_events=breaker_events_table(breakers),
            dead_letters=dead_letters_table(owner.dead),
            positions={self.position_key(owner.number): position},
            state=self._snapshot(owner),
        )
        self.metrics.dead_letters.labels("scopes").inc(len(owner.dead))
        owner.dead = []
        owner.landed = position
        owner.landed_at = self.clock()
        owner.dirty = False
        self.metrics.step_seconds.labels("scope_land").inc(time.perf_counter() - t0)
        self.metrics.observe_detection(alerts, breakers)
        self.metrics.events_out.labels(self.names.alerts).inc(len(alerts))
        self.metrics.events_out.labels(self.names.breakers).inc(len(breakers))
