"""POST /v1/events, framework-free: how a body is split, numbered and named (``check_body``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from spendstream.runtime.http.events import MAX_BODY_BYTES, check_body, request_id

NOW = datetime(2026, 11, 1, 12, tzinfo=UTC)
GOOD = {"provider": "openai", "model": "gpt-5-mini", "input_tokens": 7, "output_tokens": 1}


def test_the_body_limit_is_the_documented_32_mib() -> None:
    assert MAX_BODY_BYTES == 32 * 1024 * 1024


def test_a_request_id_is_kept_only_when_a_plain_token_of_at_most_64_characters() -> None:
    for plain in ("r" * 64, "a", "a.b_c:d-1", "A9"):
        assert request_id(plain) == plain
    # '#' and '/' would make the dead letter's source (http:<id>#<line>) ambiguous.
    for other in ("r" * 65, "", None, "has space", "a#1", "a/b", "é", "a\n"):
        fresh = request_id(other)
        assert fresh != other and len(fresh) == 32 and int(fresh, 16) >= 0


def test_blank_lines_count_in_the_line_numbers_of_answers_and_dead_letters() -> None:
    good = json.dumps(GOOD).encode()
    body = b"\n".join([b"", good, b"   ", b"", b"not json", good, b"\t", b"[1]"])
    checked = check_body(body, "application/x-ndjson", NOW, "rid-1")
    assert len(checked.accepted) == 2
    assert [r["line"] for r in checked.rejected] == [5, 8]
    assert [d.source for d in checked.dead_letters] == ["http:rid-1#5", "http:rid-1#8"]
    assert [d.raw for d in checked.dead_letters] == ["not json", "[1]"]


def test_the_media_type_is_matched_without_regard_to_case() -> None:
    pretty = json.dumps({**GOOD, "event_id": "pretty-1"}, indent=2).encode()
    for ctype in ("application/json", "Application/JSON", " APPLICATION/json ; charset=utf-8"):
        checked = check_body(pretty, ctype, NOW, "r")
        assert (len(checked.accepted), checked.rejected) == (1, []), ctype
    # Anything else is JSON Lines: the pretty-printed object is many bad lines.
    assert check_body(pretty, "application/x-ndjson", NOW, "r").accepted == []


def test_an_empty_object_is_refused_for_its_missing_fields_not_as_broken_json() -> None:
    checked = check_body(b'{}\n{ }\n{"provider": "openai"}', "application/x-ndjson", NOW, "r")
    missing = "input_tokens: required field is missing; output_tokens: required field is missing"
    assert [r["error"] for r in checked.rejected] == [
        f"provider: required field is missing; model: required field is missing; {missing}",
        f"provider: required field is missing; model: required field is missing; {missing}",
        f"model: required field is missing; {missing}",
    ]


def test_the_configured_future_skew_is_the_one_applied() -> None:
    ahead = json.dumps({**GOOD, "ts": "2026-11-01T12:30:00Z"}).encode()  # 30 min ahead
    assert check_body(ahead, "application/json", NOW, "r").accepted == []  # default 300 s
    lenient = check_body(ahead, "application/json", NOW, "r", max_future_skew_s=3600)
    assert (len(lenient.accepted), lenient.rejected) == (1, [])
