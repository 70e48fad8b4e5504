"""The alert router: alerts and breaker transitions in, notifications delivered out.

``AlertRouter.handle(alerts, breaker_events)`` is the whole job for one batch and returns
only when every notification it produced was delivered or dead-lettered, so the caller
(the Kafka consumer, or the embedded runner) may then commit what it read. No Kafka here.

A sink that gives up on one notification is down for ``RetryPolicy.sink_down_s`` (the
deliverer keeps that, per sink, for as long as the router lives): the rest of the batch's
notifications to it, and the next batches', are dead-lettered without an attempt, so one
dead sink costs one retry budget, not one per notification, and delays no other sink.

When such a sink answers again, its outage dead letters (``is_outage``: not the 4xx
refusals, which a resend would meet again) are replayed by the router itself, after the
batch's own notifications are settled (``handle``), or on ``tick`` once its cool-down is
over, the oldest of them being the probe: ``[alerts.delivery] auto_replay``. A long backlog
gives way to the batches after ``REPLAY_SLICE_S`` and goes on at the next call.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from spendstream.config import AlertsConfig, ConsoleSinkConfig, RouteConfig
from spendstream.errors import ConfigError
from spendstream.records import ALERT_KINDS, Alert, BreakerEvent
from spendstream.wording import plural

from .delivery import DeliveryResult, HttpDeliverer, RetryPolicy, is_outage
from .noise import Decision, decide, is_stale
from .notification import Notification
from .routing import group_key, matching_routes
from .sinks import Sink, build_sink
from .state import DeadLetterRow, DeliveryState, OpenIncident

__all__ = ["DEFAULT_GROUP_BY", "AlertRouter", "HandleSummary", "ReplaySummary", "state_path"]

log = logging.getLogger("spendstream.alerts.router")

# How long (the deliverer's monotonic seconds) one replay of a sink back from an outage goes
# on before it gives way to the batches; the rest of the backlog follows after the next batch
# or tick. Slack takes about one message a second: a backlog of hundreds replayed in one go
# held every other sink's new pages (and the batch's commit, and the consumer's next poll,
# past max.poll.interval.ms) for minutes.
REPLAY_SLICE_S = 10.0

# With no routes configured, every alert goes to every sink: storms grouped per kind and api
# key; alerts that name no key, per kind and session (one page per runaway session, whichever
# of its limits trip); anything else per condition.
DEFAULT_GROUP_BY = ["kind", "api_key_id|session_id"]


def state_path(workdir: Path) -> Path:
    return workdir / "alerts" / "state.sqlite"


@dataclass(slots=True)
class HandleSummary:
    """What one batch did. ``alerts`` = each (alert, route, sink) decision counted once."""

    triggered: int = 0
    resolved: int = 0
    dead_lettered: int = 0
    unrouted: int = 0
    decisions: dict[str, int] = field(default_factory=dict)
    # Dead letters of earlier notifications that a sink back from an outage took meanwhile
    # (auto-replay): delivered, or superseded by a newer notification. Kept out of
    # triggered/resolved/dead_lettered, which count what this call's own alerts and breaker
    # events caused (a `breakers reset` reports those as its own).
    replayed: int = 0
    replay_superseded: int = 0

    def count(self, decision: str) -> None:
        self.decisions[decision] = self.decisions.get(decision, 0) + 1


@dataclass(slots=True)
class ReplaySummary:
    delivered: int = 0
    superseded: int = 0
    still_dead: int = 0


@dataclass(slots=True)
class _Pending:
    sink: str
    key: str
    route: str
    first: Alert
    group: dict[str, str]
    scopes: list[str]
    count: int = 1


@dataclass(slots=True)
class _Batch:
    # Decisions and folds are written only after the batch's deliveries: a crash before
    # that re-reads the alerts and decides them again instead of losing them.
    pending: dict[tuple[str, str], _Pending] = field(default_factory=dict)
    folds: list[tuple[str, str, Alert]] = field(default_factory=list)
    decisions: list[tuple[str, str, str, str]] = field(default_factory=list)
    seen: set[tuple[str, str, str]] = field(default_factory=set)
    sends: Counter[tuple[str, str]] = field(default_factory=Counter)


class AlertRouter:
    def __init__(
        self,
        routes: Sequence[RouteConfig],
        sinks: Sequence[Sink],
        state: DeliveryState,
        deliverer: HttpDeliverer,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        auto_replay: bool = True,
    ) -> None:
        self.sinks: dict[str, Sink] = {s.name: s for s in sinks}
        if not routes:
            routes = [
                RouteConfig(name="default", sinks=list(self.sinks), group_by=DEFAULT_GROUP_BY)
            ]
        self.routes = list(routes)
        self.route_by_name = {r.name: r for r in self.routes}
        self.state = state
        self.deliverer = deliverer
        self.clock = clock
        self._pruned_at: datetime | None = None
        self.auto_replay = auto_replay
        # Down sinks whose cool-down is over and that were found with no outage dead letter:
        # not looked up again at every tick until the router dead-letters one for them.
        self._nothing_to_probe: set[str] = set()
        # Sinks whose replay gave way to the batches (``replay_slice_s``) with dead letters
        # left: it goes on at the next ``handle`` or ``tick``.
        self.replay_slice_s = REPLAY_SLICE_S
        self._replaying: list[str] = []

    @classmethod
    def from_config(
        cls,
        config: AlertsConfig,
        workdir: Path,
        *,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        deliverer: HttpDeliverer | None = None,
    ) -> AlertRouter:
        """Build sinks (loading secrets) and open the state; ConfigError names a bad key."""
        for r in config.route:
            bad = [k for k in r.kinds if k not in ALERT_KINDS]
            if bad:
                raise ConfigError(
                    f"alerts.route.{r.name}.kinds: unknown alert kind(s) {', '.join(bad)}; "
                    f"known: {', '.join(ALERT_KINDS)}"
                )
        sink_cfgs = list(config.sink) or [ConsoleSinkConfig(name="console", type="console")]
        sinks = [
            build_sink(c, link_base_url=config.link_base_url, environ=environ) for c in sink_cfgs
        ]
        deliverer = deliverer or HttpDeliverer(RetryPolicy.from_config(config.delivery))
        return cls(
            config.route,
            sinks,
            DeliveryState(state_path(workdir)),
            deliverer,
            clock=clock,
            auto_replay=config.delivery.auto_replay,
        )

    def close(self) -> None:
        self.deliverer.close()
        self.state.close()

    # -- the batch -----------------------------------------------------------------------------
    def handle(
        self, alerts: Sequence[Alert], breaker_events: Sequence[BreakerEvent] = ()
    ) -> HandleSummary:
        now = self.clock()
        summary = HandleSummary()
        # Breakers first: an alert read after its scope's breaker closed is already over.
        resolves: list[OpenIncident] = []
        for ev in sorted(breaker_events, key=lambda e: e.ts):
            self.state.record_breaker(ev.scope, ev.state, ev.ts)
            if ev.state == "closed":
                resolves.extend(self.state.close_scope(ev.scope))
        seen: set[tuple[str, str]] = set()
        for inc in resolves:
            if (inc.sink, inc.key) not in seen:
                seen.add((inc.sink, inc.key))
                self._resolve(inc, now, summary)
        # Routed after the resolves: a condition that fires again after its reset pages afresh.
        batch = self._route(alerts, now, summary)
        for p in batch.pending.values():
            self._trigger(p, now, summary)
        self.state.record_batch(batch.folds, batch.decisions, now)
        # Only now: the batch's decisions are written, so a replayed trigger sees the
        # incidents this batch opened (and is superseded by them) and a crash meanwhile
        # re-reads a batch whose dead letters are still there to replay.
        self._recover(now, summary, probe=False)
        return summary

    def tick(self) -> HandleSummary:
        """Resolve incidents idle past their route's ``auto_resolve_s`` (call periodically)."""
        now = self.clock()
        summary = HandleSummary()
        if self._pruned_at is None or now - self._pruned_at > timedelta(minutes=10):
            window = max((s.rate_window_s for s in self.sinks.values()), default=0.0)
            self.state.prune_sends(now - timedelta(seconds=window))
            self._pruned_at = now
        auto = [r.name for r in self.routes if r.auto_resolve_s is not None]
        for inc in self.state.open_incidents(routes=auto) if auto else ():
            route = self.route_by_name.get(inc.route)
            if route is None or route.auto_resolve_s is None:
                continue
            if now - inc.last_alert_at >= timedelta(seconds=route.auto_resolve_s):
                self._resolve(inc, now, summary)
        # A quiet router must not wait for a new alert to find its sink back.
        self._recover(now, summary, probe=True)
        return summary

    def replay_dead_letters(self) -> ReplaySummary:
        """Deliver dead letters again, oldest first (``spendstream alerts --replay-dead-letters``).

        A trigger is superseded when its incident is open now, was paged or resolved after it
        died, or every scope it covers has had its breaker closed since (the condition is
        over); a resolve is superseded when its key was paged again since it died (another
        incident, even one opened in the resolve's own batch).
        What fails again stays a dead letter, with the new error, for the next replay.
        """
        now = self.clock()
        out = ReplaySummary()
        for row in self.state.dead_letters(pending_only=True):
            self._replay(row, now, out)
        return out

    def _replay(
        self, row: DeadLetterRow, now: datetime, out: ReplaySummary
    ) -> DeliveryResult | None:
        """One dead letter again: superseded, delivered, or still dead (counted in ``out``);
        the delivery's result, None when it was not tried."""
        n = row.notification
        if self._superseded(row):
            self.state.mark_replayed(row.id, "superseded", now)
            out.superseded += 1
            return None
        sink = self.sinks.get(row.sink)
        if sink is None:
            out.still_dead += 1
            return None
        result = sink.deliver(n, self.deliverer)
        if not result.delivered:
            self.state.retried_dead_letter(row.id, result.error, result.attempts)
            out.still_dead += 1
            return result
        if n.action == "trigger":
            self.state.open_incident(row.sink, n, now)
        else:
            # Resolved as of when it was due: stamped with the replay's time, it would
            # read as "resolved after" a page that died later and is replayed next,
            # and suppress it (the condition ran away again after this resolve).
            self.state.mark_resolved(row.sink, n.key, row.dead_at)
        self.state.mark_replayed(row.id, "delivered", now)
        out.delivered += 1
        return result

    def _recover(self, now: datetime, summary: HandleSummary, *, probe: bool) -> None:
        """Replay the outage dead letters of the sinks that answered again.

        With ``probe`` (``tick``), a down sink whose cool-down is over is tried with its
        oldest outage dead letter, rather than waiting for a new notification to it."""
        back = self.deliverer.take_back()
        if not self.auto_replay:
            return
        # A replay that gave way last time goes on (unless its sink gave up since: below).
        going, self._replaying = self._replaying, []
        done: set[str] = set()
        if probe:
            for name in self.sinks:
                if name in self._nothing_to_probe or not self.deliverer.probe_due(name):
                    continue
                if self._auto_replay(name, now, summary):
                    done.add(name)
                else:
                    self._nothing_to_probe.add(name)
            # The probe that got through marked its sink back: already replayed above.
            back += self.deliverer.take_back()
        for name in going + back:
            # Back, then given up on again (the batch's next notification to it): replaying
            # now would spend another retry budget on it (``sink_down_s = 0``: no down state
            # to skip with); it is replayed when it answers again.
            if name not in done and name in self.sinks and not self.deliverer.failing(name):
                done.add(name)
                self._auto_replay(name, now, summary)

    def _auto_replay(self, sink: str, now: datetime, summary: HandleSummary) -> bool:
        """``sink``'s outage dead letters, oldest first; False when it has none.

        Stops at the first one the sink gives up on: the rest stay dead letters for its next
        recovery, rather than each costing a retry budget (``sink_down_s = 0``) or being
        skipped again (down). Gives way after ``replay_slice_s`` with letters left: the sink
        is in ``_replaying``, and ``_recover`` goes on with it at its next call."""
        pending = self.state.pending_dead_letter_errors(sink)
        outage = [id_ for id_, error in pending if is_outage(error)]
        if not outage:
            return False
        out = ReplaySummary()
        started = self.deliverer.monotonic()
        later = 0
        # Never started on a sink that is down: the probe's cool-down is over, and a sink
        # that gave up since it answered is left out by ``_recover``.
        for i, id_ in enumerate(outage):
            row = self.state.dead_letter_row(id_)
            if row is None or row.replay is not None:
                continue
            result = self._replay(row, now, out)
            if result is not None and not result.delivered and self.deliverer.failing(sink):
                out.still_dead += len(outage) - i - 1
                break
            rest = len(outage) - i - 1
            if rest and self.deliverer.monotonic() - started >= self.replay_slice_s:
                # Given way to the batches: the rest after the next one (``_recover``).
                later = rest
                self._replaying.append(sink)
                break
        summary.replayed += out.delivered
        summary.replay_superseded += out.superseded
        # A probe that failed again is not a replay: the deliverer has said the sink is down
        # (and letters superseded before it were not sent: the sink was not back for them).
        if not out.delivered and self.deliverer.failing(sink):
            if out.superseded:
                log.info(
                    "alert sink %s has not answered again; %d of its dead letters superseded "
                    "by newer notifications meanwhile (not sent), %d still dead",
                    sink,
                    out.superseded,
                    out.still_dead,
                )
        else:
            refused = len(pending) - len(outage)
            left = (
                f"; {plural(refused, 'refusal')} (4xx) left for spendstream alerts "
                "--replay-dead-letters"
                if refused
                else ""
            )
            going = f"; {later} more to follow, between batches" if later else ""
            log.log(
                logging.WARNING if out.still_dead else logging.INFO,
                "alert sink %s is back: its dead letters from the outage replayed: "
                "%d delivered, %d superseded, %d still dead%s%s",
                sink,
                out.delivered,
                out.superseded,
                out.still_dead,
                going,
                left,
            )
        return True

    def _superseded(self, row: DeadLetterRow) -> bool:
        n = row.notification
        if n.action == "resolve":
            # A resolve closes one incident, moot once its key belongs to another (paged
            # again since). Told by the page that opened it, not by time: a batch resolves
            # before it pages, so a reset and a new trip read together share one instant.
            current = self.state.incident_trigger(row.sink, n.key)
            return current is not None and current.alert.alert_id != n.alert.alert_id
        if self.state.incident_since(row.sink, n.key, row.dead_at):
            return True
        if self.state.incident_open(row.sink, n.key):
            return True
        scopes = n.scopes or (n.alert.scope,)
        return all(is_stale(n.alert, self.state.breaker(s)) for s in scopes)

    def _route(self, alerts: Sequence[Alert], now: datetime, summary: HandleSummary) -> _Batch:
        batch = _Batch()
        for alert in alerts:
            routes = matching_routes(self.routes, alert)
            if not routes:
                summary.unrouted += 1
                log.info(
                    "alert %s (%s on %s) matches no route", alert.alert_id, alert.kind, alert.scope
                )
                continue
            breaker = self.state.breaker(alert.scope)
            for route in routes:
                key, group = group_key(route, alert)
                for sink_name in route.sinks:
                    sink = self.sinks[sink_name]
                    ident = (alert.alert_id, route.name, sink_name)
                    if ident in batch.seen or self.state.decided(*ident):
                        # Read again (a restart before its offset was committed, or a resend).
                        summary.count(Decision.DUPLICATE.value)
                        continue
                    batch.seen.add(ident)
                    p = batch.pending.get((sink_name, key))
                    if p is not None:
                        # Same condition or group earlier in this batch: one notification, counted.
                        p.count += 1
                        if alert.scope not in p.scopes:
                            p.scopes.append(alert.scope)
                        decision = Decision.FOLDED
                    else:
                        decision = decide(
                            route,
                            alert,
                            now,
                            incident_open=self.state.incident_open(sink_name, key),
                            recent_sends=self.state.recent_sends(
                                sink_name, alert.scope, now - timedelta(seconds=sink.rate_window_s)
                            )
                            + [now] * batch.sends[(sink_name, alert.scope)],
                            max_per_scope=sink.max_per_scope,
                            rate_window_s=sink.rate_window_s,
                            breaker=breaker,
                        )
                        if decision is Decision.FOLDED:
                            batch.folds.append((sink_name, key, alert))
                        elif decision is Decision.SEND:
                            batch.sends[(sink_name, alert.scope)] += 1
                            batch.pending[(sink_name, key)] = _Pending(
                                sink_name, key, route.name, alert, group, [alert.scope]
                            )
                    batch.decisions.append((*ident, decision.value))
                    summary.count(decision.value)
        return batch

    def _trigger(self, p: _Pending, now: datetime, summary: HandleSummary) -> None:
        n = Notification(
            action="trigger",
            key=p.key,
            route=p.route,
            alert=p.first,
            count=p.count,
            scopes=tuple(p.scopes),
            group=p.group,
            opened_at=now,
        )
        result = self._deliver(p.sink, n, now)
        if result.delivered:
            self.state.open_incident(p.sink, n, now)
            summary.triggered += 1
            log.info(
                "paged %s: %s on %s (%s; incident %s)",
                p.sink,
                n.alert.kind,
                ", ".join(n.scopes) or n.alert.scope,
                plural(n.count, "alert"),
                n.key,
            )
        else:
            summary.dead_lettered += 1

    def _resolve(self, inc: OpenIncident, now: datetime, summary: HandleSummary) -> None:
        result = self._deliver(inc.sink, inc.resolve(), now)
        # Marked resolved even when dead-lettered: a later alert of the same condition must
        # page afresh rather than fold into an incident we could not close.
        self.state.mark_resolved(inc.sink, inc.key, now)
        if result.delivered:
            summary.resolved += 1
            log.info("resolved on %s: incident %s (%s)", inc.sink, inc.key, inc.trigger.alert.scope)
        else:
            summary.dead_lettered += 1

    def _deliver(self, sink_name: str, n: Notification, now: datetime) -> DeliveryResult:
        sink = self.sinks.get(sink_name)
        if sink is None:
            result = DeliveryResult("dead", 0, f"sink {sink_name!r} is no longer configured")
        else:
            result = sink.deliver(n, self.deliverer)
        if not result.delivered:
            self.state.dead_letter(sink_name, n, result.error, result.attempts, now)
            self._nothing_to_probe.discard(sink_name)
            # 0 attempts: not tried at all (a sink down since it gave up, or one removed).
            tried = f" after {plural(result.attempts, 'attempt')}" if result.attempts else ""
            log.error(
                "alert %s %s for %s dead-lettered on sink %s%s: %s",
                n.action,
                n.key,
                n.alert.scope,
                sink_name,
                tried,
                result.error,
            )
        return result
