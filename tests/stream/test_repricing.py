"""Repricing: old vs new totals before writing; time-effective unless asked otherwise."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from spendstream.config import ModelPriceConfig, PricesConfig
from spendstream.records import Fact
from spendstream.stream.pricing import Pricer
from spendstream.stream.repricing import reprice
from tests.stream.test_pricing import event

T = datetime(2025, 11, 3, 12, tzinfo=UTC)


def facts_priced_by(pricer: Pricer, events: list) -> list[Fact]:  # type: ignore[type-arg]
    costs = pricer.price_batch(events)
    return [Fact(event=e, cost=c, ingested_at=T) for e, c in zip(events, costs, strict=True)]


def with_override(provider: str, model: str, inp: str, out: str) -> Pricer:
    return Pricer.from_config(
        PricesConfig(
            model=[
                ModelPriceConfig(
                    provider=provider,
                    model=model,
                    input_per_mtok=Decimal(inp),
                    output_per_mtok=Decimal(out),
                )
            ]
        )
    )


def test_changed_override_shows_old_and_new_totals_per_model() -> None:
    events = [event("acme", "m1", input_tokens=1_000_000) for _ in range(3)] + [
        event(input_tokens=1000)
    ]
    old = facts_priced_by(with_override("acme", "m1", "1", "1"), events)
    report = reprice(old, with_override("acme", "m1", "2.5", "1"))
    assert report.old_cost_usd == Decimal(3) + Decimal("0.003")
    assert report.new_cost_usd == Decimal("7.5") + Decimal("0.003")
    assert report.difference_usd == Decimal("4.5")
    assert report.changed == 3
    first = report.lines[0]
    assert (first.provider, first.model, first.calls, first.changed) == ("acme", "m1", 3, 3)
    assert (first.old_cost_usd, first.new_cost_usd) == (Decimal(3), Decimal("7.5"))
    assert report.lines[1].changed == 0
    assert len(report.changed_facts(old)) == 3
    assert [f.event for f in report.facts] == events


def test_unpriced_model_becomes_priced_once_an_override_exists() -> None:
    events = [event("self-hosted", "llama", input_tokens=2_000_000, output_tokens=10)]
    old = facts_priced_by(Pricer.from_config(), events)
    assert old[0].cost is None
    report = reprice(old, with_override("self-hosted", "llama", "0.1", "0"))
    line = report.lines[0]
    assert (line.old_unpriced, line.new_unpriced) == (1, 0)
    assert line.new_cost_usd == Decimal("0.2")
    assert line.new_sources == {"override:self-hosted/llama"}
    assert report.facts[0].priced


def test_prices_in_force_at_the_time_stay_in_force() -> None:
    # o3 cost $10 per million input tokens until 2025-06-09, $2 from 2025-06-10.
    events = [
        event("openai", "o3", ts=datetime(2025, 5, 1, tzinfo=UTC), input_tokens=1_000_000),
        event("openai", "o3", ts=datetime(2025, 7, 1, tzinfo=UTC), input_tokens=1_000_000),
    ]
    old = facts_priced_by(Pricer.from_config(), events)
    same = reprice(old, Pricer.from_config())
    assert same.changed == 0
    assert same.new_cost_usd == same.old_cost_usd == Decimal(12)


def test_at_current_prices_reprices_history_at_one_instant() -> None:
    events = [
        event("openai", "o3", ts=datetime(2025, 5, 1, tzinfo=UTC), input_tokens=1_000_000),
        event("openai", "o3", ts=datetime(2025, 7, 1, tzinfo=UTC), input_tokens=1_000_000),
    ]
    old = facts_priced_by(Pricer.from_config(), events)
    now = reprice(old, Pricer.from_config(), at=datetime(2026, 1, 1, tzinfo=UTC))
    assert now.changed == 1
    assert now.new_cost_usd == Decimal(4)
    assert now.difference_usd == Decimal(-8)


def test_repricing_a_month_after_adding_a_dated_row_changes_only_facts_from_its_date() -> None:
    change = datetime(2025, 11, 15, tzinfo=UTC)
    stamps = [datetime(2025, 11, d, 9, tzinfo=UTC) for d in (1, 14)]
    stamps += [change - timedelta(microseconds=1), change, datetime(2025, 11, 30, tzinfo=UTC)]
    events = [event("acme", "m1", ts=ts, input_tokens=1_000_000) for ts in stamps]
    old = facts_priced_by(with_override("acme", "m1", "1", "1"), events)
    dated = PricesConfig(
        model=[
            ModelPriceConfig(provider="acme", model="m1", input_per_mtok=1, output_per_mtok=1),
            ModelPriceConfig.model_validate(
                {
                    "provider": "acme",
                    "model": "m1",
                    "input_per_mtok": 2,
                    "output_per_mtok": 1,
                    "effective_from": "2025-11-15",
                }
            ),
        ]
    )
    report = reprice(old, Pricer.from_config(dated))
    assert report.changed == 2
    changed = report.changed_facts(old)
    assert [f.event.ts for f in changed] == [change, datetime(2025, 11, 30, tzinfo=UTC)]
    assert (report.old_cost_usd, report.new_cost_usd) == (Decimal(5), Decimal(7))
    assert report.lines[0].new_sources == {"override:acme/m1", "override:acme/m1@2025-11-15"}
