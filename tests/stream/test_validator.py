"""stream/validator.py: the column checks are derived from UsageEvent itself, cover every
field, and refuse to run beside a model rule they do not mirror."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest

from spendstream.producers.event import EARLIEST_TS, MAX_TOKENS, TOKEN_FIELDS, UsageEvent
from spendstream.stream import validator
from spendstream.stream.windows import to_us
from spendstream.table_schemas import EVENT_FIELDS

# The fields every event must have, each valid.
_REQUIRED = {
    "event_id": "e",
    "ts": "2026-01-01T00:00:00Z",
    "provider": "p",
    "model": "m",
    "input_tokens": 1,
    "output_tokens": 1,
}


def test_every_model_field_has_a_rule_with_the_models_constraints() -> None:
    rules = {r.name: r for r in validator.RULES}
    assert set(rules) == set(UsageEvent.model_fields) == {n for n, _ in EVENT_FIELDS}
    assert rules["input_tokens"].constraints["le"] == MAX_TOKENS
    assert rules["input_tokens"].required and not rules["input_tokens"].nullable
    assert rules["cache_read_tokens"].default == 0 and not rules["cache_read_tokens"].nullable
    assert rules["team"].nullable and rules["team"].constraints["max_length"] == 256
    assert rules["status"].constraints["expected"] == ["ok", "error", "timeout", "refused"]
    # The pricing branch's finer token counts carry the same bound as the contract's four.
    for name in TOKEN_FIELDS:
        assert rules[name].constraints["le"] == MAX_TOKENS, name
    assert validator.defaulted_fields() == [
        "cache_read_tokens",
        "cache_write_tokens",
        "cache_write_1h_tokens",
        "input_audio_tokens",
        "cache_audio_read_tokens",
        "input_image_tokens",
        "cache_image_read_tokens",
        "output_audio_tokens",
        "output_image_tokens",
        "batch",
        "status",
        "attempt",
        "schema_version",
    ]


def _with_field(monkeypatch: pytest.MonkeyPatch, name: str, schema: dict[str, Any]) -> None:
    """UsageEvent as if a later change had added ``name`` (core schema and table column)."""
    real = UsageEvent.__pydantic_core_schema__
    inner = real["schema"]["schema"]
    fields = {**inner["fields"], name: {"type": "model-field", "schema": schema}}
    fake = {**real, "schema": {**real["schema"], "schema": {**inner, "fields": fields}}}
    monkeypatch.setattr(UsageEvent, "__pydantic_core_schema__", fake)
    monkeypatch.setattr(validator, "EVENT_FIELDS", [*EVENT_FIELDS, (name, pa.string())])


def test_a_field_added_to_the_model_is_checked_without_an_edit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    residency = {
        "type": "default",
        "default": None,
        "schema": {"type": "nullable", "schema": {"type": "str", "min_length": 1, "max_length": 4}},
    }
    _with_field(monkeypatch, "residency", residency)
    rules = {r.name: r for r in validator._derive_rules()}
    assert rules["residency"].constraints == {"min_length": 1, "max_length": 4}
    monkeypatch.setattr(validator, "RULES", tuple(rules.values()))
    base = _REQUIRED
    table = pa.Table.from_pylist(
        [{**base, "residency": r} for r in ("eu", "europe", None, "")],
        schema=validator.json_read_schema(),
    )
    ok, columns = validator.check_columns(table, 2**62)
    assert ok.tolist() == [True, False, True, False]
    assert columns["residency"].to_pylist() == ["eu", "europe", None, ""]


def test_a_validator_it_does_not_mirror_stops_the_import() -> None:
    def _normalise(value: str) -> str:
        return value.lower()

    field = {
        "type": "function-after",
        "function": {"type": "no-info", "function": _normalise},
        "schema": {"type": "str"},
    }
    with pytest.raises(
        TypeError, match=r"does not mirror validator .*_normalise on field 'residency'"
    ):
        validator._unwrap("residency", field)


def test_a_constraint_it_cannot_check_stops_the_import(monkeypatch: pytest.MonkeyPatch) -> None:
    _with_field(monkeypatch, "residency", {"type": "str", "pattern": "^[a-z]+$"})
    with pytest.raises(TypeError, match=r"field 'residency': cannot check str with \['pattern'\]"):
        validator._derive_rules()


def test_a_field_missing_from_the_table_schema_stops_the_import(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _with_field(monkeypatch, "residency", {"type": "str"})
    monkeypatch.setattr(validator, "EVENT_FIELDS", EVENT_FIELDS)
    with pytest.raises(TypeError, match=r"disagree on the fields: \['residency'\]"):
        validator._derive_rules()


_BASE = {**_REQUIRED, "turn": 0, "latency_ms": 0.0}


@pytest.mark.parametrize("with_a_null", [False, True], ids=["no-nulls", "a-null-row"])
@pytest.mark.parametrize(
    ("name", "least"),
    [("attempt", 1), ("turn", 0), ("output_audio_tokens", 0), ("latency_ms", 0.0)],
)
def test_a_lower_bound_passes_its_value_and_refuses_the_one_below(
    name: str, least: float, with_a_null: bool
) -> None:
    # ge is inclusive and exact, whether numpy compares the column's buffer (no nulls) or
    # Arrow's kernels do (a null in a nullable column): the value below the bound must
    # reach the model, which refuses it. (None is a whole in a token rule, to fail there.)
    below = least - 0.5 if isinstance(least, float) else least - 1
    rows = [{**_BASE, name: least}, {**_BASE, name: below}]
    if with_a_null:
        rows.append({**_BASE, "turn": None, "latency_ms": None})
    table = pa.Table.from_pylist(rows, schema=validator.json_read_schema())
    ok, _ = validator.check_columns(table, 2**62)
    assert ok.tolist() == [True, False, *([True] * with_a_null)]


def _micros(text: str) -> int:
    return to_us(UsageEvent.model_validate({**_REQUIRED, "ts": text}).ts)


def test_ts_bounds_are_inclusive_at_both_ends() -> None:
    # The earliest ts and the latest the caller accepts both pass the columns (pydantic
    # takes them; flagging them only costs speed, yet a mutation pass found neither end
    # pinned); a microsecond beyond either is flagged.
    earliest = EARLIEST_TS.isoformat().replace("+00:00", "Z")
    latest = "2026-01-01T00:00:00.000001Z"
    rows = [
        {**_BASE, "ts": earliest},
        {**_BASE, "ts": "2014-12-31T23:59:59.999999Z"},
        {**_BASE, "ts": latest},
        {**_BASE, "ts": "2026-01-01T00:00:00.000002Z"},
    ]
    table = pa.Table.from_pylist(rows, schema=validator.json_read_schema())
    ok, _ = validator.check_columns(table, _micros(latest))
    assert ok.tolist() == [True, False, True, False]


def test_a_token_rule_met_with_equality_passes_beside_a_null() -> None:
    # sum(parts) <= sum(wholes) is inclusive on Arrow's kernels too (a null in a column of
    # the rule, here a missing input_tokens, sends the check there): all of the input read
    # from the cache passes.
    rows = [
        {**_BASE, "input_tokens": 100, "cache_read_tokens": 100},
        {**_BASE, "input_tokens": 100, "cache_read_tokens": 101},
        {**_BASE, "input_tokens": None},
    ]
    table = pa.Table.from_pylist(rows, schema=validator.json_read_schema())
    ok, _ = validator.check_columns(table, 2**62)
    assert ok.tolist() == [True, False, False]


def test_the_json_prescreen_takes_what_the_reader_holds_and_no_more() -> None:
    # A value the Arrow reader cannot hold (an int64 past 2^63 - 1, a cost with a 19th
    # place) is screened out, to pydantic: let through, it fails every read holding its
    # line, and the batch is halved down to that line (stream/batch.py: same result, slower).
    kinds = validator.plain_json_kinds()
    assert kinds["input_tokens"](2**63 - 1) and not kinds["input_tokens"](2**63)
    assert kinds["input_tokens"](-(2**63)) and not kinds["input_tokens"](-(2**63) - 1)
    cost = kinds["reported_cost_usd"]
    assert cost("0." + "1" * 18) and not cost("0." + "1" * 19)
    assert cost("9" * 20) and not cost("1" + "0" * 20)
    assert cost(10**20 - 1) and not cost(10**20) and not cost(-1)
