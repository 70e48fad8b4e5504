"""POST /v1/traces: an OTLP/HTTP traces receiver, as a framework-free request handler.

``receive_traces`` takes what any HTTP server has (body, Content-Type, and the
Content-Encoding still to undo: None where the server already decompressed the body, as
aiohttp does) and
returns the answer to send (status, Content-Type, body in the request's encoding) plus the
records the server must publish: each GenAI span's usage event for the usage topic (keyed by
``spendstream.topics.partition_key``) and a dead letter per rejected span. The server checks
the bearer token and the body size first, publishes, and only then sends the answer (a
publish failure is a 503, which OTLP exporters retry).

Answers (OTLP/HTTP specification): 200 with an empty ``ExportTraceServiceResponse`` when
every span was an event or ignored (spans without GenAI usage are not an error); 200 with
``partial_success.rejected_spans`` and an error message when GenAI spans were rejected (they
are dead-lettered; exporters must not retry); 400/413/415 with a ``google.rpc.Status`` when
the body cannot be read at all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime

from spendstream.producers.otel import (
    JSON,
    PROTOBUF,
    OtelMapping,
    OtlpDecodeError,
    decode_traces,
)
from spendstream.records import DeadLetter
from spendstream.stream.batch import stored_raw
from spendstream.topics import partition_key

__all__ = ["SOURCE", "TracesAnswer", "receive_traces", "status_body"]

SOURCE = "http:/v1/traces"
_MAX_REASONS = 3


@dataclass(slots=True)
class TracesAnswer:
    status: int
    content_type: str
    body: bytes
    accepted: list[tuple[bytes, bytes]] = field(default_factory=list)  # (key, event JSON)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    rejected: int = 0
    ignored: int = 0


def receive_traces(
    body: bytes,
    *,
    content_type: str,
    content_encoding: str | None,
    mapping: OtelMapping,
    received_at: datetime,
) -> TracesAnswer:
    """Decode one OTLP/HTTP export and say what to publish and what to answer."""
    as_json = content_type.split(";", 1)[0].strip().lower() == JSON
    try:
        decoded = decode_traces(body, content_type, mapping, content_encoding=content_encoding)
    except OtlpDecodeError as exc:
        return TracesAnswer(exc.http_status, *status_body(str(exc), as_json))
    accepted = [
        (
            partition_key(e.api_key_id, e.session_id, e.request_id, e.event_id),
            e.__pydantic_serializer__.to_json(e, exclude_none=True),
        )
        for e in decoded.events
    ]
    dead = [
        DeadLetter(
            raw=stored_raw(r.raw),
            error=r.error,
            source=SOURCE,
            received_at=received_at,
        )
        for r in decoded.rejected
    ]
    message = ""
    if decoded.rejected:
        reasons = "; ".join(r.error for r in decoded.rejected[:_MAX_REASONS])
        more = len(decoded.rejected) - _MAX_REASONS
        message = (
            f"{len(decoded.rejected)} of {decoded.spans} spans rejected (dead-lettered): {reasons}"
            + (f"; and {more} more" if more > 0 else "")
        )
    ctype, payload = _export_response(len(decoded.rejected), message, as_json)
    return TracesAnswer(
        200,
        ctype,
        payload,
        accepted=accepted,
        dead_letters=dead,
        rejected=len(decoded.rejected),
        ignored=decoded.ignored,
    )


def _export_response(rejected: int, message: str, as_json: bool) -> tuple[str, bytes]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceResponse,
    )

    response = ExportTraceServiceResponse()
    if rejected:  # the specification: leave partial_success unset on full success
        response.partial_success.rejected_spans = rejected
        response.partial_success.error_message = message
    if as_json:
        from google.protobuf import json_format

        return JSON, json.dumps(json_format.MessageToDict(response)).encode()
    return PROTOBUF, response.SerializeToString()


def status_body(message: str, as_json: bool) -> tuple[str, bytes]:
    """A ``google.rpc.Status`` answer (Content-Type, body) in the request's encoding."""
    from google.rpc.status_pb2 import Status

    status = Status(message=message)
    if as_json:
        from google.protobuf import json_format

        return JSON, json.dumps(json_format.MessageToDict(status)).encode()
    return PROTOBUF, status.SerializeToString()
