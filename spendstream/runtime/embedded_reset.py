"""Close a breaker that ``spendstream ingest`` or ``demo`` opened, in their workdir.

Embedded, the detectors' state (open breakers included) is kept in the warehouse with each
commit of the workdir's own writer (``runtime/embedded.py``), not on a Kafka topic. A reset
there is one more commit of that writer: the ``closed`` event (reason ``manual reset``) and
the state without the breaker, under the workdir's writer lock, so the next ``ingest``
continues with it closed and ``breakers list`` no longer shows it. With ``[[alerts.sink]]``
entries the ``closed`` event then goes through the alert router ``ingest`` pages with (same
state in the workdir), which resolves the scope's open incidents as a close from the
detectors would.

While an ``ingest`` holds the workdir (a live pipe), the reset is asked of it
(``runtime/reset_requests.py``): it applies it between batches with the same two functions
(``close_breaker``, ``route_reset``), as one more commit of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from spendstream.config import Config
from spendstream.errors import ConfigError, WorkdirBusy
from spendstream.records import BreakerEvent, breaker_from_wire, breaker_to_wire
from spendstream.table_schemas import breaker_events_table

if TYPE_CHECKING:
    from spendstream.alerts.router import AlertRouter
    from spendstream.stream.pipeline import Pipeline
    from spendstream.warehouse import Warehouse

__all__ = ["EmbeddedReset", "close_breaker", "reset_embedded", "route_reset"]

# How long `breakers reset` waits for the writer holding the workdir to take its request: a
# live pipe takes it within a second; a file's ingest between two batches.
ASK_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class EmbeddedReset:
    """The ``closed`` event landed, and the notifications it caused (resolves, and those
    that died: ``spendstream alerts --replay-dead-letters``)."""

    event: BreakerEvent
    resolved: int = 0
    dead_lettered: int = 0
    # Earlier dead letters the router sent meanwhile, a sink having answered again
    # (alerts/router.py HandleSummary): delivered, or superseded by a newer notification.
    replayed: int = 0
    replay_superseded: int = 0


def reset_embedded(
    workdir: Path, config: Config, scope: str, now: datetime, *, route_alerts: bool = True
) -> EmbeddedReset | None:
    """Close ``scope``'s breaker in the state ``ingest``/``demo`` left in ``workdir``.

    Returns the ``closed`` event it landed (and what routing it did, with ``route_alerts``
    and configured sinks); None when nothing was reset there (no warehouse,
    no embedded run, or ``scope`` not open or half-open in its detectors). While an
    ``ingest`` or ``demo`` writes the workdir, the reset is asked of it; ``WorkdirBusy``
    when it did not take it within ``ASK_TIMEOUT_S``.
    """
    from spendstream.runtime.embedded import restored_pipeline
    from spendstream.warehouse import Warehouse
    from spendstream.warehouse.reading import open_reader
    from spendstream.workdir import WorkdirLock

    try:
        open_reader(workdir, config.warehouse).close()
    except ConfigError:
        return None  # no warehouse here: nothing embedded to reset (a read creates none)
    lock = WorkdirLock(workdir, "breakers-reset")
    try:
        lock.acquire()
    except WorkdirBusy as busy:
        return _ask_writer(workdir, scope, busy)
    try:
        with Warehouse(workdir, config=config.warehouse, create=False) as wh:
            state = wh.resume().state
            if not state:
                return None  # no ingest or demo ran here (a `run` cluster's workdir)
            pipeline = restored_pipeline(config, state, workdir)
            event = close_breaker(pipeline, wh, scope, now)
            if event is None:
                # Nothing to close, yet breakers.json may be stale (its writer killed between
                # a commit and the file): clients' guard() must not refuse what is closed.
                from spendstream.runtime.breakers_file import write_breakers_file

                write_breakers_file(workdir, pipeline.engine.breakers())
                return None
            if not (route_alerts and config.alerts.sink):
                return EmbeddedReset(event)
            from spendstream.alerts.router import AlertRouter

            router = AlertRouter.from_config(config.alerts, workdir)
            try:
                return route_reset(router, event)
            finally:
                router.close()
    finally:
        lock.release()


def close_breaker(
    pipeline: Pipeline, warehouse: Warehouse, scope: str, now: datetime
) -> BreakerEvent | None:
    """Close ``scope``'s breaker in ``pipeline``'s detectors and commit the ``closed`` event
    with their state; None when it is not open or half-open there."""
    from spendstream.runtime.breakers_file import write_breakers_file
    from spendstream.runtime.embedded import encoded_state

    engine = pipeline.engine
    if scope not in engine.breakers():
        return None
    # After the transition that opened it (event time may run up to max_future_skew_s
    # ahead of the wall clock), so the latest event of the scope is this one.
    opened = engine.breaker_time
    event = engine.reset_breaker(scope, now if opened is None else max(now, opened))
    if event is None:
        return None
    warehouse.commit(breaker_events=breaker_events_table([event]), state=encoded_state(pipeline))
    write_breakers_file(warehouse.workdir, engine.breakers())  # clients' guard() lets it through
    return event


def route_reset(router: AlertRouter, event: BreakerEvent) -> EmbeddedReset:
    """The ``closed`` event through the alert router: the scope's open incidents resolve."""
    routed = router.handle([], [event])
    return EmbeddedReset(
        event, routed.resolved, routed.dead_lettered, routed.replayed, routed.replay_superseded
    )


def answer_of(done: EmbeddedReset | None) -> dict[str, object]:
    """What the writer answers a reset request with (``runtime/reset_requests.py``)."""
    if done is None:
        return {"event": None}
    return {
        "event": breaker_to_wire(done.event),
        "resolved": done.resolved,
        "dead_lettered": done.dead_lettered,
    }


def _ask_writer(workdir: Path, scope: str, busy: WorkdirBusy) -> EmbeddedReset | None:
    from spendstream.runtime.reset_requests import ask_writer

    asked = ask_writer(workdir, scope, ASK_TIMEOUT_S)
    answer = asked.answer
    if answer is None and asked.taken:
        raise WorkdirBusy(
            f"{busy}. It took the reset but did not answer within {2 * ASK_TIMEOUT_S:g} s "
            "(it stopped, or its commit is slow), so the breaker may be closed or not: "
            "spendstream breakers list says which; reset it again if still open"
        ) from None
    if answer is None:
        raise WorkdirBusy(
            f"{busy}. It did not take the reset within {ASK_TIMEOUT_S:g} s (a running "
            "ingest takes resets between its batches), so nothing was reset"
        ) from None
    event = answer.get("event")
    if not isinstance(event, dict):
        return None
    return EmbeddedReset(
        breaker_from_wire(event),
        int(answer.get("resolved", 0)),
        int(answer.get("dead_lettered", 0)),
    )
