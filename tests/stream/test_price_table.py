"""Columnar pricing: ``Pricer.price_table`` against a naive per-event Decimal reference.

The reference below is written out from the documented formula (stream/pricing.py, and
docs/ARCHITECTURE.md "Prices"), one event at a time in plain Decimal arithmetic, with its
own statement of each unit's fallback rate. It shares only rate *resolution* with the
pricer (``RateCard.period``: which catalog entry, tier band, batch/tier variant and
factors apply); genai-prices' ``calc_price`` checks that resolution separately.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext
from types import SimpleNamespace
from typing import Any

import pyarrow as pa
import pytest
from genai_prices import Usage, calc_price
from genai_prices import types as gp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spendstream.config import DiscountConfig, ModelPriceConfig, PremiumConfig, PricesConfig
from spendstream.producers.event import MAX_TOKENS, UsageEvent
from spendstream.records import Cost
from spendstream.stream.pricing import PRICE_COLUMNS, Pricer, costs_from_table, pricing_table
from spendstream.stream.rates import Band, PricePeriod
from spendstream.table_schemas import COUNT_MAP, MONEY, events_table
from tests.stream.test_pricing import CATALOG

Q18 = Decimal("1E-18")
MTOK = Decimal(1_000_000)
_ids = itertools.count()
T = datetime(2025, 11, 3, 12, tzinfo=UTC)


def event(provider: str = "acme", model: str = "m1", **kw: Any) -> UsageEvent:
    base: dict[str, Any] = {
        "event_id": f"e{next(_ids)}",
        "ts": T,
        "provider": provider,
        "model": model,
        "input_tokens": 0,
        "output_tokens": 0,
    }
    base.update(kw)
    return UsageEvent(**base)


def unbounded_event(**kw: Any) -> UsageEvent:
    """An event past the input bounds (docs/bounds.md: no record gets this far), built
    without validation: it pins the pricing arithmetic's exact path for counts past int64."""
    base: dict[str, Any] = {
        "event_id": f"e{next(_ids)}",
        "ts": T,
        "provider": "acme",
        "model": "m1",
        "input_tokens": 0,
        "output_tokens": 0,
    }
    return UsageEvent.model_construct(**{**base, **kw})


def override(**kw: Any) -> ModelPriceConfig:
    base: dict[str, Any] = {"provider": "acme", "model": "m1"}
    base.update(kw)
    return ModelPriceConfig.model_validate(base)


# -- the naive reference ------------------------------------------------------------------

# Each unit's rate key in a Band's ``own`` rates and where it falls back to, written out
# from the docs rather than imported.
_OWN_OR = {
    "input": (),
    "cache_read": ("input",),
    "cache_write": ("input",),
    "cache_write_1h": ("cache_write", "input"),
    "input_audio": ("input",),
    "cache_audio_read": ("cache_read", "input_audio", "input"),
    "input_image": ("input",),
    "cache_image_read": ("cache_read", "input_image", "input"),
    "output": (),
    "output_audio": ("output",),
    "output_image": ("output",),
}


def _rate(own: dict[str, Decimal], unit: str) -> Decimal:
    for name in (unit, *_OWN_OR[unit]):
        if name in own:
            return own[name]
    return Decimal(0)


def reference(e: UsageEvent, period: PricePeriod) -> Cost:
    band = period.bands[period.band_index(e.input_tokens)]
    own = dict(band.own)
    m = period.multiplier
    with localcontext(Context(prec=200)):
        audio_fresh = e.input_audio_tokens - e.cache_audio_read_tokens
        image_fresh = e.input_image_tokens - e.cache_image_read_tokens
        text_fresh = (
            e.input_tokens - e.cache_read_tokens - e.cache_write_tokens - audio_fresh - image_fresh
        )
        text_read = e.cache_read_tokens - e.cache_audio_read_tokens - e.cache_image_read_tokens
        text_out = e.output_tokens - e.output_audio_tokens - e.output_image_tokens

        def tok(n: int, unit: str) -> Decimal:
            return Decimal(n) * _rate(own, unit) / MTOK

        parts = [
            tok(text_fresh, "input")
            + tok(audio_fresh, "input_audio")
            + tok(image_fresh, "input_image")
            + band.request_fee_usd,
            tok(text_read, "cache_read")
            + tok(e.cache_audio_read_tokens, "cache_audio_read")
            + tok(e.cache_image_read_tokens, "cache_image_read"),
            tok(e.cache_write_tokens - e.cache_write_1h_tokens, "cache_write")
            + tok(e.cache_write_1h_tokens, "cache_write_1h"),
            tok(text_out, "output")
            + tok(e.output_audio_tokens, "output_audio")
            + tok(e.output_image_tokens, "output_image"),
            sum(
                (
                    Decimal(n) * band.tool_per_k.get(t, Decimal(0)) / 1000
                    for t, n in (e.tool_requests or {}).items()
                ),
                Decimal(0),
            ),
        ]
        rounded = [(p * m).quantize(Q18, ROUND_HALF_EVEN) for p in parts]
        total = sum(rounded, Decimal(0))
    inp, read, write, out, tool = rounded
    return Cost(inp, read, write, out, total, "reference", tool)


def money(c: Cost) -> tuple[Decimal, ...]:
    return (
        c.input_cost_usd,
        c.cache_read_cost_usd,
        c.cache_write_cost_usd,
        c.output_cost_usd,
        c.tool_cost_usd,
        c.cost_usd,
    )


# -- strategies ---------------------------------------------------------------------------

rate = st.decimals(min_value=0, max_value=1000, places=12, allow_nan=False, allow_infinity=False)
# Rates with more digits than 1e-18 USD per token: the results need rounding past 18 places.
fine_rate = st.decimals(min_value=0, max_value=50, places=20, allow_nan=False, allow_infinity=False)
any_rate = st.one_of(rate, fine_rate)
maybe_rate = st.one_of(st.none(), any_rate)
percent = st.decimals(min_value=0, max_value=100, places=3, allow_nan=False, allow_infinity=False)


@st.composite
def usages(draw: st.DrawFn, max_tokens: int = MAX_TOKENS) -> dict[str, Any]:
    """Token counts that keep every invariant, every dimension drawn."""
    inp = draw(st.integers(0, max_tokens))
    read = draw(st.integers(0, inp))
    write = draw(st.integers(0, inp - read))
    write_1h = draw(st.integers(0, write))
    fresh = inp - read - write
    audio_read = draw(st.integers(0, read))
    image_read = draw(st.integers(0, read - audio_read))
    audio = audio_read + draw(st.integers(0, fresh))
    image = image_read + draw(st.integers(0, fresh - (audio - audio_read)))
    out = draw(st.integers(0, max_tokens))
    out_audio = draw(st.integers(0, out))
    out_image = draw(st.integers(0, out - out_audio))
    tools = draw(
        st.one_of(
            st.none(),
            st.dictionaries(
                st.sampled_from(["web_search", "code_execution", "storage_search", "mcp_thing"]),
                st.integers(0, 1_000_000_000),
                max_size=3,
            ),
        )
    )
    return {
        "input_tokens": inp,
        "cache_read_tokens": read,
        "cache_write_tokens": write,
        "cache_write_1h_tokens": write_1h,
        "cache_audio_read_tokens": audio_read,
        "cache_image_read_tokens": image_read,
        "input_audio_tokens": audio,
        "input_image_tokens": image,
        "output_tokens": out,
        "output_audio_tokens": out_audio,
        "output_image_tokens": out_image,
        "tool_requests": tools,
    }


MIXED = [
    ("anthropic", "claude-sonnet-4-5"),  # long-context tier, 1 h cache writes, web search
    ("anthropic", "claude-opus-4-1"),
    ("openai", "gpt-5"),  # catalog batch and service-tier prices
    ("openai", "gpt-audio"),  # audio rates
    ("google", "gemini-2.5-flash"),  # cached audio
    ("openai", "gpt-realtime"),  # cached audio and image rates
    ("google", "gemini-2.5-flash-image"),  # image output
    ("google", "gemini-2.5-pro"),
    ("deepseek", "deepseek-chat"),  # time-of-day prices
    ("perplexity", "sonar"),  # per-request fee
    ("acme", "m1"),  # override
    ("acme", "m1-eu"),  # override for a region only, else unpriced
    ("self-hosted", "nothing"),  # unpriced
]


@st.composite
def configs(draw: st.DrawFn) -> PricesConfig:
    rates = {
        f"{u}_per_mtok": draw(maybe_rate)
        for u in (
            "cache_read",
            "cache_write",
            "cache_write_1h",
            "input_audio",
            "cache_audio_read",
            "input_image",
            "cache_image_read",
            "output_audio",
            "output_image",
        )
    }
    tools = draw(
        st.dictionaries(st.sampled_from(["web_search", "mcp_thing"]), any_rate, max_size=2)
    )
    models = [
        override(
            input_per_mtok=draw(any_rate),
            output_per_mtok=draw(any_rate),
            request_fee_usd=draw(st.sampled_from([0, "0.005", "0.0000000000000000007"])),
            tool_per_k=tools,
            batch_discount=draw(st.one_of(st.none(), st.decimals(0, 1, places=4))),
            **{k: v for k, v in rates.items() if v is not None},
        ),
        override(model="m1-eu", region="eu", input_per_mtok=draw(any_rate), output_per_mtok=1),
    ]
    discounts = [DiscountConfig(percent=draw(percent))] if draw(st.booleans()) else []
    premiums = [PremiumConfig(region="eu", percent=draw(percent))] if draw(st.booleans()) else []
    return PricesConfig(model=models, discount=discounts, premium=premiums)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    config=configs(),
    rows=st.lists(
        st.tuples(
            st.sampled_from(MIXED),
            st.one_of(usages(), usages(max_tokens=3_000_000)),
            st.datetimes(
                min_value=datetime(2024, 6, 1),
                max_value=datetime(2027, 6, 1),
                timezones=st.just(UTC),
            ),
            st.booleans(),
            st.sampled_from([None, "flex", "priority", "default"]),
            st.sampled_from([None, "eu", "us"]),
        ),
        min_size=1,
        max_size=30,
    ),
)
def test_price_table_equals_the_naive_reference_and_price_per_event(
    config: PricesConfig, rows: list[tuple[Any, ...]]
) -> None:
    events = [
        event(p, m, ts=ts, batch=b, service_tier=tier, region=region, **u)
        for (p, m), u, ts, b, tier, region in rows
    ]
    pricer = Pricer.from_config(config)
    table = pricer.price_table(events_table(events))
    got = costs_from_table(table)
    fresh = Pricer.from_config(config)
    for e, cost in zip(events, got, strict=True):
        period = fresh.catalog.period(e.provider, e.model, e.ts, e.batch, e.service_tier, e.region)
        assert cost == fresh.price(e)
        if period is None:
            assert cost is None
            continue
        assert cost is not None
        assert money(cost) == money(reference(e, period))
        for v in money(cost):
            assert v.as_tuple().exponent == -18


# -- rounding past 18 digits, pinned --------------------------------------------------------


def _one_rate_pricer(per_mtok: str) -> Pricer:
    return Pricer.from_config(
        PricesConfig(model=[override(input_per_mtok=per_mtok, output_per_mtok=0)])
    )


@pytest.mark.parametrize(
    ("tokens", "units"),
    [
        (1, 0),  # 0.5e-18: a tie, 0 is even -> down
        (3, 2),  # 1.5e-18: a tie, 1 is odd -> up to 2
        (5, 2),  # 2.5e-18 -> 2
        (7, 4),  # 3.5e-18 -> 4
        (2**62 + 1, 2**61),  # the exact path (past int64's bound): tie, even -> down
        (2**62 + 3, 2**61 + 2),  # tie, odd -> up
    ],
)
def test_a_tie_at_the_19th_digit_rounds_to_even_both_ways(tokens: int, units: int) -> None:
    # 0.0000000000005 USD per million tokens = 0.5e-18 USD per token.
    cost = _one_rate_pricer("0.0000000000005").price(unbounded_event(input_tokens=tokens))
    assert cost is not None
    assert cost.input_cost_usd == Decimal(units) * Q18
    assert cost.cost_usd == Decimal(units) * Q18


@pytest.mark.parametrize(
    ("per_mtok", "tokens", "units"),
    [
        ("0.0000000000004", 1, 0),  # 0.4e-18 -> 0
        ("0.0000000000006", 1, 1),  # 0.6e-18 -> 1
        ("0.00000000000050001", 1, 1),  # just above a tie -> up
        ("0.00000000000049999", 3, 1),  # 1.49997e-18 -> 1
        ("0.0000000000006", 2**62 + 1, (6 * (2**62 + 1) + 5) // 10),  # exact path, > half
    ],
)
def test_digits_past_the_18th_round_to_nearest(per_mtok: str, tokens: int, units: int) -> None:
    cost = _one_rate_pricer(per_mtok).price(unbounded_event(input_tokens=tokens))
    assert cost is not None
    assert cost.input_cost_usd == Decimal(units) * Q18


def test_a_token_rate_past_int64_prices_on_the_exact_path_not_overflowing() -> None:
    # $10 a token is 1e19 units of 1e-18 USD: past int64 (and the fast path's 2**62 bound)
    # but under 2**64, so a looser bound would cast it to int64 and overflow.
    cost = _one_rate_pricer("10000000").price(event(input_tokens=3))
    assert cost is not None
    assert cost.input_cost_usd == Decimal(30)
    assert cost.cost_usd == Decimal(30)


def test_a_cost_of_exactly_2_to_the_63_units_is_stored_exactly() -> None:
    # 2e-18 USD a token x 2**62 tokens is 2**63 units: its low 64-bit word is exactly 2**63,
    # which must be stored as the negative int64 -2**63 (the same bits), not overflow.
    p = _one_rate_pricer("0.000000000002")
    out = p.price_table(pricing_table([unbounded_event(input_tokens=2**62)]))
    expected = Decimal("9.223372036854775808")
    assert out.column("input_cost_usd").to_pylist() == [expected]
    assert out.column("cost_usd").to_pylist() == [expected]


def test_each_component_is_rounded_once_and_the_total_is_their_sum() -> None:
    # 1.5e-18 on input and 1.5e-18 on output each round to 2e-18: total 4e-18, not round(3e-18).
    p = Pricer.from_config(
        PricesConfig(
            model=[override(input_per_mtok="0.0000000000005", output_per_mtok="0.0000000000005")]
        )
    )
    cost = p.price(event(input_tokens=3, output_tokens=3))
    assert cost is not None
    assert (cost.input_cost_usd, cost.output_cost_usd, cost.cost_usd) == (
        2 * Q18,
        2 * Q18,
        4 * Q18,
    )


# -- the columnar interface -----------------------------------------------------------------


def test_price_table_appends_decimal_cost_columns_priced_and_source() -> None:
    p = Pricer.from_config(PricesConfig(model=[override(input_per_mtok=3, output_per_mtok=15)]))
    events = [event(input_tokens=1000, output_tokens=100), event("nobody", "none", input_tokens=5)]
    out = p.price_table(events_table(events))
    assert out.column_names[-len(PRICE_COLUMNS) :] == list(PRICE_COLUMNS)
    for name in PRICE_COLUMNS[:6]:
        assert out.schema.field(name).type == MONEY
    assert out.column("priced").to_pylist() == [True, False]
    assert out.column("cost_usd").to_pylist() == [Decimal("0.0045"), None]
    assert out.column("price_source").to_pylist() == ["override:acme/m1", None]
    # Pricing again replaces the columns instead of adding a second set.
    again = p.price_table(out)
    assert again.column_names == out.column_names
    assert again.equals(out)


def test_old_tables_without_the_new_dimensions_price_like_zeros() -> None:
    p = Pricer.from_config()
    e = event(
        "anthropic",
        "claude-sonnet-4-5",
        input_tokens=5800,
        cache_read_tokens=5000,
        output_tokens=600,
    )
    full = events_table([e])
    old = full.drop_columns(
        [
            n
            for n in full.column_names
            if n.startswith(
                (
                    "input_audio",
                    "input_image",
                    "output_audio",
                    "output_image",
                    "cache_audio",
                    "cache_image",
                    "cache_write_1h",
                )
            )
        ]
        + ["tool_requests", "service_tier", "region"]
    )
    assert p.price_table(old).column("cost_usd").to_pylist() == [Decimal("0.0129")]


def _set(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    return table.set_column(table.column_names.index(name), name, values)


def test_null_token_counts_price_like_zeros() -> None:
    # Rows landed before a dimension existed read back null in its column: none of those
    # tokens. (Billing one would move a token to the audio rate, or break an invariant.)
    p = Pricer.from_config(
        PricesConfig(
            model=[override(input_per_mtok=3, output_per_mtok=15, input_audio_per_mtok=40)]
        )
    )
    table = events_table([event(input_tokens=1000, output_tokens=100)])
    for name in ("input_audio_tokens", "cache_write_1h_tokens", "output_audio_tokens"):
        table = _set(table, name, pa.nulls(1, pa.int64()))
    [cost] = costs_from_table(p.price_table(table))
    assert cost is not None
    assert cost.input_cost_usd == 1000 * Decimal(3) / MTOK
    assert cost.cost_usd == (1000 * Decimal(3) + 100 * Decimal(15)) / MTOK


def test_event_like_objects_without_the_new_dimensions_price_like_zeros() -> None:
    # pricing_table takes anything with the event's attributes; a plain object of the
    # contract's shape has no audio, image or 1-hour fields, which then count 0.
    call = SimpleNamespace(
        ts=T,
        provider="acme",
        model="m1",
        batch=False,
        input_tokens=1000,
        cache_read_tokens=200,
        cache_write_tokens=100,
        output_tokens=50,
    )
    p = Pricer.from_config(
        PricesConfig(
            model=[
                override(
                    input_per_mtok=3,
                    output_per_mtok=15,
                    cache_read_per_mtok="0.3",
                    cache_write_per_mtok="3.75",
                )
            ]
        )
    )
    [cost] = p.price_batch([call])  # type: ignore[list-item]
    assert cost is not None
    expected = (700 * Decimal(3) + 200 * Decimal("0.3") + 100 * Decimal("3.75") + 50 * 15) / MTOK
    assert cost.cost_usd == expected
    assert cost == p.price(event(**{k: v for k, v in vars(call).items() if k != "batch"}))


def test_a_null_tool_requests_slot_bills_no_tool_whatever_lies_under_it() -> None:
    # Arrow does not require a null map slot to span no entries (a map built from offsets
    # and a validity mask keeps them): a null is no tool requests, whatever it covers.
    p = Pricer.from_config(
        PricesConfig(
            model=[override(input_per_mtok=3, output_per_mtok=15, tool_per_k={"web_search": 10})]
        )
    )
    table = events_table([event(input_tokens=1000), event(input_tokens=1000)])
    tools = pa.MapArray.from_arrays(
        pa.array([0, 1, 2], pa.int32()),
        pa.array(["web_search", "web_search"]),
        pa.array([5, 2], pa.int64()),
        type=COUNT_MAP,
        mask=pa.array([True, False]),
    )
    assert tools.to_pylist() == [None, [("web_search", 2)]]
    costs = costs_from_table(p.price_table(_set(table, "tool_requests", tools)))
    assert [c.tool_cost_usd if c else None for c in costs] == [0, 2 * Decimal(10) / 1000]


def test_a_tool_rate_past_int64_prices_exactly_beside_small_token_rates() -> None:
    # $100,000 per thousand requests is 1e20 units of 1e-18 USD per request, past int64,
    # while the token rates fit: the row must be priced the exact way, not overflow.
    p = Pricer.from_config(
        PricesConfig(
            model=[
                override(input_per_mtok=3, output_per_mtok=15, tool_per_k={"mcp_thing": 100_000})
            ]
        )
    )
    cost = p.price(event(input_tokens=1000, tool_requests={"mcp_thing": 3}))
    assert cost is not None
    assert cost.tool_cost_usd == 3 * Decimal(100_000) / 1000
    assert cost.cost_usd == 1000 * Decimal(3) / MTOK + 3 * Decimal(100_000) / 1000
    assert cost.price_source == "override:acme/m1"


# The largest cost one call may have: 1e9 USD less one unit of 1e-18.
LARGEST = "999999999.999999999999999999"


@pytest.mark.parametrize("output_tokens", [0, 1])
def test_a_cost_no_call_can_have_lands_unpriced_not_a_crash(
    output_tokens: int, caplog: pytest.LogCaptureFixture
) -> None:
    # Only an absurd rate gets a bounded event here: a million input tokens at LARGEST per
    # million is the largest cost a call may have; one more unit of 1e-18 (one output token at
    # 1e-18 USD) is not. Past decimal128's words it stopped every worker at every restart
    # (OverflowError); below them, two such costs made every SUM(cost_usd) overflow.
    p = Pricer.from_config(
        PricesConfig(
            model=[
                override(input_per_mtok=LARGEST, output_per_mtok="0.000000000001"),
                override(model="m2", input_per_mtok=1, output_per_mtok=1),
            ]
        )
    )
    events = [
        event(input_tokens=1_000_000, output_tokens=output_tokens),
        event(input_tokens=1_000_000, output_tokens=output_tokens),
        event(model="m2", input_tokens=10),  # another model in the same batch is unaffected
    ]
    with caplog.at_level("WARNING", logger="spendstream.stream.pricing"):
        table = p.price_table(events_table(events))
    fits = output_tokens == 0
    assert table.column("priced").to_pylist() == [fits, fits, True]
    assert table.column("cost_usd").to_pylist() == [
        *([Decimal(LARGEST)] * 2 if fits else [None, None]),
        Decimal(10) / MTOK,
    ]
    said = [r.getMessage() for r in caplog.records]
    if fits:
        assert said == []
    else:  # once per rate, not once per call
        assert len(said) == 1
        assert said[0].startswith(
            "a call priced by override:acme/m1 would cost 1.000000E+09 USD, at or past the 1e9 USD"
        )
    cost = p.price(events[0])
    assert (cost.cost_usd if cost is not None else None) == (Decimal(LARGEST) if fits else None)


@pytest.mark.parametrize(
    ("tools", "source"),
    [
        ({"mcp_thing": 0}, "override:acme/m1"),
        ({"mcp_thing": 1}, "override:acme/m1+unpriced_tool:mcp_thing"),
    ],
)
def test_only_unpriced_tools_an_event_used_are_named_on_either_path(
    tools: dict[str, int], source: str
) -> None:
    # A cost past int64's reach in units of 1e-18 USD (1e9 tokens at $1 per million is 1e21
    # units) sends a row down the exact per-row path: it names the unpriced tools like the
    # vectorized path does, those with requests only.
    p = Pricer.from_config(PricesConfig(model=[override(input_per_mtok=1, output_per_mtok=0)]))
    for tokens, e in (
        (10, event(input_tokens=10, tool_requests=tools)),
        (10**9, event(input_tokens=10**9, tool_requests=tools)),
    ):
        cost = p.price(e)
        assert cost is not None
        assert cost.price_source == source
        assert cost.cost_usd == Decimal(tokens) / MTOK


def test_the_exact_path_bills_the_fee_to_input_and_tools_into_the_total() -> None:
    # The per-row path for costs past int64 units splits the components like the vectorized one.
    o = override(
        input_per_mtok=1, output_per_mtok=0, request_fee_usd="0.005", tool_per_k={"web_search": 10}
    )
    tokens = 10**9
    e = event(input_tokens=tokens, tool_requests={"web_search": 3})
    cost = Pricer.from_config(PricesConfig(model=[o])).price(e)
    assert cost is not None
    inp, tool = Decimal(tokens) / MTOK + Decimal("0.005"), 3 * Decimal(10) / 1000
    assert (cost.input_cost_usd, cost.cache_read_cost_usd, cost.tool_cost_usd) == (inp, 0, tool)
    assert cost.cost_usd == inp + tool


def test_a_band_refuses_a_unit_it_does_not_know() -> None:
    # A misspelt unit would be dropped, and its tokens billed at a fallback rate unnoticed.
    with pytest.raises(TypeError, match=r"unknown units: \['outptu'\]"):
        Band.of(input=Decimal(1), outptu=Decimal(2))


def test_events_breaking_the_invariants_are_refused_not_priced_negative() -> None:
    table = pricing_table([event("anthropic", "claude-sonnet-4-5", input_tokens=10)])
    at = table.column_names.index("cache_read_tokens")
    table = table.set_column(at, "cache_read_tokens", pa.array([11], pa.int64()))
    with pytest.raises(ValueError, match="token invariants"):
        Pricer.from_config().price_table(table)


def test_an_empty_table_prices_to_an_empty_table() -> None:
    out = Pricer.from_config().price_table(events_table([]))
    assert out.num_rows == 0
    assert out.column_names[-len(PRICE_COLUMNS) :] == list(PRICE_COLUMNS)


def test_repricing_at_an_instant_uses_that_instants_rates() -> None:
    e = event("openai", "o3", ts=datetime(2025, 1, 1, tzinfo=UTC), input_tokens=1_000_000)
    out = Pricer.from_config().price_table(events_table([e]), at=datetime(2026, 1, 1, tzinfo=UTC))
    assert out.column("cost_usd").to_pylist() == [Decimal(2)]


# -- each new dimension, priced from genai-prices ---------------------------------------------


def _calc(model: str, provider: str, usage: dict[str, int], ts: datetime = T, **kw: Any) -> Decimal:
    return calc_price(
        Usage(**usage), model, provider_id=provider, genai_request_timestamp=ts, **kw
    ).total_price


def test_one_hour_cache_writes_cost_the_catalogs_1h_rate_not_the_5_minute_one() -> None:
    e = event(
        "anthropic",
        "claude-sonnet-4-5",
        input_tokens=100_000,
        cache_write_tokens=100_000,
        cache_write_1h_tokens=60_000,
    )
    cost = Pricer.from_config().price(e)
    assert cost is not None
    # $3.75/MTok for 5-minute writes, $6/MTok for 1-hour writes.
    assert cost.cache_write_cost_usd == Decimal("0.15") + Decimal("0.36")
    assert cost.cost_usd == _calc(
        "claude-sonnet-4-5",
        "anthropic",
        {"input_tokens": 100_000, "cache_write_tokens": 100_000, "cache_write_1h_tokens": 60_000},
    )


def test_web_search_requests_cost_10_dollars_per_thousand_on_anthropic() -> None:
    e = event("anthropic", "claude-sonnet-4-5", input_tokens=1000, tool_requests={"web_search": 3})
    cost = Pricer.from_config().price(e)
    assert cost is not None
    assert cost.tool_cost_usd == Decimal("0.03")
    assert cost.cost_usd == Decimal("0.003") + Decimal("0.03")
    assert cost.cost_usd == _calc(
        "claude-sonnet-4-5", "anthropic", {"input_tokens": 1000, "web_searches": 3}
    )


def test_a_tool_nothing_prices_costs_nothing_and_is_named_in_the_source() -> None:
    e = event(
        "anthropic",
        "claude-sonnet-4-5",
        input_tokens=1000,
        tool_requests={"mcp_thing": 2, "web_search": 1},
    )
    cost = Pricer.from_config().price(e)
    assert cost is not None
    assert cost.tool_cost_usd == Decimal("0.01")
    assert cost.price_source == "genai-prices:anthropic/claude-sonnet-4-5+unpriced_tool:mcp_thing"


def test_audio_tokens_cost_the_audio_rate() -> None:
    usage = {
        "input_tokens": 10_000,
        "input_audio_tokens": 8000,
        "output_tokens": 2000,
        "output_audio_tokens": 1500,
    }
    e = event("openai", "gpt-audio", **usage)
    cost = Pricer.from_config().price(e)
    assert cost is not None
    assert cost.cost_usd == _calc("gpt-audio", "openai", usage)
    # $2.5 text / $32 audio input, $10 text / $64 audio output per million tokens
    assert cost.input_cost_usd == Decimal(2000) * Decimal("2.5E-6") + Decimal(8000) * Decimal(
        "32E-6"
    )
    assert cost.output_cost_usd == Decimal(500) * Decimal("10E-6") + Decimal(1500) * Decimal(
        "64E-6"
    )


def test_cached_audio_costs_the_cached_audio_rate_on_gemini() -> None:
    usage = {
        "input_tokens": 10_000,
        "cache_read_tokens": 6000,
        "input_audio_tokens": 8000,
        "cache_audio_read_tokens": 5000,
    }
    cost = Pricer.from_config().price(event("google", "gemini-2.5-flash", **usage))
    assert cost is not None
    assert cost.cost_usd == _calc("gemini-2.5-flash", "google", usage)
    # 1000 cached text x $0.03 + 5000 cached audio x $0.1 per million
    assert cost.cache_read_cost_usd == Decimal("0.00003") + Decimal("0.0005")


def test_image_output_tokens_cost_the_image_rate() -> None:
    usage = {"input_tokens": 300, "output_tokens": 1400, "output_image_tokens": 1290}
    cost = Pricer.from_config().price(event("google", "gemini-2.5-flash-image", **usage))
    assert cost is not None
    assert cost.cost_usd == _calc("gemini-2.5-flash-image", "google", usage)
    assert cost.output_cost_usd == Decimal(110) * Decimal("2.5E-6") + Decimal(1290) * Decimal(
        "30E-6"
    )


def test_service_tier_selects_the_catalogs_tier_prices() -> None:
    ts = datetime(2026, 11, 1, tzinfo=UTC)  # gpt-5's tier prices start 2026-10-12
    base = {"input_tokens": 1_000_000, "output_tokens": 100_000}
    p = Pricer.from_config()
    costs = {
        tier: p.price(event("openai", "gpt-5", ts=ts, service_tier=tier, **base))
        for tier in (None, "flex", "priority")
    }
    for tier, cost in costs.items():
        ctx = {"service_tier": tier} if tier else None
        assert cost is not None
        assert cost.cost_usd == _calc("gpt-5", "openai", base, ts, price_context=ctx)
    assert costs["flex"].cost_usd < costs[None].cost_usd < costs["priority"].cost_usd  # type: ignore[union-attr]
    assert costs["flex"].price_source == "genai-prices:openai/gpt-5+service_tier:flex"  # type: ignore[union-attr]


def test_unknown_service_tier_pays_standard_prices_without_a_label() -> None:
    p = Pricer.from_config()
    a = p.price(event("openai", "gpt-5", input_tokens=1000, service_tier="scale"))
    b = p.price(event("openai", "gpt-5", input_tokens=1000))
    assert a == b


def test_region_premium_and_region_override() -> None:
    config = PricesConfig(
        model=[
            override(
                provider="anthropic",
                model="claude-sonnet-4-5",
                region="eu-sovereign",
                input_per_mtok=5,
                output_per_mtok=20,
            ),
        ],
        premium=[PremiumConfig(provider="anthropic", region="us-gov", percent=10)],
    )
    p = Pricer.from_config(config)
    plain = p.price(event("anthropic", "claude-sonnet-4-5", input_tokens=100_000))
    gov = p.price(event("anthropic", "claude-sonnet-4-5", input_tokens=100_000, region="us-gov"))
    eu = p.price(
        event("anthropic", "claude-sonnet-4-5", input_tokens=100_000, region="eu-sovereign")
    )
    assert plain is not None and gov is not None and eu is not None
    assert (plain.cost_usd, gov.cost_usd, eu.cost_usd) == (
        Decimal("0.3"),
        Decimal("0.33"),
        Decimal("0.5"),
    )
    assert gov.price_source == "genai-prices:anthropic/claude-sonnet-4-5+premium:10%"
    assert eu.price_source == "override:anthropic/claude-sonnet-4-5[region=eu-sovereign]"


def test_override_keys_price_every_dimension_with_documented_fallbacks() -> None:
    o = override(
        input_per_mtok=1,
        output_per_mtok=10,
        cache_read_per_mtok="0.1",
        cache_write_1h_per_mtok=2,
        input_audio_per_mtok=4,
        output_image_per_mtok=40,
        request_fee_usd="0.001",
        tool_per_k={"web_search": 25},
    )
    e = event(
        input_tokens=1_000_000,
        cache_read_tokens=200_000,
        cache_write_tokens=300_000,
        cache_write_1h_tokens=100_000,
        input_audio_tokens=150_000,
        cache_audio_read_tokens=50_000,
        output_tokens=100_000,
        output_image_tokens=10_000,
        tool_requests={"web_search": 4},
    )
    cost = Pricer.from_config(PricesConfig(model=[o])).price(e)
    assert cost is not None
    # uncached text 400k x $1 + uncached audio 100k x $4 + fee
    assert cost.input_cost_usd == Decimal("0.4") + Decimal("0.4") + Decimal("0.001")
    # cached audio has no rate of its own: the cache read rate
    assert cost.cache_read_cost_usd == Decimal("0.02")
    # 5-minute writes have no rate of their own: the input rate; 1-hour writes $2
    assert cost.cache_write_cost_usd == Decimal("0.2") + Decimal("0.2")
    assert cost.output_cost_usd == Decimal("0.9") + Decimal("0.4")
    assert cost.tool_cost_usd == Decimal("0.1")
    assert cost.cost_usd == Decimal("2.621")


def test_cached_images_without_a_rate_of_their_own_cost_the_cache_read_rate_first() -> None:
    # An override may rate both parents of cached image tokens (cache reads $0.1, images
    # $4) and not the join: the cache read rate bills them, then the image rate, then input.
    e = event(
        input_tokens=1_000_000,
        cache_read_tokens=500_000,
        input_image_tokens=300_000,
        cache_image_read_tokens=200_000,
    )
    both = override(
        input_per_mtok=1, output_per_mtok=10, cache_read_per_mtok="0.1", input_image_per_mtok=4
    )
    images_only = override(input_per_mtok=1, output_per_mtok=10, input_image_per_mtok=4)
    neither = override(input_per_mtok=1, output_per_mtok=10)
    billed = [
        Pricer.from_config(PricesConfig(model=[o])).price(e) for o in (both, images_only, neither)
    ]
    assert all(c is not None for c in billed)
    # 200k cached image tokens at $0.1, then at $4 (the image rate), then at $1 (input);
    # the other 300k cache reads are text, at the cache read rate or else at input.
    assert [c.cache_read_cost_usd for c in billed if c] == [
        Decimal("0.02") + Decimal("0.03"),
        Decimal("0.8") + Decimal("0.3"),
        Decimal("0.2") + Decimal("0.3"),
    ]


def test_one_hour_writes_without_a_rate_of_their_own_cost_the_cache_write_rate() -> None:
    # 1-hour writes are part of the cache writes: with no 1-hour rate they are billed at
    # the cache write rate ($1.25), not at the input rate ($1) the cache writes fall back to.
    o = override(input_per_mtok=1, output_per_mtok=10, cache_write_per_mtok="1.25")
    e = event(input_tokens=1_000_000, cache_write_tokens=400_000, cache_write_1h_tokens=100_000)
    cost = Pricer.from_config(PricesConfig(model=[o])).price(e)
    assert cost is not None
    # 300k 5-minute + 100k 1-hour writes, all x $1.25 per million
    assert cost.cache_write_cost_usd == Decimal("0.5")
    assert cost.input_cost_usd == Decimal("0.6")  # the 600k uncached tokens x $1


def test_image_output_without_a_rate_of_its_own_costs_the_output_rate_not_the_audio_one() -> None:
    # Output images are part of the output tokens, not of its audio: with an audio output
    # rate ($40) but no image output rate, they are billed at the output rate ($10).
    o = override(input_per_mtok=1, output_per_mtok=10, output_audio_per_mtok=40)
    e = event(output_tokens=100_000, output_audio_tokens=20_000, output_image_tokens=30_000)
    cost = Pricer.from_config(PricesConfig(model=[o])).price(e)
    assert cost is not None
    # text 50k x $10 + audio 20k x $40 + images 30k x $10, per million
    assert cost.output_cost_usd == Decimal("0.5") + Decimal("0.8") + Decimal("0.3")


# -- agreement with genai-prices' calc_price on every dimension it prices --------------------


_USAGE_KEYS = {
    "input_tokens": "input_tokens",
    "output_tokens": "output_tokens",
    "cache_read_tokens": "cache_read_tokens",
    "cache_write_tokens": "cache_write_tokens",
    "cache_write_1h_tokens": "cache_write_1h_tokens",
    "input_audio_tokens": "input_audio_tokens",
    "cache_audio_read_tokens": "cache_audio_read_tokens",
    "input_image_tokens": "input_image_tokens",
    "cache_image_read_tokens": "cache_image_read_tokens",
    "output_audio_tokens": "output_audio_tokens",
    "output_image_tokens": "output_image_tokens",
}
_TOOL_USAGE = {
    "web_search": "web_searches",
    "code_execution": "code_executions",
    "storage_search": "storage_searches",
}


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pm=st.sampled_from(CATALOG),
    usage=usages(max_tokens=5_000_000),
    ts=st.datetimes(
        min_value=datetime(2023, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC)
    ),
    batch=st.booleans(),
    tier=st.sampled_from([None, "flex", "priority", "default", "fast"]),
)
def test_every_dimension_agrees_with_genai_prices_calc_price(
    pm: tuple[str, str], usage: dict[str, Any], ts: datetime, batch: bool, tier: str | None
) -> None:
    provider, model = pm
    usage = {
        **usage,
        "tool_requests": {
            t: n for t, n in (usage["tool_requests"] or {}).items() if t in _TOOL_USAGE
        }
        or None,
    }
    e = event(provider, model, ts=ts, batch=batch, service_tier=tier, **usage)
    calc_usage = {v: usage[k] for k, v in _USAGE_KEYS.items() if usage[k]}
    for t, n in (usage["tool_requests"] or {}).items():
        calc_usage[_TOOL_USAGE[t]] = n
    context = {
        k: v for k, v in (("processing", "batch" if batch else None), ("service_tier", tier)) if v
    }
    try:
        calc = calc_price(
            Usage(**calc_usage),
            model,
            provider_id=provider,
            genai_request_timestamp=ts,
            price_context=context or None,
        )
    except ValueError:
        # genai-prices refuses usage its price set cannot split (e.g. a cached-audio count
        # for a model with no cached-audio join price): nothing to compare.
        return
    cost = Pricer.from_config().price(e)
    if cost is None:
        assert isinstance(calc.model_price, gp.ModelPrice)
        assert calc.model_price.input_mtok is None and calc.model_price.output_mtok is None
        return
    factor = Decimal("0.5") if "+batch:" in cost.price_source else Decimal(1)
    with localcontext(Context(prec=100)):
        theirs = calc.total_price * factor
        if theirs == theirs.quantize(Q18):
            assert cost.cost_usd == theirs
        else:
            assert abs(cost.cost_usd - theirs) <= 5 * Decimal("0.5E-18")
        out_theirs = calc.output_price * factor
        if out_theirs == out_theirs.quantize(Q18):
            assert cost.output_cost_usd == out_theirs


def test_timestamps_across_a_switching_minute_in_one_table_use_their_own_rates() -> None:
    day = datetime(2025, 11, 3, tzinfo=UTC)
    stamps = [
        day + timedelta(hours=16, minutes=29, seconds=59),
        day + timedelta(hours=16, minutes=30),
    ]
    usage = {"input_tokens": 10_000, "output_tokens": 2000}
    events = [event("deepseek", "deepseek-chat", ts=t, **usage) for t in stamps]
    got = costs_from_table(Pricer.from_config().price_table(events_table(events)))
    expected = [_calc("deepseek-chat", "deepseek", usage, t) for t in stamps]
    assert [c.cost_usd for c in got if c is not None] == expected
    assert expected[0] != expected[1]


@pytest.mark.parametrize(
    ("provider", "model"), [("anthropic", "claude-sonnet-4-5"), ("google", "gemini-2.5-pro")]
)
def test_a_tier_starts_above_its_threshold_as_genai_prices_says(provider: str, model: str) -> None:
    # A long-context tier applies to requests whose input exceeds its start: exactly the
    # start's tokens still pay the band below it, one more pays the tier.
    pricer = Pricer.from_config()
    period = pricer.catalog.period(provider, model, T, False, None, None)
    assert period is not None and period.thresholds
    for start in period.thresholds:
        for tokens in (start - 1, start, start + 1):
            usage = {"input_tokens": tokens, "output_tokens": 1000}
            cost = pricer.price(event(provider, model, **usage))
            assert cost is not None
            assert cost.cost_usd == _calc(model, provider, usage), (start, tokens)


@pytest.mark.parametrize("model", ["sonar", "sonar-pro"])
def test_a_per_request_fee_is_the_catalogs_price_per_thousand_requests(model: str) -> None:
    usage = {"input_tokens": 1000, "output_tokens": 100}
    cost = Pricer.from_config().price(event("perplexity", model, **usage))
    assert cost is not None
    assert cost.cost_usd == _calc(model, "perplexity", usage)


# -- dated [[prices.*]] rows against a naive selection of the row in force ----------------

# Change instants: UTC midnights, instants with seconds and microseconds, a switching day.
_INSTANTS = [
    datetime(2025, 3, 1, tzinfo=UTC),
    datetime(2025, 6, 10, 13, 37, 5, 123456, tzinfo=UTC),
    datetime(2025, 11, 3, 12, tzinfo=UTC),
    datetime(2026, 1, 1, tzinfo=UTC),
    datetime(2026, 2, 14, 23, 59, 59, 999999, tzinfo=UTC),
]
_NEAR = [
    timedelta(0),
    timedelta(microseconds=-1),
    timedelta(microseconds=1),
    timedelta(hours=-7),
    timedelta(days=3),
]


@st.composite
def histories(draw: st.DrawFn) -> list[dict[str, Any]]:
    """A valid price history of one match: dated spans, increasing, none overlapping."""
    starts = sorted(draw(st.sets(st.sampled_from(_INSTANTS), min_size=1, max_size=3)))
    out: list[dict[str, Any]] = []
    for i, start in enumerate(starts):
        nxt = starts[i + 1] if i + 1 < len(starts) else None
        ends = [None, start + timedelta(hours=1)] + ([nxt] if nxt is not None else [])
        end = draw(st.sampled_from(ends))
        if end is not None and nxt is not None and end > nxt:
            end = nxt
        row: dict[str, Any] = {"effective_until": end}
        # The first row may run from always (only its effective_until dated).
        row["effective_from"] = (
            None if i == 0 and end is not None and draw(st.booleans()) else start
        )
        out.append(row)
    return out


@st.composite
def dated_configs(draw: st.DrawFn) -> PricesConfig:
    models: list[ModelPriceConfig] = []
    for dates in draw(histories()):
        models.append(override(input_per_mtok=draw(rate), output_per_mtok=draw(rate), **dates))
    if draw(st.booleans()):  # an undated baseline, written before or after the history
        baseline = override(input_per_mtok=draw(rate), output_per_mtok=draw(rate))
        models.insert(draw(st.sampled_from([0, len(models)])), baseline)
    if draw(st.booleans()):  # a more specific row, dated: it beats every row above in force
        models.append(
            override(
                service_tier="flex",
                input_per_mtok=draw(rate),
                output_per_mtok=1,
                effective_from=draw(st.sampled_from(_INSTANTS)),
            )
        )
    if draw(st.booleans()):  # a catalog model overridden at dates only
        models += [
            override(
                provider="anthropic",
                model="claude-sonnet-4-5",
                input_per_mtok=draw(rate),
                output_per_mtok=draw(rate),
                **dates,
            )
            for dates in draw(histories())
        ]
    discounts = [
        DiscountConfig(provider=draw(st.sampled_from([None, "anthropic"])), percent=draw(percent))
        for _ in range(draw(st.integers(0, 1)))
    ]
    discounts += [
        DiscountConfig(provider="acme", percent=draw(percent), **d)
        for d in (draw(histories()) if draw(st.booleans()) else [])
    ]
    premiums = [
        PremiumConfig(region="eu", percent=draw(percent), **d)
        for d in (draw(histories()) if draw(st.booleans()) else [])
    ]
    return PricesConfig(model=models, discount=discounts, premium=premiums)


def _in_force(row: Any, ts: datetime) -> bool:
    start, end = row.effective_from, row.effective_until
    return (start is None or start <= ts) and (end is None or ts < end)


def _naive_pick(rows: list[Any], matches: Any, specificity: Any, ts: datetime) -> Any:
    """Written out from the docs: rows in force at ts that match; the most specific, then the
    latest effective_from (undated first, and below a row dated only by effective_until),
    then the last written."""
    best, best_key = None, None
    for row in rows:
        if not _in_force(row, ts) or not matches(row):
            continue
        dated = row.effective_from is not None or row.effective_until is not None
        key = (specificity(row), row.effective_from or datetime.min.replace(tzinfo=UTC), dated)
        if best_key is None or key >= best_key:
            best, best_key = row, key
    return best


def _undated(row: Any) -> Any:
    return row.model_copy(update={"effective_from": None, "effective_until": None})


def _same(a: str | None, b: str | None) -> bool:
    return a is None or (b is not None and a.lower() == b.lower())


def the_undated_config_in_force(config: PricesConfig, e: UsageEvent) -> PricesConfig:
    """The rows in force for ``e``, undated: what pricing ``e`` must amount to."""
    ts = e.ts
    model = _naive_pick(
        [m for m in config.model if (m.provider, m.model) == (e.provider, e.model)],
        lambda m: (m.service_tier in (None, e.service_tier)) and (m.region in (None, e.region)),
        lambda m: (m.service_tier is not None) * 2 + (m.region is not None),
        ts,
    )
    discount = _naive_pick(
        config.discount,
        lambda d: _same(d.provider, e.provider) and _same(d.model, e.model),
        lambda d: (d.model is not None) * 2 + (d.provider is not None),
        ts,
    )
    premium = _naive_pick(
        config.premium,
        lambda p: all(
            _same(want, have)
            for want, have in (
                (p.model, e.model),
                (p.provider, e.provider),
                (p.service_tier, e.service_tier),
                (p.region, e.region),
            )
        ),
        lambda p: sum(
            w for v, w in ((p.model, 8), (p.provider, 4), (p.service_tier, 2), (p.region, 1)) if v
        ),
        ts,
    )
    return PricesConfig(
        model=[_undated(model)] if model is not None else [],
        discount=[_undated(discount)] if discount is not None else [],
        premium=[_undated(premium)] if premium is not None else [],
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    config=dated_configs(),
    rows=st.lists(
        st.tuples(
            st.sampled_from([("acme", "m1"), ("anthropic", "claude-sonnet-4-5"), ("acme", "m2")]),
            usages(max_tokens=3_000_000),
            st.one_of(
                st.builds(lambda at, d: at + d, st.sampled_from(_INSTANTS), st.sampled_from(_NEAR)),
                st.datetimes(
                    min_value=datetime(2025, 1, 1),
                    max_value=datetime(2026, 6, 1),
                    timezones=st.just(UTC),
                ),
            ),
            st.booleans(),
            st.sampled_from([None, "flex"]),
            st.sampled_from([None, "eu"]),
        ),
        min_size=1,
        max_size=25,
    ),
)
def test_dated_rows_price_each_event_as_the_rows_in_force_at_its_ts_would_undated(
    config: PricesConfig, rows: list[tuple[Any, ...]]
) -> None:
    events = [
        event(p, m, ts=ts, batch=b, service_tier=tier, region=region, **u)
        for (p, m), u, ts, b, tier, region in rows
    ]
    # One table: the pricer splits groups at the dated rows' instants.
    got = costs_from_table(Pricer.from_config(config).price_table(events_table(events)))
    fresh = Pricer.from_config(config)
    for e, cost in zip(events, got, strict=True):
        expected = Pricer.from_config(the_undated_config_in_force(config, e)).price(e)
        assert cost == fresh.price(e)
        if expected is None:
            assert cost is None
            continue
        assert cost is not None
        assert money(cost) == money(expected)
        period = fresh.catalog.period(e.provider, e.model, e.ts, e.batch, e.service_tier, e.region)
        assert period is not None
        assert money(cost) == money(reference(e, period))
        # The source is the undated one's, with the dated rows' ranges named.
        assert cost.price_source.replace("@", "").startswith(
            expected.price_source.split("+")[0].split("@")[0]
        )
