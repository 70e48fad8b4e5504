"""The embedded runtime: the whole pipeline in one process, no Kafka (``ingest``, ``demo``).

Batches of input lines go through the same core as the Kafka workers: decode and
validate into an Arrow table (``stream.batch``), judge each event new, duplicate or
conflicting (``Warehouse.classify``), price and detect (``stream.pipeline``), and land in
the warehouse with the detectors' state in the same commit, so a later run continues
where this one stopped and a replayed file adds nothing. Every line is counted once:
read = landed + duplicates + dead-lettered.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, TYPE_CHECKING

import orjson
import pyarrow.compute as pc

from spendstream.config import Config
from spendstream.errors import ConfigError
from spendstream.money import MONEY_CONTEXT
from spendstream.pricedata import load_price_data
from spendstream.producers.event import first_reason
from spendstream.records import Alert, BreakerEvent, DeadLetter
from spendstream.runtime.batching import live_batches
from spendstream.runtime.breakers_file import write_breakers_file
from spendstream.runtime.collector import batch_pace
from spendstream.runtime.embedded_leases import EmbeddedLeases
from spendstream.runtime.idle_clock import IdleClock
from spendstream.runtime.reset_requests import clear_left
from spendstream.stream.batch import DIGEST, judge_lines, stored_raw
from spendstream.stream.pipeline import Pipeline
from spendstream.table_schemas import (
    alerts_table,
    breaker_events_table,
    dead_letters_table,
    money_sum,
)
from spendstream.warehouse import Warehouse

if TYPE_CHECKING:
    from spendstream.alerts.router import AlertRouter, HandleSummary
    from spendstream.runtime.embedded_reset import EmbeddedReset

__all__ = [
    "EmbeddedRunner",
    "IngestSummary",
    "InputRecord",
    "Interrupted",
    "Rejected",
    "encoded_state",
    "ingest_records",
    "read_lines",
    "restored_pipeline",
]

# How often a live run (`ingest -`) resolves idle incidents while its pipe is quiet: as often
# as `spendstream alerts` does on Kafka (its poll waits up to 1 s).
IDLE_TICK_S = 1.0


@dataclass(frozen=True, slots=True)
class Rejected:
    """An input its reader already judged bad (e.g. a failed batch result line): it lands
    as a dead letter with this reason, counted like any other record."""

    source: str
    raw: bytes
    error: str


# A raw record and its source, or an input its reader already judged bad.
InputRecord = tuple[str, bytes] | Rejected


@dataclass(slots=True)
class IngestSummary:
    """Counts that add up: read = landed + duplicates + dead_lettered."""

    read: int = 0
    landed: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    unpriced: int = 0
    cost_usd: Decimal = Decimal(0)
    alerts: list[Alert] = field(default_factory=list)
    breaker_events: list[BreakerEvent] = field(default_factory=list)
    # Pages sent, incidents resolved and notifications dead-lettered by the alert router.
    notifications: Counter[str] = field(default_factory=Counter)
    # Dead letters by the first rule their record broke: what to fix, without a query.
    dead_letter_reasons: Counter[str] = field(default_factory=Counter)
    # Facts that came after their minute's window had closed (stream.engine.Detection.late);
    # `lateness_s`: [detection] allowed_lateness_s, for the summary to name.
    late: int = 0
    lateness_s: int = 0
    # The alert state's dead letters still to send at the end of the run (None: no router).
    # A state, not a count to add up: the router may have sent this run's dead letters
    # already, once their sink answered again (notifications "replayed").
    dead_letters_pending: int | None = None

    def alerts_by_kind(self) -> dict[str, int]:
        return dict(Counter(a.kind for a in self.alerts))

    def add(self, other: IngestSummary) -> None:
        """Count ``other`` (another run into the same warehouse) in this one."""
        self.read += other.read
        self.landed += other.landed
        self.duplicates += other.duplicates
        self.dead_lettered += other.dead_lettered
        self.dead_letter_reasons.update(other.dead_letter_reasons)
        self.unpriced += other.unpriced
        self.cost_usd = MONEY_CONTEXT.add(self.cost_usd, other.cost_usd)
        self.alerts.extend(other.alerts)
        self.breaker_events.extend(other.breaker_events)
        self.notifications.update(other.notifications)
        self.late += other.late
        self.lateness_s = other.lateness_s or self.lateness_s
        if other.dead_letters_pending is not None:  # the later run's is the state now
            self.dead_letters_pending = other.dead_letters_pending


def count_notifications(summary: IngestSummary, handled: HandleSummary | EmbeddedReset) -> None:
    """What one call of the router did, in ``summary``: its own notifications, and the dead
    letters it sent (or found superseded) because a sink answered again."""
    summary.notifications.update(
        triggered=getattr(handled, "triggered", 0),  # a reset pages no one
        resolved=handled.resolved,
        dead_lettered=handled.dead_lettered,
        replayed=handled.replayed,
        replay_superseded=handled.replay_superseded,
    )


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run; ``summary`` counts the batches finished before it (a pipe read
    for days must not end without saying what it landed)."""

    def __init__(self, summary: IngestSummary) -> None:
        super().__init__()
        self.summary = summary


def restored_pipeline(config: Config, state: bytes | None, workdir: Path) -> Pipeline:
    """The detectors as the workdir's embedded writer last committed them (``state``)."""
    return Pipeline.restore(
        config, orjson.loads(state) if state else None, price_data=load_price_data(workdir)
    )


def encoded_state(pipeline: Pipeline) -> bytes:
    """The detectors' state as the embedded writer commits it."""
    return orjson.dumps(pipeline.snapshot(), option=orjson.OPT_NON_STR_KEYS)


def own_stdin() -> IO[bytes]:
    """A reader of our own on fd 0, not ``sys.stdin.buffer``: a live pipe is read on a
    daemon thread, and at exit (Ctrl-C) the interpreter's close of ``sys.stdin`` would wait
    on the lock that thread holds and abort the process."""
    return open(sys.stdin.fileno(), "rb", closefd=False)


def read_lines(
    paths: Iterable[str], stdin: Iterable[bytes] | None = None
) -> Iterator[tuple[str, bytes]]:
    """Yield (position, line) for every non-blank line of the JSON Lines inputs; '-' is stdin.

    ``position`` is ``<file>:<line>`` (``stdin:<line>``), the 1-based line number an editor
    shows (blank lines count), so a dead letter says where its line is.
    """
    for path in paths:
        if path == "-":
            if stdin is None:
                stdin = own_stdin()
            yield from _numbered("stdin", stdin)
            continue
        with open(path, "rb") as fh:
            yield from _numbered(path, fh)


_BOM = b"\xef\xbb\xbf"


def _numbered(name: str, lines: Iterable[bytes]) -> Iterator[tuple[str, bytes]]:
    for number, line in enumerate(lines, start=1):
        if number == 1 and line.startswith(_BOM):
            line = line[len(_BOM) :]  # Windows editors start UTF-8 files with a byte-order mark
        if line.strip():
            yield f"{name}:{number}", line.rstrip(b"\r\n")


class EmbeddedRunner:
    """Runs batches through parse -> dedupe -> price -> detect -> land.

    ``leases`` hosts the budget-lease service of the hard budgets (``EmbeddedLeases``),
    fed with every landed batch; ``lease_clock`` is its clock (default: the wall clock).
    ``live``: the records may come as a live stream (a pipe): batches are cut as
    ``runtime.batching.live_batches`` cuts them (``batch_size``, or up to
    ``backlog_batch_size`` when more is waiting; never waiting more than ``batch_within_s``
    to fill), not only when ``batch_size`` records are in; with a router, incidents idle
    past their route's ``auto_resolve_s`` resolve while the run goes on (checked after every
    batch, and every ``IDLE_TICK_S`` while no record comes).
    """

    def __init__(
        self,
        workdir: Path,
        config: Config,
        router: AlertRouter | None = None,
        batch_size: int | None = None,
        lease_clock: Callable[[], datetime] | None = None,
        live: bool = False,
    ) -> None:
        self.config = config
        self.workdir = workdir
        self.router = router
        self.batch_size = batch_size or config.pipeline.ingest_batch_size
        self.live = live
        # A live pipe is a stream like `run`'s: a key whose open breaker stopped its only
        # traffic must still close. On a file, breakers move by event time alone.
        self.idle = IdleClock(config.breaker.idle_advance_s if live else 0.0)
        self.warehouse = Warehouse(workdir, config=config.warehouse)
        self.warehouse.ensure_views()
        state = self.warehouse.resume().state
        self.pipeline = restored_pipeline(config, state, workdir)
        self._publish_breakers()  # a writer killed after a commit left the file behind it
        clear_left(workdir)  # reset requests' files earlier runs left
        self.leases = EmbeddedLeases(config, lease_clock)
        self.leases.seed(workdir, config.warehouse)

    def run(
        self,
        records: Iterable[InputRecord],
        progress: Callable[[IngestSummary], None] | None = None,
    ) -> IngestSummary:
        summary = IngestSummary(lateness_s=self.config.detection.allowed_lateness_s)
        try:
            with batch_pace():
                for batch in self._batches(records):
                    if batch:
                        self._run_batch(batch, summary)
                    self._take_resets(summary)
                    if self.live:
                        # As `spendstream alerts` does after every poll: on a pipe that runs
                        # for days, incidents idle past their route's auto_resolve_s resolve
                        # as they go quiet, not when the pipe closes.
                        self.resolve_idle(summary)
                        self._advance_idle(summary)
                    if progress and batch:
                        progress(summary)
        except KeyboardInterrupt as exc:
            raise Interrupted(summary) from exc
        return summary

    def resolve_idle(self, summary: IngestSummary) -> None:
        """Resolve the router's incidents idle past their route's ``auto_resolve_s``,
        counted in ``summary`` (nothing without a router)."""
        if self.router is not None:
            count_notifications(summary, self.router.tick())

    def _route(
        self, alerts: list[Alert], breaker_events: list[BreakerEvent], summary: IngestSummary
    ) -> None:
        """Through the alert router (none without sinks), counted in ``summary``."""
        if self.router is None or not (alerts or breaker_events):
            return
        count_notifications(summary, self.router.handle(alerts, breaker_events))

    def _publish_breakers(self) -> None:
        """``<workdir>/breakers.json`` for clients' ``WorkdirBreakerView`` (no Kafka)."""
        write_breakers_file(self.workdir, self.pipeline.engine.breakers())

    def _take_resets(self, summary: IngestSummary) -> None:
        """``spendstream breakers reset`` asked of this run while it holds the workdir
        (``runtime/reset_requests.py``): applied as ``breakers reset`` applies one, as one
        more commit of this writer. Between batches, and every ``IDLE_TICK_S`` on a quiet
        live pipe: a pipe read for days cannot be stopped to reset a breaker."""
        from spendstream.runtime.embedded_reset import (
            EmbeddedReset,
            answer_of,
            close_breaker,
            route_reset,
        )
        from spendstream.runtime.reset_requests import taken_requests

        for request in taken_requests(self.workdir):
            now = datetime.now(UTC)
            event = None
            # Ctrl-C waits for the answer (a second one does not): a reset committed is one
            # its asker hears of, with the resolves it caused.
            with deferred_interrupt():
                if request.scope is not None:
                    event = close_breaker(self.pipeline, self.warehouse, request.scope, now)
                done = None if event is None else EmbeddedReset(event)
                if event is not None:
                    summary.breaker_events.append(event)
                    if self.router is not None:
                        done = route_reset(self.router, event)
                        count_notifications(summary, done)
                request.answer(answer_of(done))

    def _advance_idle(self, summary: IngestSummary) -> None:
        """``[breaker] idle_advance_s`` on a quiet live pipe: the breaker transitions the
        quiet time made due, routed and landed as a batch's would be."""
        events = self.idle.advance(self.pipeline.engine)
        if not events:
            return
        self._route([], events, summary)
        with deferred_interrupt():  # the move landed is the move clients' file shows
            self.warehouse.commit(
                breaker_events=breaker_events_table(events), state=encoded_state(self.pipeline)
            )
            self._publish_breakers()
            summary.breaker_events.extend(events)

    def _batches(self, records: Iterable[InputRecord]) -> Iterator[list[InputRecord]]:
        if self.live:
            pipeline = self.config.pipeline
            yield from live_batches(
                records,
                self.batch_size,
                pipeline.backlog_batch_size,
                pipeline.batch_within_s,
                idle_s=IDLE_TICK_S,
            )
            return
        batch: list[InputRecord] = []
        for item in records:
            batch.append(item)
            if len(batch) >= self.batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    def _run_batch(self, batch: list[InputRecord], summary: IngestSummary) -> None:
        now = datetime.now(UTC)
        # Inputs their reader already judged bad (OTLP spans, batch result lines) are dead
        # letters as they are; every other line is decoded, bounded and deduped on its own.
        rejected = [
            DeadLetter(stored_raw(item.raw), item.error, item.source, now)
            for item in batch
            if isinstance(item, Rejected)
        ]
        lines = [item for item in batch if not isinstance(item, Rejected)]
        judged = judge_lines(
            [raw for _, raw in lines],
            now,
            lambda i: lines[i][0],
            self.warehouse.classify,
            self.config.detection.max_future_skew_s,
            # One process, nothing else busy: the JSON reader's threads finish it sooner.
            threads=True,
        )
        new = judged.new
        dead = rejected + judged.dead_letters
        # Columns from decoding to landing: no UsageEvent or Fact object per event.
        facts = self.pipeline.price_table(new, now)
        digests = new.column(DIGEST).combine_chunks()
        # The facts' files are written while the batch is detected on and routed.
        prewritten = self.warehouse.prewrite(facts, digests) if facts.num_rows else None
        try:
            detection = self.pipeline.detect_table(facts)
            alerts, breaker_events = detection.alerts, detection.breaker_events
            # Routed before the commit: a crash in between replays the batch, the detectors
            # (restored from the last commit) raise the same alert ids, and the router's
            # delivery state skips every (alert, route, sink) it already decided. So each
            # alert is paged once even across a kill -9; routing after the commit could lose it.
            self._route(alerts, breaker_events, summary)
            # Ctrl-C waits for the commit and its counting: a batch that landed is in the
            # summary the interrupt prints, and clients' breakers file follows it.
            with deferred_interrupt():
                landed = self.warehouse.commit(
                    facts,
                    alerts_table(alerts),
                    breaker_events_table(breaker_events),
                    dead_letters_table(dead),
                    state=encoded_state(self.pipeline),
                    digests=digests,
                    prewritten=prewritten,
                )
                if breaker_events:
                    self._publish_breakers()  # after the commit: no client sees an unlanded move
                # After the commit, so the ledger never counts what the warehouse lacks; a
                # crash in between loses nothing: the next start seeds it from the warehouse.
                self.leases.land(facts)
                if facts.num_rows:
                    self.idle.judged()
                summary.read += len(batch)
                summary.landed += landed.facts
                # Facts the commit found landed already (another writer won the race) are
                # duplicates.
                summary.duplicates += judged.duplicates + facts.num_rows - landed.facts
                summary.dead_lettered += len(dead)
                summary.dead_letter_reasons.update(first_reason(d.error) for d in dead)
                priced = pc.sum(facts.column("priced"), min_count=0).as_py()
                summary.unpriced += facts.num_rows - priced
                # In the money context: += rounds to 28 digits, and a total of billions of
                # dollars with 18 decimals has more (the summary shows it exactly).
                cost = money_sum(facts.column("cost_usd"))
                summary.cost_usd = MONEY_CONTEXT.add(summary.cost_usd, cost)
                summary.alerts.extend(alerts)
                summary.breaker_events.extend(breaker_events)
                summary.late += detection.late
        finally:
            if prewritten is not None:
                prewritten.discard()  # unless the commit took its files


@contextmanager
def deferred_interrupt() -> Iterator[None]:
    """Hold a first Ctrl-C (SIGINT) until the block ends, then raise it; a second one
    raises at once. Only in the main thread with Python's own handler in place (elsewhere
    no signal reaches the block, or someone else handles it)."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return
    held: list[int] = []

    def hold(signum: int, frame: object) -> None:
        if held:
            raise KeyboardInterrupt
        held.append(signum)

    signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if held:
        raise KeyboardInterrupt


def ingest_records(
    workdir: Path,
    config: Config,
    records: Iterable[InputRecord],
    *,
    route_alerts: bool = True,
    batch_size: int | None = None,
    progress: Callable[[IngestSummary], None] | None = None,
    live: bool = False,
) -> IngestSummary:
    """Run records through the embedded pipeline into ``workdir`` (``spendstream ingest``,
    ``import-batch``); with ``route_alerts`` and configured sinks, alerts page as
    ``spendstream alerts`` would on Kafka (same router, same delivery state). ``live``:
    batches as ``EmbeddedRunner`` cuts a live stream's."""
    router = None
    if route_alerts and config.alerts.sink:
        from spendstream.alerts.router import AlertRouter

        try:
            router = AlertRouter.from_config(config.alerts, workdir)
        except ConfigError as exc:
            raise ConfigError(
                f"{exc} (or --no-route-alerts: land the alerts without paging anyone)"
            ) from exc
    try:
        runner = EmbeddedRunner(workdir, config, router=router, batch_size=batch_size, live=live)
        summary = runner.run(records, progress=progress)
        runner.resolve_idle(summary)
        if router is not None:
            summary.dead_letters_pending = router.state.pending_dead_letter_count()
    finally:
        if router is not None:
            router.close()
    return summary
