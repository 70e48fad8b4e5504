"""The usage event's rules as column checks, derived from the pydantic model itself.

``RULES`` is read from ``UsageEvent.__pydantic_core_schema__`` (the compiled form of every
``Field(...)``, ``Annotated`` constraint, ``Literal`` and default), so a field another
change adds to the model (a new token kind, ``service_tier``, ``region``) is checked here
without an edit. What a schema cannot say -- a validator function -- must be one this module
mirrors (``MIRRORED``); any other makes the import fail, so the columnar path can never
silently accept what the model would refuse.

The checks are one-sided on purpose: a row they pass is one ``UsageEvent`` accepts with
these very values; a row they flag is judged by pydantic (stream/batch.py), which also
words the reason. So flagging too much costs speed, never correctness.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from spendstream.producers.event import CACHED_TOKEN_FIELDS, EARLIEST_TS, UsageEvent
from spendstream.stream.rfc3339 import parse_micros
from spendstream.table_schemas import EVENT_FIELDS

__all__ = [
    "MIRRORED",
    "RULES",
    "TOKEN_RULES",
    "FieldRule",
    "check_columns",
    "json_read_schema",
    "plain_json_kinds",
]

_EPOCH_US_EARLIEST = int(EARLIEST_TS.timestamp()) * 1_000_000

# The model's rules between token counts, as sum(lhs) <= sum(rhs): the parts of a count
# within it. Each applies when the model has its fields; with the finer token kinds
# (audio, image, 1-hour cache writes) these are ``token_parts_error``'s rules, column-wise.
TOKEN_RULES: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    ((*CACHED_TOKEN_FIELDS,), ("input_tokens",)),
    (("cache_write_1h_tokens",), ("cache_write_tokens",)),
    (("cache_audio_read_tokens",), ("input_audio_tokens",)),
    (("cache_image_read_tokens",), ("input_image_tokens",)),
    (("cache_audio_read_tokens", "cache_image_read_tokens"), ("cache_read_tokens",)),
    (("input_audio_tokens", "input_image_tokens"), ("input_tokens",)),
    (
        ("input_audio_tokens", "input_image_tokens", *CACHED_TOKEN_FIELDS),
        ("input_tokens", "cache_audio_read_tokens", "cache_image_read_tokens"),
    ),
    (("output_audio_tokens", "output_image_tokens"), ("output_tokens",)),
)

# Validator functions of the model whose effect the checks below reproduce (by qualified
# name), and where. Teach this module any new one before adding it to the model.
MIRRORED: Mapping[str, str] = {
    # ts: parsed to UTC microseconds (rfc3339.py), at or after EARLIEST_TS (check_columns).
    "UsageEvent._to_utc": "ts",
    # ts: text only. The JSON read types ts as a string and rfc3339.py parses RFC 3339 text
    # alone: a number, or a string of digits, is flagged and judged by pydantic.
    "UsageEvent._time_as_text": "ts",
    # reported_cost_usd: rounded past 18 places; the Arrow read refuses more places, so a
    # row that reaches the checks already holds the rounded value.
    "UsageEvent._to_cost_scale": "reported_cost_usd",
    # reported_cost_usd: decimal text as JSON writes it. Arrow's decimal read refuses the
    # same strings (spaces, "1_000", other scripts' digits): the line goes to pydantic.
    "UsageEvent._cost_as_written": "reported_cost_usd",
    # TOKEN_RULES (check_columns): the cached parts within input_tokens, ...
    "UsageEvent._cache_within_input": "model",
    "UsageEvent._parts_within_wholes": "model",
}


@dataclass(frozen=True, slots=True)
class FieldRule:
    """One event field: its kind (the pydantic core schema type) and constraints."""

    name: str
    kind: str  # int | float | str | bool | literal | decimal | datetime | dict
    arrow_type: pa.DataType  # the column type of the event table (table_schemas)
    required: bool
    nullable: bool
    default: Any
    constraints: Mapping[str, Any]


def _function_name(schema: Mapping[str, Any]) -> str:
    fn = schema["function"]["function"]
    return str(getattr(fn, "__qualname__", fn))


def _unwrap(name: str, schema: Mapping[str, Any]) -> tuple[Mapping[str, Any], dict[str, Any]]:
    """(leaf schema, {required, nullable, default}) of one model field's schema."""
    info: dict[str, Any] = {"required": True, "nullable": False, "default": None}
    while True:
        kind = schema["type"]
        if kind == "default":
            info["required"] = False
            info["default"] = schema.get("default")
        elif kind == "nullable":
            info["nullable"] = True
        elif kind in ("function-after", "function-before", "function-wrap", "function-plain"):
            fn = _function_name(schema)
            if MIRRORED.get(fn) != name:
                raise TypeError(
                    f"stream/validator.py does not mirror validator {fn} on field {name!r}: "
                    "add its columnar form (and a MIRRORED entry) before adding it to UsageEvent"
                )
            if kind == "function-plain":
                raise TypeError(f"field {name!r}: a plain validator replaces the schema")
        else:
            return schema, info
        schema = schema["schema"]


_SUPPORTED: Mapping[str, set[str]] = {
    "int": {"ge", "le", "gt", "lt", "strict"},
    "float": {"ge", "le", "gt", "lt", "strict", "allow_inf_nan"},
    "decimal": {"ge", "le", "gt", "lt", "allow_inf_nan", "strict"},
    "str": {"min_length", "max_length", "strict"},
    "bool": {"strict"},
    "literal": {"expected"},
    "datetime": {"tz_constraint", "strict", "microseconds_precision"},
    "dict": {"keys_schema", "values_schema", "max_length", "min_length", "strict"},
}
_ARROW_KINDS: Mapping[str, Callable[[pa.DataType], bool]] = {
    "int": pa.types.is_integer,
    "float": pa.types.is_floating,
    "decimal": pa.types.is_decimal,
    "str": pa.types.is_string,
    "bool": pa.types.is_boolean,
    "literal": lambda t: pa.types.is_string(t) or pa.types.is_integer(t),
    "datetime": pa.types.is_timestamp,
    "dict": pa.types.is_map,
}


def _derive_rules() -> tuple[FieldRule, ...]:
    root = UsageEvent.__pydantic_core_schema__
    while root["type"] != "model":
        if root["type"].startswith("function-") and MIRRORED.get(_function_name(root)) != "model":
            raise TypeError(f"stream/validator.py does not mirror {_function_name(root)}")
        root = root["schema"]
    fields = root["schema"]["fields"]
    arrow = dict(EVENT_FIELDS)
    if set(fields) != set(arrow):
        raise TypeError(
            "UsageEvent and table_schemas.EVENT_FIELDS disagree on the fields: "
            f"{sorted(set(fields) ^ set(arrow))}"
        )
    rules = []
    for name, field in fields.items():
        leaf, info = _unwrap(name, field["schema"])
        kind = leaf["type"]
        extra = set(leaf) - {"type", "metadata", "ref"} - _SUPPORTED.get(kind, set())
        if kind not in _SUPPORTED or extra:
            raise TypeError(f"field {name!r}: cannot check {kind} with {sorted(extra)} column-wise")
        if not _ARROW_KINDS[kind](arrow[name]):
            raise TypeError(f"field {name!r}: a {kind} cannot be stored as {arrow[name]}")
        if kind == "datetime" and leaf.get("tz_constraint") != "aware":
            raise TypeError(f"field {name!r}: only aware datetimes are parsed column-wise")
        constraints = {k: v for k, v in leaf.items() if k not in ("type", "metadata", "ref")}
        rules.append(FieldRule(name, kind, arrow[name], constraints=constraints, **info))
    return tuple(rules)


RULES: tuple[FieldRule, ...] = _derive_rules()
_BY_NAME = {r.name: r for r in RULES}


def json_read_schema() -> pa.Schema:
    """What pyarrow's JSON reader is told: timestamps as text (parsed by rfc3339.py),
    literals as their JSON type, maps left out (rows with one go to pydantic)."""
    out = []
    for r in RULES:
        if r.kind == "dict":
            continue
        if r.kind == "datetime":
            out.append(pa.field(r.name, pa.string()))
        elif r.kind == "literal" and pa.types.is_integer(r.arrow_type):
            out.append(pa.field(r.name, pa.int64()))
        else:
            out.append(pa.field(r.name, r.arrow_type))
    return pa.schema(out)


def map_fields() -> list[str]:
    return [r.name for r in RULES if r.kind == "dict"]


def defaulted_fields() -> list[str]:
    """Fields whose absence means their default but whose explicit null is an error."""
    return [r.name for r in RULES if not r.required and not r.nullable]


_PLAIN_DECIMAL = re.compile(r"\d{1,20}(\.\d{1,18})?")


def _json_kind(rule: FieldRule) -> Callable[[Any], bool]:
    """What a decoded JSON value must be for pyarrow's reader to take it (prescreen)."""
    if rule.kind == "int" or (rule.kind == "literal" and pa.types.is_integer(rule.arrow_type)):
        return lambda v: type(v) is int and -(2**63) <= v < 2**63
    if rule.kind == "float":
        return lambda v: (type(v) is int and abs(v) < 2**53) or type(v) is float
    if rule.kind == "decimal":
        # A float's text may need more places than the column has: pydantic judges it.
        return lambda v: (
            (type(v) is int and 0 <= v < 10**20)
            or (type(v) is str and _PLAIN_DECIMAL.fullmatch(v) is not None)
        )
    if rule.kind == "bool":
        return lambda v: type(v) is bool
    if rule.kind in ("str", "datetime", "literal"):
        return lambda v: type(v) is str
    return lambda v: False


def plain_json_kinds() -> dict[str, Callable[[Any], bool]]:
    """Field -> predicate on its decoded JSON value, for every field the reader handles."""
    return {r.name: _json_kind(r) for r in RULES if r.kind != "dict"}


_NUMPY_OPS = (
    ("ge", np.greater_equal),
    ("le", np.less_equal),
    ("gt", np.greater),
    ("lt", np.less),
)


def _bounds(col: Any, c: Mapping[str, Any]) -> Any:
    if (
        col.null_count == 0
        and (pa.types.is_integer(col.type) or pa.types.is_floating(col.type))
        and not any(isinstance(c.get(key), Decimal) for key, _ in _NUMPY_OPS)
    ):
        # Without nulls, numpy compares the column's own buffer: ~5x sooner than Arrow's
        # kernels for a batch, which is most of what checking the columns costs.
        values = col.to_numpy(zero_copy_only=False)
        mask = None
        for key, np_op in _NUMPY_OPS:
            if key in c:
                part = np_op(values, c[key])
                mask = part if mask is None else mask & part
        return mask
    ok = None
    for key, op in (("ge", pc.greater_equal), ("le", pc.less_equal)):
        if key in c:
            part = op(
                col, pa.scalar(c[key], col.type) if not isinstance(c[key], Decimal) else c[key]
            )
            ok = part if ok is None else pc.and_(ok, part)
    for key, op in (("gt", pc.greater), ("lt", pc.less)):
        if key in c:
            part = op(col, c[key])
            ok = part if ok is None else pc.and_(ok, part)
    return ok


def _decimal_as_pydantic_reads_it(col: pa.Array) -> np.ndarray:
    """True where pydantic's value equals the column's however it was written.

    pydantic reads a JSON *number* into a Decimal through a float (0.1 -> Decimal('0.1'),
    but 0.12345678901234567 -> ...568); a *string* exactly. The Arrow reader is exact for
    both. A value that survives the float round trip is read alike either way.
    """
    ok = np.ones(len(col), dtype=bool)
    for i, v in enumerate(col.to_pylist()):
        if v is not None and Decimal(repr(float(v))) != v:
            ok[i] = False
    return ok


def check_columns(table: pa.Table, latest_us: int) -> tuple[np.ndarray, dict[str, pa.Array]]:
    """(rows that pass, the event columns in table_schemas types) of a table read with
    ``json_read_schema``. ``latest_us``: the newest ts (epoch microseconds) accepted."""
    n = table.num_rows
    ok = np.ones(n, dtype=bool)
    out: dict[str, pa.Array] = {}

    def need(mask: Any) -> None:
        nonlocal ok
        if isinstance(mask, np.ndarray):
            ok &= mask
        elif mask is not None:
            ok &= np.asarray(pc.fill_null(mask, True), dtype=bool)

    for rule in RULES:
        c = rule.constraints
        if rule.kind == "dict":
            out[rule.name] = pa.nulls(n, rule.arrow_type)  # rows with a map went to pydantic
            continue
        col = table.column(rule.name).combine_chunks()
        if rule.required:
            if col.null_count:
                need(col.is_valid())
        elif not rule.nullable and col.null_count:
            # A null here is an absent key: rows with an explicit null went to pydantic.
            col = pc.fill_null(col, pa.scalar(rule.default, col.type))
        if rule.kind in ("int", "float", "decimal"):
            need(_bounds(col, c))
            if not c.get("allow_inf_nan", True) and rule.kind == "float":
                need(np.isfinite(col.to_numpy()) if col.null_count == 0 else pc.is_finite(col))
            if rule.kind == "decimal" and col.null_count < n:
                ok &= _decimal_as_pydantic_reads_it(col)
        elif rule.kind == "str":
            length = pc.utf8_length(col)
            need(_bounds(length, {"ge": c.get("min_length", 0), "le": c.get("max_length", 2**62)}))
        elif rule.kind == "literal":
            expected = pa.array(c["expected"], col.type)
            inside = pc.is_in(col, expected)
            need(inside)
            # A refused row may hold a value the narrower type cannot (2^33 as an int32):
            # it takes an expected one, so the cast cannot fail the whole batch.
            col = pc.if_else(inside, col, expected[0]).cast(rule.arrow_type)
        elif rule.kind == "datetime":
            micros = parse_micros(col)
            need(micros.is_valid())
            need(pc.greater_equal(micros, _EPOCH_US_EARLIEST))
            need(pc.less_equal(micros, latest_us))
            col = pc.fill_null(micros, 0).cast(rule.arrow_type)
        out[rule.name] = col
    for lhs, rhs in TOKEN_RULES:
        if all(name in out for name in (*lhs, *rhs)):
            # Sums wrap only where a bound above already failed (each count <= 10^9).
            if all(out[name].null_count == 0 for name in (*lhs, *rhs)):
                need(_np_sum(out, lhs) <= _np_sum(out, rhs))
            else:
                need(pc.less_equal(_sum(out, lhs), _sum(out, rhs)))
    return ok, out


def _sum(columns: Mapping[str, pa.Array], names: tuple[str, ...]) -> Any:
    total = columns[names[0]]
    for name in names[1:]:
        total = pc.add(total, columns[name])
    return total


def _np_sum(columns: Mapping[str, pa.Array], names: tuple[str, ...]) -> np.ndarray:
    total = columns[names[0]].to_numpy().astype(np.int64)  # a copy: += must not write back
    for name in names[1:]:
        total += columns[name].to_numpy()
    return total


def rule(name: str) -> FieldRule:
    return _BY_NAME[name]
