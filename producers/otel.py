"""OpenTelemetry GenAI spans -> usage events. Pure: no server, no Kafka, no files.

Decodes an OTLP traces export (``ExportTraceServiceRequest``: binary protobuf or OTLP/JSON,
gzip/deflate or not) and turns each span that describes one model call into a usage event,
following the GenAI semantic conventions:

- a span is a call when it has ``gen_ai.provider.name`` (or the older ``gen_ai.system``)
  and its ``gen_ai.operation.name`` is not one of ``[otel] ignore_operations`` (agent,
  workflow and tool spans: an agent span may carry the summed usage of the calls under it);
  every other span is *ignored* and counted;
- ``model``: ``gen_ai.response.model``, else ``gen_ai.request.model``;
- tokens: ``gen_ai.usage.input_tokens`` (which the conventions say includes cached tokens,
  as the event does), ``output_tokens`` (reasoning included), ``cache_read.input_tokens``
  and ``cache_creation.input_tokens``; the deprecated ``prompt_tokens``/``completion_tokens``
  and OpenLLMetry's ``cache_read_input_tokens``/``cache_creation_input_tokens`` are read
  when the current names are absent. A span whose cached tokens exceed its input breaks the
  conventions (an Anthropic instrumentation reporting Anthropic's own ``input_tokens``): it
  is *rejected* with a reason naming ``[otel] input_excludes_cache``, which, for the
  providers listed there, adds the cached tokens to the input instead. That is never done
  silently: a span that under-reports input without overflowing cannot be told apart;
- ``ts`` is the span's end, ``latency_ms`` its duration; status ERROR (or an ``error.type``)
  is ``status = "error"``, ``"timeout"`` when ``error.type`` says timeout;
- ``event_id`` is ``otel-<trace id>-<span id>``: a re-exported span is a duplicate;
- attribution (team, feature, user_id, session_id...) from the span's, then the resource's
  attributes by ``[otel] attributes``; ``gen_ai.operation.name`` goes to tag ``operation``.

A span that cannot become a valid event (no model, a bad token count, no end time) is
*rejected*, with a reason a person can act on; the caller dead-letters it.
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from spendstream.errors import SpendstreamError
from spendstream.producers import wire_json
from spendstream.producers.event import UsageEvent, describe_validation_error, json_kind
from spendstream.producers.provider_names import canonical_provider

if TYPE_CHECKING:
    from spendstream.config import OtelConfig

__all__ = [
    "JSON",
    "MAX_DECODED_BYTES",
    "PROTOBUF",
    "DecodedTraces",
    "OtelMapping",
    "OtlpDecodeError",
    "SpanRejection",
    "decode_traces",
    "traces_from_json",
]

JSON = "application/json"
PROTOBUF = "application/x-protobuf"
# A decompressed export larger than this is refused (a gzip bomb must not fill memory).
MAX_DECODED_BYTES = 64 << 20

_INPUT = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")
_OUTPUT = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens")
_CACHE_READ = ("gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_read_input_tokens")
_CACHE_WRITE = (
    "gen_ai.usage.cache_creation.input_tokens",
    "gen_ai.usage.cache_creation_input_tokens",
)
_STATUS_ERROR = 2  # opentelemetry.proto.trace.v1.Status.StatusCode.STATUS_CODE_ERROR
_INT_FIELDS = frozenset({"turn", "attempt"})


class OtlpDecodeError(SpendstreamError, ValueError):
    """The export itself cannot be read; ``http_status`` is the OTLP/HTTP answer (400/413/415)."""

    def __init__(self, message: str, http_status: int = 400) -> None:
        super().__init__(message)
        self.http_status = http_status


@dataclass(frozen=True, slots=True)
class OtelMapping:
    """Which attributes fill which event fields (``[otel]`` in the configuration)."""

    attributes: Mapping[str, tuple[str, ...]]
    input_excludes_cache: frozenset[str] = frozenset()
    ignore_operations: frozenset[str] = frozenset()
    tag_attributes: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, config: OtelConfig | None = None) -> OtelMapping:
        """The mapping of an ``[otel]`` section; without one, the documented defaults."""
        if config is None:
            from spendstream.config import OtelConfig

            config = OtelConfig()
        return cls(
            attributes={name: tuple(keys) for name, keys in config.attributes.items()},
            input_excludes_cache=frozenset(
                canonical_provider(p) for p in config.input_excludes_cache
            ),
            ignore_operations=frozenset(config.ignore_operations),
            tag_attributes=tuple(config.tag_attributes),
        )


@dataclass(frozen=True, slots=True)
class SpanRejection:
    """A GenAI span that could not become an event: where it was, why, and what it held."""

    position: str  # e.g. resourceSpans[0].scopeSpans[1].spans[3]
    error: str
    raw: str  # the span as JSON (ids, name, times, attributes), for the dead letter


@dataclass(slots=True)
class DecodedTraces:
    """Every span of an export ends in exactly one list: events, rejected or ignored."""

    events: list[UsageEvent] = field(default_factory=list)
    rejected: list[SpanRejection] = field(default_factory=list)
    ignored: int = 0

    @property
    def spans(self) -> int:
        return len(self.events) + len(self.rejected) + self.ignored

    def extend(self, other: DecodedTraces) -> None:
        self.events.extend(other.events)
        self.rejected.extend(other.rejected)
        self.ignored += other.ignored


@dataclass(slots=True)
class _Span:
    position: str
    trace_id: str
    span_id: str
    name: str
    start_ns: int
    end_ns: int
    status_code: int
    attrs: dict[str, Any]
    resource: dict[str, Any]

    def raw(self) -> str:
        return json.dumps(
            {
                "traceId": self.trace_id,
                "spanId": self.span_id,
                "name": self.name,
                "startTimeUnixNano": str(self.start_ns),
                "endTimeUnixNano": str(self.end_ns),
                "status": {"code": self.status_code},
                "attributes": self.attrs,
                "resource": self.resource,
            },
            default=_json_default,
            separators=(",", ":"),
        )


# -- the export ---------------------------------------------------------------------------


def decode_traces(
    body: bytes,
    content_type: str,
    mapping: OtelMapping,
    *,
    content_encoding: str | None = None,
    max_bytes: int = MAX_DECODED_BYTES,
) -> DecodedTraces:
    """An OTLP/HTTP traces request body -> events, rejected spans and the ignored count.

    Raises ``OtlpDecodeError`` when the body itself cannot be read (415 for a content type
    or encoding OTLP does not define, 413 past ``max_bytes`` decompressed, else 400).
    """
    media = content_type.split(";", 1)[0].strip().lower()
    if media not in (JSON, PROTOBUF, "application/protobuf"):
        raise OtlpDecodeError(
            f"unsupported Content-Type {content_type!r}: OTLP/HTTP sends {PROTOBUF} or {JSON}",
            415,
        )
    data = _decompress(body, content_encoding, max_bytes)
    if media == JSON:
        try:
            request = wire_json.loads(data)
        except ValueError as exc:
            raise OtlpDecodeError(f"the body is not JSON: {exc}") from None
        return traces_from_json(request, mapping)
    return _convert(_proto_spans(data), mapping)


def traces_from_json(request: Any, mapping: OtelMapping) -> DecodedTraces:
    """An already parsed OTLP/JSON ``ExportTraceServiceRequest`` -> events (files, tests)."""
    if not isinstance(request, Mapping):
        raise OtlpDecodeError("an OTLP/JSON traces export is a JSON object with resourceSpans")
    return _convert(_json_spans(request), mapping)


def _decompress(body: bytes, encoding: str | None, max_bytes: int) -> bytes:
    enc = (encoding or "").strip().lower()
    if enc in ("", "identity"):
        if len(body) > max_bytes:
            raise OtlpDecodeError(f"body over {max_bytes} bytes", 413)
        return body
    if enc not in ("gzip", "deflate"):
        raise OtlpDecodeError(
            f"unsupported Content-Encoding {encoding!r}: send gzip, deflate or none", 415
        )
    # 32 + 15: zlib detects a gzip or zlib header itself (exporters' "deflate" is zlib).
    d = zlib.decompressobj(32 + zlib.MAX_WBITS)
    try:
        out = d.decompress(body, max_bytes)
    except zlib.error as exc:
        raise OtlpDecodeError(f"the body is not valid {enc} data: {exc}") from None
    if d.unconsumed_tail:
        raise OtlpDecodeError(f"body over {max_bytes} bytes once decompressed", 413)
    if not d.eof:
        raise OtlpDecodeError(f"the {enc} body is truncated")
    return out


# -- spans -> events ----------------------------------------------------------------------


class _Reject(Exception):
    pass


def _convert(spans: Iterator[_Span], mapping: OtelMapping) -> DecodedTraces:
    out = DecodedTraces()
    for span in spans:
        try:
            event = _event(span, mapping)
        except _Reject as why:
            label = f"span {span.name!r} ({span.span_id or 'no span id'})"
            out.rejected.append(SpanRejection(span.position, f"{label}: {why}", span.raw()))
            continue
        if event is None:
            out.ignored += 1
        else:
            out.events.append(event)
    return out


def _event(span: _Span, m: OtelMapping) -> UsageEvent | None:
    attrs = span.attrs
    provider_name = attrs.get("gen_ai.provider.name") or attrs.get("gen_ai.system")
    if not isinstance(provider_name, str) or not provider_name.strip():
        return None
    operation = attrs.get("gen_ai.operation.name")
    if isinstance(operation, str) and operation in m.ignore_operations:
        return None
    model = attrs.get("gen_ai.response.model") or attrs.get("gen_ai.request.model")
    if not isinstance(model, str) or not model.strip():
        raise _Reject("GenAI span has neither gen_ai.response.model nor gen_ai.request.model")
    if not span.trace_id or not span.span_id:
        raise _Reject("span has no trace id or span id (the event id is derived from them)")
    if span.end_ns <= 0:
        raise _Reject("span has no end time (endTimeUnixNano), which is the event's ts")

    provider = canonical_provider(provider_name)
    usage = [_token(attrs, keys) for keys in (_INPUT, _OUTPUT, _CACHE_READ, _CACHE_WRITE)]
    input_tokens, output_tokens, cache_read, cache_write = (n or 0 for n in usage)
    if provider in m.input_excludes_cache:
        input_tokens += cache_read + cache_write
    elif cache_read + cache_write > input_tokens:
        raise _Reject(
            f"gen_ai.usage.cache_read.input_tokens ({cache_read}) + "
            f"cache_creation.input_tokens ({cache_write}) exceed gen_ai.usage.input_tokens "
            f"({input_tokens}): the GenAI conventions count cached tokens inside input_tokens. "
            f'If this instrumentation reports {provider} input without them, add "{provider}" '
            "to [otel] input_excludes_cache"
        )

    event: dict[str, Any] = {
        "event_id": f"otel-{span.trace_id}-{span.span_id}",
        "ts": _time(span.end_ns),
        "provider": provider,
        "model": model,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_read_tokens": cache_read,
        "cache_write_tokens": cache_write,
        "status": _status(span),
    }
    if span.start_ns > 0 and span.end_ns >= span.start_ns:
        event["latency_ms"] = (span.end_ns - span.start_ns) / 1e6
    for name, keys in m.attributes.items():
        value = _lookup(span, keys)
        if value is not None:
            event[name] = _field_value(name, value)
    tags: dict[str, str] = {}
    if isinstance(operation, str) and operation:
        tags["operation"] = operation
    if all(n is None for n in usage):
        tags["usage"] = "missing"  # the call happened; its instrumentation said nothing of tokens
    for key in m.tag_attributes:
        value = _lookup(span, (key,))
        if value is not None:
            tags[key] = _text(value)[:256]
    if tags:
        event["tags"] = tags
    try:
        return UsageEvent.model_validate(event)
    except ValidationError as err:
        raise _Reject(describe_validation_error(err)) from None


def _lookup(span: _Span, keys: tuple[str, ...]) -> Any:
    for key in keys:
        for attrs in (span.attrs, span.resource):
            value = attrs.get(key)
            if value is None or value == "" or isinstance(value, list | dict):
                continue
            if key == "service.name" and str(value).startswith("unknown_service"):
                continue  # the SDKs' placeholder when a service set no name: not a feature
            return value
    return None


def _field_value(name: str, value: Any) -> Any:
    if name in _INT_FIELDS:
        number = _integral(value)
        if number is None:
            raise _Reject(f"{name} attribute {value!r} is not an integer")
        return number
    if name == "reported_cost_usd":
        try:
            return Decimal(str(value))
        except InvalidOperation:
            raise _Reject(f"reported_cost_usd attribute {value!r} is not a number") from None
    return _text(value)


def _token(attrs: Mapping[str, Any], keys: tuple[str, ...]) -> int | None:
    for key in keys:
        if key in attrs:
            number = _integral(attrs[key])
            if number is None or number < 0:
                raise _Reject(f"{key} is {attrs[key]!r}, not a token count (an integer >= 0)")
            return number
    return None


def _integral(value: Any) -> int | None:
    # Some SDKs (JavaScript's) export every number as a double: 812.0 is 812.
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return None
    return None


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def _status(span: _Span) -> str:
    error_type = span.attrs.get("error.type")
    if span.status_code != _STATUS_ERROR and not error_type:
        return "ok"
    if isinstance(error_type, str) and "timeout" in error_type.lower():
        return "timeout"
    return "error"


def _time(ns: int) -> datetime:
    seconds, rest = divmod(ns, 1_000_000_000)
    try:
        return datetime.fromtimestamp(seconds, UTC).replace(microsecond=rest // 1000)
    except (OverflowError, ValueError, OSError):
        # Past year 9999: this span is rejected, not the whole export with it.
        raise _Reject(f"endTimeUnixNano {ns} is not a time (past the year 9999)") from None


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return str(value)


# -- OTLP/JSON ----------------------------------------------------------------------------


def _get(d: Mapping[str, Any], camel: str, snake: str) -> Any:
    # OTLP/JSON keys are lowerCamelCase; protobuf's own JSON printer can write field names.
    value = d.get(camel)
    return d.get(snake) if value is None else value


def _list(d: Mapping[str, Any], camel: str, snake: str, where: str) -> list[Mapping[str, Any]]:
    """The objects of a container (absent: none). One of another shape is refused whole:
    skipped, its spans went unmetered without a word (no span, no dead letter)."""
    value = _get(d, camel, snake)
    if value is None:
        return []
    if not isinstance(value, list):
        raise OtlpDecodeError(f"{where}{camel} is {json_kind(value)}, not a list")
    for n, item in enumerate(value):
        if not isinstance(item, Mapping):
            raise OtlpDecodeError(f"{where}{camel}[{n}] is {json_kind(item)}, not an object")
    return value


def _json_spans(request: Mapping[str, Any]) -> Iterator[_Span]:
    for i, rs in enumerate(_list(request, "resourceSpans", "resource_spans", "")):
        res = rs.get("resource")
        resource = _json_attrs(res.get("attributes")) if isinstance(res, Mapping) else {}
        where = f"resourceSpans[{i}]."
        for j, ss in enumerate(_list(rs, "scopeSpans", "scope_spans", where)):
            for k, s in enumerate(_list(ss, "spans", "spans", f"{where}scopeSpans[{j}].")):
                status = s.get("status")
                code = _get(status, "code", "code") if isinstance(status, Mapping) else None
                yield _Span(
                    position=f"resourceSpans[{i}].scopeSpans[{j}].spans[{k}]",
                    trace_id=_json_id(_get(s, "traceId", "trace_id"), 16),
                    span_id=_json_id(_get(s, "spanId", "span_id"), 8),
                    name=str(s.get("name") or ""),
                    start_ns=_json_int(_get(s, "startTimeUnixNano", "start_time_unix_nano")),
                    end_ns=_json_int(_get(s, "endTimeUnixNano", "end_time_unix_nano")),
                    status_code=_json_status(code),
                    attrs=_json_attrs(s.get("attributes")),
                    resource=resource,
                )


def _json_attrs(items: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(items, list):
        for kv in items:
            if isinstance(kv, Mapping) and isinstance(kv.get("key"), str):
                out[kv["key"]] = _json_value(kv.get("value"))
    return out


def _json_value(v: Any) -> Any:
    if not isinstance(v, Mapping):
        return None
    if (s := _get(v, "stringValue", "string_value")) is not None:
        return s
    if (b := _get(v, "boolValue", "bool_value")) is not None:
        return bool(b)
    if (i := _get(v, "intValue", "int_value")) is not None:
        return _integral(i)  # int64 is a decimal string in OTLP/JSON, or a number
    if (d := _get(v, "doubleValue", "double_value")) is not None:
        try:
            return float(d)
        except (TypeError, ValueError, OverflowError):  # (a 400-digit integer)
            return None
    if (a := _get(v, "arrayValue", "array_value")) is not None:
        values = a.get("values") if isinstance(a, Mapping) else None
        return [_json_value(x) for x in values] if isinstance(values, list) else []
    if (kv := _get(v, "kvlistValue", "kvlist_value")) is not None:
        return _json_attrs(kv.get("values")) if isinstance(kv, Mapping) else {}
    if (raw := _get(v, "bytesValue", "bytes_value")) is not None:
        try:
            return base64.b64decode(raw)
        except (binascii.Error, TypeError, ValueError):
            return None
    return None


def _json_int(value: Any) -> int:
    number = _integral(value)
    return number if number is not None and number > 0 else 0


def _json_status(code: Any) -> int:
    if isinstance(code, str) and not code.lstrip("-").isdigit():
        return _STATUS_ERROR if code.upper() == "STATUS_CODE_ERROR" else 0
    return _integral(code) or 0


def _json_id(value: Any, size: int) -> str:
    # OTLP/JSON ids are hex (not protobuf JSON's base64); accept base64 from generic printers.
    if not isinstance(value, str) or not value:
        return ""
    if len(value) == size * 2:
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            raw = b""
    else:
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
    return raw.hex() if len(raw) == size and any(raw) else ""


# -- OTLP/protobuf ------------------------------------------------------------------------


def _proto_spans(data: bytes) -> Iterator[_Span]:
    try:
        from google.protobuf.message import DecodeError
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )
    except ImportError as exc:
        raise OtlpDecodeError(
            "decoding OTLP protobuf needs opentelemetry-proto: pip install 'spendstream[pipeline]'",
            415,
        ) from exc
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(data)
    except DecodeError as exc:
        raise OtlpDecodeError(f"the body is not an OTLP ExportTraceServiceRequest: {exc}") from None
    for i, rs in enumerate(request.resource_spans):
        resource = _proto_attrs(rs.resource.attributes)
        for j, ss in enumerate(rs.scope_spans):
            for k, s in enumerate(ss.spans):
                yield _Span(
                    position=f"resourceSpans[{i}].scopeSpans[{j}].spans[{k}]",
                    trace_id=s.trace_id.hex() if len(s.trace_id) == 16 and any(s.trace_id) else "",
                    span_id=s.span_id.hex() if len(s.span_id) == 8 and any(s.span_id) else "",
                    name=s.name,
                    start_ns=s.start_time_unix_nano,
                    end_ns=s.end_time_unix_nano,
                    status_code=s.status.code,
                    attrs=_proto_attrs(s.attributes),
                    resource=resource,
                )


def _proto_attrs(items: Any) -> dict[str, Any]:
    return {kv.key: _proto_value(kv.value) for kv in items}


def _proto_value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_proto_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return _proto_attrs(v.kvlist_value.values)
    return getattr(v, kind)
