"""The POST /v1/traces handler, framework-free: what it publishes and what it answers."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime

import pytest
from google.protobuf import json_format
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from spendstream.producers.event import UsageEvent
from spendstream.producers.otel import OtelMapping
from spendstream.runtime.http.traces import SOURCE, receive_traces
from spendstream.topics import partition_key
from tests.producers.otel_spans import SpanMaker, json_export, protobuf_export

NOW = datetime(2026, 11, 1, tzinfo=UTC)
CHAT = {
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-5",
    "gen_ai.usage.input_tokens": 10,
    "gen_ai.usage.output_tokens": 2,
    "spendstream.api_key_id": "key-1",
}
BAD = {**CHAT, "gen_ai.usage.cache_read.input_tokens": 50}


def _spans(*attrs: dict[str, object]) -> tuple[bytes, bytes]:
    maker = SpanMaker()
    maker.add("GET /", {"http.request.method": "GET"})
    for a in attrs:
        maker.add("chat", a)
    spans = maker.finished()
    return protobuf_export(spans), json.dumps(json_export(spans)).encode()


def _receive(body: bytes, ctype: str, encoding: str | None = None):  # type: ignore[no-untyped-def]
    return receive_traces(
        body,
        content_type=ctype,
        content_encoding=encoding,
        mapping=OtelMapping.from_config(),
        received_at=NOW,
    )


def test_full_success_publishes_keyed_events_and_answers_an_empty_response() -> None:
    proto, as_json = _spans(CHAT, {**CHAT, "spendstream.api_key_id": "key-2"})
    answer = _receive(gzip.compress(proto), "application/x-protobuf", "gzip")
    assert (answer.status, answer.content_type) == (200, "application/x-protobuf")
    parsed = ExportTraceServiceResponse.FromString(answer.body)
    assert not parsed.HasField("partial_success")
    assert (answer.rejected, answer.ignored, answer.dead_letters) == (0, 1, [])
    events = [UsageEvent.model_validate_json(raw) for _, raw in answer.accepted]
    assert [e.api_key_id for e in events] == ["key-1", "key-2"]
    assert [k for k, _ in answer.accepted] == [
        partition_key(e.api_key_id, e.session_id, e.request_id, e.event_id) for e in events
    ]
    as_json_answer = _receive(as_json, "application/json")
    assert (as_json_answer.content_type, json.loads(as_json_answer.body)) == (
        "application/json",
        {},
    )
    assert as_json_answer.accepted == answer.accepted


def test_rejected_spans_are_dead_lettered_and_reported_as_partial_success() -> None:
    proto, as_json = _spans(CHAT, BAD, BAD, BAD, BAD)
    answer = _receive(proto, "application/x-protobuf")
    assert answer.status == 200 and len(answer.accepted) == 1
    partial = ExportTraceServiceResponse.FromString(answer.body).partial_success
    assert partial.rejected_spans == 4
    assert partial.error_message.startswith("4 of 6 spans rejected (dead-lettered): span 'chat'")
    assert partial.error_message.endswith("; and 1 more")
    assert [d.source for d in answer.dead_letters] == [SOURCE] * 4
    assert all("input_excludes_cache" in d.error for d in answer.dead_letters)
    # The span's name and id say which one; its place in this export would defeat the
    # deduplication of a re-exported span's dead letter.
    assert answer.dead_letters[0].error.startswith("span 'chat' (")
    assert answer.dead_letters[0].received_at == NOW
    body = json.loads(_receive(as_json, "application/json").body)
    assert body["partialSuccess"]["rejectedSpans"] == "4"  # int64: a string in OTLP/JSON


@pytest.mark.parametrize(
    ("body", "ctype", "encoding", "status"),
    [
        (b"{x", "application/json", None, 400),
        (b"\xff\xff", "application/x-protobuf", None, 400),
        (b"x", "application/x-protobuf", "zstd", 415),
        (b"x", "text/csv", None, 415),
    ],
)
def test_unreadable_bodies_answer_a_status_message_in_the_request_encoding(
    body: bytes, ctype: str, encoding: str | None, status: int
) -> None:
    answer = _receive(body, ctype, encoding)
    assert answer.status == status
    assert answer.accepted == [] and answer.dead_letters == []
    if ctype == "application/json":
        assert answer.content_type == "application/json"
        message = json_format.Parse(answer.body, Status()).message
    else:
        assert answer.content_type == "application/x-protobuf"
        message = Status.FromString(answer.body).message
    assert message


def test_as_many_rejected_spans_as_reasons_shown_are_reported_without_more() -> None:
    proto, _ = _spans(CHAT, BAD, BAD, BAD)
    partial = ExportTraceServiceResponse.FromString(
        _receive(proto, "application/x-protobuf").body
    ).partial_success
    assert partial.rejected_spans == 3
    assert partial.error_message.startswith("3 of 5 spans rejected (dead-lettered): span 'chat'")
    assert "more" not in partial.error_message


def test_an_event_without_an_api_key_is_keyed_by_its_session_and_sent_without_nulls() -> None:
    attrs = {k: v for k, v in CHAT.items() if k != "spendstream.api_key_id"}
    proto, _ = _spans({**attrs, "spendstream.session_id": "s-1", "spendstream.request_id": "r-1"})
    ((key, raw),) = _receive(proto, "application/x-protobuf").accepted
    assert key == b"s-1"
    assert b"null" not in raw


def test_a_json_request_in_capitals_is_answered_in_json() -> None:
    _, as_json = _spans(CHAT)
    answer = _receive(as_json, "Application/JSON; charset=utf-8")
    assert (answer.status, answer.content_type, json.loads(answer.body)) == (
        200,
        "application/json",
        {},
    )
