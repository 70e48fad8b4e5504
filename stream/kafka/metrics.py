"""Prometheus metrics of one worker (text format at GET /metrics).

Spend is exported as a float counter because that is Prometheus' number type; the
warehouse keeps the exact Decimal amounts.

Labels whose values come from data (``team``) are capped: the first ``label_values``
distinct values of a metric keep their own series, later ones are counted under
``other`` (``LabelBudget``), so a producer sending 100k team names cannot make /metrics
(and the worker's memory) grow without bound. Every other label's values come from code
or config (alert kinds, states, stages, steps, assigned partitions).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from decimal import Decimal

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from spendstream.records import Alert, BreakerEvent, Fact

__all__ = ["OTHER", "LabelBudget", "LagSource", "WorkerMetrics"]

OTHER = "other"

# (topic, partition) -> messages not yet processed.
LagSource = Callable[[], Iterable[tuple[str, int, int]]]


class _LagCollector(Collector):
    def __init__(self, source: LagSource) -> None:
        self.source = source

    def collect(self) -> Iterable[GaugeMetricFamily]:
        g = GaugeMetricFamily(
            "spendstream_consumer_lag",
            "Records in an assigned partition not yet processed by this worker.",
            labels=["topic", "partition"],
        )
        for topic, partition, lag in self.source():
            g.add_metric([topic, str(partition)], lag)
        yield g


class LabelBudget:
    """The first ``limit`` distinct values pass; any later new value becomes ``other``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._kept: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._kept:
            return value
        if len(self._kept) < self.limit:
            self._kept.add(value)
            return value
        return OTHER


class WorkerMetrics:
    def __init__(self, lag: LagSource, label_values: int = 100) -> None:
        """``label_values``: ``[http] metrics_label_values``, the cap per data label."""
        self.team_label = LabelBudget(label_values)
        self.registry = CollectorRegistry()
        r = self.registry
        self.events_in = Counter("spendstream_events_in", "Usage records consumed.", registry=r)
        self.http_records = Counter(
            "spendstream_http_records",
            "Records posted to /v1/events.",
            ["result"],
            registry=r,
        )
        self.otel_spans = Counter(
            "spendstream_otel_spans",
            "Spans posted to /v1/traces: event, rejected (dead-lettered) or ignored (not GenAI).",
            ["result"],
            registry=r,
        )
        self.facts = Counter("spendstream_facts_landed", "Facts landed.", registry=r)
        self.duplicates = Counter(
            "spendstream_duplicates", "Events whose event_id had landed.", registry=r
        )
        self.dead_letters = Counter(
            "spendstream_dead_letters", "Inputs dead-lettered.", ["stage"], registry=r
        )
        self.events_out = Counter(
            "spendstream_events_out", "Records published.", ["topic"], registry=r
        )
        self.alerts = Counter("spendstream_alerts", "Alerts raised.", ["kind"], registry=r)
        self.breakers = Counter(
            "spendstream_breaker_events", "Breaker transitions.", ["state"], registry=r
        )
        self.spend = Counter(
            "spendstream_spend_usd", "Priced spend landed, USD.", ["team"], registry=r
        )
        # Where a worker's time goes (the benchmark's profile): per stage step, seconds.
        self.step_seconds = Counter(
            "spendstream_step_seconds",
            "Time spent in each step of the two stages.",
            ["step"],
            registry=r,
        )
        self.batches = Counter(
            "spendstream_batches", "Batches taken from Kafka, per stage.", ["stage"], registry=r
        )
        self.held = Gauge(
            "spendstream_facts_held",
            "Facts held for event-time alignment before detection.",
            registry=r,
        )
        r.register(_LagCollector(lag))

    def observe_facts(self, facts: Iterable[Fact]) -> None:
        by_team: dict[str, Decimal] = {}
        n = 0
        for f in facts:
            n += 1
            if f.cost is not None:
                team = f.event.team or ""
                by_team[team] = by_team.get(team, Decimal(0)) + f.cost.cost_usd
        self.facts.inc(n)
        for team, usd in by_team.items():
            self.spend.labels(self.team_label(team)).inc(float(usd))

    def observe_detection(self, alerts: Iterable[Alert], breakers: Iterable[BreakerEvent]) -> None:
        for a in alerts:
            self.alerts.labels(a.kind).inc()
        for b in breakers:
            self.breakers.labels(b.state).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
