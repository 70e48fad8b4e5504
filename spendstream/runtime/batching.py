"""How records are cut into batches where they may arrive live: a usage partition in
`spendstream run`, and `spendstream ingest` reading a pipe.

A batch's fixed costs (the warehouse commit with the engine's state, in a worker its facts
record and a partials record per scope owner, Python's per-call overheads) came to ~70 ms
whatever its size (docs/kafka.md "Throughput" (24)): a worker catching up on 1M events in
batches of 2000 landed 17.4k events/s, in batches of 20000 ~60k. So a source with a backlog
lands large batches (``[pipeline] backlog_batch_size``), while a live one keeps
``batch_size`` and waits at most ``batch_within_s`` for it to fill, so its alerts wait for
no more records than that.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

__all__ = ["batch_target", "live_batches"]

T = TypeVar("T")


def batch_target(unread: int | None, batch_size: int, backlog_batch_size: int) -> int:
    """How many records the next batch takes: ``batch_size``, or while more than that is
    waiting (``unread``; None: not known yet) all of it, up to ``backlog_batch_size``."""
    if unread is None:
        return batch_size
    return max(batch_size, min(unread, backlog_batch_size))


class _Failed:
    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


_END = object()


class _Feed(Generic[T]):
    """``records`` read ahead on a thread of their own, at most ``limit`` waiting."""

    def __init__(self, records: Iterable[T], limit: int) -> None:
        self._queue: queue.Queue[object] = queue.Queue(maxsize=limit)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._pump, args=(records,), name="spendstream-read-ahead", daemon=True
        )
        self._thread.start()

    def _pump(self, records: Iterable[T]) -> None:
        try:
            for record in records:
                if not self._put(record):
                    return
        except BaseException as exc:  # handed to the reader, raised there
            self._put(_Failed(exc))
            return
        self._put(_END)

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def waiting(self) -> int:
        return self._queue.qsize()

    def get(self, timeout: float | None) -> object:
        """The next record, ``_END``, or ``queue.Empty`` after ``timeout`` seconds."""
        item = self._queue.get(timeout=timeout)
        if isinstance(item, _Failed):
            raise item.error
        return item

    def close(self) -> None:
        # The thread stops at its next record (one blocked reading a pipe stays blocked:
        # a daemon thread, it does not keep the process alive).
        self._stop.set()


def live_batches(
    records: Iterable[T],
    batch_size: int,
    backlog_batch_size: int,
    within_s: float,
    idle_s: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[list[T]]:
    """Batches of a source that may be live: a batch starts with the next record and is cut
    when it holds its target (``batch_target`` of the records it holds and those already
    read behind them) or ``within_s`` after its first record, whichever comes first; the
    last when the source ends. The source is read ahead on a thread (at most two backlog
    batches), so a pipe holding a backlog lands backlog-sized batches, and a slow one lands
    what came within ``within_s``. An error reading the source is raised here.

    ``idle_s``: an empty batch every ``idle_s`` while no record comes, so the caller's
    periodic work (resolving idle incidents) runs on a quiet pipe too. ``clock``: where the
    wait is measured (tests pin the deadline with their own)."""
    feed: _Feed[T] = _Feed(records, 2 * max(batch_size, backlog_batch_size))
    try:
        while True:
            try:
                first = feed.get(idle_s)
            except queue.Empty:
                yield []
                continue
            if first is _END:
                return
            batch: list[T] = [first]  # type: ignore[list-item]
            deadline = clock() + within_s
            ended = False
            while len(batch) < batch_target(
                len(batch) + feed.waiting(), batch_size, backlog_batch_size
            ):
                left = deadline - clock()
                if left <= 0:
                    break
                try:
                    item = feed.get(left)
                except queue.Empty:
                    break
                if item is _END:
                    ended = True
                    break
                batch.append(item)  # type: ignore[arg-type]
            yield batch
            if ended:
                return
    finally:
        feed.close()
