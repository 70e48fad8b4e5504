"""Event-time alignment of the usage partitions before the one detection engine.

Each usage partition is read at its own pace (by different workers, from backlogs of
different sizes), so without care the engine could see one partition hours ahead of
another and judge the other's events as late. The aligner holds each partition's facts in
arrival order and releases them merged by event time, up to the least advanced
partition's latest event time. A partition stops holding the others back when its reader
(stage 1) says it has caught up with the broker (an idle marker), or, as a fallback for a
reader that died, after ``idle_s`` of silence (processing time). With one partition it
releases everything at once, in order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, TypeVar

__all__ = ["Aligner"]

T = TypeVar("T")


@dataclass(slots=True)
class _Lane(Generic[T]):
    queue: deque[tuple[datetime, T]] = field(default_factory=deque)
    watermark: datetime | None = None  # latest event time received
    last_seen: float = 0.0  # processing time of the last arrival
    idle: bool = False  # its reader said it is caught up; holds nothing until its next fact


class Aligner(Generic[T]):
    def __init__(self, idle_s: float, clock: Callable[[], float], partitions: int = 0) -> None:
        """``partitions``: lanes expected from the start; until one has shown up or been
        silent for ``idle_s``, it holds every other lane back (a worker that starts later
        must not find its events already judged late)."""
        self.idle_s = idle_s
        self.clock = clock
        now = clock()
        self.lanes: dict[int, _Lane[T]] = {p: _Lane(last_seen=now) for p in range(partitions)}

    def add(self, partition: int, ts: datetime, item: T) -> None:
        lane = self.lanes.setdefault(partition, _Lane())
        lane.queue.append((ts, item))
        if lane.watermark is None or ts > lane.watermark:
            lane.watermark = ts
        lane.last_seen = self.clock()
        lane.idle = False

    def mark_idle(self, partition: int) -> None:
        """The partition's reader has caught up: stop holding the others back for it."""
        self.lanes.setdefault(partition, _Lane()).idle = True

    def pending(self) -> int:
        return sum(len(lane.queue) for lane in self.lanes.values())

    def bound(self) -> tuple[bool, datetime | None]:
        """(hold everything, else release up to this event time; None: no limit)."""
        now = self.clock()
        active = [
            lane
            for lane in self.lanes.values()
            if not lane.idle and now - lane.last_seen < self.idle_s
        ]
        if any(lane.watermark is None for lane in active):
            return True, None
        marks = [lane.watermark for lane in active if lane.watermark is not None]
        return False, (min(marks) if marks else None)

    def release(self) -> list[T]:
        """Items whose time has come, merged by event time (ties: partition order)."""
        hold, bound = self.bound()
        out: list[T] = []
        if hold:
            return out
        lanes = sorted(self.lanes.items())
        while True:
            best: deque[tuple[datetime, T]] | None = None
            best_ts: datetime | None = None
            for _, lane in lanes:
                if not lane.queue:
                    continue
                ts = lane.queue[0][0]
                if bound is not None and ts > bound:
                    continue
                if best_ts is None or ts < best_ts:
                    best, best_ts = lane.queue, ts
            if best is None:
                return out
            out.append(best.popleft()[1])

    def restore_lane(
        self,
        partition: int,
        watermark: datetime | None,
        items: list[tuple[datetime, T]],
        idle: bool = False,
    ) -> None:
        lane = self.lanes.setdefault(partition, _Lane())
        lane.queue.extend(items)
        lane.watermark = watermark
        lane.last_seen = self.clock()
        lane.idle = idle
