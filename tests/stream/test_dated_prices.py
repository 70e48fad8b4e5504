"""Dated ``[[prices.model]]`` / ``[[prices.premium]]`` / ``[[prices.discount]]`` rows: each
event takes the row in force at its ``ts``; the boundaries pinned to the microsecond."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from spendstream.config import DiscountConfig, ModelPriceConfig, PremiumConfig, PricesConfig
from spendstream.records import Cost
from spendstream.stream.pricing import Pricer
from tests.stream.test_pricing import event

US = timedelta(microseconds=1)
MARCH = datetime(2026, 3, 1, tzinfo=UTC)
# 2026-03-01T00:00:00-08:00: a change at midnight Pacific, 08:00 UTC.
PACIFIC = datetime(2026, 3, 1, 8, tzinfo=UTC)
M = 1_000_000


def row(**kw: Any) -> ModelPriceConfig:
    base: dict[str, Any] = {"provider": "acme", "model": "m1", "output_per_mtok": 0}
    base.update(kw)
    return ModelPriceConfig.model_validate(base)


def costs(config: PricesConfig, *stamps: datetime, **kw: Any) -> list[Cost | None]:
    provider, model = kw.pop("provider", "acme"), kw.pop("model", "m1")
    events = [event(provider, model, ts=ts) for ts in stamps]
    events = [e.model_copy(update={"input_tokens": M, **kw}) for e in events]
    got = Pricer.from_config(config).price_batch(events)  # one table, split at the instants
    one_by_one = [Pricer.from_config(config).price(e) for e in events]
    assert got == one_by_one
    return got


def usd(c: Cost | None) -> Decimal | None:
    return None if c is None else c.cost_usd.normalize()


def test_an_event_exactly_at_effective_from_takes_the_new_row_a_microsecond_before_the_old() -> (
    None
):
    config = PricesConfig(
        model=[
            row(input_per_mtok=3, effective_until="2026-03-01"),
            row(input_per_mtok="2.5", effective_from="2026-03-01"),
        ]
    )
    before, at, after = costs(config, MARCH - US, MARCH, MARCH + US)
    assert (usd(before), usd(at), usd(after)) == (Decimal(3), Decimal("2.5"), Decimal("2.5"))
    assert before is not None and at is not None
    assert before.price_source == "override:acme/m1@..2026-03-01"
    assert at.price_source == "override:acme/m1@2026-03-01"


def test_a_date_time_with_an_offset_changes_the_price_at_that_instant_not_at_midnight() -> None:
    config = PricesConfig(
        model=[
            row(input_per_mtok=3),
            row(input_per_mtok=2, effective_from="2026-03-01T00:00:00-08:00"),
        ]
    )
    got = costs(config, MARCH, PACIFIC - US, PACIFIC, PACIFIC + timedelta(days=40))
    assert [usd(c) for c in got] == [Decimal(3), Decimal(3), Decimal(2), Decimal(2)]
    assert got[0] is not None and got[0].price_source == "override:acme/m1"
    assert got[2] is not None and got[2].price_source == "override:acme/m1@2026-03-01T08:00:00Z"


def test_an_undated_row_prices_what_no_dated_row_of_its_match_covers() -> None:
    config = PricesConfig(
        model=[
            row(input_per_mtok=1),
            row(input_per_mtok=5, effective_from="2026-03-01", effective_until="2026-03-02"),
        ]
    )
    got = costs(
        config, MARCH - US, MARCH, MARCH + timedelta(days=1) - US, MARCH + timedelta(days=1)
    )
    assert [usd(c) for c in got] == [Decimal(1), Decimal(5), Decimal(5), Decimal(1)]


def test_before_every_dated_row_the_catalog_prices_or_nothing_does() -> None:
    config = PricesConfig(
        model=[
            row(input_per_mtok=1, effective_from="2026-03-01"),
            row(
                provider="anthropic",
                model="claude-sonnet-4-5",
                input_per_mtok=1,
                effective_from="2026-03-01",
            ),
        ]
    )
    acme = costs(config, MARCH - US, MARCH)
    assert (acme[0], usd(acme[1])) == (None, Decimal(1))
    claude = costs(
        config,
        MARCH - US,
        MARCH,
        provider="anthropic",
        model="claude-sonnet-4-5",
        input_tokens=M // 10,
    )
    assert claude[0] is not None and claude[1] is not None
    assert claude[0].price_source == "genai-prices:anthropic/claude-sonnet-4-5"
    assert usd(claude[0]) == Decimal("0.3")  # the catalog's $3 per million input tokens
    assert claude[1].price_source == "override:anthropic/claude-sonnet-4-5@2026-03-01"
    why = Pricer.from_config(config).catalog.why_unpriced("acme", "m1", MARCH - US)
    assert why is not None and "dated (2026-03-01)" in why and "none in force" in why


def test_the_most_specific_row_wins_before_the_latest_date() -> None:
    config = PricesConfig(
        model=[
            row(input_per_mtok=7, service_tier="flex"),
            row(input_per_mtok=1, effective_from="2026-03-01"),
        ]
    )
    (flex,) = costs(config, MARCH, service_tier="flex")
    (plain,) = costs(config, MARCH)
    assert (usd(flex), usd(plain)) == (Decimal(7), Decimal(1))


def test_a_dated_discount_and_premium_apply_from_their_instants_only() -> None:
    config = PricesConfig(
        model=[row(input_per_mtok=10)],
        discount=[
            DiscountConfig(provider="acme", percent=10),
            DiscountConfig(provider="acme", percent=20, effective_from="2026-03-01"),
        ],
        premium=[
            PremiumConfig(region="eu", percent=50, effective_from="2026-03-01T08:00:00Z"),
        ],
    )
    got = costs(config, MARCH - US, MARCH, PACIFIC - US, PACIFIC, region="eu")
    # 10 x 0.9; 10 x 0.8; then 10 x 1.5 x 0.8 from 08:00 UTC.
    assert [usd(c) for c in got] == [Decimal(9), Decimal(8), Decimal(8), Decimal(12)]
    assert got[0] is not None and got[0].price_source == "override:acme/m1+discount:10%"
    assert got[3] is not None
    assert got[3].price_source == (
        "override:acme/m1+premium:50%@2026-03-01T08:00:00Z+discount:20%@2026-03-01"
    )


def test_a_dated_discount_on_a_catalog_model_keeps_each_day_in_its_own_period() -> None:
    # The catalog's price periods are cached per day; a dated discount inside a day splits it.
    config = PricesConfig(
        discount=[DiscountConfig(model="claude-sonnet-4-5", percent=50, effective_from=PACIFIC)]
    )
    got = costs(
        config,
        MARCH,
        PACIFIC - US,
        PACIFIC,
        provider="anthropic",
        model="claude-sonnet-4-5",
        input_tokens=M // 10,
    )
    assert [usd(c) for c in got] == [Decimal("0.3"), Decimal("0.3"), Decimal("0.15")]


def test_undated_rows_keep_their_meaning_at_any_time() -> None:
    config = PricesConfig(model=[row(input_per_mtok=4)], discount=[DiscountConfig(percent=25)])
    got = costs(config, datetime(2015, 1, 1, tzinfo=UTC), MARCH, datetime(2035, 1, 1, tzinfo=UTC))
    assert [usd(c) for c in got] == [Decimal(3)] * 3
    assert {c.price_source for c in got if c is not None} == {"override:acme/m1+discount:25%"}


def test_a_row_dated_only_by_effective_until_beats_an_undated_one_written_after_it() -> None:
    config = PricesConfig(
        model=[row(input_per_mtok=3, effective_until="2026-03-01"), row(input_per_mtok=1)]
    )
    got = costs(config, MARCH - US, MARCH)
    assert [usd(c) for c in got] == [Decimal(3), Decimal(1)]
