"""The worker's metrics registry: spend per team from an Arrow facts table, labels capped."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal

import pyarrow as pa

from spendstream.records import Alert, BreakerEvent
from spendstream.runtime.http.metrics import OTHER, LabelBudget, WorkerMetrics

MONEY = pa.decimal128(38, 18)


def _spend(text: str) -> dict[str, float]:
    pattern = r'^spendstream_spend_usd_total\{team="([^"]*)"\} (\S+)$'
    return {m[1]: float(m[2]) for m in re.finditer(pattern, text, re.M)}


def _facts(teams: list[str | None], costs: list[str | None]) -> pa.Table:
    return pa.table(
        {
            "team": pa.array(teams, pa.string()),
            "cost_usd": pa.array([None if c is None else Decimal(c) for c in costs], MONEY),
        }
    )


def test_label_budget_keeps_the_first_values_and_folds_later_ones_into_other() -> None:
    budget = LabelBudget(2)
    assert [budget(v) for v in ("a", "b", "c", "a", "d", "b")] == ["a", "b", OTHER, "a", OTHER, "b"]


def test_spend_is_summed_per_team_unpriced_facts_count_but_add_nothing() -> None:
    metrics = WorkerMetrics(label_values=10)
    metrics.observe_facts(
        _facts(["a", "a", None, "b", "b"], ["0.25", "0.5", "1.125", None, "0.000000000000000001"])
    )
    metrics.observe_facts(_facts([], []))
    metrics.observe_facts(_facts(["c"], [None]))  # nothing priced: no series for c
    text = metrics.render().decode()
    assert _spend(text) == {"a": 0.75, "": 1.125, "b": 1e-18}
    assert "spendstream_facts_landed_total 6.0" in text


def test_the_cap_is_per_configured_value_and_the_lag_source_is_read_at_each_scrape() -> None:
    lag = [("t.usage", 0, 5)]
    metrics = WorkerMetrics(lambda: lag, label_values=3)
    metrics.observe_facts(_facts(["a", "b", "c", "d", "e"], ["1"] * 5))
    text = metrics.render().decode()
    assert _spend(text) == {"a": 1.0, "b": 1.0, "c": 1.0, OTHER: 2.0}
    assert 'spendstream_consumer_lag{partition="0",topic="t.usage"} 5.0' in text
    lag[:] = [("t.usage", 0, 0), ("t.usage", 1, 7)]
    text = metrics.render().decode()
    assert 'spendstream_consumer_lag{partition="1",topic="t.usage"} 7.0' in text


def test_detection_counts_alerts_by_kind_and_breakers_by_state() -> None:
    from datetime import UTC, datetime

    ts = datetime(2026, 3, 2, tzinfo=UTC)
    metrics = WorkerMetrics()
    alert = Alert(
        "a1", "runaway_rate", "api_key:k", "critical", ts, Decimal(200), Decimal(120), "m", "d"
    )
    metrics.observe_detection(
        [alert, alert],
        [BreakerEvent("team:a", "open", "r", ts), BreakerEvent("team:a", "closed", "r", ts)],
    )
    text = metrics.render().decode()
    assert 'spendstream_alerts_total{kind="runaway_rate"} 2.0' in text
    assert 'spendstream_breaker_events_total{state="open"} 1.0' in text
    assert 'spendstream_breaker_events_total{state="closed"} 1.0' in text


def test_later_teams_are_named_other_and_the_default_cap_is_the_configs() -> None:
    from spendstream.config import HttpConfig

    metrics = WorkerMetrics()
    assert metrics.team_label.limit == HttpConfig().metrics_label_values
    metrics = WorkerMetrics(label_values=1)
    metrics.observe_facts(_facts(["a", "b"], ["1", "2"]))
    assert 'spendstream_spend_usd_total{team="other"} 2.0' in metrics.render().decode()


def test_landed_counts_only_what_the_commit_landed_and_totals_sum_over_labels() -> None:
    metrics = WorkerMetrics()
    metrics.observe_facts(_facts(["a", "a", "b"], ["1", "1", "1"]), landed=1)
    metrics.events_in.inc(5)
    metrics.duplicates.inc(2)
    metrics.dead_letters.labels("http").inc(3)
    metrics.dead_letters.labels("usage").inc(4)
    ts = datetime(2026, 3, 2, tzinfo=UTC)
    metrics.observe_detection([], [BreakerEvent("team:a", "open", "r", ts)])
    assert "spendstream_facts_landed_total 1.0" in metrics.render().decode()
    assert metrics.totals() == {
        "events in": 5,
        "facts landed": 1,
        "duplicates": 2,
        "dead letters": 7,
        "alerts": 0,
        "breaker events": 1,
    }
