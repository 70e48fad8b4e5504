"""OpenTelemetry GenAI spans -> usage events, with spans made by the real OpenTelemetry SDK
and encoded as its OTLP exporter encodes them (protobuf) and as OTLP/JSON."""

from __future__ import annotations

import gzip
import json
import zlib
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from spendstream.config import OTEL_DEFAULT_ATTRIBUTES, config_from_dict
from spendstream.errors import ConfigError
from spendstream.producers.otel import (
    DecodedTraces,
    OtelMapping,
    OtlpDecodeError,
    decode_traces,
    traces_from_json,
)
from tests.producers.otel_spans import SpanMaker, json_export, protobuf_export

CHAT = {
    "gen_ai.provider.name": "openai",
    "gen_ai.operation.name": "chat",
    "gen_ai.request.model": "gpt-5",
    "gen_ai.usage.input_tokens": 1200,
    "gen_ai.usage.output_tokens": 300,
}
T0 = 1_790_000_000_000_000_000  # ns


def _mapping(otel: dict[str, Any] | None = None) -> OtelMapping:
    return OtelMapping.from_config(config_from_dict({"otel": otel or {}}).otel)


def _both(maker: SpanMaker, mapping: OtelMapping | None = None) -> DecodedTraces:
    """Decode the finished spans as protobuf and as JSON; both must say the same."""
    spans = maker.finished()
    m = mapping or _mapping()
    proto = decode_traces(protobuf_export(spans), "application/x-protobuf", m)
    as_json = decode_traces(json.dumps(json_export(spans)).encode(), "application/json", m)
    assert proto.events == as_json.events
    assert proto.rejected == as_json.rejected
    assert proto.ignored == as_json.ignored
    return proto


def _one(attrs: dict[str, Any], resource: dict[str, Any] | None = None, **kw: Any) -> Any:
    maker = SpanMaker(resource)
    maker.add("chat", attrs, **kw)
    out = _both(maker, kw.pop("mapping", None) if "mapping" in kw else None)
    assert len(out.events) == 1, out.rejected
    return out.events[0]


def test_chat_span_becomes_an_event_with_end_time_duration_and_stable_id() -> None:
    maker = SpanMaker()
    maker.add("chat gpt-5", CHAT, start_ns=T0, end_ns=T0 + 1_234_567_000)
    out = _both(maker)
    (event,) = out.events
    span = maker.finished()[0]
    ctx = span.get_span_context()
    assert event.event_id == f"otel-{ctx.trace_id:032x}-{ctx.span_id:016x}"
    assert event.ts == datetime.fromtimestamp(T0 // 10**9 + 1, UTC).replace(microsecond=234567)
    assert event.latency_ms == pytest.approx(1234.567)
    assert (event.provider, event.model) == ("openai", "gpt-5")
    assert (event.input_tokens, event.output_tokens) == (1200, 300)
    assert (event.cache_read_tokens, event.cache_write_tokens) == (0, 0)
    assert event.status == "ok"
    assert event.tags == {"operation": "chat"}
    # The same span exported again is the same event (a duplicate for the pipeline).
    assert _both(maker).events == [event]


def test_response_model_wins_over_request_model() -> None:
    event = _one({**CHAT, "gen_ai.response.model": "gpt-5-2025-08-07"})
    assert event.model == "gpt-5-2025-08-07"


@pytest.mark.parametrize(
    ("attrs", "provider"),
    [
        ({"gen_ai.provider.name": "aws.bedrock"}, "bedrock"),
        ({"gen_ai.provider.name": "gcp.vertex_ai"}, "google"),
        ({"gen_ai.provider.name": "gcp.gemini"}, "google"),
        ({"gen_ai.provider.name": "azure.ai.openai"}, "azure"),
        ({"gen_ai.provider.name": "x_ai"}, "xai"),
        ({"gen_ai.provider.name": "Anthropic"}, "anthropic"),
        ({"gen_ai.system": "mistral_ai"}, "mistral"),  # the older attribute
        ({"gen_ai.provider.name": "openai", "gen_ai.system": "anthropic"}, "openai"),
    ],
)
def test_provider_names_follow_the_contract(attrs: dict[str, Any], provider: str) -> None:
    base = {k: v for k, v in CHAT.items() if k != "gen_ai.provider.name"}
    assert _one({**base, **attrs}).provider == provider


def test_cache_tokens_are_part_of_input_as_the_conventions_say() -> None:
    event = _one(
        {
            **CHAT,
            "gen_ai.usage.cache_read.input_tokens": 800,
            "gen_ai.usage.cache_creation.input_tokens": 100,
        }
    )
    assert (event.input_tokens, event.cache_read_tokens, event.cache_write_tokens) == (
        1200,
        800,
        100,
    )


def test_deprecated_and_openllmetry_token_names_are_read() -> None:
    event = _one(
        {
            "gen_ai.system": "anthropic",
            "gen_ai.request.model": "claude-sonnet-4-5",
            "gen_ai.usage.prompt_tokens": 500,
            "gen_ai.usage.completion_tokens": 40,
            "gen_ai.usage.cache_read_input_tokens": 300,
            "gen_ai.usage.cache_creation_input_tokens": 100,
        }
    )
    assert (event.input_tokens, event.output_tokens) == (500, 40)
    assert (event.cache_read_tokens, event.cache_write_tokens) == (300, 100)


def test_current_token_names_win_over_deprecated_ones() -> None:
    event = _one({**CHAT, "gen_ai.usage.prompt_tokens": 1, "gen_ai.usage.completion_tokens": 2})
    assert (event.input_tokens, event.output_tokens) == (1200, 300)


ANTHROPIC_OWN_COUNTS = {
    "gen_ai.provider.name": "anthropic",
    "gen_ai.request.model": "claude-sonnet-4-5",
    "gen_ai.usage.input_tokens": 20,  # Anthropic's input_tokens: without the cached parts
    "gen_ai.usage.output_tokens": 90,
    "gen_ai.usage.cache_read.input_tokens": 1000,
    "gen_ai.usage.cache_creation.input_tokens": 200,
}


def test_cached_tokens_over_input_are_rejected_naming_the_setting() -> None:
    maker = SpanMaker()
    maker.add("chat claude", ANTHROPIC_OWN_COUNTS)
    out = _both(maker)
    assert out.events == [] and out.ignored == 0
    (rejected,) = out.rejected
    assert rejected.position == "resourceSpans[0].scopeSpans[0].spans[0]"
    assert "exceed gen_ai.usage.input_tokens (20)" in rejected.error
    assert 'add "anthropic" to [otel] input_excludes_cache' in rejected.error
    assert json.loads(rejected.raw)["attributes"]["gen_ai.usage.input_tokens"] == 20


def test_input_excludes_cache_adds_cached_tokens_for_the_listed_providers() -> None:
    maker = SpanMaker()
    maker.add("chat claude", ANTHROPIC_OWN_COUNTS)
    maker.add("chat gpt", {**CHAT, "gen_ai.usage.cache_read.input_tokens": 1000})
    out = _both(maker, _mapping({"input_excludes_cache": ["Anthropic"]}))
    claude, gpt = sorted(out.events, key=lambda e: e.provider)
    assert (claude.input_tokens, claude.cache_read_tokens, claude.cache_write_tokens) == (
        1220,
        1000,
        200,
    )
    assert gpt.input_tokens == 1200  # openai is not listed: read as the conventions say


def test_cached_tokens_equal_to_input_are_accepted() -> None:
    event = _one({**CHAT, "gen_ai.usage.cache_read.input_tokens": 1200})
    assert event.cache_read_tokens == event.input_tokens == 1200


@pytest.mark.parametrize(
    ("attrs", "error", "status"),
    [
        ({}, False, "ok"),
        ({}, True, "error"),
        ({"error.type": "RateLimitError"}, False, "error"),
        ({"error.type": "APITimeoutError"}, True, "timeout"),
        ({"error.type": "timeout"}, False, "timeout"),
    ],
)
def test_error_status_and_error_type_set_status(
    attrs: dict[str, Any], error: bool, status: str
) -> None:
    assert _one({**CHAT, **attrs}, error=error).status == status


def test_failed_call_without_usage_is_still_an_event_flagged_usage_missing() -> None:
    attrs = {k: v for k, v in CHAT.items() if "usage" not in k}
    event = _one(attrs, error=True)
    assert (event.input_tokens, event.output_tokens, event.status) == (0, 0, "error")
    assert event.tags == {"operation": "chat", "usage": "missing"}


def test_embeddings_span_is_an_event_with_its_operation() -> None:
    event = _one(
        {
            "gen_ai.provider.name": "openai",
            "gen_ai.operation.name": "embeddings",
            "gen_ai.request.model": "text-embedding-3-small",
            "gen_ai.usage.input_tokens": 64,
        }
    )
    assert (event.model, event.input_tokens, event.output_tokens) == (
        "text-embedding-3-small",
        64,
        0,
    )
    assert event.tags == {"operation": "embeddings"}


def test_other_spans_and_agent_spans_are_ignored_and_counted() -> None:
    maker = SpanMaker()
    maker.add("GET /search", {"http.request.method": "GET"})
    maker.add("db", {"db.system.name": "postgresql"})
    maker.add("agent", {**CHAT, "gen_ai.operation.name": "invoke_agent"})
    maker.add("tool", {"gen_ai.provider.name": "openai", "gen_ai.operation.name": "execute_tool"})
    maker.add("chat", CHAT)
    out = _both(maker)
    assert (len(out.events), len(out.rejected), out.ignored, out.spans) == (1, 0, 4, 5)
    # Configurable: an empty list meters agent spans too (the tool span names no model).
    metered = _both(maker, _mapping({"ignore_operations": []}))
    assert (len(metered.events), len(metered.rejected), metered.ignored) == (2, 1, 2)


@pytest.mark.parametrize(
    ("attrs", "why"),
    [
        ({"gen_ai.provider.name": "openai", "gen_ai.usage.input_tokens": 5}, "neither"),
        ({**CHAT, "gen_ai.usage.input_tokens": -1}, "not a token count"),
        ({**CHAT, "gen_ai.usage.output_tokens": "many"}, "not a token count"),
        ({**CHAT, "gen_ai.usage.output_tokens": 1.5}, "not a token count"),
        ({**CHAT, "gen_ai.request.model": "m" * 300}, "model"),
        ({**CHAT, "spendstream.turn": "third"}, "turn attribute"),
        ({**CHAT, "spendstream.reported_cost_usd": "cheap"}, "reported_cost_usd"),
    ],
)
def test_spans_that_cannot_be_events_are_rejected_with_a_reason(
    attrs: dict[str, Any], why: str
) -> None:
    maker = SpanMaker()
    maker.add("bad", attrs)
    out = _both(maker)
    assert out.events == [] and len(out.rejected) == 1
    assert why in out.rejected[0].error
    assert out.rejected[0].error.startswith("span 'bad' (")


def test_a_span_ending_past_the_year_9999_is_rejected_alone() -> None:
    # OTLP/JSON carries the time as a decimal string of any length: such a span made the
    # whole export fail (ValueError out of datetime), every other span with it.
    maker = SpanMaker()
    maker.add("far", CHAT)
    maker.add("near", CHAT)
    export = json_export(maker.finished())
    spans = export["resourceSpans"][0]["scopeSpans"][0]["spans"]
    far = next(s for s in spans if s["name"] == "far")
    far["endTimeUnixNano"] = "99999999999999999999999"
    out = decode_traces(json.dumps(export).encode(), "application/json", _mapping())
    assert len(out.events) == 1 and len(out.rejected) == 1
    error = out.rejected[0].error
    assert error.startswith("span 'far' (")
    assert error.endswith(
        "endTimeUnixNano 99999999999999999999999 is not a time (past the year 9999)"
    )


def test_integral_doubles_are_token_counts() -> None:
    # JavaScript SDKs export numbers as doubles.
    event = _one({**CHAT, "gen_ai.usage.input_tokens": 812.0, "gen_ai.usage.output_tokens": 9.0})
    assert (event.input_tokens, event.output_tokens) == (812, 9)


def test_zero_token_counts_are_counts_not_missing_usage() -> None:
    # An embeddings call's 0 output tokens, a call that hit its length limit at once: both
    # are token counts the conventions allow (>= 0), so the span is an event, not rejected.
    event = _one(
        {**CHAT, "gen_ai.usage.output_tokens": 0, "gen_ai.usage.cache_read.input_tokens": 0}
    )
    assert (event.input_tokens, event.output_tokens, event.cache_read_tokens) == (1200, 0, 0)
    assert event.tags == {"operation": "chat"}


def test_a_span_that_ends_when_it_starts_has_latency_zero() -> None:
    maker = SpanMaker()
    maker.add("chat gpt-5", CHAT, start_ns=T0, end_ns=T0)
    (event,) = _both(maker).events
    assert event.latency_ms == 0.0


# -- attribution --------------------------------------------------------------------------

FIELD_VALUES: dict[str, tuple[Any, Any]] = {
    # field: (attribute value, event value)
    "team": ("search", "search"),
    "feature": ("semantic-search", "semantic-search"),
    "project": ("apollo", "apollo"),
    "environment": ("prod", "prod"),
    "cost_center": ("cc-42", "cc-42"),
    "user_id": ("u-123", "u-123"),
    "api_key_id": ("key-prod", "key-prod"),
    "session_id": ("conv-9", "conv-9"),
    "parent_session_id": ("conv-1", "conv-1"),
    "request_id": ("req-7", "req-7"),
    "turn": (3, 3),
    "attempt": (2, 2),
    "reported_cost_usd": (0.0125, Decimal("0.0125")),
}
MAPPED = [(f, key) for f, keys in OTEL_DEFAULT_ATTRIBUTES.items() for key in keys]


def test_every_field_of_the_mapping_has_a_case() -> None:
    assert set(FIELD_VALUES) == set(OTEL_DEFAULT_ATTRIBUTES)


@pytest.mark.parametrize(("field", "key"), MAPPED)
def test_each_default_attribute_fills_its_field_from_span_or_resource(field: str, key: str) -> None:
    value, expected = FIELD_VALUES[field]
    on_span = _one({**CHAT, key: value})
    assert getattr(on_span, field) == expected
    if key != "service.name":  # the SDK always sets a resource service.name; tested below
        on_resource = _one(CHAT, resource={key: value})
        assert getattr(on_resource, field) == expected


def test_span_attribute_beats_the_resource_and_earlier_keys_beat_later_ones() -> None:
    event = _one(
        {**CHAT, "service.namespace": "span-ns", "gen_ai.conversation.id": "conv-span"},
        resource={"service.namespace": "res-ns", "spendstream.session_id": "sess-res"},
    )
    assert event.team == "span-ns"  # same key on both: the span's
    assert event.session_id == "sess-res"  # spendstream.session_id comes before the conversation


def test_service_name_is_the_feature_but_not_the_sdk_placeholder() -> None:
    assert _one(CHAT, resource={"service.name": "checkout"}).feature == "checkout"
    assert _one(CHAT).feature is None  # the SDK's unknown_service:python


def test_configured_attributes_replace_a_fields_defaults_and_empty_turns_it_off() -> None:
    mapping = _mapping({"attributes": {"team": ["app.team"], "feature": []}})
    maker = SpanMaker({"service.name": "checkout", "service.namespace": "payments"})
    maker.add("chat", {**CHAT, "app.team": "billing"})
    (event,) = _both(maker, mapping).events
    assert (event.team, event.feature) == ("billing", None)
    assert mapping.attributes["session_id"] == tuple(OTEL_DEFAULT_ATTRIBUTES["session_id"])


def test_tag_attributes_are_copied_into_tags() -> None:
    mapping = _mapping({"tag_attributes": ["server.address", "gen_ai.request.temperature"]})
    maker = SpanMaker()
    maker.add(
        "chat", {**CHAT, "server.address": "api.openai.com", "gen_ai.request.temperature": 0.5}
    )
    (event,) = _both(maker, mapping).events
    assert event.tags == {
        "operation": "chat",
        "server.address": "api.openai.com",
        "gen_ai.request.temperature": "0.5",
    }


def test_unknown_otel_config_keys_and_fields_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"otel\.attributes\.teem"):
        config_from_dict({"otel": {"attributes": {"teem": ["x"]}}})
    with pytest.raises(ConfigError, match=r"otel\.ignore_span"):
        config_from_dict({"otel": {"ignore_span": []}})


# -- the wire -----------------------------------------------------------------------------


def _export() -> tuple[bytes, bytes]:
    maker = SpanMaker()
    maker.add("chat", CHAT)
    spans = maker.finished()
    return protobuf_export(spans), json.dumps(json_export(spans)).encode()


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "GZIP", "identity", None])
def test_compressed_and_plain_bodies_decode_alike(encoding: str | None) -> None:
    proto, as_json = _export()
    m = _mapping()
    expected = decode_traces(proto, "application/x-protobuf", m).events
    assert len(expected) == 1
    for body, ctype in ((proto, "application/x-protobuf"), (as_json, "application/json")):
        if encoding and encoding.lower() == "gzip":
            body = gzip.compress(body)
        elif encoding == "deflate":
            body = zlib.compress(body)
        out = decode_traces(body, ctype + "; charset=utf-8", m, content_encoding=encoding)
        assert out.events == expected


@pytest.mark.parametrize(
    ("body", "ctype", "encoding", "status", "message"),
    [
        (b"x", "text/plain", None, 415, "unsupported Content-Type"),
        (b"x", "application/json", "br", 415, "unsupported Content-Encoding"),
        (b"not gzip", "application/json", "gzip", 400, "not valid gzip"),
        (gzip.compress(b"{}")[:-6], "application/json", "gzip", 400, "truncated"),
        (b"{not json", "application/json", None, 400, "not JSON"),
        (b"[1, 2]", "application/json", None, 400, "resourceSpans"),
        (b"\xff\xff\xff\xff", "application/x-protobuf", None, 400, "ExportTraceServiceRequest"),
    ],
)
def test_unreadable_bodies_raise_with_the_otlp_status(
    body: bytes, ctype: str, encoding: str | None, status: int, message: str
) -> None:
    with pytest.raises(OtlpDecodeError, match=message) as err:
        decode_traces(body, ctype, _mapping(), content_encoding=encoding)
    assert err.value.http_status == status


def test_a_decompression_bomb_is_refused_at_the_bound() -> None:
    bomb = gzip.compress(b"{" + b" " * (1 << 20) + b"}")
    with pytest.raises(OtlpDecodeError) as err:
        decode_traces(
            bomb, "application/json", _mapping(), content_encoding="gzip", max_bytes=1 << 16
        )
    assert err.value.http_status == 413
    within = decode_traces(
        bomb, "application/json", _mapping(), content_encoding="gzip", max_bytes=(1 << 20) + 2
    )
    assert within.spans == 0


def test_otlp_json_variants_are_read() -> None:
    """int64 as numbers or strings, snake_case keys, base64 ids, the enum's name."""
    trace, span = "5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174"
    request = {
        "resource_spans": [
            {
                "resource": {
                    "attributes": [{"key": "service.namespace", "value": {"stringValue": "ns"}}]
                },
                "scope_spans": [
                    {
                        "spans": [
                            {
                                "trace_id": "W47/95gDgQPSabYzgT/GDA==",
                                "span_id": span.upper(),
                                "name": "chat",
                                "start_time_unix_nano": T0,
                                "endTimeUnixNano": str(T0 + 2_000_000),
                                "status": {"code": "STATUS_CODE_ERROR"},
                                "attributes": [
                                    {"key": k, "value": v}
                                    for k, v in {
                                        "gen_ai.provider.name": {"stringValue": "openai"},
                                        "gen_ai.request.model": {"string_value": "gpt-5"},
                                        "gen_ai.usage.input_tokens": {"intValue": "70"},
                                        "gen_ai.usage.output_tokens": {"int_value": 7},
                                        "spendstream.turn": {"doubleValue": 4.0},
                                        "spendstream.user_id": {"boolValue": True},
                                        "ignored.list": {"arrayValue": {"values": []}},
                                        "ignored.map": {"kvlistValue": {"values": []}},
                                        "ignored.bytes": {"bytesValue": "AAE="},
                                        "ignored.empty": {},
                                    }.items()
                                ],
                            }
                        ]
                    }
                ],
            }
        ]
    }
    (event,) = traces_from_json(request, _mapping()).events
    assert event.event_id == f"otel-{trace}-{span}"
    assert (event.input_tokens, event.output_tokens, event.turn) == (70, 7, 4)
    assert (event.status, event.team, event.user_id) == ("error", "ns", "true")
    assert event.latency_ms == 2.0


TRACE_ID, SPAN_ID = "5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174"


def _one_chat_span(span: dict[str, Any]) -> Any:
    """``span`` (ids, times, status) as an OTLP/JSON chat call to openai/gpt-5, converted."""
    attributes = [
        {"key": "gen_ai.provider.name", "value": {"stringValue": "openai"}},
        {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-5"}},
    ]
    request = {"resourceSpans": [{"scopeSpans": [{"spans": [{**span, "attributes": attributes}]}]}]}
    return traces_from_json(request, _mapping())


@pytest.mark.parametrize(
    ("ids", "why"),
    [
        ({"traceId": "", "spanId": "eee19b7ec3c1b174"}, "no trace id"),
        ({"traceId": "0" * 32, "spanId": "eee19b7ec3c1b174"}, "no trace id"),
        ({"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "zz"}, "no trace id"),
    ],
)
def test_spans_without_ids_are_rejected(ids: dict[str, str], why: str) -> None:
    out = _one_chat_span({**ids, "name": "chat", "endTimeUnixNano": str(T0)})
    assert out.events == [] and why in out.rejected[0].error


def test_a_span_without_end_time_is_rejected() -> None:
    out = _one_chat_span({"traceId": TRACE_ID, "spanId": SPAN_ID})
    assert "no end time" in out.rejected[0].error


# -- pinned by a mutation pass --------------------------------------------------------------


def test_a_blank_provider_name_is_not_a_genai_span() -> None:
    maker = SpanMaker()
    maker.add("blank", {**CHAT, "gen_ai.provider.name": "  "})
    out = _both(maker)
    assert (out.events, out.rejected, out.ignored) == ([], [], 1)


def test_a_span_without_start_time_has_no_latency() -> None:
    out = _one_chat_span(
        {"traceId": TRACE_ID, "spanId": SPAN_ID, "name": "chat", "endTimeUnixNano": str(T0)}
    )
    (event,) = out.events
    assert event.latency_ms is None


def test_a_long_tag_attribute_is_cut_to_the_contracts_tag_length() -> None:
    mapping = _mapping({"tag_attributes": ["server.address"]})
    maker = SpanMaker()
    maker.add("chat", {**CHAT, "server.address": "h" * 300})
    (event,) = _both(maker, mapping).events
    assert event.tags is not None and event.tags["server.address"] == "h" * 256


def test_empty_and_list_attributes_are_skipped_for_the_next_one() -> None:
    event = _one(
        {**CHAT, "spendstream.team": "", "team": ["a", "b"], "spendstream.user_id": ["u-1"]},
        resource={"service.namespace": "res-ns", "user.id": "u-res"},
    )
    assert (event.team, event.user_id) == ("res-ns", "u-res")


def test_a_boolean_token_count_is_rejected() -> None:
    maker = SpanMaker()
    maker.add("bad", {**CHAT, "gen_ai.usage.output_tokens": True})
    out = _both(maker)
    assert out.events == [] and "not a token count" in out.rejected[0].error


@pytest.mark.parametrize("ctype", ["application/protobuf", "Application/X-Protobuf"])
def test_protobuf_content_types_are_read_in_any_case(ctype: str) -> None:
    proto, _ = _export()
    assert len(decode_traces(proto, ctype, _mapping()).events) == 1
    _, as_json = _export()
    assert len(decode_traces(as_json, "Application/JSON", _mapping()).events) == 1


def test_a_plain_body_of_exactly_the_bound_is_read() -> None:
    _, as_json = _export()
    out = decode_traces(as_json, "application/json", _mapping(), max_bytes=len(as_json))
    assert len(out.events) == 1
    with pytest.raises(OtlpDecodeError) as err:
        decode_traces(as_json, "application/json", _mapping(), max_bytes=len(as_json) - 1)
    assert err.value.http_status == 413


def test_the_error_status_enum_name_is_read_in_any_case() -> None:
    out = _one_chat_span(
        {"traceId": TRACE_ID, "spanId": SPAN_ID, "name": "chat", "endTimeUnixNano": str(T0)}
        | {"status": {"code": "status_code_error"}}
    )
    assert out.events[0].status == "error"


def test_a_protobuf_span_with_an_all_zero_trace_id_is_rejected() -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    proto, _ = _export()
    request = ExportTraceServiceRequest.FromString(proto)
    request.resource_spans[0].scope_spans[0].spans[0].trace_id = bytes(16)
    out = decode_traces(request.SerializeToString(), "application/x-protobuf", _mapping())
    assert out.events == [] and "no trace id" in out.rejected[0].error
