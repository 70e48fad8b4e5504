"""Close a breaker that ``spendstream ingest`` or ``demo`` opened, in their workdir.

Embedded, the detectors' state (open breakers included) is kept in the warehouse with each
commit of the workdir's own writer (``runtime/embedded.py``), not on a Kafka topic. A reset
there is one more commit of that writer: the ``closed`` event (reason ``manual reset``) and
the state without the breaker, under the workdir's writer lock, so the next ``ingest``
continues with it closed and ``breakers list`` no longer shows it. With ``[[alerts.sink]]``
entries the ``closed`` event then goes through the alert router ``ingest`` pages with (same
state in the workdir), which resolves the scope's open incidents as a close from the
detectors would.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from spendstream.config import Config
from spendstream.errors import ConfigError
from spendstream.records import BreakerEvent
from spendstream.table_schemas import breaker_events_table

__all__ = ["EmbeddedReset", "reset_embedded"]


@dataclass(frozen=True)
class EmbeddedReset:
    """The ``closed`` event landed, and the notifications it caused (resolves, and those
    that died: ``spendstream alerts --replay-dead-letters``)."""

    event: BreakerEvent
    resolved: int = 0
    dead_lettered: int = 0


def reset_embedded(
    workdir: Path, config: Config, scope: str, now: datetime, *, route_alerts: bool = True
) -> EmbeddedReset | None:
    """Close ``scope``'s breaker in the state ``ingest``/``demo`` left in ``workdir``.

    Returns the ``closed`` event it landed (and what routing it did, with ``route_alerts``
    and configured sinks); None when nothing was reset there (no warehouse,
    no embedded run, or ``scope`` not open or half-open in its detectors). Raises
    ``WorkdirBusy`` while an ``ingest`` or ``demo`` writes the workdir.
    """
    from spendstream.runtime.embedded import encoded_state, restored_pipeline
    from spendstream.warehouse import Warehouse
    from spendstream.warehouse.reading import open_reader
    from spendstream.workdir import WorkdirLock

    try:
        open_reader(workdir, config.warehouse).close()
    except ConfigError:
        return None  # no warehouse here: nothing embedded to reset (a read creates none)
    with (
        WorkdirLock(workdir, "breakers-reset"),
        Warehouse(workdir, config=config.warehouse, create=False) as wh,
    ):
        state = wh.resume().state
        if not state:
            return None  # no ingest or demo ran here (a `run` cluster's workdir)
        pipeline = restored_pipeline(config, state, workdir)
        engine = pipeline.engine
        if scope not in engine.breakers():
            return None
        # After the transition that opened it (event time may run up to max_future_skew_s
        # ahead of the wall clock), so the latest event of the scope is this one.
        opened = engine.breaker_time
        event = engine.reset_breaker(scope, now if opened is None else max(now, opened))
        if event is None:
            return None
        wh.commit(
            breaker_events=breaker_events_table([event]),
            state=encoded_state(pipeline),
        )
        if not (route_alerts and config.alerts.sink):
            return EmbeddedReset(event)
        from spendstream.alerts.router import AlertRouter

        router = AlertRouter.from_config(config.alerts, workdir)
        try:
            routed = router.handle([], [event])
        finally:
            router.close()
    return EmbeddedReset(event, routed.resolved, routed.dead_lettered)
