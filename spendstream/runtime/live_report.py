"""``spendstream serve``: the report as a live web page over a workdir's warehouse.

Endpoints (one small threaded HTTP server; each request opens its own read-only,
sandboxed DuckDB session, so it sees facts as they land and never blocks a writer):

- ``GET /`` the live page; query ``since``, ``until`` (ISO 8601, UTC), ``team``,
  ``feature``, ``scope`` (any scope form) narrow it, like ``spendstream report``'s options.
- ``GET /fragment?...&v=VERSION`` what the page's script polls: 204 while the warehouse is
  unchanged since VERSION, else ``{"version", "status", "html"}``.
- ``GET /api/summary?...`` the page's headline numbers as JSON (exact decimal strings).
- ``GET /healthz`` 200, never behind the token.

Nothing here takes a POST (or PUT, PATCH, DELETE): those answer JSON, 405 with ``Allow: GET,
HEAD`` on the paths above, 404 elsewhere; ``/v1/events`` and the other paths of ``spendstream
run`` (a GET too, after the token) say that ``run`` serves them on its HTTP port (8787 by
default), not this one.

With a token configured (``[http] token_env`` / ``token_file``, as for ``POST /v1/events``)
every other endpoint needs it: ``Authorization: Bearer <token>``, or open
``/?token=<token>`` once in a browser, which sets an HttpOnly cookie and redirects to the
same page without the token in its address. A token that does not match (header, cookie or
``?token=``) is answered 401 "wrong token"; none at all, 401 "a token is required".
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, parse_qs, urlencode, urlsplit

from spendstream.config import WarehouseConfig
from spendstream.errors import ConfigError, SpendstreamError
from spendstream.http_auth import authorize

__all__ = ["COOKIE", "SOCKET_TIMEOUT_S", "LiveReport", "serve"]

log = logging.getLogger(__name__)

COOKIE = "spendstream_token"
_FILTER_KEYS = ("since", "until", "team", "feature", "scope")
_RECENT_ALERTS = 20
_PAGES = frozenset({"/", "/fragment", "/api/summary", "/healthz"})
# What `spendstream run`'s HTTP server answers (and this one does not), with its method.
_RUN_PATHS = {"/v1/events": "POST", "/v1/traces": "POST", "/v1/breakers": "GET", "/metrics": "GET"}
# The most of a refused request's body read (so closing the connection does not reset it
# before the client reads the answer); past that the connection closes as it is.
_DRAIN_MAX = 16 << 20
SOCKET_TIMEOUT_S = 30.0


def _not_here(path: str) -> str | None:
    """What to say about a path of ``spendstream run`` asked of this server; None otherwise."""
    method = _RUN_PATHS.get(path)
    if method is None:
        return None
    return (
        f"spendstream serve (the live report) has no {path}: {method} {path} goes to "
        "`spendstream run`, on its HTTP port ([http] port or --http-port, default 8787)"
    )


@dataclass(frozen=True, slots=True)
class _Rendered:
    version: str
    status: str
    page: str
    content: str


class LiveReport:
    """Renders the live page of one workdir; every call reads the warehouse afresh."""

    def __init__(
        self, workdir: Path, refresh_s: float = 5.0, config: WarehouseConfig | None = None
    ) -> None:
        self.workdir = Path(workdir)
        self.refresh_s = refresh_s
        self.config = config

    def _connect(self) -> Any:
        from spendstream.warehouse.reading import connect

        return connect(self.workdir, self.config)

    @staticmethod
    def _version(con: Any) -> str:
        facts, newest = con.execute("SELECT count(*), max(ingested_at) FROM usage_facts").fetchone()
        (alerts,) = con.execute("SELECT count(*) FROM alerts").fetchone()
        (breakers,) = con.execute("SELECT count(*) FROM breaker_events").fetchone()
        return f"{facts}-{newest.isoformat() if newest else '-'}-{alerts}-{breakers}"

    def version(self) -> str:
        """Changes whenever facts, alerts or breaker events land (unfiltered)."""
        con = self._connect()
        try:
            return self._version(con)
        finally:
            con.close()

    def render(self, query: Mapping[str, str]) -> _Rendered:
        from spendstream.warehouse.live_page import (
            LiveExtras,
            content_html,
            page_html,
            status_text,
        )
        from spendstream.warehouse.report import apply_filter, default_period, gather, render

        since, until, flt = _filters(query)
        con = self._connect()
        try:
            version = self._version(con)
            teams = [t for (t,) in con.execute(
                "SELECT DISTINCT team FROM usage_facts WHERE team IS NOT NULL ORDER BY 1"
            ).fetchall()]  # fmt: skip
            features = [f for (f,) in con.execute(
                "SELECT DISTINCT feature FROM usage_facts WHERE feature IS NOT NULL ORDER BY 1"
            ).fetchall()]  # fmt: skip
            (facts,) = con.execute("SELECT count(*) FROM usage_facts").fetchone()
            apply_filter(con, flt)
            data = gather(con, default_period(con, since, until))
            data.filter_text = flt.describe()
            open_breakers = con.execute(
                "SELECT scope, arg_max(state, ts) AS state, arg_max(reason, ts), max(ts) "
                "FROM breaker_events GROUP BY scope HAVING state <> 'closed' ORDER BY 4 DESC"
            ).fetchall()
            recent = con.execute(
                "SELECT ts, kind, severity, scope, message FROM alerts "
                f"ORDER BY ts DESC, alert_id LIMIT {_RECENT_ALERTS}"
            ).fetchall()
        finally:
            con.close()
        extras = LiveExtras(
            version=version,
            facts=int(facts),
            as_of=datetime.now(UTC),
            query={k: v for k, v in query.items() if k in _FILTER_KEYS and v},
            teams=teams,
            features=features,
            open_breakers=open_breakers,
            recent_alerts=recent,
            refresh_s=self.refresh_s,
        )
        report = render(data)
        return _Rendered(
            version, status_text(extras), page_html(report, extras), content_html(report, extras)
        )

    def summary(self, query: Mapping[str, str]) -> dict[str, Any]:
        """The headline numbers of the page for these filters (exact decimals as strings)."""
        from spendstream.warehouse.report import apply_filter, default_period

        since, until, flt = _filters(query)
        con = self._connect()
        try:
            version = self._version(con)
            apply_filter(con, flt)
            period = default_period(con, since, until)
            total, calls, unpriced = con.execute(
                "SELECT coalesce(sum(cost_usd), 0), count(*), count(*) FILTER (WHERE NOT priced) "
                "FROM usage_facts WHERE ts >= $s AND ts < $u",
                {"s": period.since, "u": period.until},
            ).fetchone()
        finally:
            con.close()
        return {
            "version": version,
            "since": period.since.isoformat(),
            "until": period.until.isoformat(),
            "filter": flt.fields(),
            "total_usd": f"{Decimal(total):f}",  # never "0E-18" for an empty sum
            "calls": int(calls),
            "unpriced_calls": int(unpriced),
        }


def _filters(query: Mapping[str, str]) -> tuple[Any, Any, Any]:
    from spendstream.scopes import scope_error
    from spendstream.warehouse.report import ReportFilter, parse_instant

    since = parse_instant(query.get("since") or None, "since")
    until = parse_instant(query.get("until") or None, "until")
    if since is not None and until is not None and since >= until:
        raise ConfigError("since must be before until")
    scope = query.get("scope") or None
    if scope is not None and (problem := scope_error(scope)) is not None:
        raise ConfigError(f"scope: {problem}")
    return (
        since,
        until,
        ReportFilter(query.get("team") or None, query.get("feature") or None, scope),
    )


def _cookie_token(header: str | None) -> str | None:
    for part in (header or "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE:
            return value
    return None


def _handler(live: LiveReport, token: str | None) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "spendstream-serve"
        # Each read of the socket waits this long at most: a client that sends half a
        # request, or a Content-Length it never sends, held its thread for ever (one thread
        # per connection, before any token check).
        timeout = SOCKET_TIMEOUT_S

        def log_message(self, fmt: str, *args: Any) -> None:
            log.debug("%s " + fmt, self.address_string(), *args)

        def _send(
            self, status: int, body: bytes, ctype: str, headers: Mapping[str, str] = {}
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, status: int, data: Any) -> None:
            self._send(status, json.dumps(data).encode(), "application/json")

        def _target(self) -> SplitResult | None:
            """The request target; None (answered 400) when it is no URL (``http://[x/``
            raised ValueError: the connection got no answer)."""
            try:
                return urlsplit(self.path)
            except ValueError:
                self._json(400, {"error": f"the request target {self.path[:200]!r} is not a URL"})
                return None

        def do_GET(self) -> None:
            url = self._target()
            if url is None:
                return
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            if url.path == "/healthz":
                self._json(200, {"status": "ok"})
                return
            given = query.pop("token", None)
            refusal = authorize(
                url.path,
                self.headers.get("Authorization"),
                token,
                others=(_cookie_token(self.headers.get("Cookie")), given),
                open_without_token=True,  # serve says so when it starts
            )
            if refusal is not None:
                if refusal.wrong:
                    text = (
                        b"spendstream serve: wrong token: it is not the value of [http] "
                        b"token_env / token_file this server runs with. Open /?token=<token> "
                        b"once with that value, or send Authorization: Bearer <token>.\n"
                    )
                else:
                    text = (
                        b"spendstream serve: a token is required. Open /?token=<token> once "
                        b"(the value of [http] token_env / token_file), or send "
                        b"Authorization: Bearer.\n"
                    )
                self._send(refusal.status, text, "text/plain; charset=utf-8", refusal.headers)
                return
            if given is not None and token is not None:
                # Keep the token out of the address bar and history: a cookie carries it.
                rest = urlencode(query)
                self._send(
                    303,
                    b"",
                    "text/plain",
                    {
                        "Location": url.path + (f"?{rest}" if rest else ""),
                        "Set-Cookie": f"{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/",
                    },
                )
                return
            try:
                self._route(url.path, query)
            except ConfigError as exc:
                self._json(400, {"error": str(exc)})
            except SpendstreamError as exc:
                self._json(503, {"error": str(exc)})
            except Exception:  # one bad request must not stop the page for everyone
                log.exception("spendstream serve: %s failed", self.path)
                self._json(500, {"error": "internal error; see the server log"})

        do_HEAD = do_GET

        def _not_a_get(self) -> None:
            # Answered before the token: it says only what this server is, never any data.
            self._drain()
            url = self._target()
            if url is None:
                return
            path = url.path
            hint = _not_here(path)
            if hint is not None:
                self._json(404, {"error": hint})
            elif path in _PAGES:
                self._send(
                    405,
                    json.dumps(
                        {"error": f"{path} takes GET (or HEAD), not {self.command}"}
                    ).encode(),
                    "application/json",
                    {"Allow": "GET, HEAD"},
                )
            else:
                self._json(404, {"error": f"no page {path}"})

        do_POST = do_PUT = do_PATCH = do_DELETE = _not_a_get

        def _drain(self) -> None:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                return
            left = min(max(length, 0), _DRAIN_MAX)
            while left > 0:
                chunk = self.rfile.read(min(left, 1 << 16))
                if not chunk:
                    return
                left -= len(chunk)

        def _route(self, path: str, query: dict[str, str]) -> None:
            if path == "/":
                page = live.render(query).page
                self._send(200, page.encode(), "text/html; charset=utf-8")
            elif path == "/fragment":
                seen = query.pop("v", None)
                if seen is not None and seen == live.version():
                    self._send(204, b"", "text/plain")
                    return
                r = live.render(query)
                self._json(200, {"version": r.version, "status": r.status, "html": r.content})
            elif path == "/api/summary":
                self._json(200, live.summary(query))
            else:
                self._json(404, {"error": _not_here(path) or f"no page {path}"})

    return Handler


def serve(
    workdir: Path,
    host: str = "127.0.0.1",
    port: int = 8788,
    *,
    token: str | None = None,
    refresh_s: float = 5.0,
    config: WarehouseConfig | None = None,
) -> ThreadingHTTPServer:
    """A started server (in a daemon thread); ``shutdown()`` and ``server_close()`` stop it."""
    live = LiveReport(workdir, refresh_s, config)
    try:
        httpd = ThreadingHTTPServer((host, port), _handler(live, token))
    except OSError as exc:
        raise ConfigError(
            f"--port {port}: cannot listen on {host}:{port}: {exc.strerror}"
        ) from None
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, name="spendstream-serve", daemon=True).start()
    return httpd
