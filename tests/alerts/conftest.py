"""Real HTTP servers on 127.0.0.1 for the alert sinks, with scripted misbehaviour.

``http_server(script=[...], check=...)`` starts a ThreadingHTTPServer in a thread. Each
request is recorded; the i-th request is answered by ``script[i]`` (a status, or a
``(status, headers)`` or ``(status, headers, delay_s)`` tuple) and later ones by ``202``.
``check`` validates the JSON body (PagerDuty v2 or Slack shape) and answers 400 with the
problems, as the real services do. ``stop()``/``start()`` take it down and bring it back on
the same port.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

Answer = int | tuple[int, dict[str, str]] | tuple[int, dict[str, str], float]
Check = Callable[[Any], list[str]]


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class ScriptedServer:
    script: list[Answer] = field(default_factory=list)
    check: Check | None = None
    port: int = 0
    received: list[Received] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def accepted(self) -> list[Received]:
        with self._lock:
            return [r for r in self.received if 200 <= r.status < 300]

    def start(self) -> ScriptedServer:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with outer._lock:
                    i = len(outer.received)
                    answer = outer.script[i] if i < len(outer.script) else 202
                    status, headers, delay = 202, {}, 0.0
                    if isinstance(answer, int):
                        status = answer
                    elif len(answer) == 2:
                        status, headers = answer  # type: ignore[misc]
                    else:
                        status, headers, delay = answer  # type: ignore[misc]
                    problems: list[str] = []
                    if 200 <= status < 300 and outer.check is not None:
                        try:
                            problems = outer.check(json.loads(body))
                        except ValueError as exc:
                            problems = [f"body is not JSON: {exc}"]
                        if problems:
                            status = 400
                    outer.received.append(
                        Received(
                            self.path, {k.lower(): v for k, v in self.headers.items()}, body, status
                        )
                    )
                if delay:
                    time.sleep(delay)
                payload = json.dumps(
                    {"status": "ok" if status < 300 else "error", "errors": problems}
                ).encode()
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            assert self._thread is not None
            self._thread.join(timeout=10)
            self._server = None


@pytest.fixture
def http_server() -> Iterator[Callable[..., ScriptedServer]]:
    servers: list[ScriptedServer] = []

    def make(
        script: list[Answer] | None = None, check: Check | None = None, start: bool = True
    ) -> ScriptedServer:
        s = ScriptedServer(script=list(script or []), check=check)
        if start:
            s.start()
        else:
            # Reserve a port nobody listens on yet: connections are refused until start().
            import socket

            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                s.port = sock.getsockname()[1]
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.stop()


PD_SEVERITIES = {"critical", "error", "warning", "info"}


def check_pagerduty(body: Any) -> list[str]:
    """The Events API v2 rules the real endpoint enforces (and a few it documents)."""
    p: list[str] = []
    if not isinstance(body, dict):
        return ["body must be an object"]
    if not isinstance(body.get("routing_key"), str) or len(body["routing_key"]) != 32:
        p.append("routing_key must be a 32-character string")
    action = body.get("event_action")
    if action not in {"trigger", "acknowledge", "resolve"}:
        p.append(f"event_action {action!r} is invalid")
    dedup = body.get("dedup_key")
    if action in {"acknowledge", "resolve"} and not dedup:
        p.append("dedup_key is required to acknowledge or resolve")
    if dedup is not None and (not isinstance(dedup, str) or len(dedup) > 255):
        p.append("dedup_key must be a string of at most 255 characters")
    if action == "trigger":
        payload = body.get("payload")
        if not isinstance(payload, dict):
            return [*p, "payload is required for trigger"]
        summary = payload.get("summary")
        if not isinstance(summary, str) or not 1 <= len(summary) <= 1024:
            p.append("payload.summary must be 1..1024 characters")
        if not isinstance(payload.get("source"), str) or not payload["source"]:
            p.append("payload.source is required")
        if payload.get("severity") not in PD_SEVERITIES:
            p.append(f"payload.severity {payload.get('severity')!r} is invalid")
        for key in ("timestamp", "component", "group", "class"):
            if key in payload and not isinstance(payload[key], str):
                p.append(f"payload.{key} must be a string")
        if "timestamp" in payload:
            from datetime import datetime

            try:
                datetime.fromisoformat(payload["timestamp"])
            except ValueError:
                p.append("payload.timestamp must be ISO 8601")
        if "custom_details" in payload and not isinstance(payload["custom_details"], dict):
            p.append("payload.custom_details must be an object")
        allowed = {
            "summary",
            "source",
            "severity",
            "timestamp",
            "component",
            "group",
            "class",
            "custom_details",
        }
        extra = set(payload) - allowed
        if extra:
            p.append(f"payload has unknown fields {sorted(extra)}")
    allowed_top = {
        "routing_key",
        "event_action",
        "dedup_key",
        "payload",
        "images",
        "links",
        "client",
        "client_url",
    }
    extra_top = set(body) - allowed_top
    if extra_top:
        p.append(f"unknown top-level fields {sorted(extra_top)}")
    return p


SLACK_BLOCK_TYPES = {"header", "section", "context", "divider", "actions", "image"}


def check_slack(body: Any) -> list[str]:
    """Incoming-webhook rules: fallback text, at most 50 blocks, text objects well formed."""
    p: list[str] = []
    if not isinstance(body, dict):
        return ["body must be an object"]
    if not isinstance(body.get("text"), str) or not body["text"]:
        p.append("text (the notification fallback) is required with blocks")
    blocks = body.get("blocks")
    if not isinstance(blocks, list) or not 1 <= len(blocks) <= 50:
        return [*p, "blocks must be a list of 1..50 blocks"]
    for i, b in enumerate(blocks):
        t = b.get("type")
        if t not in SLACK_BLOCK_TYPES:
            p.append(f"blocks[{i}].type {t!r} is invalid")
        if t == "header":
            txt = b.get("text", {})
            if txt.get("type") != "plain_text" or not 1 <= len(txt.get("text", "")) <= 150:
                p.append(f"blocks[{i}] header needs plain_text of 1..150 chars")
        if t == "section":
            if "text" not in b and "fields" not in b:
                p.append(f"blocks[{i}] section needs text or fields")
            for f in b.get("fields", []):
                if (
                    f.get("type") not in {"mrkdwn", "plain_text"}
                    or not 1 <= len(f.get("text", "")) <= 2000
                ):
                    p.append(f"blocks[{i}] field text objects must be 1..2000 chars")
            if len(b.get("fields", [])) > 10:
                p.append(f"blocks[{i}] section has more than 10 fields")
            if "text" in b and not 1 <= len(b["text"].get("text", "")) <= 3000:
                p.append(f"blocks[{i}] section text must be 1..3000 chars")
        if t == "context" and not 1 <= len(b.get("elements", [])) <= 10:
            p.append(f"blocks[{i}] context needs 1..10 elements")
    return p
