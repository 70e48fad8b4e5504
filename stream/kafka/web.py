"""HTTP endpoints served by every ``spendstream run`` worker (Faust's aiohttp web server).

Every path but ``/healthz`` needs ``Authorization: Bearer <token>`` ([http] token_env /
token_file): 401 without the right one, 503 while no token is configured
(``spendstream.http_auth``, checked in a middleware before any handler, Faust's own
pages included).

- ``POST /v1/events``: one JSON event (``application/json``) or JSON Lines.
  Answers 200 ``{"accepted": n, "rejected": [{"line": i, "error": "..."}], "request_id": r}``
  once the accepted records are on the usage topic (broker-acknowledged) and the rejected
  ones are dead-lettered (topic and warehouse) with source ``http:<r>#<line>``; ``r`` is the
  request's ``X-Request-Id`` when it is a plain token (letters, digits, ``._:-``, at most
  64), else a fresh id. 413 too large.
- ``POST /v1/traces``: an OTLP/HTTP traces receiver (protobuf or JSON, gzip or not); GenAI
  spans become usage events (``spendstream/runtime/http/traces.py``, the handler any server can mount),
  published like ``/v1/events`` before the OTLP answer is sent.
- ``GET /v1/breakers``: each scope's latest breaker event (``?all=1`` includes closed ones).
- ``GET /healthz``: 200 while the worker runs, with its assignment.
- ``GET /metrics``: Prometheus text format.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

import orjson
from aiohttp import web as aiohttp_web
from faust.web import Request, Response, View

from spendstream.http_auth import authorize
from spendstream.producers.otel import OtelMapping
from spendstream.records import DeadLetter, breaker_to_wire
from spendstream.runtime.http.events import MAX_BODY_BYTES, check_body, request_id
from spendstream.runtime.http.traces import receive_traces
from spendstream.stream.kafka.breaker_control import latest_breakers

if TYPE_CHECKING:
    from spendstream.stream.kafka.app import OutRecord, Runtime

__all__ = ["register_views"]


def register_views(rt: Runtime) -> None:
    app = rt.app

    @aiohttp_web.middleware
    async def require_token(request: Any, handler: Any) -> Any:
        refusal = authorize(request.path, request.headers.get("Authorization"), rt.web.token)
        if refusal is not None:
            return aiohttp_web.Response(
                body=orjson.dumps({"error": refusal.error}),
                status=refusal.status,
                content_type="application/json",
                headers=refusal.headers,
            )
        return await handler(request)

    # The aiohttp driver's application (faust.web.drivers.aiohttp.Web.web_app, public).
    web_app: Any = cast(Any, app.web).web_app
    web_app.middlewares.append(require_token)

    def _json(view: View, data: Any, status: int = 200) -> Response:
        return view.bytes(orjson.dumps(data), content_type="application/json", status=status)

    def _refuse(view: View, request: Any) -> Response | None:
        """413 before the body is read, the same for every ingest endpoint (the token was
        checked by the middleware)."""
        if (request.content_length or 0) > MAX_BODY_BYTES:
            return _json(view, {"error": f"body over {MAX_BODY_BYTES} bytes"}, 413)
        return None

    async def _publish(accepted: list[tuple[bytes, bytes]], dead: list[DeadLetter]) -> None:
        """Accepted records to the usage topic, rejects to dead letters (topic and warehouse)."""
        from spendstream.stream.kafka.app import dead_letter_record

        out: list[OutRecord] = [(rt.names.usage, key, raw) for key, raw in accepted]
        out += [(rt.names.dead_letters, None, dead_letter_record(d)) for d in dead]
        await rt.publish(out)
        if dead:
            stage = await rt.usage_stage()
            await rt.in_usage_thread(stage.land_dead_letters, dead)

    @app.page("/v1/events")
    class Events(View):
        async def post(self, request: Request) -> Response:
            raw_req: Any = request
            refused = _refuse(self, raw_req)
            if refused is not None:
                return refused
            body: bytes = await raw_req.read()
            checked = check_body(
                body,
                raw_req.headers.get("Content-Type", ""),
                datetime.now(UTC),
                request_id(raw_req.headers.get("X-Request-Id")),
                rt.config.detection.max_future_skew_s,
            )
            await _publish(checked.accepted, checked.dead_letters)
            rt.metrics.http_records.labels("accepted").inc(len(checked.accepted))
            rt.metrics.http_records.labels("rejected").inc(len(checked.rejected))
            rt.metrics.dead_letters.labels("http").inc(len(checked.dead_letters))
            return _json(
                self,
                {
                    "accepted": len(checked.accepted),
                    "rejected": checked.rejected,
                    "request_id": checked.request_id,
                },
            )

    otel_mapping = OtelMapping.from_config(rt.config.otel)

    @app.page("/v1/traces")
    class Traces(View):
        async def post(self, request: Request) -> Response:
            raw_req: Any = request
            refused = _refuse(self, raw_req)
            if refused is not None:
                return refused
            body: bytes = await raw_req.read()
            answer = receive_traces(
                body,
                content_type=raw_req.headers.get("Content-Type", ""),
                # aiohttp has already undone a gzip/deflate Content-Encoding (auto_decompress).
                content_encoding=None,
                mapping=otel_mapping,
                received_at=datetime.now(UTC),
            )
            await _publish(answer.accepted, answer.dead_letters)
            rt.metrics.otel_spans.labels("event").inc(len(answer.accepted))
            rt.metrics.otel_spans.labels("rejected").inc(answer.rejected)
            rt.metrics.otel_spans.labels("ignored").inc(answer.ignored)
            rt.metrics.dead_letters.labels("http").inc(len(answer.dead_letters))
            return self.bytes(answer.body, content_type=answer.content_type, status=answer.status)

    @app.page("/v1/breakers")
    class Breakers(View):
        async def get(self, request: Request) -> Response:
            include_closed = request.query.get("all", "") in ("1", "true")
            states = await rt.in_usage_thread(latest_breakers, rt.workdir, include_closed)
            return _json(self, {"breakers": [breaker_to_wire(b) for b in states]})

    @app.page("/healthz")
    class Health(View):
        async def get(self, request: Request) -> Response:
            consumer = getattr(rt.app, "_consumer", None)
            assigned = (
                sorted(f"{tp.topic}/{tp.partition}" for tp in consumer.assignment())
                if consumer is not None
                else []
            )
            return _json(
                self, {"status": "ok", "app_id": rt.config.kafka.app_id, "assigned": assigned}
            )

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            return self.bytes(rt.metrics.render(), content_type="text/plain; version=0.0.4")
