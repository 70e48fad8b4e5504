"""The usage event model: strict types, bounds, aware timestamps, the cache invariant."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from spendstream.producers.event import (
    EARLIEST_TS,
    MAX_LATENCY_MS,
    MAX_REPORTED_COST_USD,
    MAX_TAGS,
    MAX_TOKENS,
    MAX_TURN,
    UsageEvent,
    describe_validation_error,
    first_reason,
)

INT64_MAX = 2**63 - 1


def _event(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_id": "e-1",
        "ts": "2026-11-23T10:00:00+01:00",
        "provider": "openai",
        "model": "gpt-5-mini",
        "input_tokens": 100,
        "output_tokens": 20,
    }
    base.update(over)
    return base


def _reason(**over: Any) -> str:
    with pytest.raises(ValidationError) as info:
        UsageEvent.model_validate(_event(**over))
    return describe_validation_error(info.value)


def test_minimal_event_gets_contract_defaults_and_utc_time() -> None:
    ev = UsageEvent.model_validate(_event())
    assert (ev.cache_read_tokens, ev.cache_write_tokens, ev.batch, ev.status, ev.attempt) == (
        0,
        0,
        False,
        "ok",
        1,
    )
    assert ev.schema_version == 1
    assert ev.ts == datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    assert ev.ts.utcoffset() == timedelta(0)


def test_to_json_dict_omits_unset_optionals_and_keeps_money_exact() -> None:
    ev = UsageEvent.model_validate(_event(reported_cost_usd="0.000123456789"))
    out = ev.to_json_dict()
    assert "team" not in out and "latency_ms" not in out
    assert out["reported_cost_usd"] == "0.000123456789"
    assert UsageEvent.model_validate(out) == ev


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("input_tokens", -1, "greater than or equal to 0"),
        ("output_tokens", INT64_MAX + 1, "less than or equal to"),
        ("input_tokens", "12", "valid integer"),
        ("input_tokens", 1.5, "valid integer"),
        ("output_tokens", True, "valid integer"),
        ("batch", "yes", "valid boolean"),
        ("status", "failed", "'ok', 'error', 'timeout' or 'refused'"),
        ("attempt", 0, "greater than or equal to 1"),
        ("event_id", "", "at least 1 character"),
        ("event_id", "x" * 129, "at most 128 characters"),
        ("model", "m" * 257, "at most 256 characters"),
        ("latency_ms", -0.5, "greater than or equal to 0"),
        ("latency_ms", "12", "valid number"),
        ("reported_cost_usd", "NaN", "finite"),
        ("schema_version", 2, "1"),
    ],
)
def test_bad_field_is_rejected_naming_the_field(field: str, value: Any, why: str) -> None:
    reason = _reason(**{field: value})
    assert reason.startswith(f"{field}")
    assert why in reason


def test_naive_timestamp_is_rejected() -> None:
    assert "ts:" in _reason(ts="2026-11-23T10:00:00")


def test_missing_required_fields_are_all_named() -> None:
    with pytest.raises(ValidationError) as info:
        UsageEvent.model_validate({"event_id": "e"})
    reason = describe_validation_error(info.value)
    for name in ("ts", "provider", "model", "input_tokens", "output_tokens"):
        assert f"{name}: required field is missing" in reason


def test_unknown_field_is_rejected_as_not_in_schema() -> None:
    assert "prompt_tokens: unknown field" in _reason(prompt_tokens=5)


@pytest.mark.parametrize(
    ("field", "hint"),
    [
        ("prompt_tokens", ", did you mean input_tokens?"),  # OpenAI's name
        ("cache_read_input_tokens", ", did you mean cache_read_tokens?"),  # Anthropic's
        ("timestamp", ", did you mean ts?"),
        ("teem", ", did you mean team?"),  # a typo
        ("user", ", did you mean user_id?"),  # OpenAI's request parameter
        ("tokens_in", ", did you mean input_tokens?"),
        ("tokens_out", ", did you mean output_tokens?"),
        ("env", ", did you mean environment?"),
        ("duration_ms", ", did you mean latency_ms?"),
        ("total_tokens", ""),  # input + output: no one field is meant
        ("colour", ""),  # like nothing known: no guess
    ],
)
def test_an_unknown_field_names_the_field_meant(field: str, hint: str) -> None:
    assert f"{field}: unknown field (not in schema version 1{hint})" in _reason(**{field: 1})


def test_a_misspelt_field_is_named_before_the_field_it_leaves_missing() -> None:
    # ingest's summary shows a dead letter's first reason: the cause, not its consequence.
    with pytest.raises(ValidationError) as info:
        event = _event(ouptut_tokens=5)
        del event["output_tokens"]
        UsageEvent.model_validate(event)
    assert describe_validation_error(info.value) == (
        "ouptut_tokens: unknown field (not in schema version 1, did you mean output_tokens?); "
        "output_tokens: required field is missing"
    )


def test_the_first_reason_keeps_its_own_hint_and_stops_at_the_next_field() -> None:
    # ingest's summary counts dead letters by their first reason; a reason's hint is after
    # a "; " of its own, which a cut at the first "; " lost.
    invariant = _reason(input_tokens=50, cache_read_tokens=40, cache_write_tokens=20)
    assert "exceeds input_tokens (50); input_tokens must include" in invariant
    assert first_reason(invariant) == invariant
    two = _reason(model="", colour="red")
    assert first_reason(two).startswith("colour: unknown field")
    assert two.removeprefix(first_reason(two) + "; ").startswith("model: ")
    whole = "ts: 9999 is after receipt; the producer's clock is ahead; input_tokens: no"
    assert first_reason(whole) == "ts: 9999 is after receipt; the producer's clock is ahead"
    assert first_reason("record: Invalid JSON") == "record: Invalid JSON"


def test_cache_tokens_beyond_input_tokens_break_the_invariant() -> None:
    reason = _reason(input_tokens=50, cache_read_tokens=40, cache_write_tokens=20)
    assert "cache_read_tokens (40) + cache_write_tokens (20) exceeds input_tokens (50)" in reason


def test_cache_tokens_equal_to_input_tokens_are_fine() -> None:
    ev = UsageEvent.model_validate(
        _event(input_tokens=60, cache_read_tokens=40, cache_write_tokens=20)
    )
    assert ev.input_tokens == 60


@pytest.mark.parametrize(
    ("field", "top"),
    [
        ("input_tokens", MAX_TOKENS),
        ("output_tokens", MAX_TOKENS),
        ("cache_read_tokens", MAX_TOKENS),
        ("cache_write_tokens", MAX_TOKENS),
        ("turn", MAX_TURN),
        ("latency_ms", MAX_LATENCY_MS),
        ("reported_cost_usd", MAX_REPORTED_COST_USD),
    ],
)
def test_every_number_has_a_documented_maximum_it_accepts_and_one_above_it_refused(
    field: str, top: Any
) -> None:
    over: dict[str, Any] = {field: top}
    if field.startswith("cache_"):
        over["input_tokens"] = MAX_TOKENS
    assert getattr(UsageEvent.model_validate(_event(**over)), field) == top
    above = top + (Decimal("0.000000000000000001") if isinstance(top, Decimal) else 1)
    over[field] = above
    assert "less than or equal to" in _reason(**over)
    over[field] = INT64_MAX  # issue 12: 2^63-1 tokens overflowed SUM(cost_usd)
    if field != "reported_cost_usd":
        assert f"{field}: Input should be less than or equal to" in _reason(**over)


def test_reported_cost_beyond_decimal_range_is_refused_not_a_crash() -> None:
    # "1e400" passed the model and crashed the Arrow conversion (issue 12).
    assert _reason(reported_cost_usd="1e400").startswith("reported_cost_usd: Input should be less")
    assert "finite" in _reason(reported_cost_usd="Infinity")


def test_reported_cost_is_kept_to_18_places_rounded_half_even() -> None:
    ev = UsageEvent.model_validate(_event(reported_cost_usd="0.0000000000000000125"))
    assert ev.reported_cost_usd == Decimal("0.000000000000000012")
    ev = UsageEvent.model_validate(_event(reported_cost_usd="0.0000000000000000135"))
    assert ev.reported_cost_usd == Decimal("0.000000000000000014")
    exact = UsageEvent.model_validate(_event(reported_cost_usd="0.000000000000000001"))
    assert str(exact.reported_cost_usd) == "1E-18"


def test_ts_before_2015_is_refused_and_2015_itself_accepted() -> None:
    assert UsageEvent.model_validate(_event(ts="2015-01-01T00:00:00Z")).ts == EARLIEST_TS
    reason = _reason(ts="2014-12-31T23:59:59.999999Z")
    assert reason.startswith("ts: 2014-12-31T23:59:59.999999+00:00 is before 2015-01-01")
    assert "ts: 0001-01-01T00:00:00+00:00 is before" in _reason(ts="0001-01-01T00:00:00Z")
    # Same instant as 2015-01-01T00:00:00Z, written in another zone: accepted.
    assert UsageEvent.model_validate(_event(ts="2015-01-01T01:00:00+01:00")).ts == EARLIEST_TS


@pytest.mark.parametrize("ts", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_ts_that_leaves_the_calendar_in_utc_is_a_reason_not_a_crash(ts: str) -> None:
    # These raised OverflowError out of the model: a poison pill for every worker.
    raw = json.dumps(_event(ts=ts))
    with pytest.raises(ValidationError) as info:
        UsageEvent.model_validate_json(raw)
    assert (
        describe_validation_error(info.value)
        == f"ts: {ts} is out of range in UTC (before year 1 or after 9999)"
    )


def test_tags_are_bounded_in_count_key_and_value_size() -> None:
    many = {f"k{i}": "v" for i in range(MAX_TAGS + 1)}
    assert "tags" in _reason(tags=many)
    assert "tags" in _reason(tags={"k" * 65: "v"})
    assert "tags" in _reason(tags={"k": "v" * 257})
    assert "tags" in _reason(tags={"k": 1})
    ok = UsageEvent.model_validate(_event(tags={f"k{i}": "v" for i in range(MAX_TAGS)}))
    assert ok.tags is not None and len(ok.tags) == MAX_TAGS


def test_timestamp_in_another_zone_is_the_same_instant() -> None:
    tz = timezone(timedelta(hours=-5))
    ev = UsageEvent.model_validate(_event(ts=datetime(2026, 1, 1, 19, 0, tzinfo=tz)))
    assert ev.ts == datetime(2026, 1, 2, 0, 0, tzinfo=UTC)


def test_reported_cost_is_a_decimal() -> None:
    ev = UsageEvent.model_validate(_event(reported_cost_usd="1.10"))
    assert ev.reported_cost_usd == Decimal("1.10")


# -- the billable dimensions beyond the contract's four token counts ---------------------------


def test_new_dimensions_default_to_zero_and_null_so_old_events_stay_valid() -> None:
    ev = UsageEvent.model_validate(_event())
    assert (
        ev.cache_write_1h_tokens,
        ev.input_audio_tokens,
        ev.cache_audio_read_tokens,
        ev.input_image_tokens,
        ev.cache_image_read_tokens,
        ev.output_audio_tokens,
        ev.output_image_tokens,
    ) == (0, 0, 0, 0, 0, 0, 0)
    assert (ev.tool_requests, ev.service_tier, ev.region) == (None, None, None)
    assert not {"tool_requests", "service_tier", "region"} & set(ev.to_json_dict())


@pytest.mark.parametrize(
    ("over", "expected"),
    [
        (
            {"cache_write_tokens": 30, "cache_write_1h_tokens": 31},
            "cache_write_1h_tokens (31) exceeds cache_write_tokens (30)",
        ),
        (
            {"cache_read_tokens": 50, "input_audio_tokens": 10, "cache_audio_read_tokens": 11},
            "cache_audio_read_tokens (11) exceeds input_audio_tokens (10)",
        ),
        (
            {"cache_read_tokens": 50, "input_image_tokens": 10, "cache_image_read_tokens": 11},
            "cache_image_read_tokens (11) exceeds input_image_tokens (10)",
        ),
        (
            {
                "cache_read_tokens": 10,
                "input_audio_tokens": 20,
                "cache_audio_read_tokens": 6,
                "input_image_tokens": 20,
                "cache_image_read_tokens": 5,
            },
            "cache_audio_read_tokens (6) + cache_image_read_tokens (5) exceeds cache_read_tokens (10)",
        ),
        (
            {"input_audio_tokens": 60, "input_image_tokens": 41},
            "input_audio_tokens (60) + input_image_tokens (41) exceeds input_tokens (100)",
        ),
        (
            {"cache_write_tokens": 50, "input_audio_tokens": 51},
            "uncached audio and image tokens (51) exceed the uncached input tokens (50",
        ),
        (
            {"output_audio_tokens": 15, "output_image_tokens": 6},
            "output_audio_tokens (15) + output_image_tokens (6) exceeds output_tokens (20)",
        ),
    ],
)
def test_each_part_beyond_its_whole_is_a_clear_error(over: dict[str, int], expected: str) -> None:
    assert expected in _reason(**over)


def test_parts_exactly_filling_their_wholes_are_valid() -> None:
    ev = UsageEvent.model_validate(
        _event(
            input_tokens=100,
            cache_read_tokens=30,
            cache_write_tokens=20,
            cache_write_1h_tokens=20,
            input_audio_tokens=40,
            cache_audio_read_tokens=20,
            input_image_tokens=40,
            cache_image_read_tokens=10,
            output_tokens=20,
            output_audio_tokens=12,
            output_image_tokens=8,
        )
    )
    assert ev.cache_write_1h_tokens == 20


def test_tool_requests_are_a_bounded_map_of_lowercase_names_to_counts() -> None:
    ok = UsageEvent.model_validate(_event(tool_requests={"web_search": 3, "code_execution": 0}))
    assert ok.tool_requests == {"web_search": 3, "code_execution": 0}
    assert "tool_requests" in _reason(tool_requests={f"t{i}": 1 for i in range(17)})
    assert "tool_requests" in _reason(tool_requests={"Web Search": 1})
    assert "tool_requests" in _reason(tool_requests={"web_search": -1})
    assert "tool_requests" in _reason(tool_requests={"web_search": 1_000_000_001})
    assert "tool_requests" in _reason(tool_requests={"web_search": "3"})


def test_service_tier_and_region_are_short_labels() -> None:
    ev = UsageEvent.model_validate(_event(service_tier="flex", region="eu"))
    assert (ev.service_tier, ev.region) == ("flex", "eu")
    assert "service_tier" in _reason(service_tier="")
    assert "region" in _reason(region="x" * 65)
