"""A breaker reset command as the loops read it off the usage and partials topics: what
``breakers reset`` writes is applied; anything else is refused with its reason (and the
loops log it and go on), so no record can reset a breaker at a time it was not made."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from spendstream.runtime.kafka.wire import RESET, decode_reset, encode_reset
from spendstream.signing import RecordSigner

NOW = datetime(2026, 12, 2, 5, 0, tzinfo=UTC)
SKEW = 300


def _decode(value: bytes, signer: RecordSigner | None = None, key: bytes | None = None):  # type: ignore[no-untyped-def]
    return decode_reset(key, value, [], signer, NOW, SKEW)


def test_what_breakers_reset_writes_is_read_back() -> None:
    earliest = datetime(2015, 1, 1, tzinfo=UTC)  # as early as an event's ts may be
    for ts in (NOW, NOW - timedelta(days=3), NOW + timedelta(seconds=SKEW), earliest):
        value, headers = encode_reset("team:search", ts, None, None)
        assert headers[0][1] == RESET
        cmd = _decode(value)
        assert (cmd.scope, cmd.ts) == ("team:search", ts)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"not json", "malformed"),
        (b'{"scope": "team:search"}', "malformed"),
        (b'{"scope": "team:search", "ts": "yesterday"}', "malformed"),
        (b'{"scope": "teams:search", "ts": "2026-12-02T05:00:00+00:00"}', "must be 'global'"),
        (b'{"scope": "team:", "ts": "2026-12-02T05:00:00+00:00"}', "has no value"),
        (b'{"scope": "team:search", "ts": "2026-12-02T05:00:00"}', "has no UTC offset"),
        # One second past the skew: it would stand as the scope's latest event, past
        # every breaker that opens before then.
        (b'{"scope": "team:search", "ts": "2026-12-02T05:05:01+00:00"}', "max_future_skew_s"),
        (b'{"scope": "team:search", "ts": "9999-12-31T23:59:59+00:00"}', "max_future_skew_s"),
        # Before year 1 in UTC: no time at all (the warehouse's day of it fails every commit).
        (b'{"scope": "team:search", "ts": "0001-01-01T00:00:00+05:00"}', "out of range in UTC"),
        (b'{"scope": "team:search", "ts": "9999-12-31T23:59:59-05:00"}', "out of range in UTC"),
        # Before any metered call, as an event's ts is (docs/bounds.md).
        (b'{"scope": "team:search", "ts": "0001-01-01T00:00:00+00:00"}', "before 2015"),
        (b'{"scope": "team:search", "ts": "2014-12-31T23:59:59+00:00"}', "before 2015"),
    ],
)
def test_anything_else_is_refused_with_its_reason(value: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        _decode(value)


def test_with_a_key_only_a_command_signed_with_it_is_applied() -> None:
    signer = RecordSigner(b"k" * 32)
    value, headers = encode_reset("team:search", NOW, b"team:search", signer)
    assert decode_reset(b"team:search", value, headers, signer, NOW, SKEW).scope == "team:search"
    forged = orjson.dumps({"scope": "team:other", "ts": NOW.isoformat()})
    with pytest.raises(ValueError, match="not signed"):
        decode_reset(b"team:search", forged, headers, signer, NOW, SKEW)
    with pytest.raises(ValueError, match="not signed"):
        decode_reset(b"team:search", value, [], signer, NOW, SKEW)
