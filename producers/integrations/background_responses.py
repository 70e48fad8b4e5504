"""OpenAI Responses API calls made with ``background=True``: recorded once, when first seen
finished.

A background create is queued, not run: nothing is recorded then. The response is recorded
when this process first sees it finished (``completed``, ``incomplete``, ``cancelled``:
status ``ok``; ``failed``: ``error``) through ``responses.retrieve``, ``responses.cancel``
or its stream, with its usage, tag ``background=<status>``, ``ts`` and ``latency_ms`` from
OpenAI's ``created_at``/``completed_at``, the fields of the call that created it when it
was created here (else of the one that saw it finished), and ``event_id``
``openai-response:<id>``, which another process seeing it finished sends too: the
pipeline lands it once. Per Meter, what is remembered is bounded: the pending creates
(``_Background._MAX``) and the ids recorded (ten times as many); it is let go when the Meter
closes (a closed Meter records nothing more), so the Meter can be freed. A forked child
keeps what its parent remembered, with locks of its own.
"""

from __future__ import annotations

import os
import re
import threading
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from spendstream.producers.integrations import answers
from spendstream.producers.shapes import as_dict

if TYPE_CHECKING:
    from spendstream.producers.integrations.calls import MeteredCall
    from spendstream.producers.meter import Meter

__all__ = ["LOOKUPS", "settle"]

# retrieve (GET) and cancel (POST) of one stored response: not calls of their own, but where
# a background response is seen finished.
LOOKUPS = {
    "get": re.compile(r"^/responses/[^/]+$"),
    "post": re.compile(r"^/responses/[^/]+/cancel$"),
}
# A background response's final states, and the event status each is recorded with: all
# are billed for what was used (a cancelled or incomplete one for its tokens so far).
_FINISHED = {"completed": "ok", "incomplete": "ok", "cancelled": "ok", "failed": "error"}


def settle(call: MeteredCall, response: Any, status: str) -> bool:
    """True if this is a background response's business, now done: recorded finished
    (once per response), or left pending until it is seen finished."""
    state = _response_state(response if response is not None else call.kept)
    response_id = state.get("id") if state else None
    if state is None and status == "ok" and not call.lookup:
        # A background create left before its answer was read: it runs on at OpenAI,
        # and is recorded, like any other, when seen finished (a 0-token event now
        # would be a second one for the same call).
        return True
    if state is None or not isinstance(response_id, str):
        return False  # nothing was created (a refused create) or nothing says what
    finished = state.get("status") in _FINISHED
    if call.lookup:
        if finished and state.get("background"):
            _record_finished(call, response_id, state)
        return True
    if finished:
        _record_finished(call, response_id, state)
    else:
        # Queued, or its stream left or cut before its end (read parsed or as bytes, the
        # status says how our read ended, not the response): it runs on at the provider.
        _background_of(call.spec.meter).pend(response_id, call)
    return True


def _record_finished(call: MeteredCall, response_id: str, state: dict[str, Any]) -> None:
    first, created_here = _background_of(call.spec.meter).claim(response_id)
    if not first:
        return
    creator = created_here or call
    status = str(state["status"])
    # What another process retrieving it would send too, so the pipeline lands it once:
    # an id from the response's, and the provider's times rather than ours.
    extra: dict[str, Any] = {"event_id": f"openai-response:{response_id}"[:128]}
    created, completed = state.get("created_at"), state.get("completed_at")
    if isinstance(completed, int | float) and not isinstance(completed, bool):
        extra["ts"] = datetime.fromtimestamp(completed, UTC)
        if isinstance(created, int | float) and completed - created >= 0:
            extra["latency_ms"] = (completed - created) * 1000.0
    creator.attempt = None
    creator.request_id = None
    creator.emit(state, _FINISHED[status], {"background": status}, extra)


class _Background:
    """One Meter's background responses: those created here and not seen finished yet (so
    their event gets the fields of the call that created them), and the ids recorded."""

    _MAX = 10_000  # past it, the oldest pending one is recorded with its retriever's fields

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pending: OrderedDict[str, MeteredCall] = OrderedDict()
        self.recorded: OrderedDict[str, None] = OrderedDict()

    def pend(self, response_id: str, call: MeteredCall) -> None:
        with self.lock:
            if response_id in self.recorded:
                return
            self.pending[response_id] = call
            if len(self.pending) > self._MAX:
                self.pending.popitem(last=False)

    def claim(self, response_id: str) -> tuple[bool, MeteredCall | None]:
        """(first to see it finished, the call that created it if it was created here)."""
        with self.lock:
            if response_id in self.recorded:
                return False, None
            self.recorded[response_id] = None
            if len(self.recorded) > 10 * self._MAX:
                self.recorded.popitem(last=False)
            return True, self.pending.pop(response_id, None)


_BACKGROUND: weakref.WeakKeyDictionary[Meter, _Background] = weakref.WeakKeyDictionary()
_BACKGROUND_LOCK = threading.Lock()


def _background_of(meter: Meter) -> _Background:
    with _BACKGROUND_LOCK:
        found = _BACKGROUND.get(meter)
        if found is not None:
            return found
        found = _BACKGROUND[meter] = _Background()
    # Outside the lock: on a Meter closed already the hook runs at once.
    meter._call_at_close(_forget)
    return found


def _after_fork_in_child() -> None:
    # Locks of its own: one another thread of the parent held at the fork would be held in
    # the child for ever (its next background call would hang). What the tables hold is
    # kept: a response the parent created and the child sees finished is recorded with its
    # creator's fields, under the id the parent would send too (the pipeline lands it once).
    global _BACKGROUND_LOCK
    _BACKGROUND_LOCK = threading.Lock()
    for table in list(_BACKGROUND.values()):
        table.lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _forget(meter: Meter) -> None:
    """A closed Meter records nothing more. Its pending calls hold it (through their
    spec), so kept in a table keyed weakly on it they kept it, and them, alive for ever."""
    with _BACKGROUND_LOCK:
        _BACKGROUND.pop(meter, None)


def _response_state(source: Any) -> dict[str, Any] | None:
    """The Responses API object in an answer (a response, or a stream's events): the
    finished one if any, else the latest seen."""
    items = source if isinstance(source, list) else [source]
    latest: dict[str, Any] | None = None
    for item in items:
        if item is None:
            continue
        try:
            data = as_dict(answers.plain(item))
        except TypeError:
            continue
        if data.get("object") != "response":
            inner = data.get("response")
            data = as_dict(inner) if isinstance(inner, Mapping) else {}
        if data.get("object") == "response":
            latest = data
            if data.get("status") in _FINISHED:
                return data
    return latest
