"""The catalog: resolution and caching of rates, discount precedence, day boundaries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from genai_prices import types as gp

from spendstream.config import DiscountConfig, ModelPriceConfig, PremiumConfig, PricesConfig
from spendstream.stream.ratecard import RateCard, format_fraction
from spendstream.stream.rates import UNITS, bands_from_catalog

T = datetime(2025, 11, 3, 12, tzinfo=UTC)


def test_days_within_one_price_period_share_one_resolved_period() -> None:
    cat = RateCard()
    periods = {id(cat.period("openai", "o3", T + timedelta(days=d), False)) for d in range(30)}
    assert len(periods) == 1


def test_a_new_dated_price_gives_a_new_period_with_its_start_date() -> None:
    cat = RateCard()
    before = cat.period("openai", "o3", datetime(2025, 6, 9, tzinfo=UTC), False)
    after = cat.period("openai", "o3", datetime(2025, 6, 10, tzinfo=UTC), False)
    assert before is not None and after is not None
    assert before is not after
    assert (before.bands[0].input_per_mtok, after.bands[0].input_per_mtok) == (10, 2)
    assert after.source == "genai-prices:openai/o3@2025-06-10"


def test_long_context_tiers_become_bands_above_their_threshold() -> None:
    period = RateCard().period("anthropic", "claude-sonnet-4-5", T, False)
    assert period is not None
    assert period.thresholds == (200_000,)
    assert [b.input_per_mtok for b in period.bands] == [3, 6]
    assert [period.band_index(n) for n in (0, 200_000, 200_001)] == [0, 0, 1]


def test_model_without_any_token_price_is_unpriced() -> None:
    cat = RateCard()
    assert cat.period("nobody", "nothing", T, False) is None
    assert cat.describe("nobody", "nothing") is None
    assert cat.describe("anthropic", "claude-sonnet-4-5") == (
        "genai-prices:anthropic/claude-sonnet-4-5"
    )


def test_off_peak_models_change_rates_at_their_switching_minutes_others_at_midnight() -> None:
    cat = RateCard()
    assert cat.day_boundaries("deepseek", "deepseek-chat") == (30, 990)  # 00:30, 16:30 UTC
    assert cat.day_boundaries("openai", "o3") == ()
    assert cat.day_boundaries("nobody", "nothing") == ()


def test_override_resolves_without_the_catalog_and_defaults_cache_rates() -> None:
    cat = RateCard(
        PricesConfig(
            model=[
                ModelPriceConfig(
                    provider="acme",
                    model="m",
                    input_per_mtok=Decimal(2),
                    output_per_mtok=Decimal(4),
                    cache_write_per_mtok=Decimal("2.5"),
                )
            ]
        )
    )
    period = cat.period("ACME", "M", T, False)
    assert period is not None
    band = period.bands[0]
    assert (band.cache_read_per_mtok, band.cache_write_per_mtok) == (2, Decimal("2.5"))
    assert period.multiplier == 1
    assert period.source == "override:acme/m"


@pytest.mark.parametrize(
    ("provider", "model", "expected"),
    [
        ("openai", "gpt-4o", Decimal(30)),  # provider+model
        ("openai", "gpt-5", Decimal(10)),  # provider
        ("google", "gpt-4o", Decimal(15)),  # model alone
        ("google", "gemini-2.5-pro", Decimal(5)),  # global
    ],
)
def test_discount_precedence_is_most_specific_first(
    provider: str, model: str, expected: Decimal
) -> None:
    cat = RateCard(
        PricesConfig(
            discount=[
                DiscountConfig(percent=Decimal(5)),
                DiscountConfig(provider="openai", percent=Decimal(10)),
                DiscountConfig(model="gpt-4o", percent=Decimal(15)),
                DiscountConfig(provider="OpenAI", model="gpt-4o", percent=Decimal(30)),
            ]
        )
    )
    found = cat.discount_for(provider, model)
    assert found is not None and found.percent == expected


def test_fractions_print_as_short_percentages() -> None:
    assert [format_fraction(Decimal(x)) for x in ("0.5", "0.2", "0.125", "1")] == [
        "50%",
        "20%",
        "12.5%",
        "100%",
    ]


def test_why_unpriced_names_what_is_missing() -> None:
    cat = RateCard()
    assert cat.why_unpriced("anthropic", "claude-sonnet-4-5", T) is None
    assert "provider 'self-hosted' is not in genai-prices" in str(
        cat.why_unpriced("self-hosted", "llama", T)
    )
    assert "no anthropic model matching 'claude-nonexistent-9'" in str(
        cat.why_unpriced("anthropic", "claude-nonexistent-9", T)
    )
    # A name with spaces around it is stored (and unpriced) as sent; the reason says so.
    assert cat.why_unpriced("openai", " gpt-4o", T) == (
        "'openai'/' gpt-4o' has spaces around it; openai/gpt-4o has a price: the producer "
        "sends the name with the spaces"
    )
    assert "model matching 'claude-nonexistent-9 '" in str(
        cat.why_unpriced(" anthropic", "claude-nonexistent-9 ", T)
    )


def test_among_equally_specific_discounts_and_premiums_the_last_written_wins() -> None:
    cat = RateCard(
        PricesConfig(
            discount=[
                DiscountConfig(provider="openai", percent=Decimal(10)),
                DiscountConfig(provider="openai", percent=Decimal(20)),
            ],
            premium=[
                PremiumConfig(provider="openai", percent=Decimal(5)),
                PremiumConfig(provider="openai", percent=Decimal(7)),
            ],
        )
    )
    discount = cat.discount_for("openai", "gpt-5")
    premium = cat.premium_for("openai", "gpt-5", None, None)
    assert discount is not None and discount.percent == 20
    assert premium is not None and premium.percent == 7


def test_a_service_tier_is_more_specific_than_a_region_for_premiums_and_overrides() -> None:
    def override(**where: str) -> ModelPriceConfig:
        return ModelPriceConfig(
            provider="acme",
            model="m",
            input_per_mtok=Decimal(1),
            output_per_mtok=Decimal(1),
            **where,
        )

    # The tier rows come first: a region row written later must not win by being last.
    cat = RateCard(
        PricesConfig(
            model=[override(service_tier="flex"), override(region="eu")],
            premium=[
                PremiumConfig(service_tier="flex", percent=Decimal(3)),
                PremiumConfig(region="eu", percent=Decimal(9)),
            ],
        )
    )
    period = cat.period("acme", "m", T, False, "flex", "eu")
    assert period is not None and period.source == "override:acme/m[tier=flex]+premium:3%"
    assert period.multiplier == Decimal("1.03")


def test_the_default_batch_discount_applies_whatever_the_providers_case() -> None:
    cat = RateCard(
        PricesConfig(
            model=[
                ModelPriceConfig(
                    provider="OpenAI",
                    model="m",
                    input_per_mtok=Decimal(2),
                    output_per_mtok=Decimal(4),
                )
            ]
        )
    )
    period = cat.period("OpenAI", "m", T, True)
    assert period is not None and period.multiplier == Decimal("0.5")
    assert period.source == "override:OpenAI/m+batch:50%"


def test_a_tier_applies_to_requests_above_its_start_not_at_it() -> None:
    # Input's tier starts at 200,000 and output's at 200,001: a request of 200,001 input
    # tokens is past input's start and at output's, so it pays input's tier and output's
    # base rate. Band i's rates are those of a total one above the threshold before it (a
    # tier counted from its start instead survived a mutation pass).
    price = gp.ModelPrice(
        input_mtok=gp.TieredPrices(
            base=Decimal(3), tiers=[gp.Tier(start=200_000, price=Decimal(6))]
        ),
        output_mtok=gp.TieredPrices(
            base=Decimal(15), tiers=[gp.Tier(start=200_001, price=Decimal(22))]
        ),
    )
    found = bands_from_catalog(price)
    assert found is not None
    thresholds, bands = found
    assert thresholds == (200_000, 200_001)
    rate = {u: [b.rates[UNITS.index(u)] for b in bands] for u in ("input", "output")}
    assert rate == {"input": [3, 6, 6], "output": [15, 15, 22]}
