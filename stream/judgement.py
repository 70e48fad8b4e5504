"""From findings to alerts and breaker transitions, in the order the facts were judged.

The per-event rule: at each fact whose event time raises the watermark, the breakers move
on to it (``BreakerBoard.tick``); then each alert of that fact, unless its dedup_key was
emitted recently, is emitted and may open a breaker. ``judge`` keeps that order without
visiting every fact: between two findings nothing changes a breaker but time, so the next
transition is at the first position whose watermark reaches the board's next due time --
one ``searchsorted`` on the running watermark (``Clock``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from spendstream.records import Alert, BreakerEvent
from spendstream.stream.breakers import BreakerBoard
from spendstream.stream.columns import FactColumns, Pos
from spendstream.stream.detectors.base import Finding
from spendstream.stream.emitted import Emitted
from spendstream.stream.partials import Details, Source
from spendstream.stream.windows import from_us

__all__ = ["BatchClock", "Clock", "Judged", "RoundClock", "judge"]


class Clock(Protocol):
    def rise(self, target_us: int) -> Pos | None:
        """The first position whose watermark is at least ``target_us`` (None: not here)."""
        ...


class BatchClock:
    """One batch: its running watermark is sorted, so the answer is a binary search."""

    def __init__(self, cols: FactColumns) -> None:
        self.cols = cols

    def rise(self, target_us: int) -> Pos | None:
        i = int(np.searchsorted(self.cols.wm_us, target_us, side="left"))
        return None if i >= self.cols.n else self.cols.pos(i)


class RoundClock:
    """Several partitions' batches merged by position; a batch's facts are read (through
    ``Details``) only when a due time falls inside its watermark range."""

    def __init__(self, sources: Sequence[Source], details: Details) -> None:
        self.sources = sources
        self.details = details

    def rise(self, target_us: int) -> Pos | None:
        best: Pos | None = None
        for src in self.sources:
            if src.wm_end is None or src.wm_end < target_us:
                continue
            pos = BatchClock(self.details.columns(src)).rise(target_us)
            if pos is not None and (best is None or pos < best):
                best = pos
        return best


@dataclass(slots=True)
class Judged:
    alerts: list[Alert] = field(default_factory=list)
    breaker_events: list[BreakerEvent] = field(default_factory=list)
    # Emitted alerts whose scope this board does not hold: (finding) for its owner.
    forwarded: list[Finding] = field(default_factory=list)


def judge(
    findings: list[Finding],
    clock: Clock,
    board: BreakerBoard,
    emitted: Emitted,
    watermark_us: int | None,
    holds: Callable[[str], bool] = lambda scope: True,
) -> Judged:
    """``watermark_us``: the engine's watermark before these findings' facts. Findings with
    ``forwarded`` set were emitted by another engine: they only move this board."""
    out = Judged()
    last: int | None = watermark_us  # watermark of the last position judged
    findings.sort(key=lambda f: f.key)

    def tick_until(limit: Pos | None) -> None:
        nonlocal last
        while (due := board.due_us) is not None:
            # Breakers move only where the watermark rises past what was judged already.
            target = due if last is None else max(due, last + 1)
            pos = clock.rise(target)
            if pos is None or (limit is not None and pos > limit):
                return
            out.breaker_events.extend(board.tick(from_us(pos[0])))
            last = pos[0]

    for f in findings:
        tick_until(f.pos)
        if last is None or f.pos[0] > last:
            last = f.pos[0]
        alert = f.alert
        if not f.forwarded:
            if not emitted.admit(alert, f.pos[0]):
                continue
            out.alerts.append(alert)
        if not holds(alert.scope):
            out.forwarded.append(f)
            continue
        change = board.on_alert(alert)
        if change is not None:
            out.breaker_events.append(change)
    tick_until(None)
    return out
