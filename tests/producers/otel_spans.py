"""Spans made by the real OpenTelemetry SDK, and their OTLP encodings (protobuf and JSON)."""

from __future__ import annotations

import base64
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

AttrValue = str | bool | int | float | Sequence[str]


# GenAI span attributes the Kafka/HTTP trace tests export (semantic conventions names).
GENAI_CHAT: dict[str, AttrValue] = {
    "gen_ai.provider.name": "openai",
    "gen_ai.operation.name": "chat",
    "gen_ai.request.model": "gpt-4o-mini",
    "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
    "gen_ai.usage.input_tokens": 2000,
    "gen_ai.usage.output_tokens": 300,
    "gen_ai.usage.cache_read.input_tokens": 1024,
    "gen_ai.conversation.id": "conv-1",
}
GENAI_CLAUDE: dict[str, AttrValue] = {
    "gen_ai.provider.name": "anthropic",
    "gen_ai.operation.name": "chat",
    "gen_ai.request.model": "claude-sonnet-4-5",
    "gen_ai.usage.input_tokens": 1500,
    "gen_ai.usage.output_tokens": 120,
    "gen_ai.usage.cache_creation.input_tokens": 1000,
}
GENAI_EMBEDDINGS: dict[str, AttrValue] = {
    "gen_ai.provider.name": "openai",
    "gen_ai.operation.name": "embeddings",
    "gen_ai.request.model": "text-embedding-3-small",
    "gen_ai.usage.input_tokens": 4000,
}
GENAI_BAD: dict[str, AttrValue] = {
    **GENAI_CHAT,
    "gen_ai.usage.input_tokens": 10,
}  # 1024 cached tokens in an input of 10


class SpanMaker:
    """A tracer provider of its own (never the global one) that keeps finished spans."""

    def __init__(self, resource: Mapping[str, AttrValue] | None = None) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider(resource=Resource.create(dict(resource or {})))
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("spendstream-tests")

    @contextmanager
    def span(
        self,
        name: str,
        attributes: Mapping[str, AttrValue] | None = None,
        *,
        error: bool = False,
        start_ns: int | None = None,
        end_ns: int | None = None,
    ) -> Iterator[Any]:
        span = self.tracer.start_span(name, attributes=dict(attributes or {}), start_time=start_ns)
        try:
            yield span
        finally:
            if error:
                span.set_status(Status(StatusCode.ERROR, "failed"))
            span.end(end_time=end_ns)

    def add(self, name: str, attributes: Mapping[str, AttrValue] | None = None, **kw: Any) -> None:
        with self.span(name, attributes, **kw):
            pass

    def finished(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())


def protobuf_export(spans: Sequence[ReadableSpan]) -> bytes:
    """What OTLPSpanExporter posts: an ExportTraceServiceRequest, binary protobuf."""
    return bytes(encode_spans(spans).SerializeToString())


def json_export(spans: Sequence[ReadableSpan]) -> dict[str, Any]:
    """The same request in OTLP/JSON: protobuf's JSON mapping with hex ids and integer enums
    (opentelemetry-proto docs/specification.md, "JSON Protobuf Encoding")."""
    data = json_format.MessageToDict(encode_spans(spans), use_integers_for_enums=True)
    _hex_ids(data)
    return data


def _hex_ids(node: Any) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("traceId", "spanId", "parentSpanId") and isinstance(value, str):
                node[key] = base64.b64decode(value).hex()
            else:
                _hex_ids(value)
    elif isinstance(node, list):
        for item in node:
            _hex_ids(item)
