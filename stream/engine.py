"""The detection engine: a batch of facts in, alerts and breaker transitions out.

    facts (Arrow, spendstream.table_schemas.FACTS, arrival order)
      -> FactColumns (numpy columns; each row's watermark and position)
      -> per-key detectors: rate, sessions, retries            (findings)
      -> window detectors:  anomaly, budgets, cache, unpriced  (summarize -> partials -> merge)
      -> judge: drop dedup_keys emitted recently; breakers, interleaved with event time
      -> Detection(alerts, breaker_events)

``Engine(config)`` is both halves in one process (``spendstream ingest``/``demo``): it gives
exactly what judging the facts one at a time gives (tests/stream/reference is that per-event
engine, and the property tests compare them on random streams, batch splits and restarts).

**Across workers** (issue 18, the Kafka runtime): detection splits by scope.

* ``LocalEngine(config, partition)`` runs where a usage partition is read. Facts are keyed
  by api key, else session, else request, else event (``spendstream.topics.partition_key``),
  so every per-key scope (``api_key:``, ``session:``) sees all its facts, in order, in one
  partition: rate, sessions, retries, and anomaly/budgets on those kinds run there in full,
  with their breakers. ``process(facts, batch)`` returns its alerts and breaker events and
  the batch's *partials* for every wide scope (team, feature, project, user, global:
  anomaly and budgets on them, cache_hit_drop, unpriced_model).
* ``ScopeEngine(config)`` owns wide scopes: partials are routed by ``owner_of(scope, M)``
  (a clock row goes to every owner) and ``merge(partials, details)`` folds them into its
  state. Where a merge may cross a threshold it reads the source batch's facts through a
  ``DetailSource`` (``facts_of(batch) -> pa.Table``: in Kafka, the batch's published facts
  record; in one process, the batch) and judges those rows one by one, so the alert still
  carries the crossing fact's ts and value.

Partials (``stream.partials.PARTIALS``), one row per (detector, scope, window) a batch
touched, plus one ``clock`` row per batch and one ``alert`` row per local alert whose scope
a scope owner's breakers hold:

    detector, scope, variant       which rule and group (variant: [anomaly] scope kind index,
                                   or [[budget]] index, in the writer's configuration; a
                                   scope owner goes by the scope's kind and the budget's
                                   scope and period, which a restart on another list keeps)
    window_start, window_end       the hour, period or day
    rows, spend_usd (decimal 38,18), input_tokens, cache_read_tokens, low_share, first_ts
                                   what the batch adds, exactly
    first_wm/first_row, last_wm/last_row
                                   positions of the first and last row: merges are ordered
                                   by (watermark, partition, row)
    replay                         the source saw what only a replay can judge
    message                        alert rows: "<kind>\\x1f<message>\\x1f<period_end>"
    partition, batch, wm_start, wm_end
                                   the source batch, its reference and watermarks

A scope owner merges one *round* (a set of partials, e.g. all partitions' batches up to an
aligned event time) at a time. Merged this way the split gives the same alerts as one
``Engine`` fed the same facts ordered by (watermark, partition, row): for a ts-sorted stream
with no two facts of one wide scope in different partitions at the same microsecond, the
same alerts in every field and the same breaker events. Per-key breakers move by their own
partition's event time (as ``advance_breakers`` does when a partition is quiet); they equal
the one-process engine's where that partition has a fact at the moment the stream's time
reaches a due time. Alert ids never depend on any of this.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

import numpy as np
import orjson
import pyarrow as pa

from spendstream.config import Config
from spendstream.money import exact_money
from spendstream.records import Alert, BreakerEvent
from spendstream.scopes import SCOPE_KINDS
from spendstream.stream.breakers import BreakerBoard, BreakerStatus
from spendstream.stream.columns import FactColumns
from spendstream.stream.detectors.anomaly import AnomalyDetector
from spendstream.stream.detectors.base import Finding, make_alert
from spendstream.stream.detectors.budgets import BudgetDetector
from spendstream.stream.detectors.cache import CacheDetector
from spendstream.stream.detectors.rate import RateDetector
from spendstream.stream.detectors.retries import RetryDetector
from spendstream.stream.detectors.sessions import SessionDetector
from spendstream.stream.detectors.unpriced import UnpricedModelDetector
from spendstream.stream.emitted import Emitted
from spendstream.stream.judgement import BatchClock, RoundClock, judge
from spendstream.stream.partials import (
    ALERT,
    CLOCK,
    Details,
    DetailSource,
    Partial,
    Source,
    partials_from_table,
    partials_table,
    slice_ref,
)
from spendstream.stream.rounds import slice_bounds
from spendstream.stream.windows import US, WindowRule, from_us, to_us

__all__ = [
    "PER_KEY_KINDS",
    "SNAPSHOT_VERSION",
    "WIDE_KINDS",
    "Detection",
    "Engine",
    "LocalDetection",
    "LocalEngine",
    "ScopeEngine",
    "owner_of",
    "route",
]

# 3: retry_storm's requests as columns (``RequestTable.wire``). A worker of version 2 meets a
# state of 3 during a rolling upgrade: it must start afresh, not fail on the new form. This
# version restores both: the request rows of 2 are read as they were.
# 4: budgets named by scope, period and amount, not their [[budget]] index: a worker of 3
# read the name as an int and raised ValueError on every assignment of the partition. This
# version restores 2 and 3 (their budgets by index).
SNAPSHOT_VERSION = 4
_RESTORES = frozenset({2, 3, SNAPSHOT_VERSION})
PER_KEY_KINDS = frozenset({"api_key", "session"})
WIDE_KINDS = frozenset(SCOPE_KINDS) - PER_KEY_KINDS


class Detector(Protocol):
    """What the engine asks of every detector: its state expires, saves and restores."""

    name: str

    def expire(self, watermark_us: int) -> None: ...
    def snapshot(self) -> Any: ...
    def restore(self, data: Any) -> None: ...


class ColumnarDetector(Detector, Protocol):
    """A per-key detector: judges a batch's facts where their key's partition is."""

    def detect(self, cols: FactColumns, out: list[Finding]) -> None: ...


class WindowDetector(Detector, Protocol):
    """A wide-scope detector: summarizes a batch into partials that its scope owner merges."""

    def summarize(self, cols: FactColumns, source: Source) -> list[Partial]: ...
    def merge(self, partials: Sequence[Partial], details: Details, out: list[Finding]) -> None: ...


@dataclass(frozen=True, slots=True)
class Detection:
    """What a batch caused: alerts in the order of the facts, and breaker transitions."""

    alerts: list[Alert]
    breaker_events: list[BreakerEvent]
    # Facts that came after their minute's window had closed (its end + [detection]
    # allowed_lateness_s behind the newest event before them): they land, but the per-minute
    # rule did not count them, and longer windows only while still open (a backfill out of
    # ts order).
    late: int = 0


def is_per_key(scope: str) -> bool:
    return scope.partition(":")[0] in PER_KEY_KINDS


def owner_of(scope: str, owners: int) -> int:
    """The scope owner (0..owners-1) that merges a wide scope's partials."""
    return zlib.crc32(scope.encode()) % owners


def route(partials: pa.Table, owners: int) -> list[pa.Table]:
    """Split a batch's partials among scope owners; clock rows go to every owner."""
    owner = np.fromiter(
        (
            -1 if detector == CLOCK else owner_of(_owner_scope(detector, scope), owners)
            for detector, scope in zip(
                partials.column("detector").to_pylist(),
                partials.column("scope").to_pylist(),
                strict=True,
            )
        ),
        dtype=np.int64,
        count=partials.num_rows,
    )
    clock = owner == -1
    return [partials.filter(pa.array(clock | (owner == q))) for q in range(owners)]


def _owner_scope(detector: str, scope: str) -> str:
    # unpriced_model alerts are on `global`: its owner holds the global breaker.
    return "global" if detector == "unpriced" else scope


class _Judging:
    """What every engine keeps besides its detectors: watermark, breakers, emitted keys."""

    columnar: list[ColumnarDetector]
    windowed: list[WindowDetector]

    def __init__(self, config: Config) -> None:
        self.config = config
        self.board = BreakerBoard(config.breaker)
        self.emitted = Emitted(config)
        self.watermark_us: int | None = None
        # The finest window any rule has (runaway_rate's): a fact it refuses is late.
        self._minute = WindowRule("minute", config.detection.allowed_lateness_s * US)
        # The furthest time breakers were moved to without events (advance_breakers).
        self.breaker_clock_us: int | None = None

    @property
    def watermark(self) -> datetime | None:
        return None if self.watermark_us is None else from_us(self.watermark_us)

    @property
    def breaker_time(self) -> datetime | None:
        """How far breakers have moved: the newest event time, or a later advance."""
        if self.watermark_us is None:
            return None
        if self.breaker_clock_us is None:
            return from_us(self.watermark_us)
        return from_us(max(self.watermark_us, self.breaker_clock_us))

    def advance_breakers(self, ts: datetime) -> list[BreakerEvent]:
        """Breaker transitions due by ``ts`` when no fact carries the time there (a quiet
        stream). The detectors' watermark stays where the facts left it."""
        now = self.breaker_time
        if now is None or ts <= now:
            return []
        self.breaker_clock_us = to_us(ts)
        return self.board.tick(ts)

    def reset_breaker(self, scope: str, ts: datetime) -> BreakerEvent | None:
        """Close ``scope``'s breaker by hand (``spendstream breakers reset``)."""
        return self.board.reset(scope, ts)

    def breakers(self) -> dict[str, BreakerStatus]:
        """Every breaker that is not closed: scope -> (state, reason, since)."""
        return self.board.status()

    def _late(self, cols: FactColumns) -> int:
        """How many of the batch's facts came after their minute's window had closed."""
        starts = self._minute.starts(cols.ts_us)
        return int(np.count_nonzero(~self._minute.accepted(starts, cols.wm_us)))

    def _finish(self, watermark_us: int | None) -> None:
        if watermark_us is None:
            return
        self.watermark_us = watermark_us
        for det in (*self.columnar, *self.windowed):
            det.expire(watermark_us)
        self.emitted.expire(watermark_us)

    def snapshot(self) -> bytes:
        """The whole state, typed and compact (orjson)."""
        return orjson.dumps(
            {
                "version": SNAPSHOT_VERSION,
                "watermark": self.watermark_us,
                "breaker_clock": self.breaker_clock_us,
                "emitted": self.emitted.snapshot(),
                "breakers": self.board.snapshot(),
                "detectors": {d.name: d.snapshot() for d in (*self.columnar, *self.windowed)},
            }
        )

    def _load(self, data: object) -> None:
        if not isinstance(data, bytes | str) or not data:
            return  # nothing saved, or the per-event engine's dict: start afresh
        snap = orjson.loads(data)
        if not isinstance(snap, dict) or snap.get("version") not in _RESTORES:
            return  # a state from another layout is not trusted: start warm-up again
        self.watermark_us = snap["watermark"]
        self.breaker_clock_us = snap["breaker_clock"]
        self.emitted.restore(snap["emitted"])
        self.board = BreakerBoard.restore(self.config.breaker, snap["breakers"])
        states = snap["detectors"]
        for det in (*self.columnar, *self.windowed):
            if det.name in states:
                det.restore(states[det.name])


def _columnar(config: Config, replay_all: bool) -> list[ColumnarDetector]:
    return [
        RateDetector(config),
        SessionDetector(config, replay_all),
        RetryDetector(config, replay_all),
    ]


def _windowed(
    config: Config, kinds: frozenset[str] | None, replay_all: bool
) -> list[WindowDetector]:
    dets: list[WindowDetector] = [
        AnomalyDetector(config, kinds, replay_all),
        BudgetDetector(config, kinds, replay_all),
    ]
    if kinds is None or "feature" in kinds:
        dets.append(CacheDetector(config, replay_all))
    if kinds is None or "global" in kinds:
        dets.append(UnpricedModelDetector(config))
    return dets


class Engine(_Judging):
    """Every detector and the breakers, in one process. ``replay_all`` judges every group
    fact by fact (the exact fallback path; tests use it to check that path)."""

    def __init__(
        self, config: Config, state: bytes | str | None = None, *, replay_all: bool = False
    ):
        super().__init__(config)
        self.columnar = _columnar(config, replay_all)
        self.windowed = _windowed(config, None, replay_all)
        self._load(state)

    @classmethod
    def restore(cls, config: Config, state: object) -> Engine:
        """An engine continuing from ``snapshot()`` (bytes or text); anything else, such as
        a state of an older layout, starts afresh (detectors warm up again)."""
        return cls(config, state if isinstance(state, bytes | str) else None)

    @exact_money
    def process(self, facts: pa.Table) -> Detection:
        cols = FactColumns(facts, self.watermark_us)
        findings: list[Finding] = []
        for det in self.columnar:
            det.detect(cols, findings)
        source = Source(0, "", self.watermark_us, cols.wm_end)
        details = Details()
        details.add(source, cols)
        for wide in self.windowed:
            wide.merge(wide.summarize(cols, source), details, findings)
        judged = judge(findings, BatchClock(cols), self.board, self.emitted, self.watermark_us)
        self._finish(cols.wm_end)
        return Detection(judged.alerts, judged.breaker_events, self._late(cols))


@dataclass(frozen=True, slots=True)
class LocalDetection:
    """A per-key engine's result: its own alerts and breaker events, and the partials
    (Arrow, ``stream.partials.PARTIALS``) its batch adds to wide scopes."""

    detection: Detection
    partials: pa.Table


class LocalEngine(_Judging):
    """The per-key half, for one usage partition (see the module docstring)."""

    def __init__(self, config: Config, partition: int, state: bytes | str | None = None):
        super().__init__(config)
        self.partition = partition
        self.columnar = _columnar(config, False)
        self.windowed = _windowed(config, PER_KEY_KINDS, False)
        # Wide detectors only summarize here: their state lives with the scope owners.
        self.summarizers = _windowed(config, WIDE_KINDS, False)
        self._load(state)

    @exact_money
    def process(self, facts: pa.Table, batch: str) -> LocalDetection:
        """``batch``: the reference a scope owner's ``DetailSource`` reads the facts back by."""
        cols = FactColumns(facts, self.watermark_us, self.partition)
        source = Source(self.partition, batch, self.watermark_us, cols.wm_end)
        findings: list[Finding] = []
        for det in self.columnar:
            det.detect(cols, findings)
        details = Details()
        details.add(source, cols)
        for wide in self.windowed:
            wide.merge(wide.summarize(cols, source), details, findings)
        judged = judge(
            findings, BatchClock(cols), self.board, self.emitted, self.watermark_us, is_per_key
        )
        partials = self._partials(cols, batch, judged.forwarded)
        self._finish(cols.wm_end)
        return LocalDetection(
            Detection(judged.alerts, judged.breaker_events, self._late(cols)),
            partials_table(partials),
        )

    def _partials(self, cols: FactColumns, batch: str, forwarded: list[Finding]) -> list[Partial]:
        """The batch's partials for scope owners, one set per event-time slice
        (``stream.rounds``: so that rounds of several partitions can close under load)."""
        bounds = slice_bounds(cols.wm_us)
        out: list[Partial] = []
        for start, stop in bounds:
            if len(bounds) == 1:
                part, src = cols, Source(self.partition, batch, cols.wm_start, cols.wm_end)
            else:
                part = cols.slice(start, stop)
                ref = slice_ref(batch, start, stop)
                src = Source(self.partition, ref, part.wm_start, part.wm_end)
            for det in self.summarizers:
                out.extend(det.summarize(part, src))
            out.extend(
                _alert_row(replace(f, pos=(f.pos[0], f.pos[1], f.pos[2] - start)), src)
                for f in forwarded
                if start <= f.pos[2] < stop
            )
            if part.n:
                out.append(_clock_row(src, part))
        return out


class ScopeEngine(_Judging):
    """The wide-scope half: merges partials of the scopes it owns (see the module docstring)."""

    def __init__(self, config: Config, state: bytes | str | None = None):
        super().__init__(config)
        self.columnar = []
        self.windowed = _windowed(config, WIDE_KINDS, False)
        self._load(state)

    @exact_money
    def merge(self, partials: pa.Table, details: DetailSource | None) -> Detection:
        """Fold one round of partials into the state; read facts from ``details`` where a
        crossing must be located. A round's partials come in each partition's order."""
        rows = partials_from_table(partials)
        sources = {
            (p.source.partition, p.source.batch): p.source for p in rows if p.detector == CLOCK
        }
        bases = _row_bases(p for p in rows if p.detector == CLOCK)
        for p in rows:
            base = bases.get((p.source.partition, p.source.batch), 0)
            if base:
                p.first = (p.first[0], p.first[1], base + p.first[2])
                p.last = (p.last[0], p.last[1], base + p.last[2])
        fetch = Details(details, bases)
        findings: list[Finding] = []
        for det in self.windowed:
            mine = [p for p in rows if p.detector == _PARTIAL_OF[det.name]]
            if mine:
                det.merge(mine, fetch, findings)
        findings.extend(_forwarded(p) for p in rows if p.detector == ALERT)
        clock = RoundClock(list(sources.values()), fetch)
        judged = judge(findings, clock, self.board, self.emitted, self.watermark_us)
        ends = [s.wm_end for s in sources.values() if s.wm_end is not None]
        wm = max(ends) if ends else None
        if wm is not None and self.watermark_us is not None:
            wm = max(wm, self.watermark_us)
        self._finish(wm)
        return Detection(judged.alerts, judged.breaker_events)


def _row_bases(clocks: Iterable[Partial]) -> dict[tuple[int, str], int]:
    """Where each batch's rows start when a partition's batches in a round are numbered on
    from each other in arrival order: positions within one batch number its rows from 0,
    so a burst in one microsecond cut between two batches would otherwise order the second
    batch's first rows before the first batch's last (its clock row counts its rows)."""
    seen: dict[int, int] = {}
    out: dict[tuple[int, str], int] = {}
    for c in clocks:
        part = c.source.partition
        out[(part, c.source.batch)] = seen.get(part, 0)
        seen[part] = seen.get(part, 0) + c.rows
    return out


_PARTIAL_OF = {
    "anomaly": "anomaly",
    "budgets": "budget",
    "cache": "cache",
    "unpriced_model": "unpriced",
}


def _clock_row(source: Source, cols: FactColumns) -> Partial:
    return Partial(
        CLOCK,
        "",
        0,
        0,
        0,
        cols.n,
        Decimal(0),
        0,
        0,
        0.0,
        int(cols.ts_us.min()),
        cols.pos(0),
        cols.pos(cols.n - 1),
        False,
        source,
    )


def _alert_row(f: Finding, source: Source) -> Partial:
    a = f.alert
    return Partial(
        ALERT,
        a.scope,
        f.detector,
        0,
        0,
        f.order,
        Decimal(0),
        0,
        0,
        0.0,
        to_us(a.ts),
        f.pos,
        f.pos,
        False,
        source,
        "\x1f".join((a.kind, a.message, a.details.get("period_end", ""))),
    )


def _forwarded(p: Partial) -> Finding:
    # The kind and the period's end hold no \x1f; the message may (a key or session id
    # sent with an escaped \u001f in it is a valid string).
    kind, rest = p.message.split("\x1f", 1)
    message, period_end = rest.rsplit("\x1f", 1)
    details = {"period_end": period_end} if period_end else {}
    alert = make_alert(
        kind,  # type: ignore[arg-type]
        p.scope,
        "critical",
        from_us(p.first_ts),
        Decimal(0),
        Decimal(0),
        message,
        (),
        details,
    )
    return Finding(p.first, p.variant, p.rows, alert, forwarded=True)
