"""HTTP endpoints served by every ``spendstream run`` worker (Faust's aiohttp web server).

- ``POST /v1/events``: one JSON event (``application/json``) or JSON Lines; bearer token.
  Answers 200 ``{"accepted": n, "rejected": [{"line": i, "error": "..."}], "request_id": r}``
  once the accepted records are on the usage topic (broker-acknowledged) and the rejected
  ones are dead-lettered (topic and warehouse) with source ``http:<r>#<line>``; ``r`` is the
  request's ``X-Request-Id`` when it is a plain token (letters, digits, ``._:-``, at most 64). 401 bad token, 413 too large, 503 no token configured.
- ``GET /v1/breakers``: each scope's latest breaker event (``?all=1`` includes closed ones).
- ``GET /healthz``: 200 while the worker runs, with its assignment.
- ``GET /metrics``: Prometheus text format.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from faust.web import Request, Response, View

from spendstream.records import breaker_to_wire
from spendstream.stream.kafka.breaker_control import latest_breakers
from spendstream.stream.kafka.ingest import MAX_BODY_BYTES, check_body, request_id, token_ok

if TYPE_CHECKING:
    from spendstream.stream.kafka.app import Runtime

__all__ = ["register_views"]


def register_views(rt: Runtime) -> None:
    app = rt.app

    def _json(view: View, data: Any, status: int = 200) -> Response:
        return view.bytes(orjson.dumps(data), content_type="application/json", status=status)

    @app.page("/v1/events")
    class Events(View):
        async def post(self, request: Request) -> Response:
            if rt.web.token is None:
                return _json(
                    self,
                    {
                        "error": "ingest is disabled: no token configured ([http] token_env / token_file)"
                    },
                    503,
                )
            raw_req: Any = request
            if not token_ok(raw_req.headers.get("Authorization"), rt.web.token):
                return _json(self, {"error": "missing or wrong bearer token"}, 401)
            if (raw_req.content_length or 0) > MAX_BODY_BYTES:
                return _json(self, {"error": f"body over {MAX_BODY_BYTES} bytes"}, 413)
            body: bytes = await raw_req.read()
            checked = check_body(
                body,
                raw_req.headers.get("Content-Type", ""),
                datetime.now(UTC),
                request_id(raw_req.headers.get("X-Request-Id")),
                rt.config.detection.max_future_skew_s,
            )
            from spendstream.stream.kafka.app import dead_letter_record

            out: list[tuple[str, bytes | None, bytes]] = [
                (rt.names.usage, key, raw) for key, raw in checked.accepted
            ]
            out += [
                (rt.names.dead_letters, None, dead_letter_record(d)) for d in checked.dead_letters
            ]
            await rt.publish(out)
            if checked.dead_letters:
                stage = await rt.usage_stage()
                await rt.in_usage_thread(stage.land_dead_letters, checked.dead_letters)
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
