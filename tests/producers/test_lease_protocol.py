"""The lease messages on the wire: exact round trips, money as strings, clear refusals."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spendstream.producers.lease_protocol import (
    MAX_TEXT,
    LeaseGrant,
    LeaseRefusal,
    LeaseRelease,
    LeaseRequest,
    LeaseSettle,
    decode,
    encode,
)

money = st.decimals(min_value=0, max_value=10**9, places=18, allow_nan=False)
ident = st.text(min_size=1, max_size=40)
T = datetime(2026, 5, 12, 10, 0, tzinfo=UTC)


@given(scope=ident, client=ident, rid=ident, need=money, want=money, used=money, late=money)
def test_every_message_survives_the_wire_exactly(
    scope: str, client: str, rid: str, need: Decimal, want: Decimal, used: Decimal, late: Decimal
) -> None:
    messages = [
        LeaseRequest(scope, client, rid, need, want),
        LeaseSettle(scope, client, rid, used, late),
        LeaseRelease(scope, client, rid, used, late, need),
        LeaseGrant(scope, rid, client, want, 12.5, T),
        LeaseRefusal(scope, rid, "exhausted", scope, need, want, used, 3.0),
        LeaseRefusal(scope, rid, "unbudgeted", "", need, Decimal(0), Decimal(0), None),
    ]
    for message in messages:
        assert decode(encode(message)) == message


def test_money_travels_as_decimal_strings_and_times_in_utc() -> None:
    grant = LeaseGrant(
        "team:a", "r1", "l1", Decimal("0.100"), 30.0, T.astimezone(timezone(timedelta(hours=2)))
    )
    wire = json.loads(encode(grant))
    assert wire == {
        "v": 1,
        "op": "grant",
        "scope": "team:a",
        "request_id": "r1",
        "lease_id": "l1",
        "amount_usd": "0.100",
        "ttl_s": 30.0,
        "expires_at": "2026-05-12T10:00:00+00:00",
    }


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "not JSON"),
        (b"[]", "JSON object"),
        (b'{"v": 2, "op": "request"}', "version 2"),
        (b'{"v": 1, "op": "steal"}', "unknown lease message op 'steal'"),
        (b'{"v": 1, "op": "settle", "scope": "s"}', "settle message lacks 'client_id'"),
        # Deeper than Python's stack: a RecursionError, no ValueError, stopped the server.
        (b"[" * 100_000, "nested too deeply"),
    ],
)
def test_a_bad_message_is_refused_with_what_is_wrong(raw: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode(raw)


def _request(**over: object) -> bytes:
    base = {
        "v": 1,
        "op": "request",
        "scope": "team:a",
        "client_id": "c",
        "request_id": "r",
        "need_usd": "1",
        "want_usd": "2",
    }
    return json.dumps({**base, **over}).encode()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("need_usd", 1.5, "need_usd must be a decimal string"),
        ("need_usd", "-1", "amount >= 0 and below 1e20"),
        ("want_usd", "NaN", "amount >= 0 and below 1e20"),
        # Finite, but the first sum a lease server puts it in would overflow (spendstream.money).
        ("want_usd", "9e999999", "amount >= 0 and below 1e20"),
        ("need_usd", "1e20", "amount >= 0 and below 1e20"),
        ("want_usd", "lots", "not a decimal"),
        ("scope", "", "scope must be a non-empty string"),
        ("client_id", 7, "client_id must be a non-empty string"),
        # Echoed in replies and dead letters: past a record's limit, neither could be sent.
        ("request_id", "r" * 1025, "request_id is 1025 characters long, more than 1024"),
        # No UTF-8 carries it: encoding the reply's key failed, outside every handler.
        ("client_id", "\udcff", "a string holds \\\\udcff, a lone surrogate"),
        ("scope", {"k": ["ok", "\ud800"]}, "lone surrogate"),
    ],
)
def test_a_bad_field_is_named(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode(_request(**{field: value}))


def test_the_largest_amount_below_1e20_is_taken_at_full_precision() -> None:
    largest = "99999999999999999999.999999999999999999"  # what DECIMAL(38,18) holds
    request = decode(_request(need_usd=largest, want_usd=largest))
    assert isinstance(request, LeaseRequest) and request.need_usd == Decimal(largest)


def test_a_grant_needs_an_aware_expiry_and_a_numeric_ttl() -> None:
    good = json.loads(encode(LeaseGrant("s", "r", "l", Decimal(1), 1.0, T)))
    with pytest.raises(ValueError, match="UTC offset"):
        decode(json.dumps({**good, "expires_at": "2026-05-12T10:00:00"}))
    for outside in ("0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"):
        with pytest.raises(ValueError, match="out of range in UTC"):
            decode(json.dumps({**good, "expires_at": outside}))
    with pytest.raises(ValueError, match="ttl_s must be a number"):
        decode(json.dumps({**good, "ttl_s": "30"}))
    with pytest.raises(ValueError, match="reason must be"):
        bad = json.loads(encode(LeaseRefusal("s", "r", "exhausted", "b", *[Decimal(0)] * 3, None)))
        decode(json.dumps({**bad, "reason": "tired"}))


def test_the_longest_string_is_taken_and_a_refusal_quotes_at_most_80_characters() -> None:
    request = decode(_request(scope="s" * MAX_TEXT))
    assert isinstance(request, LeaseRequest) and request.scope == "s" * MAX_TEXT
    with pytest.raises(ValueError) as caught:
        decode(_request(v="x" * 1_000_000))
    assert str(caught.value) == f"lease message version '{'x' * 76}... is not 1"
