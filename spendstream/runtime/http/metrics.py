"""Prometheus metrics of one ``spendstream run`` worker (text format at ``GET /metrics``).

Spend is exported as a float counter because that is Prometheus' number type; the
warehouse keeps the exact Decimal amounts.

Labels whose values come from data (``team``) are capped: the first ``label_values``
(``[http] metrics_label_values``) distinct values of a metric keep their own series, later
ones are counted under ``other`` (``LabelBudget``), so a producer sending 100k team names
cannot make /metrics (and the worker's memory) grow without bound. Every other label's
values come from code or config (alert kinds, states, stages, steps, assigned partitions).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pyarrow as pa
import pyarrow.compute as pc
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from spendstream.records import Alert, BreakerEvent

__all__ = ["CONTENT_TYPE", "OTHER", "LabelBudget", "LagSource", "WorkerMetrics"]

OTHER = "other"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# (topic, partition, records in it not yet processed by this worker)
LagSource = Callable[[], Iterable[tuple[str, int, int]]]


def _no_lag() -> list[tuple[str, int, int]]:
    return []


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
    """Every counter of a worker in one registry; ``render()`` is the /metrics body."""

    def __init__(self, lag: LagSource = _no_lag, label_values: int = 100) -> None:
        """``lag``: the consumer lag per assigned partition, read at each scrape;
        ``label_values``: ``[http] metrics_label_values``, the cap per data label."""
        self.team_label = LabelBudget(label_values)
        self.registry = CollectorRegistry()
        r = self.registry
        self.events_in = Counter("spendstream_events_in", "Usage records consumed.", registry=r)
        self.http_records = Counter(
            "spendstream_http_records", "Records posted to /v1/events.", ["result"], registry=r
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
        self.late = Counter(
            "spendstream_late_facts",
            "Facts that came after their minute's window had closed ([detection] "
            "allowed_lateness_s behind their partition's newest event): landed, not counted "
            "by per-minute rules, by longer windows only while open.",
            registry=r,
        )
        self.breakers = Counter(
            "spendstream_breaker_events", "Breaker transitions.", ["state"], registry=r
        )
        self.spend = Counter(
            "spendstream_spend_usd", "Priced spend landed, USD.", ["team"], registry=r
        )
        # Where a worker's time goes (the benchmark's profile): per loop step, seconds.
        self.step_seconds = Counter(
            "spendstream_step_seconds", "Time spent in each step of a loop.", ["step"], registry=r
        )
        self.batches = Counter(
            "spendstream_batches", "Batches taken from Kafka, per loop.", ["stage"], registry=r
        )
        self.held = Gauge(
            "spendstream_facts_held",
            "Slices of usage batches a scope owner holds for event-time alignment.",
            registry=r,
        )
        # Where a worker's memory is: Arrow's buffers live outside Python's heap.
        self.arrow_bytes = Gauge(
            "spendstream_arrow_allocated_bytes",
            "Bytes allocated by Arrow's default memory pool.",
            registry=r,
        )
        self.arrow_bytes.set_function(lambda: float(pa.total_allocated_bytes()))
        r.register(_LagCollector(lag))

    def totals(self) -> dict[str, int]:
        """What the worker did since it started, summed over labels (the run's status line)."""

        def total(counter: Counter) -> int:
            return round(
                sum(
                    sample.value
                    for family in counter.collect()
                    for sample in family.samples
                    if sample.name.endswith("_total")
                )
            )

        return {
            "events in": total(self.events_in),
            "facts landed": total(self.facts),
            "duplicates": total(self.duplicates),
            "dead letters": total(self.dead_letters),
            "alerts": total(self.alerts),
            "breaker events": total(self.breakers),
        }

    def observe_facts(self, facts: pa.Table, landed: int | None = None) -> None:
        """Count landed facts and their spend per team (a facts table: ``team``, ``cost_usd``;
        a null cost is an unpriced fact and adds no spend). ``landed``: how many of them the
        commit landed, when some were found landed already by another writer."""
        self.facts.inc(facts.num_rows if landed is None else landed)
        if facts.num_rows == 0:
            return
        priced = facts.select(["team", "cost_usd"]).filter(pc.is_valid(facts.column("cost_usd")))
        if priced.num_rows == 0:
            return
        table = pa.table(
            {
                "team": pc.fill_null(priced.column("team"), ""),
                "usd": pc.cast(priced.column("cost_usd"), pa.float64()),
            }
        )
        sums = table.group_by("team").aggregate([("usd", "sum")])
        for team, usd in zip(
            sums.column("team").to_pylist(), sums.column("usd_sum").to_pylist(), strict=True
        ):
            self.spend.labels(self.team_label(team)).inc(usd)

    def observe_detection(self, alerts: Iterable[Alert], breakers: Iterable[BreakerEvent]) -> None:
        for a in alerts:
            self.alerts.labels(a.kind).inc()
        for b in breakers:
            self.breakers.labels(b.state).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
