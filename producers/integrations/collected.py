"""Calls whose answer the garbage collector ends: recorded by a thread of their own.

An answer dropped unread is recorded when it is collected (a ``weakref.finalize`` on its
HTTP response, or the ``finally`` of the generator that reads it). Dropped by reference
count, that happens where the caller dropped it, and recording there is safe. Found by the
cyclic collector, it happens inside the collection, in whatever thread allocated at that
moment, perhaps one holding a lock ``Meter.record()`` takes (its counters', its spool's
when the queue is full): recording there could wait on itself for ever. So ``later`` hands
such a record to the ``spendstream-collected`` thread through a ``queue.SimpleQueue``, whose
``put`` is reentrant (made for finalizers), and runs any other at once.

The thread starts with the first ``instrument()`` (never from inside a collection), again
in a forked child, and what is left for it is recorded at exit, before the Meters close.
"""

from __future__ import annotations

import atexit
import gc
import logging
import os
import queue
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["later", "start"]

log = logging.getLogger("spendstream.producers")

# The thread running a cyclic collection now, or None: only one collects at a time.
_collecting: int | None = None
_pending: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
_thread: threading.Thread | None = None
_start_lock = threading.Lock()
_exiting = False


def _note_collection(phase: str, info: dict[str, Any]) -> None:
    global _collecting
    _collecting = threading.get_ident() if phase == "start" else None


gc.callbacks.append(_note_collection)


def later(record: Callable[[], None]) -> None:
    """Run ``record`` now, or, inside a cyclic collection, from the recording thread."""
    if _collecting != threading.get_ident() or _exiting:
        record()
    else:
        _pending.put(record)


def start() -> None:
    """Start the recording thread if it is not running, and have what it has not recorded
    yet recorded at exit before the Meters that exist now close (``atexit`` runs the last
    registered first: registering again moves it after every Meter made so far)."""
    global _thread
    with _start_lock:
        if _thread is None or not _thread.is_alive():
            _thread = threading.Thread(target=_run, name="spendstream-collected", daemon=True)
            _thread.start()
    atexit.unregister(_record_all)
    atexit.register(_record_all)


def _run() -> None:
    while True:
        _run_one(_pending.get())


def _run_one(record: Callable[[], None] | None) -> None:
    if record is None:
        return
    try:
        record()
    except Exception:  # the thread must outlive a bug of one record
        log.exception("a call ended by the garbage collector was not metered")


def _record_all() -> None:
    """At exit: record what is left here, and any later end at once."""
    global _exiting
    _exiting = True
    while True:
        try:
            record = _pending.get_nowait()
        except queue.Empty:
            return
        _run_one(record)


def _after_fork_in_child() -> None:
    # The parent records what it had left; the child starts empty, its thread anew.
    global _pending, _thread, _start_lock
    _pending = queue.SimpleQueue()
    _start_lock = threading.Lock()
    running, _thread = _thread is not None, None
    if running:
        start()


os.register_at_fork(after_in_child=_after_fork_in_child)
