"""Hypothesis strategies for raw usage-event lines: valid ones in the forms producers write,
near-valid ones with any field perturbed, and arbitrary JSON or bytes."""

from __future__ import annotations

import json
import math
import string
import typing
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from hypothesis import strategies as st
from pydantic.fields import FieldInfo

from spendstream.producers.event import (
    MAX_LATENCY_MS,
    MAX_REPORTED_COST_USD,
    MAX_TOKENS,
    MAX_TURN,
    UsageEvent,
)

__all__ = [
    "NOW",
    "SKEW_S",
    "arbitrary_lines",
    "batches",
    "edge_batches",
    "near_valid_lines",
    "valid_lines",
]

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)  # the batch's received_at in these tests
SKEW_S = 300

_names = st.text(string.ascii_letters + string.digits + "-_./:", min_size=1, max_size=24)
_any_text = st.one_of(
    st.text(max_size=8),
    st.text(min_size=127, max_size=130),
    st.text(min_size=255, max_size=258),
    st.sampled_from(["", " ", "null", "tags", '"tags"', "\\", "a\nb", "é", "\u2028", "\x00"]),
)
_ints = st.one_of(
    st.integers(min_value=0, max_value=5000),
    st.sampled_from(
        [0, 1, -1, MAX_TOKENS, MAX_TOKENS + 1, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64]
    ),
    st.integers(),
)


def _fmt_ts(ts: datetime, style: int, digits: int) -> str:
    """A timestamp in one of the forms seen in the wild, valid or not."""
    base = ts.strftime("%Y-%m-%dT%H:%M:%S")
    frac = f"{ts.microsecond:06d}"[:digits] if digits <= 6 else f"{ts.microsecond:06d}123"[:digits]
    frac = f".{frac}" if digits else ""
    offset = ts.strftime("%z")
    offset = f"{offset[:3]}:{offset[3:]}" if offset else ""
    return [
        f"{base}{frac}Z",
        f"{base}{frac}{offset or '+00:00'}",
        f"{base}{frac}z",
        f"{base}{frac}".replace("T", " ") + "Z",
        f"{base}{frac}",  # naive
        f"{base}{frac}{offset.replace(':', '')}",
        f"{base}{frac}".replace("T", "t") + "Z",
    ][style]


@st.composite
def _timestamps(draw: st.DrawFn) -> Any:
    kind = draw(st.integers(min_value=0, max_value=9))
    if kind == 0:
        return draw(st.sampled_from([0, 1_700_000_000, 1.5, "1700000000", None, True, [], {}]))
    if kind == 1:
        return draw(
            st.sampled_from(
                [
                    "2026-02-29T00:00:00Z",
                    "2024-02-29T00:00:00Z",
                    "2026-13-01T00:00:00Z",
                    "2026-06-01T24:00:00Z",
                    "2026-06-01T12:00:60Z",
                    "2026-06-01T12:00:00+24:00",
                    "2026-06-01T12:00:00+23:59",
                    "0001-01-01T00:00:00+01:00",
                    "9999-12-31T23:59:59-01:00",
                    "9999-12-31T23:59:59Z",
                    "0001-01-01T00:00:00Z",
                    "2014-12-31T23:59:59.999999Z",
                    "2015-01-01T00:00:00Z",
                    "2015-01-01T01:00:00+01:00",
                    "2026-06-01",
                    "2026-06-01T12:00Z",
                    "",
                    "２０２６-06-01T12:00:00Z",
                ]
            )
        )
    if kind == 2:
        # At and around the receipt bound: NOW + SKEW_S is the last accepted instant.
        delta = draw(st.sampled_from([-1, 0, 1, 999_999, 1_000_000, -SKEW_S * 10**6]))
        ts = NOW + timedelta(seconds=SKEW_S, microseconds=delta)
    else:
        ts = NOW - timedelta(seconds=draw(st.integers(min_value=-7200, max_value=86400 * 30)))
        ts += timedelta(microseconds=draw(st.integers(min_value=0, max_value=999_999)))
    zone = draw(st.sampled_from([0, 0, 60, -300, 330, 23 * 60 + 59, -(23 * 60 + 59)]))
    local = ts.astimezone(timezone(timedelta(minutes=zone)))
    style = draw(st.sampled_from([0, 0, 0, 1, 1, 2, 3, 4, 5, 6]))
    digits = draw(st.sampled_from([0, 3, 6, 1, 2, 4, 5, 7, 9]))
    return _fmt_ts(local, style, digits)


_decimals = st.decimals(
    min_value=Decimal("-1"),
    max_value=MAX_REPORTED_COST_USD * 2,
    allow_nan=False,
    allow_infinity=False,
    places=None,
)


@st.composite
def _costs(draw: st.DrawFn) -> Any:
    kind = draw(st.integers(min_value=0, max_value=5))
    if kind == 0:
        return draw(
            st.sampled_from(
                [
                    "1e400",
                    "NaN",
                    "Infinity",
                    "-0",
                    " 5",
                    "5 ",
                    "+5",
                    ".5",
                    "5.",
                    "1_000",
                    "0x10",
                    "",
                    "1e-19",
                    "0E+39",
                    "1E+5",
                    "0.0000000000000000125",
                    "1000000",
                    "1000000.000000000000000001",
                    None,
                    True,
                    [],
                ]
            )
        )
    if kind == 1:
        value = draw(st.floats(min_value=0, max_value=2e6, allow_nan=False))
        return value  # a JSON number: pydantic reads it through a float
    if kind == 2:
        return draw(st.integers(min_value=-5, max_value=2 * 10**6))
    places = draw(st.integers(min_value=0, max_value=24))
    d = draw(_decimals)
    d = d.quantize(Decimal(1).scaleb(-places)) if d.adjusted() + places < 26 else d
    text = str(d) if draw(st.booleans()) else f"{d:f}"
    return text


@st.composite
def _tags(draw: st.DrawFn) -> Any:
    kind = draw(st.integers(min_value=0, max_value=4))
    if kind == 0:
        return draw(st.sampled_from([None, [], "x", 1, {"": "v"}, {"k": 1}, {"k": None}]))
    if kind == 1:
        return {f"k{i}": "v" for i in range(draw(st.sampled_from([64, 65])))}
    return draw(
        st.dictionaries(
            st.one_of(_names, st.text(min_size=63, max_size=66)),
            st.one_of(st.text(max_size=4), st.text(min_size=255, max_size=258)),
            max_size=4,
        )
    )


_PERTURB: dict[str, st.SearchStrategy[Any]] = {
    "event_id": st.one_of(_any_text, _ints, st.none()),
    "ts": _timestamps(),
    "provider": st.one_of(_any_text, _ints, st.none()),
    "model": st.one_of(_any_text, st.none(), st.booleans()),
    "input_tokens": st.one_of(_ints, st.floats(allow_nan=True), st.booleans(), st.none(), _names),
    "output_tokens": st.one_of(_ints, st.sampled_from([1.0, 1e3, "12"])),
    "cache_read_tokens": st.one_of(_ints, st.none(), st.just(1.5)),
    "cache_write_tokens": st.one_of(_ints, st.none()),
    "batch": st.one_of(st.booleans(), st.sampled_from([0, 1, "true", None, "yes"])),
    "status": st.one_of(
        st.sampled_from(["ok", "error", "timeout", "refused", "OK", "failed", "", None, 1])
    ),
    "attempt": st.one_of(_ints, st.sampled_from([0, 1, 10**6, 10**6 + 1, None])),
    "request_id": st.one_of(_any_text, st.none()),
    "latency_ms": st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from([0, -0.0, MAX_LATENCY_MS, MAX_LATENCY_MS + 1, 1e308, "12", None, True]),
        st.integers(min_value=-5, max_value=2 * 10**9),
    ),
    "team": st.one_of(_any_text, st.none(), _ints),
    "feature": st.one_of(_any_text, st.none()),
    "project": _any_text,
    "environment": _any_text,
    "cost_center": _any_text,
    "user_id": _any_text,
    "api_key_id": st.one_of(_any_text, st.none()),
    "session_id": st.one_of(_any_text, st.none()),
    "parent_session_id": _any_text,
    "turn": st.one_of(_ints, st.sampled_from([MAX_TURN, MAX_TURN + 1, None, 2.0])),
    "reported_cost_usd": _costs(),
    "tags": _tags(),
    "schema_version": st.sampled_from([1, 1.0, True, 2, "1", None, 0, 2**31, -(2**40)]),
}


def _constraints(info: FieldInfo) -> tuple[type | None, dict[str, Any]]:
    """A field's value type and bounds, read off the model alone (its metadata and the
    Annotated parts of an Optional), not from the validator under test."""
    found: dict[str, Any] = {}
    kind: type | None = None

    def visit(annotation: Any, metadata: list[Any]) -> None:
        nonlocal kind
        for m in metadata:
            if isinstance(m, FieldInfo):
                visit(m.annotation, list(m.metadata))
                continue
            for key in ("ge", "gt", "le", "lt", "min_length", "max_length"):
                value = getattr(m, key, None)
                if value is not None:
                    found.setdefault(key, value)
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            base, *extra = typing.get_args(annotation)
            visit(base, extra)
        elif origin is typing.Union or type(annotation).__name__ == "UnionType":
            for arg in typing.get_args(annotation):
                if arg is not type(None):
                    visit(arg, [])
        elif kind is None and annotation in (int, float, str, Decimal, bool, dict):
            kind = annotation
        elif kind is None and origin is dict:
            kind = dict
            value = typing.get_args(annotation)[1]
            if typing.get_origin(value) is typing.Annotated:
                value = typing.get_args(value)[0]
            found["counts"] = value is int  # tool_requests: tool -> count

    visit(info.annotation, list(info.metadata))
    return kind, found


def _edge_values(kind: type | None, c: dict[str, Any]) -> list[Any]:
    """Each bound's value and its nearest neighbour past it, and a null."""
    out: list[Any] = [None]
    if kind in (int, float, Decimal):
        step: Any = {int: 1, Decimal: Decimal("1e-18")}.get(kind)
        for key, sign in (("ge", -1), ("gt", -1), ("le", 1), ("lt", 1)):
            if key in c:
                bound = c[key]
                past = (
                    math.nextafter(bound, sign * math.inf) if kind is float else bound + sign * step
                )
                out += [bound, past]
        if kind is Decimal:
            out = [v if v is None else str(v) for v in out]  # as producers write money
    elif kind is str:
        for key in ("min_length", "max_length"):
            if key in c:
                n = c[key]
                out += ["x" * n, "x" * (n - 1) if key == "min_length" else "x" * (n + 1)]
    elif kind is dict and "max_length" in c:
        n = c["max_length"]
        value = 1 if c.get("counts") else "v"
        out += [{f"k{i}": value for i in range(n)}, {f"k{i}": value for i in range(n + 1)}]
    return out


# Every field of the model at its bounds: a field added later is covered without an edit.
_EDGES: dict[str, st.SearchStrategy[Any]] = {
    name: st.sampled_from(_edge_values(*_constraints(info)))
    for name, info in UsageEvent.model_fields.items()
}


@st.composite
def _valid_event(draw: st.DrawFn) -> dict[str, Any]:
    total = draw(st.integers(min_value=0, max_value=MAX_TOKENS))
    read = draw(st.integers(min_value=0, max_value=total))
    write = draw(st.integers(min_value=0, max_value=total - read))
    event: dict[str, Any] = {
        "event_id": draw(_names),
        "ts": draw(_timestamps().filter(lambda t: isinstance(t, str) and t.endswith("Z"))),
        "provider": draw(st.sampled_from(["openai", "anthropic", "self-hosted"])),
        "model": draw(_names),
        "input_tokens": total,
        "output_tokens": draw(st.integers(min_value=0, max_value=MAX_TOKENS)),
    }
    optional: dict[str, st.SearchStrategy[Any]] = {
        "cache_read_tokens": st.just(read),
        "cache_write_tokens": st.just(write),
        "batch": st.booleans(),
        "status": st.sampled_from(["ok", "error", "timeout", "refused"]),
        "attempt": st.integers(min_value=1, max_value=10**6),
        "request_id": _names,
        "latency_ms": st.floats(min_value=0, max_value=MAX_LATENCY_MS),
        "team": _names,
        "feature": _names,
        "api_key_id": _names,
        "session_id": _names,
        "turn": st.integers(min_value=0, max_value=MAX_TURN),
        "reported_cost_usd": st.decimals(
            min_value=0, max_value=MAX_REPORTED_COST_USD, places=draw(st.integers(0, 18))
        ).map(str),
        "tags": st.dictionaries(_names.filter(lambda k: len(k) <= 64), _names, max_size=3),
        "schema_version": st.just(1),
    }
    for name in draw(st.sets(st.sampled_from(sorted(optional)))):
        event[name] = draw(optional[name])
    if draw(st.booleans()):
        # Explicit nulls where the schema allows them (other languages' serialisers do this).
        for name in ("team", "feature", "session_id", "turn", "reported_cost_usd", "tags"):
            event.setdefault(name, None)
    return event


def _dump(draw: st.DrawFn, event: dict[str, Any]) -> bytes:
    items = list(event.items())
    if draw(st.booleans()):
        items = draw(st.permutations(items))
    text = json.dumps(
        dict(items),
        ensure_ascii=draw(st.booleans()),
        separators=draw(st.sampled_from([(",", ":"), (", ", ": "), (",", " :\t")])),
        allow_nan=True,
        default=str,
    )
    return text.encode("utf-8", "surrogatepass")


@st.composite
def valid_lines(draw: st.DrawFn) -> bytes:
    """Events in every form producers write; nearly all valid (a ts may be Feb 29 2026)."""
    return _dump(draw, draw(_valid_event()))


@st.composite
def edge_batches(draw: st.DrawFn) -> list[bytes]:
    """Lines of one producer (every line has the same keys, as one client writes them),
    with a few fields at or just past their bounds in every line: their columns have no
    nulls unless a null was drawn, which is when the validator compares with numpy."""
    base = draw(_valid_event())
    events = [
        {**base, "event_id": f"{base['event_id']}-{i}"}
        for i in range(draw(st.integers(min_value=1, max_value=6)))
    ]
    for name in draw(st.lists(st.sampled_from(sorted(_EDGES)), min_size=1, max_size=3)):
        for event in events:
            event[name] = draw(_EDGES[name])
    return [_dump(draw, event) for event in events]


@st.composite
def near_valid_lines(draw: st.DrawFn) -> bytes:
    """A valid event with a few fields perturbed, dropped, doubled or added."""
    event = draw(_valid_event())
    for name in draw(st.lists(st.sampled_from(sorted(_PERTURB)), max_size=3)):
        event[name] = draw(_PERTURB[name])
    for name in draw(st.lists(st.sampled_from(sorted(_EDGES)), max_size=2)):
        event[name] = draw(_EDGES[name])
    for name in draw(st.lists(st.sampled_from(sorted(event)), max_size=1)):
        del event[name]
    if draw(st.integers(min_value=0, max_value=9)) == 0:
        event[draw(st.sampled_from(["prompt_tokens", "Team", "", "tags "]))] = draw(_ints)
    raw = _dump(draw, event)
    twist = draw(st.integers(min_value=0, max_value=12))
    if twist == 0 and event:
        # The same key twice: JSON parsers disagree about these; the model takes the last.
        key = draw(st.sampled_from(sorted(event)))
        extra = json.dumps({key: draw(_PERTURB.get(key, _ints))}, default=str)[1:-1].encode()
        raw = raw[:-1] + b", " + extra + b"}" if raw.endswith(b"}") else raw
    elif twist == 1:
        raw = raw + b" " + raw  # two objects on one line
    elif twist == 2:
        raw = b" " + raw + b"\t"
    elif twist == 3:
        raw = json.dumps(event, indent=1, default=str).encode("utf-8", "surrogatepass")
    elif twist == 4:
        raw = raw[: draw(st.integers(min_value=0, max_value=max(0, len(raw) - 1)))]
    return raw


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def arbitrary_lines(draw: st.DrawFn) -> bytes:
    """Any JSON value, or any bytes at all (not blank: blank lines are skipped upstream)."""
    if draw(st.booleans()):
        return json.dumps(draw(_json)).encode()
    return draw(st.binary(min_size=1, max_size=64).filter(lambda b: b.strip() != b""))


def batches(line: st.SearchStrategy[bytes], max_size: int = 12) -> st.SearchStrategy[list[bytes]]:
    """Batches that mix ``line`` with plain valid lines, so the fast path takes part."""
    return st.lists(st.one_of(line, valid_lines()), min_size=1, max_size=max_size)
