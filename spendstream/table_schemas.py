"""Arrow schemas of the warehouse tables and the builders that turn records into columns.

Columns are built in one pass over a batch; money goes from ``Decimal`` straight to
``decimal128(38, 18)`` (records.COST_SCALE) with no float in between. Tags and alert
details are ``MAP(VARCHAR, VARCHAR)`` so SQL can say ``tags['plan']``.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from spendstream.money import at_money_scale
from spendstream.producers.event import UsageEvent
from spendstream.records import COST_SCALE, Alert, BreakerEvent, DeadLetter, Fact

__all__ = [
    "COST_FIELDS",
    "COUNT_MAP",
    "EVENTS",
    "EVENT_FIELDS",
    "FACTS",
    "MONEY",
    "SCHEMAS",
    "TS",
    "WIDE_MONEY",
    "alerts_table",
    "breaker_events_table",
    "dead_letters_table",
    "event_columns",
    "events_table",
    "facts_table",
    "money_sum",
    "to_money",
]

MONEY = pa.decimal128(38, COST_SCALE)
TS = pa.timestamp("us", tz="UTC")
STR_MAP = pa.map_(pa.string(), pa.string())
COUNT_MAP = pa.map_(pa.string(), pa.int64())

EVENT_FIELDS: list[tuple[str, pa.DataType]] = [
    ("event_id", pa.string()),
    ("ts", TS),
    ("provider", pa.string()),
    ("model", pa.string()),
    ("input_tokens", pa.int64()),
    ("output_tokens", pa.int64()),
    ("cache_read_tokens", pa.int64()),
    ("cache_write_tokens", pa.int64()),
    ("batch", pa.bool_()),
    ("status", pa.string()),
    ("attempt", pa.int64()),
    ("request_id", pa.string()),
    ("latency_ms", pa.float64()),
    ("team", pa.string()),
    ("feature", pa.string()),
    ("project", pa.string()),
    ("environment", pa.string()),
    ("cost_center", pa.string()),
    ("user_id", pa.string()),
    ("api_key_id", pa.string()),
    ("session_id", pa.string()),
    ("parent_session_id", pa.string()),
    ("turn", pa.int64()),
    ("reported_cost_usd", MONEY),
    ("tags", STR_MAP),
    ("lease_id", pa.string()),
    ("schema_version", pa.int32()),
    # Billable dimensions beyond the contract's four token counts (0/null when not reported).
    ("cache_write_1h_tokens", pa.int64()),
    ("input_audio_tokens", pa.int64()),
    ("cache_audio_read_tokens", pa.int64()),
    ("input_image_tokens", pa.int64()),
    ("cache_image_read_tokens", pa.int64()),
    ("output_audio_tokens", pa.int64()),
    ("output_image_tokens", pa.int64()),
    ("tool_requests", COUNT_MAP),
    ("service_tier", pa.string()),
    ("region", pa.string()),
]
COST_FIELDS = [
    "input_cost_usd",
    "cache_read_cost_usd",
    "cache_write_cost_usd",
    "output_cost_usd",
    "tool_cost_usd",
    "cost_usd",
]
EVENTS = pa.schema([pa.field(n, t) for n, t in EVENT_FIELDS])
FACTS = pa.schema(
    [pa.field(n, t) for n, t in EVENT_FIELDS]
    + [pa.field(n, MONEY) for n in COST_FIELDS]
    + [
        pa.field("priced", pa.bool_()),
        pa.field("price_source", pa.string()),
        pa.field("ingested_at", TS),
    ]
)
ALERTS = pa.schema(
    [
        ("alert_id", pa.string()),
        ("kind", pa.string()),
        ("scope", pa.string()),
        ("severity", pa.string()),
        ("ts", TS),
        ("value", MONEY),
        ("threshold", MONEY),
        ("message", pa.string()),
        ("dedup_key", pa.string()),
        ("details", STR_MAP),
    ]
)
BREAKER_EVENTS = pa.schema(
    [("scope", pa.string()), ("state", pa.string()), ("reason", pa.string()), ("ts", TS)]
)
DEAD_LETTERS = pa.schema(
    [
        ("raw", pa.string()),
        ("error", pa.string()),
        ("source", pa.string()),
        ("received_at", TS),
    ]
)
SCHEMAS: dict[str, pa.Schema] = {
    "usage_facts": FACTS,
    "alerts": ALERTS,
    "breaker_events": BREAKER_EVENTS,
    "dead_letters": DEAD_LETTERS,
}


def to_money(value: Decimal | None) -> Decimal | None:
    """A Decimal that fits DECIMAL(38, 18): rounded (half-even) only if it has more digits."""
    return None if value is None else at_money_scale(value)


# Sums are taken at 76 digits: a column of DECIMAL(38, 18) values cannot overflow them.
WIDE_MONEY = pa.decimal256(76, COST_SCALE)


def money_sum(values: pa.Array | pa.ChunkedArray) -> Decimal:
    """The exact sum of a money column (nulls count as nothing; empty: 0)."""
    total = pc.sum(values.cast(WIDE_MONEY)).as_py()
    return Decimal(0) if total is None else total


def _money_array(values: list[Decimal | None]) -> pa.Array:
    # Fast path: pyarrow converts exactly, and refuses (never rounds) what needs rounding.
    try:
        return pa.array(values, type=MONEY)
    except pa.ArrowInvalid:
        return pa.array([to_money(v) for v in values], type=MONEY)


def _column(values: list[Any], typ: pa.DataType) -> pa.Array:
    return _money_array(values) if typ == MONEY else pa.array(values, type=typ)


def event_columns(events: Sequence[UsageEvent]) -> dict[str, pa.Array]:
    """The EVENT_FIELDS columns of validated events."""
    # Column by column over the events' field dicts: a comprehension per column is several
    # times faster than appending field by field.
    fields = [e.__dict__ for e in events]
    cols: dict[str, pa.Array] = {}
    for name, typ in EVENT_FIELDS:
        if pa.types.is_map(typ):
            values = [list(d[name].items()) if d[name] else None for d in fields]
        else:
            values = [d[name] for d in fields]
        cols[name] = _column(values, typ)
    return cols


def events_table(events: Sequence[UsageEvent]) -> pa.Table:
    """The EVENT_FIELDS columns of validated events, in order."""
    return pa.table(event_columns(events), schema=EVENTS)


def facts_table(facts: Sequence[Fact]) -> pa.Table:
    costs = [f.cost for f in facts]
    cols: dict[str, list[Any]] = {}
    for name in COST_FIELDS:
        cols[name] = [getattr(c, name) if c is not None else None for c in costs]
    cols["priced"] = [c is not None for c in costs]
    cols["price_source"] = [c.price_source if c is not None else None for c in costs]
    cols["ingested_at"] = [f.ingested_at for f in facts]
    arrays = event_columns([f.event for f in facts])
    arrays.update({name: _column(values, FACTS.field(name).type) for name, values in cols.items()})
    return pa.table([arrays[f.name] for f in FACTS], schema=FACTS)


def alerts_table(alerts: Sequence[Alert]) -> pa.Table:
    rows = {
        "alert_id": [a.alert_id for a in alerts],
        "kind": [a.kind for a in alerts],
        "scope": [a.scope for a in alerts],
        "severity": [a.severity for a in alerts],
        "ts": [a.ts for a in alerts],
        "value": _money_array([a.value for a in alerts]),
        "threshold": _money_array([a.threshold for a in alerts]),
        "message": [a.message for a in alerts],
        "dedup_key": [a.dedup_key for a in alerts],
        "details": [list(a.details.items()) for a in alerts],
    }
    return pa.table(rows, schema=ALERTS)


def breaker_events_table(events: Sequence[BreakerEvent]) -> pa.Table:
    rows = {
        "scope": [e.scope for e in events],
        "state": [e.state for e in events],
        "reason": [e.reason for e in events],
        "ts": [e.ts for e in events],
    }
    return pa.table(rows, schema=BREAKER_EVENTS)


def dead_letters_table(letters: Sequence[DeadLetter]) -> pa.Table:
    rows = {
        "raw": [d.raw for d in letters],
        "error": [d.error for d in letters],
        "source": [d.source for d in letters],
        "received_at": [d.received_at for d in letters],
    }
    return pa.table(rows, schema=DEAD_LETTERS)
