"""Pricing: the seeds' worked examples, contract rules, and exactness against references.

References: a straightforward per-event Decimal formula (contract section 2) and
``genai_prices.calc_price`` itself on catalog models.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, timezone
from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext
from typing import Any

import pytest
from genai_prices import Usage, calc_price, data_snapshot
from genai_prices import types as gp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spendstream.config import DiscountConfig, ModelPriceConfig, PricesConfig
from spendstream.producers.event import MAX_TOKENS, UsageEvent
from spendstream.records import Cost
from spendstream.stream.pricing import Pricer

Q18 = Decimal("1E-18")
_ids = itertools.count()


def event(
    provider: str = "anthropic",
    model: str = "claude-sonnet-4-5",
    *,
    ts: datetime = datetime(2025, 11, 3, 12, tzinfo=UTC),
    input_tokens: int = 0,
    output_tokens: int = 0,
    cache_read_tokens: int = 0,
    cache_write_tokens: int = 0,
    batch: bool = False,
) -> UsageEvent:
    return UsageEvent(
        event_id=f"e{next(_ids)}",
        ts=ts,
        provider=provider,
        model=model,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_tokens=cache_read_tokens,
        cache_write_tokens=cache_write_tokens,
        batch=batch,
    )


def override(**kw: Any) -> ModelPriceConfig:
    base: dict[str, Any] = {"provider": "acme", "model": "m1"}
    base.update(kw)
    return ModelPriceConfig.model_validate(base)


def pricer(models: list[ModelPriceConfig] = (), discounts: list[DiscountConfig] = ()) -> Pricer:  # type: ignore[assignment]
    return Pricer.from_config(PricesConfig(model=list(models), discount=list(discounts)))


def reference(
    e: UsageEvent, rates: tuple[Decimal, Decimal, Decimal, Decimal], factor: Decimal
) -> Cost:
    """The contract formula, one event at a time, in plain Decimal arithmetic."""
    inp, read, write, out = rates
    with localcontext(Context(prec=200)):
        uncached = e.input_tokens - e.cache_read_tokens - e.cache_write_tokens
        parts = [
            (Decimal(n) * rate / Decimal(1_000_000) * factor).quantize(Q18, ROUND_HALF_EVEN)
            for n, rate in (
                (uncached, inp),
                (e.cache_read_tokens, read),
                (e.cache_write_tokens, write),
                (e.output_tokens, out),
            )
        ]
        return Cost(*parts, sum(parts, Decimal(0)), "reference")


def money(c: Cost) -> tuple[Decimal, ...]:
    return (
        c.input_cost_usd,
        c.cache_read_cost_usd,
        c.cache_write_cost_usd,
        c.output_cost_usd,
        c.cost_usd,
    )


# -- the seeds' worked examples --------------------------------------------------------------


def test_5000_cached_800_fresh_600_output_on_3_15_model_costs_exactly_0_0129() -> None:
    p = pricer([override(input_per_mtok=3, output_per_mtok=15, cache_read_per_mtok=0.30)])
    cost = p.price(
        event("acme", "m1", input_tokens=5800, cache_read_tokens=5000, output_tokens=600)
    )
    assert cost is not None
    assert cost.cost_usd == Decimal("0.0129")
    assert money(cost)[:4] == (Decimal("0.0024"), Decimal("0.0015"), Decimal(0), Decimal("0.009"))


def test_seed_cache_example_holds_on_the_catalog_claude_sonnet_4_5() -> None:
    cost = pricer().price(event(input_tokens=5800, cache_read_tokens=5000, output_tokens=600))
    assert cost is not None
    assert cost.cost_usd == Decimal("0.0129")
    assert cost.price_source == "genai-prices:anthropic/claude-sonnet-4-5"


def test_2000_input_500_output_at_5_30_costs_exactly_0_025() -> None:
    p = pricer([override(input_per_mtok=5, output_per_mtok=30)])
    cost = p.price(event("acme", "m1", input_tokens=2000, output_tokens=500))
    assert cost is not None
    assert cost.cost_usd == Decimal("0.025")
    assert cost.price_source == "override:acme/m1"


# -- contract rules ---------------------------------------------------------------------------


def test_costs_are_decimals_at_store_scale_18() -> None:
    cost = pricer().price(event(input_tokens=1234, output_tokens=56))
    assert cost is not None
    for v in money(cost):
        assert isinstance(v, Decimal)
        assert v.as_tuple().exponent == -18


def test_unknown_model_and_unknown_provider_are_unpriced() -> None:
    p = pricer()
    costs = p.price_batch(
        [
            event("anthropic", "claude-from-the-future-9", input_tokens=10),
            event("self-hosted", "llama-3-70b", input_tokens=10),
            event(input_tokens=10),
        ]
    )
    assert costs[0] is None and costs[1] is None
    assert costs[2] is not None
    assert p.source_of("self-hosted", "llama-3-70b") is None


def test_override_wins_over_catalog() -> None:
    p = pricer(
        [
            override(
                provider="anthropic", model="claude-sonnet-4-5", input_per_mtok=1, output_per_mtok=2
            )
        ]
    )
    cost = p.price(event(input_tokens=1_000_000, output_tokens=1_000_000))
    assert cost is not None
    assert cost.cost_usd == Decimal(3)
    assert cost.price_source == "override:anthropic/claude-sonnet-4-5"


def test_override_matches_provider_and_model_case_insensitively() -> None:
    p = pricer(
        [override(provider="Self-Hosted", model="Llama-3-70B", input_per_mtok=1, output_per_mtok=1)]
    )
    assert p.price(event("self-hosted", "llama-3-70b", input_tokens=10)) is not None


def test_override_cache_rates_default_to_the_input_rate() -> None:
    p = pricer([override(input_per_mtok=2, output_per_mtok=8)])
    cost = p.price(
        event(
            "acme",
            "m1",
            input_tokens=3_000_000,
            cache_read_tokens=1_000_000,
            cache_write_tokens=1_000_000,
        )
    )
    assert cost is not None
    assert money(cost)[:4] == (Decimal(2), Decimal(2), Decimal(2), Decimal(0))


def test_cache_write_is_priced_at_its_own_catalog_rate() -> None:
    cost = pricer().price(event(input_tokens=100_000, cache_write_tokens=100_000))
    assert cost is not None
    assert cost.cache_write_cost_usd == Decimal("0.375")
    assert cost.input_cost_usd == 0


def test_batch_takes_50_percent_off_for_anthropic_when_catalog_has_no_batch_price() -> None:
    ts = datetime(2025, 11, 3, tzinfo=UTC)  # before the catalog's anthropic batch prices start
    full, half = pricer().price_batch(
        [
            event(ts=ts, input_tokens=1000, output_tokens=100),
            event(ts=ts, input_tokens=1000, output_tokens=100, batch=True),
        ]
    )
    assert full is not None and half is not None
    assert half.cost_usd * 2 == full.cost_usd
    assert half.price_source == "genai-prices:anthropic/claude-sonnet-4-5+batch:50%"


def test_batch_uses_the_catalogs_own_batch_prices_where_it_has_them() -> None:
    ts = datetime(2026, 11, 1, tzinfo=UTC)
    cost = pricer().price(
        event(
            "openai",
            "gpt-5",
            ts=ts,
            input_tokens=10_000,
            cache_read_tokens=4000,
            output_tokens=900,
            batch=True,
        )
    )
    calc = calc_price(
        Usage(input_tokens=10_000, cache_read_tokens=4000, output_tokens=900),
        "gpt-5",
        provider_id="openai",
        genai_request_timestamp=ts,
        price_context={"processing": "batch"},
    )
    assert cost is not None
    assert cost.cost_usd == calc.total_price
    assert cost.price_source.endswith("+batch")


def test_override_batch_discount_replaces_the_default() -> None:
    p = pricer(
        [
            override(
                provider="openai",
                model="ft:mine",
                input_per_mtok=10,
                output_per_mtok=10,
                batch_discount=0.25,
            )
        ]
    )
    cost = p.price(event("openai", "ft:mine", input_tokens=1_000_000, batch=True))
    assert cost is not None
    assert cost.cost_usd == Decimal("7.5")
    assert cost.price_source == "override:openai/ft:mine+batch:25%"


def test_batch_on_a_provider_without_batch_api_costs_list_price() -> None:
    p = pricer(
        [override(provider="self-hosted", model="llama", input_per_mtok=1, output_per_mtok=1)]
    )
    cost = p.price(event("self-hosted", "llama", input_tokens=1_000_000, batch=True))
    assert cost is not None
    assert cost.cost_usd == 1
    assert cost.price_source == "override:self-hosted/llama"


def test_negotiated_discount_applies_after_batch_discount_per_component() -> None:
    p = pricer(
        [
            override(
                provider="openai",
                model="m",
                input_per_mtok=3,
                output_per_mtok=15,
                cache_read_per_mtok="0.3",
            )
        ],
        [DiscountConfig(provider="openai", percent=20)],
    )
    cost = p.price(
        event(
            "openai", "m", input_tokens=5800, cache_read_tokens=5000, output_tokens=600, batch=True
        )
    )
    assert cost is not None
    assert cost.cost_usd == Decimal("0.0129") * Decimal("0.5") * Decimal("0.8")
    assert money(cost)[:4] == (Decimal("0.00096"), Decimal("0.0006"), Decimal(0), Decimal("0.0036"))
    assert cost.price_source == "override:openai/m+batch:50%+discount:20%"


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([{"percent": 5}, {"provider": "openai", "percent": 10}], "10%"),
        ([{"provider": "openai", "percent": 10}, {"model": "gpt-4o", "percent": 15}], "15%"),
        (
            [
                {"model": "gpt-4o", "percent": 15},
                {"provider": "openai", "model": "gpt-4o", "percent": 30},
                {"percent": 1},
            ],
            "30%",
        ),
        ([{"provider": "anthropic", "percent": 10}, {"percent": 2.5}], "2.5%"),
    ],
)
def test_most_specific_discount_wins(rows: list[dict[str, Any]], expected: str) -> None:
    p = pricer(discounts=[DiscountConfig.model_validate(r) for r in rows])
    cost = p.price(event("openai", "gpt-4o", input_tokens=100))
    assert cost is not None
    assert cost.price_source.endswith(f"+discount:{expected}")


def test_the_price_in_force_at_the_events_time_is_used() -> None:
    # openai o3 dropped from $10 to $2 per million input tokens on 2025-06-10.
    before = datetime(2025, 6, 9, 23, 59, 59, tzinfo=UTC)
    after = datetime(2025, 6, 10, tzinfo=UTC)
    old, new = pricer().price_batch(
        [
            event("openai", "o3", ts=before, input_tokens=1_000_000),
            event("openai", "o3", ts=after, input_tokens=1_000_000),
        ]
    )
    assert old is not None and new is not None
    assert (old.cost_usd, new.cost_usd) == (Decimal(10), Decimal(2))
    assert new.price_source == "genai-prices:openai/o3@2025-06-10"


def test_pricing_at_a_given_instant_ignores_the_events_time() -> None:
    e = event("openai", "o3", ts=datetime(2025, 1, 1, tzinfo=UTC), input_tokens=1_000_000)
    cost = pricer().price(e, at=datetime(2026, 1, 1, tzinfo=UTC))
    assert cost is not None and cost.cost_usd == 2


def test_long_context_tier_applies_to_every_token_of_the_request() -> None:
    below, above = pricer().price_batch(
        [
            event(input_tokens=200_000, output_tokens=1000),
            event(input_tokens=200_001, output_tokens=1000),
        ]
    )
    assert below is not None and above is not None
    assert below.cost_usd == Decimal("0.6") + Decimal("0.015")
    assert above.cost_usd == Decimal("200001") * Decimal("6E-6") + Decimal("0.0225")
    assert above.price_source == "genai-prices:anthropic/claude-sonnet-4-5+tier>200000"


def test_the_tier_label_sits_after_the_catalog_entry_before_the_batch_discount() -> None:
    # price_source is <entry>[+tier>N][...][+batch:P%]: the tier belongs to the catalog
    # entry, so it comes before the factors applied on top of it, whatever they are.
    ts = datetime(2025, 11, 3, tzinfo=UTC)  # before the catalog's anthropic batch prices start
    cost = pricer().price(event(ts=ts, input_tokens=200_001, output_tokens=1000, batch=True))
    assert cost is not None
    assert cost.price_source == "genai-prices:anthropic/claude-sonnet-4-5+tier>200000+batch:50%"
    # Above 200k input tokens: $6 in, $22.5 out per million, then half off.
    above = Decimal(200_001) * Decimal("6E-6") + 1000 * Decimal("22.5E-6")
    assert cost.cost_usd == above / 2


def test_tier_counts_cached_input_toward_the_threshold() -> None:
    cost = pricer().price(event(input_tokens=250_000, cache_read_tokens=240_000))
    assert cost is not None
    assert cost.cache_read_cost_usd == Decimal(240_000) * Decimal("0.6E-6")


def test_time_of_day_prices_follow_the_events_clock() -> None:
    day = datetime(2025, 11, 3, tzinfo=UTC)
    times = [
        day + timedelta(hours=h, minutes=m, seconds=sec)
        for h, m, sec in (
            (0, 10, 0),
            (0, 29, 59.999999),
            (0, 30, 0),
            (12, 0, 0),
            (16, 29, 59.999999),
            (16, 30, 0),
            (23, 0, 0),
        )
    ]
    events = [
        event(
            "deepseek",
            "deepseek-chat",
            ts=t,
            input_tokens=10_000,
            cache_read_tokens=3000,
            output_tokens=2000,
        )
        for t in times
    ]
    costs = pricer().price_batch(events)
    for e, c in zip(events, costs, strict=True):
        calc = calc_price(
            Usage(input_tokens=10_000, cache_read_tokens=3000, output_tokens=2000),
            "deepseek-chat",
            provider_id="deepseek",
            genai_request_timestamp=e.ts,
        )
        assert c is not None and c.cost_usd == calc.total_price


def test_rounding_to_18_places_is_half_even_when_a_discount_needs_more_digits() -> None:
    # 1e-18 USD per token; half of it for 1 and 3 tokens: 0.5e-18 -> 0, 1.5e-18 -> 2e-18.
    p = pricer([override(input_per_mtok="0.000000000001", output_per_mtok=0, batch_discount=0.5)])
    one, three = p.price_batch(
        [
            event("acme", "m1", input_tokens=1, batch=True),
            event("acme", "m1", input_tokens=3, batch=True),
        ]
    )
    assert one is not None and three is not None
    assert one.cost_usd == 0
    assert three.cost_usd == Decimal("2E-18")


def test_largest_token_counts_stay_exact() -> None:
    rates = (Decimal("3"), Decimal("0.3"), Decimal("3.75"), Decimal("15"))
    p = pricer(
        [
            override(
                input_per_mtok=3,
                output_per_mtok=15,
                cache_read_per_mtok="0.3",
                cache_write_per_mtok="3.75",
            )
        ]
    )
    e = event(
        "acme",
        "m1",
        input_tokens=MAX_TOKENS,
        cache_read_tokens=MAX_TOKENS // 3,
        cache_write_tokens=MAX_TOKENS // 3,
        output_tokens=MAX_TOKENS,
    )
    cost = p.price(e)
    assert cost is not None
    assert money(cost) == money(reference(e, rates, Decimal(1)))


def test_batch_results_keep_event_order_across_groups() -> None:
    p = pricer()
    events = [
        event("openai", "gpt-4o", input_tokens=1000),
        event("nobody", "nothing", input_tokens=1000),
        event(input_tokens=1000),
        event("openai", "gpt-4o", input_tokens=2000),
    ]
    costs = p.price_batch(events)
    singles = [p.price(e) for e in events]
    assert costs == singles
    assert costs[1] is None
    assert (
        costs[3] is not None and costs[0] is not None and costs[3].cost_usd == 2 * costs[0].cost_usd
    )


# -- property tests ---------------------------------------------------------------------------

tokens = st.integers(min_value=0, max_value=MAX_TOKENS)
rate = st.decimals(min_value=0, max_value=1000, places=12, allow_nan=False, allow_infinity=False)
fine_rate = st.decimals(
    min_value=0, max_value=100, places=18, allow_nan=False, allow_infinity=False
)
fraction = st.decimals(min_value=0, max_value=1, places=4, allow_nan=False, allow_infinity=False)


@st.composite
def usages(draw: st.DrawFn, max_tokens: int = MAX_TOKENS) -> dict[str, int]:
    total = draw(st.integers(min_value=0, max_value=max_tokens))
    read = draw(st.integers(min_value=0, max_value=total))
    write = draw(st.integers(min_value=0, max_value=total - read))
    out = draw(st.integers(min_value=0, max_value=max_tokens))
    return {
        "input_tokens": total,
        "cache_read_tokens": read,
        "cache_write_tokens": write,
        "output_tokens": out,
    }


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rates=st.tuples(
        st.one_of(rate, fine_rate), st.one_of(rate, fine_rate), rate, st.one_of(rate, fine_rate)
    ),
    batch_fraction=st.one_of(st.none(), fraction),
    percent=st.one_of(
        st.none(),
        st.decimals(min_value=0, max_value=100, places=3, allow_nan=False, allow_infinity=False),
    ),
    batches=st.lists(st.tuples(usages(), st.booleans()), min_size=1, max_size=20),
)
def test_batch_pricer_equals_the_decimal_reference_on_random_usages(
    rates: tuple[Decimal, Decimal, Decimal, Decimal],
    batch_fraction: Decimal | None,
    percent: Decimal | None,
    batches: list[tuple[dict[str, int], bool]],
) -> None:
    o = override(
        provider="openai",
        model="custom",
        input_per_mtok=rates[0],
        cache_read_per_mtok=rates[1],
        cache_write_per_mtok=rates[2],
        output_per_mtok=rates[3],
        batch_discount=batch_fraction,
    )
    discounts = [] if percent is None else [DiscountConfig(percent=percent)]
    p = pricer([o], discounts)
    events = [event("openai", "custom", batch=b, **u) for u, b in batches]
    costs = p.price_batch(events)
    for e, c in zip(events, costs, strict=True):
        factor = Decimal(1)
        if e.batch:
            factor *= 1 - (Decimal("0.5") if batch_fraction is None else batch_fraction)
        if percent is not None:
            factor *= 1 - percent / 100
        expected = reference(e, rates, factor)
        assert c is not None
        assert money(c) == money(expected)
        with localcontext(Context(prec=100)):
            assert (
                c.cost_usd
                == c.input_cost_usd
                + c.cache_read_cost_usd
                + c.cache_write_cost_usd
                + c.output_cost_usd
            )


def _catalog_models() -> list[tuple[str, str]]:
    """(provider id, model id) of catalog models that their own id finds again."""
    snap = data_snapshot.get_snapshot()
    out = []
    for prov in snap.providers:
        for m in prov.models:
            try:
                _, found = snap.find_provider_model(m.id, None, prov.id, None)
            except LookupError:
                continue
            if found is m:
                out.append((prov.id, m.id))
    return out


CATALOG = _catalog_models()


def test_catalog_sample_covers_many_models() -> None:
    assert len(CATALOG) > 1000
    assert ("anthropic", "claude-sonnet-4-5") in CATALOG


def _close(ours: Decimal, theirs: Decimal, roundings: int) -> bool:
    # Exact whenever calc_price's result fits 18 places; else within our per-component rounding.
    if theirs == theirs.quantize(Q18):
        return ours == theirs
    return abs(ours - theirs) <= Decimal(roundings) * Decimal("0.5E-18")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pm=st.sampled_from(CATALOG),
    usage=usages(max_tokens=5_000_000),
    ts=st.datetimes(
        min_value=datetime(2023, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC)
    ),
    batch=st.booleans(),
)
def test_catalog_prices_equal_genai_prices_calc_price(
    pm: tuple[str, str], usage: dict[str, int], ts: datetime, batch: bool
) -> None:
    provider, model = pm
    e = event(provider, model, ts=ts, batch=batch, **usage)
    cost = Pricer.from_config().price(e)
    calc = calc_price(
        Usage(**usage),
        model,
        provider_id=provider,
        genai_request_timestamp=ts,
        price_context={"processing": "batch"} if batch else None,
    )
    if cost is None:
        # Only a period with no token price at all is left unpriced.
        assert isinstance(calc.model_price, gp.ModelPrice)
        assert calc.model_price.input_mtok is None and calc.model_price.output_mtok is None
        return
    factor = Decimal(1)
    if "+batch:" in cost.price_source:
        # No catalog batch price: calc_price bills list price; we take the default 50% off.
        factor = Decimal("0.5")
    with localcontext(Context(prec=100)):
        assert _close(cost.output_cost_usd, calc.output_price * factor, 1)
        assert _close(cost.cost_usd, calc.total_price * factor, 4)


@settings(max_examples=150, deadline=None)
@given(
    model=st.sampled_from(["deepseek-chat", "deepseek-reasoner", "deepseek-v4-flash"]),
    stamps=st.lists(
        st.datetimes(
            min_value=datetime(2024, 6, 1), max_value=datetime(2027, 6, 1), timezones=st.just(UTC)
        ),
        min_size=1,
        max_size=30,
    ),
)
def test_off_peak_prices_equal_calc_price_at_any_instant(
    model: str, stamps: list[datetime]
) -> None:
    events = [
        event("deepseek", model, ts=t, input_tokens=9000, cache_read_tokens=4000, output_tokens=700)
        for t in stamps
    ]
    costs = Pricer.from_config().price_batch(events)
    usage = Usage(input_tokens=9000, cache_read_tokens=4000, output_tokens=700)
    for t, c in zip(stamps, costs, strict=True):
        calc = calc_price(usage, model, provider_id="deepseek", genai_request_timestamp=t)
        assert c is not None and c.cost_usd == calc.total_price


def test_events_built_without_validation_in_another_zone_use_their_utc_day() -> None:
    # 2025-06-10 01:00 at +03:00 is 2025-06-09 22:00 UTC: still o3's old $10 price.
    ts = datetime(2025, 6, 10, 1, tzinfo=timezone(timedelta(hours=3)))
    e = event("openai", "o3", input_tokens=1_000_000).model_copy(update={"ts": ts})
    cost = pricer().price(e)
    assert cost is not None and cost.cost_usd == 10


def test_a_per_request_fee_is_part_of_input_cost_and_matches_calc_price() -> None:
    # perplexity sonar: $1/$1 per million tokens plus $12 per thousand requests.
    cost = pricer().price(event("perplexity", "sonar", input_tokens=1000, output_tokens=500))
    calc = calc_price(
        Usage(input_tokens=1000, output_tokens=500),
        "sonar",
        provider_id="perplexity",
        genai_request_timestamp=datetime(2025, 11, 3, 12, tzinfo=UTC),
    )
    assert cost is not None
    assert cost.input_cost_usd == Decimal("0.001") + Decimal("0.012")
    assert cost.cost_usd == calc.total_price == Decimal("0.0135")


MIXED = [
    ("anthropic", "claude-sonnet-4-5"),
    ("openai", "gpt-5"),
    ("openai", "o3"),
    ("deepseek", "deepseek-chat"),
    ("google", "gemini-2.5-pro"),
    ("openrouter", "google/gemini-2.5-flash"),
    ("acme", "m1"),
    ("self-hosted", "nothing"),
]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(MIXED),
            usages(max_tokens=400_000),
            st.datetimes(
                min_value=datetime(2025, 1, 1),
                max_value=datetime(2027, 1, 1),
                timezones=st.just(UTC),
            ),
            st.booleans(),
        ),
        min_size=1,
        max_size=40,
    ),
    split=st.integers(min_value=1, max_value=40),
)
def test_a_warm_pricer_in_any_batch_split_prices_like_a_fresh_one_per_event(
    rows: list[tuple[tuple[str, str], dict[str, int], datetime, bool]], split: int
) -> None:
    config = PricesConfig(
        model=[override(input_per_mtok=1, output_per_mtok=2)],
        discount=[DiscountConfig(provider="openai", percent=10)],
    )
    events = [event(p, m, ts=ts, batch=b, **u) for (p, m), u, ts, b in rows]
    warm = Pricer.from_config(config)
    batched: list[Cost | None] = []
    for i in range(0, len(events), split):
        batched.extend(warm.price_batch(events[i : i + split]))
    assert batched == [Pricer.from_config(config).price(e) for e in events]
