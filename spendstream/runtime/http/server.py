"""The HTTP server every ``spendstream run`` worker serves (aiohttp), in front of a ``WorkerBackend``.

Every path but ``/healthz`` needs ``Authorization: Bearer <token>`` ([http] token_env /
token_file): 401 without the right one, 503 while no token is configured
(``spendstream.http_auth.authorize``, checked in a middleware before any handler, so an
unknown path is 401 too, and 404 only with the token).

- ``POST /v1/events``: one JSON event (``application/json``) or JSON Lines (anything else).
  Each line is judged on its own (``check_body``: ``event_id``/``ts`` filled in when missing,
  bounds, validation). Answers 200 ``{"accepted": n, "rejected": [{"line": i, "error": "..."}],
  "request_id": r}`` once the accepted records are on the usage topic (broker-acknowledged,
  keyed by ``spendstream.topics.partition_key``) and the rejected ones are dead-lettered
  (topic and warehouse) with source ``http:<r>#<line>``; ``r`` is the request's
  ``X-Request-Id`` when it is a plain token (letters, digits, ``._:-``, at most 64), else a
  fresh id. 413 over ``MAX_BODY_BYTES`` (32 MiB); 503 (``Retry-After``) when the records
  could not be made durable — nothing was answered as accepted, so re-send the body.
- ``POST /v1/traces``: an OTLP/HTTP traces receiver (protobuf or JSON, gzip or not): GenAI
  spans become usage events (``receive_traces``), published like ``/v1/events`` before the
  OTLP answer is sent; 503 with a ``google.rpc.Status`` when they could not be (exporters retry).
- ``GET /v1/breakers``: each scope's latest breaker transition that is open or half-open
  (``?all=1``: closed ones too), as ``{"breakers": [{"scope", "state", "reason", "ts"}]}``.
- ``GET /metrics``: Prometheus text format (the backend's ``WorkerMetrics``).
- ``GET /healthz``: 200 ``{"status": "ok", "app_id": ..., "assigned": [...]}``, no token.

``HttpServer`` runs on the caller's event loop; ``ServerThread`` runs one on an event loop
of its own in a daemon thread, for a runtime whose loops are threads. The backend's
methods are called in the server's worker threads, never on the event loop, and so is the
judging of a body (a 32 MiB body must not stall ``/healthz``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
from aiohttp import web
from aiohttp.http_exceptions import ContentEncodingError

from spendstream.errors import SpendstreamError
from spendstream.http_auth import authorize
from spendstream.records import breaker_to_wire
from spendstream.runtime.http.events import MAX_BODY_BYTES, check_body, request_id
from spendstream.runtime.http.metrics import CONTENT_TYPE
from spendstream.runtime.http.traces import receive_traces, status_body

if TYPE_CHECKING:
    from spendstream.config import Config
    from spendstream.runtime.http.backend import WorkerBackend

__all__ = ["MAX_BODY_BYTES", "HttpServer", "ServerThread", "build_app"]

log = logging.getLogger(__name__)


class _AnsweredBodyErrors(logging.Filter):
    """Drops aiohttp's "Unhandled exception" for a request body it cannot read.

    ``require_token`` answers such a body 400 (not what its ``Content-Encoding`` says, cut
    short); aiohttp then drains what is left of it, meets the same bytes again and logged an
    ERROR with a 40-line traceback in the worker's log: any caller could put one there."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, web.RequestPayloadError)


logging.getLogger("aiohttp.server").addFilter(_AnsweredBodyErrors())

T = TypeVar("T")
Clock = Callable[[], datetime]

RETRY_AFTER_S = 1  # what a 503 tells the client to wait before re-sending


def _now() -> datetime:
    return datetime.now(UTC)


# What a 404 lists.
_PATHS = ("/v1/events", "/v1/traces", "/v1/breakers", "/metrics", "/healthz")


def _json(data: object, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, content_type="application/json", headers=headers
    )


def _too_large() -> web.Response:
    return _json({"error": f"body over {MAX_BODY_BYTES} bytes"}, 413)


class _Handlers:
    def __init__(
        self,
        backend: WorkerBackend,
        config: Config,
        clock: Clock,
        pool: ThreadPoolExecutor,
        probes: ThreadPoolExecutor,
        views: ThreadPoolExecutor,
    ) -> None:
        from spendstream.producers.otel import OtelMapping

        self.backend = backend
        self.app_id = config.kafka.app_id
        self.max_future_skew_s = config.detection.max_future_skew_s
        self.otel_mapping = OtelMapping.from_config(config.otel)
        self.clock = clock
        self.pool = pool
        self.probes = probes
        self.views = views

    @staticmethod
    async def _on(pool: ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(pool, partial(fn, *args))

    async def _off_loop(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._on(self.pool, fn, *args)

    async def _probe(self, fn: Callable[..., T], *args: Any) -> T:
        """Reads (health, metrics) on threads of their own: a probe must answer while every
        ingest thread waits on a slow broker."""
        return await self._on(self.probes, fn, *args)

    async def _body(self, request: web.Request) -> bytes | None:
        """The request body, or None when it is over the limit (413)."""
        if (request.content_length or 0) > MAX_BODY_BYTES:
            return None
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:  # chunked: no Content-Length to refuse early
            return None

    async def events(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        if body is None:
            return _too_large()
        checked = await self._off_loop(
            check_body,
            body,
            request.headers.get("Content-Type", ""),
            self.clock(),
            request_id(request.headers.get("X-Request-Id")),
            self.max_future_skew_s,
        )
        try:
            await self._off_loop(self.backend.publish, checked.accepted, checked.dead_letters)
        except SpendstreamError as exc:
            log.warning("POST /v1/events %s not published: %s", checked.request_id, exc)
            return _json(
                {"error": f"not accepted, send again: {exc}", "request_id": checked.request_id},
                503,
                {"Retry-After": str(RETRY_AFTER_S)},
            )
        m = self.backend.metrics
        m.http_records.labels("accepted").inc(len(checked.accepted))
        m.http_records.labels("rejected").inc(len(checked.rejected))
        return _json(
            {
                "accepted": len(checked.accepted),
                "rejected": checked.rejected,
                "request_id": checked.request_id,
            }
        )

    async def traces(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        if body is None:
            return _too_large()
        ctype = request.headers.get("Content-Type", "")
        answer = await self._off_loop(
            partial(
                receive_traces,
                body,
                content_type=ctype,
                # aiohttp has already undone a gzip/deflate Content-Encoding (auto_decompress).
                content_encoding=None,
                mapping=self.otel_mapping,
                received_at=self.clock(),
            )
        )
        try:
            await self._off_loop(self.backend.publish, answer.accepted, answer.dead_letters)
        except SpendstreamError as exc:
            log.warning("POST /v1/traces not published: %s", exc)
            as_json = ctype.split(";", 1)[0].strip().lower() == "application/json"
            status_type, payload = status_body(f"not accepted, send again: {exc}", as_json)
            return web.Response(
                body=payload,
                status=503,
                headers={"Content-Type": status_type, "Retry-After": str(RETRY_AFTER_S)},
            )
        m = self.backend.metrics
        m.otel_spans.labels("event").inc(len(answer.accepted))
        m.otel_spans.labels("rejected").inc(answer.rejected)
        m.otel_spans.labels("ignored").inc(answer.ignored)
        return web.Response(
            body=answer.body, status=answer.status, headers={"Content-Type": answer.content_type}
        )

    async def breakers(self, request: web.Request) -> web.Response:
        include_closed = request.query.get("all", "") in ("1", "true")
        try:
            # Threads of its own: while the breaker view is not ready (a broker outage) each
            # call waits up to its timeout, and /healthz must not queue behind those.
            states = await self._on(self.views, self.backend.breakers, include_closed)
        except SpendstreamError as exc:
            return _json({"error": str(exc)}, 503, {"Retry-After": str(RETRY_AFTER_S)})
        return _json({"breakers": [breaker_to_wire(b) for b in states]})

    async def metrics(self, request: web.Request) -> web.Response:
        # Rendering calls the lag source (the consumer's watermarks): off the loop.
        text = await self._probe(self.backend.metrics.render)
        return web.Response(body=text, headers={"Content-Type": CONTENT_TYPE})

    async def health(self, request: web.Request) -> web.Response:
        assigned = await self._probe(self.backend.assigned)
        return _json({"status": "ok", "app_id": self.app_id, "assigned": sorted(assigned)})


def build_app(
    backend: WorkerBackend,
    config: Config,
    token: str | None,
    *,
    pool: ThreadPoolExecutor,
    probes: ThreadPoolExecutor,
    views: ThreadPoolExecutor | None = None,
    clock: Clock = _now,
) -> web.Application:
    """The aiohttp application: the routes above behind the token middleware.

    ``token``: ``spendstream.http_auth.read_token(config.http)`` (None: every path but
    /healthz answers 503). ``pool``: the threads that judge bodies and publish them;
    ``probes``: the threads that answer health and metrics; ``views``: those that answer
    breakers (None: ``probes``)."""

    @web.middleware
    async def require_token(request: web.Request, handler: Any) -> web.StreamResponse:
        refusal = authorize(request.path, request.headers.get("Authorization"), token)
        if refusal is not None:
            return _json({"error": refusal.error}, refusal.status, refusal.headers)
        try:
            response: web.StreamResponse = await handler(request)
        except (web.RequestPayloadError, ContentEncodingError) as exc:
            # A body that cannot be read (not what its Content-Encoding says, cut short):
            # aiohttp raises this from read(), no HTTP exception, and it was a plain-text 500.
            encoding = request.headers.get("Content-Encoding", "").strip()
            cause = exc.__cause__ or exc.__context__ or exc
            reason = " ".join(str(cause).split()) or type(cause).__name__
            what = f"not valid {encoding} data" if encoding else "unreadable"
            return _json({"error": f"the body is {what} ({reason})"}, 400)
        except web.HTTPMethodNotAllowed as exc:
            # The router's own answers were plain text ("405: Method Not Allowed") where
            # every other answer of this server is JSON with an error a client can show.
            allowed = ", ".join(sorted(exc.allowed_methods))
            error = f"{request.method} is not allowed on {request.path}: use {allowed}"
            return _json({"error": error}, 405, {"Allow": allowed})
        except web.HTTPNotFound:
            paths = ", ".join(_PATHS)
            return _json({"error": f"no such path: {request.path} (paths: {paths})"}, 404)
        return response

    h = _Handlers(backend, config, clock, pool, probes, probes if views is None else views)
    # aiohttp refuses bodies over 1 MiB by default; a JSON Lines batch may be larger.
    app = web.Application(middlewares=[require_token], client_max_size=MAX_BODY_BYTES)
    app.router.add_post("/v1/events", h.events)  # every path here is in _PATHS
    app.router.add_post("/v1/traces", h.traces)
    app.router.add_get("/v1/breakers", h.breakers)
    app.router.add_get("/metrics", h.metrics)
    app.router.add_get("/healthz", h.health)
    return app


class HttpServer:
    """The server on the running event loop: ``await start()``, ``port``, ``await stop()``."""

    def __init__(
        self,
        backend: WorkerBackend,
        config: Config,
        token: str | None,
        *,
        host: str | None = None,
        port: int | None = None,
        clock: Clock = _now,
        threads: int = 4,
    ) -> None:
        """``host``/``port``: default ``[http] host`` / ``port`` (port 0: any free port)."""
        self.host = config.http.host if host is None else host
        self._port = config.http.port if port is None else port
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="spendstream-http")
        self._probes = ThreadPoolExecutor(2, thread_name_prefix="spendstream-http-probe")
        self._views = ThreadPoolExecutor(2, thread_name_prefix="spendstream-http-breakers")
        self.app = build_app(
            backend,
            config,
            token,
            pool=self._pool,
            probes=self._probes,
            views=self._views,
            clock=clock,
        )
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Listen (an OSError, e.g. the port is taken, propagates)."""
        runner = web.AppRunner(self.app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self._port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])

    @property
    def port(self) -> int:
        """The port listened on (the one chosen when 0 was asked for, once started)."""
        return self._port

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self._port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._probes.shutdown(wait=False, cancel_futures=True)
        self._views.shutdown(wait=False, cancel_futures=True)


class ServerThread:
    """An ``HttpServer`` on an event loop of its own in a daemon thread.

    ``start()`` returns once it listens (or raises what stopped it from listening);
    ``close()`` stops it and joins the thread."""

    def __init__(
        self,
        backend: WorkerBackend,
        config: Config,
        token: str | None,
        *,
        host: str | None = None,
        port: int | None = None,
        clock: Clock = _now,
        threads: int = 4,
    ) -> None:
        self.server = HttpServer(
            backend, config, token, host=host, port=port, clock=clock, threads=threads
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        return self.server.url

    def start(self, timeout_s: float = 30.0) -> ServerThread:
        self._thread = threading.Thread(target=self._run, name="spendstream-http", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout_s):
            raise TimeoutError(f"the HTTP server did not start within {timeout_s:.0f}s")
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            await self.server.start()
        except BaseException as exc:
            self._error = exc
            self._started.set()
            await self.server.stop()
            return
        self._started.set()
        try:
            await self._stop.wait()
        finally:
            await self.server.stop()

    def close(self, timeout_s: float = 10.0) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop ended meanwhile
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
