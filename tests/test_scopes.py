"""The one scope table: parsing, event -> scopes, scope -> event fields."""

from __future__ import annotations

from datetime import UTC, datetime

from spendstream.producers.event import UsageEvent
from spendstream.scopes import event_scopes, is_known_scope, scope_error, scope_fields


def test_known_scopes() -> None:
    checks = ("global", "team:a", "api_key:k", "team:", "org:x", "x")
    assert [is_known_scope(s) for s in checks] == [True, True, True, False, False, False]


def test_scope_error_names_the_kinds() -> None:
    problem = scope_error("org:x")
    assert problem is not None and "team" in problem and "session" in problem
    assert "no value" in (scope_error("team:") or "")


def test_event_scopes_follow_the_requested_kinds_and_skip_missing_fields() -> None:
    ev = UsageEvent(
        event_id="e1",
        ts=datetime(2026, 1, 1, tzinfo=UTC),
        provider="openai",
        model="gpt-5",
        input_tokens=1,
        output_tokens=1,
        team="search",
        user_id="u1",
    )
    assert event_scopes(ev, ["global", "team", "feature", "user"]) == [
        "global",
        "team:search",
        "user:u1",
    ]


def test_scope_fields_maps_back_to_event_fields() -> None:
    assert scope_fields("api_key:k1") == {"api_key_id": "k1"}
    assert scope_fields("user:u") == {"user_id": "u"}
    assert scope_fields("global") == {}


def test_usage_records_are_keyed_by_key_then_session_then_request_then_event() -> None:
    from spendstream.topics import partition_key

    assert partition_key("k", "s", "r", "e") == b"k"
    assert partition_key(None, "s", "r", "e") == b"s"
    # A call with neither key nor session: its request's retries share a partition.
    assert partition_key(None, None, "r", "e") == b"r"
    assert partition_key(None, None, None, "e") == b"e"
