"""stream/digest.py: the content digest follows its documented encoding, is pinned on a
known event (so it cannot drift between versions), and ignores how an event was written."""

from __future__ import annotations

import hashlib
import json
import struct
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from spendstream.producers.event import UsageEvent
from spendstream.stream.batch import DIGEST, ROW, decode_lines
from spendstream.stream.digest import digest_column
from spendstream.table_schemas import event_columns
from tests.stream.event_strategies import NOW, valid_lines

PINNED = {
    "event_id": "pin-1",
    "ts": "2026-03-02T12:00:00.123456+01:00",
    "provider": "anthropic",
    "model": "claude-sonnet-4-5",
    "input_tokens": 1200,
    "output_tokens": 300,
    "cache_read_tokens": 1000,
    "batch": True,
    "status": "error",
    "attempt": 2,
    "latency_ms": 812.5,
    "team": "search",
    "session_id": "s-1",
    "turn": 3,
    "reported_cost_usd": "0.0123",
    "tags": {"plan": "pro", "a": ""},
}
PINNED_DIGEST = "47e8773ee49cfdc15ca944d71f708fd4"


def _text(value: str) -> bytes:
    data = value.encode()
    return struct.pack("<I", len(data)) + data


def _value(value: str | int) -> bytes:
    """A map value: a string as above, an integer as 8 bytes (tool request counts)."""
    return _text(value) if isinstance(value, str) else struct.pack("<q", value)


def reference_digest(event: UsageEvent) -> bytes:
    """The digest written out from the module docstring's rules, one field at a time."""
    out = b""
    for name, info in sorted(UsageEvent.model_fields.items()):
        value = getattr(event, name)
        if name == "event_id" or value is None or value == info.default or value == {}:
            continue
        tag = hashlib.blake2b(name.encode(), digest_size=3).digest()
        if isinstance(value, bool):
            body = bytes([value])
        elif isinstance(value, int):
            body = struct.pack("<q", value)
        elif isinstance(value, float):
            body = struct.pack("<d", value + 0.0)
        elif isinstance(value, datetime):
            delta = value - datetime(1970, 1, 1, tzinfo=UTC)
            micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
            body = struct.pack("<q", micros)
        elif isinstance(value, Decimal):
            body = int(value.scaleb(18)).to_bytes(16, "little", signed=True)
        elif isinstance(value, str):
            body = _text(value)
        else:
            items = sorted(value.items(), key=lambda kv: kv[0].encode())
            body = struct.pack("<I", len(items)) + b"".join(_text(k) + _value(v) for k, v in items)
        out += tag + body
    return hashlib.blake2b(out, digest_size=16, person=b"spendstream-ev1").digest()


def _digests(lines: list[bytes], now: datetime = NOW) -> list[bytes]:
    return decode_lines(lines, now, str).events.column(DIGEST).to_pylist()


def test_digest_of_a_known_event_never_changes() -> None:
    line = json.dumps(PINNED).encode()
    (digest,) = _digests([line], datetime(2026, 3, 3, tzinfo=UTC))
    assert digest.hex() == PINNED_DIGEST
    assert digest == reference_digest(UsageEvent.model_validate_json(line))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_lines())
def test_digest_follows_the_documented_encoding(line: bytes) -> None:
    try:
        event = UsageEvent.model_validate_json(line)
    except ValidationError:
        event = None
    assume(event is not None and event.ts <= NOW)
    assert event is not None
    assert _digests([line]) == [reference_digest(event)]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(valid_lines(), min_size=2, max_size=25))
def test_each_row_of_a_batch_has_its_own_events_digest(lines: list[bytes]) -> None:
    """Rows with a field present and rows without it share a batch: fields present in
    every row are encoded together, the others one by one; each row must still encode
    exactly its own fields."""
    events = decode_lines(lines, NOW, str).events
    expected = []
    for row in events.column(ROW).to_pylist():
        expected.append(reference_digest(UsageEvent.model_validate_json(lines[row])))
    assert events.column(DIGEST).to_pylist() == expected


def test_batches_of_any_size_with_the_same_fields() -> None:
    """Fields encoded together are laid out once per set of fields, one row with their
    tags that each batch repeats to its size: every row of every size must get them."""
    now = datetime(2026, 3, 3, tzinfo=UTC)
    for size in (3, 2500, 40):
        lines = [json.dumps({**PINNED, "input_tokens": 1000 + i}).encode() for i in range(size)]
        expected = [reference_digest(UsageEvent.model_validate_json(raw)) for raw in lines]
        assert _digests(lines, now) == expected


def test_an_optional_field_added_later_leaves_existing_digests_alone() -> None:
    event = UsageEvent.model_validate(PINNED)
    columns = event_columns([event])
    before = digest_column(columns, {"status": "ok"}).to_pylist()
    # A new field, unset (null) or at its default, as a later schema would carry it.
    for value, default in ((None, None), ("default", "default"), (0, 0)):
        extended = {**columns, "service_tier": pa.array([value])}
        after = digest_column(extended, {"status": "ok", "service_tier": default})
        assert after.to_pylist() == before


def test_a_map_of_counts_encodes_each_count_as_8_bytes() -> None:
    # tool_requests maps a tool to an integer: each count is 8 bytes little-endian two's
    # complement, as documented (the generated events carry string maps only).
    now = datetime(2026, 3, 3, tzinfo=UTC)
    line = json.dumps({**PINNED, "tool_requests": {"web_search": 3, "file_search": 1}}).encode()
    event = UsageEvent.model_validate_json(line)
    assert event.tool_requests == {"web_search": 3, "file_search": 1}
    (digest,) = _digests([line], now)
    assert digest == reference_digest(event)
    assert digest.hex() != PINNED_DIGEST


@pytest.mark.parametrize(
    "change",
    [
        {"input_tokens": 1201},
        {"ts": "2026-03-02T12:00:00.123457+01:00"},
        {"team": "search "},
        {"team": None},
        {"reported_cost_usd": "0.01230000000000001"},
        {"tags": {"plan": "pro"}},
        {"tags": {"plan": "pro", "a": "", "b": ""}},
        {"batch": False},
        {"latency_ms": 812.5000000001},
        {"model": "claude-sonnet-4-5\x00"},
    ],
)
def test_any_change_of_content_changes_the_digest(change: dict[str, Any]) -> None:
    now = datetime(2026, 3, 3, tzinfo=UTC)
    other = json.dumps({**PINNED, **change}).encode()
    assert _digests([other], now)[0].hex() != PINNED_DIGEST


def test_form_does_not_change_the_digest() -> None:
    now = datetime(2026, 3, 3, tzinfo=UTC)
    variants = [
        {**PINNED, "ts": "2026-03-02T11:00:00.123456Z"},
        {**PINNED, "reported_cost_usd": 0.0123, "cache_write_tokens": 0, "schema_version": 1},
        {**PINNED, "tags": {"a": "", "plan": "pro"}, "request_id": None},
        dict(reversed(list(PINNED.items()))),
    ]
    digests = _digests([json.dumps(v).encode() for v in variants], now)
    assert {d.hex() for d in digests} == {PINNED_DIGEST}
    # Negative zero is zero.
    a, b = _digests(
        [json.dumps({**PINNED, "latency_ms": v}).encode() for v in (0.0, -0.0)],
        now,
    )
    assert a == b
