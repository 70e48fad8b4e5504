"""/metrics stays small whatever the data: labels taken from data are capped."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal

from spendstream.producers.event import UsageEvent
from spendstream.records import Cost, Fact
from spendstream.runtime.http.metrics import OTHER, LabelBudget, WorkerMetrics
from spendstream.table_schemas import facts_table

TS = datetime(2026, 3, 2, 12, tzinfo=UTC)
COST = Cost(Decimal(0), Decimal(0), Decimal(0), Decimal(0), Decimal("0.5"), "test")


def _fact(team: str) -> Fact:
    event = UsageEvent.model_construct(
        event_id=f"e-{team}", ts=TS, provider="p", model="m", input_tokens=1, output_tokens=1,
        team=team,
    )  # fmt: skip
    return Fact(event, COST, TS)


def _spend(text: str) -> dict[str, float]:
    pattern = r'^spendstream_spend_usd_total\{team="([^"]*)"\} (\S+)$'
    return {m[1]: float(m[2]) for m in re.finditer(pattern, text, re.M)}


def test_label_budget_keeps_the_first_values_and_folds_later_ones_into_other() -> None:
    budget = LabelBudget(2)
    assert [budget(v) for v in ("a", "b", "c", "a", "d", "b")] == ["a", "b", OTHER, "a", OTHER, "b"]


def test_100k_teams_keep_metrics_small_and_the_spend_total_exact() -> None:
    metrics = WorkerMetrics(lambda: [], label_values=100)
    for start in range(0, 100_000, 10_000):
        metrics.observe_facts(
            facts_table([_fact(f"team-{i}") for i in range(start, start + 10_000)])
        )
    text = metrics.render().decode()
    spend = _spend(text)
    assert len(spend) == 101  # 100 teams of their own, and "other"
    assert spend[OTHER] == 0.5 * 99_900
    assert sum(spend.values()) == 0.5 * 100_000  # nothing lost in the folding
    assert len(text) < 40_000  # was ~52 MB with one series per team


def test_the_cap_is_per_configured_value() -> None:
    metrics = WorkerMetrics(lambda: [], label_values=3)
    metrics.observe_facts(facts_table([_fact(t) for t in ("a", "b", "c", "d", "e")]))
    assert set(_spend(metrics.render().decode())) == {"a", "b", "c", OTHER}
