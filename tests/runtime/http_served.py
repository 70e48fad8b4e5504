"""A worker's HTTP server on a real broker for tests: ``KafkaBackend`` + ``ServerThread`` on a
fresh topic prefix, and a small urllib client (the server is reached over a real socket)."""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from spendstream.config import Config
from spendstream.kafka.admin import Admin, TopicSpec
from spendstream.runtime.http import KafkaBackend, ServerThread
from spendstream.topics import BREAKERS, DEAD_LETTERS, USAGE

TOKEN = "s3cret-token"
USAGE_PARTITIONS = 3


def make_config(bootstrap: str, tmp_path: Path, **sections: dict[str, Any]) -> Config:
    """A config on a fresh topic prefix, with a [breaker] HMAC key in a file."""
    prefix = f"h{uuid.uuid4().hex[:10]}."
    key_file = tmp_path / "breaker.key"
    key_file.write_text("breaker-signing-key-for-the-http-tests")
    data: dict[str, Any] = {
        "kafka": {
            "bootstrap_servers": bootstrap,
            "topic_prefix": prefix,
            "app_id": prefix.rstrip("."),
            "usage_partitions": USAGE_PARTITIONS,
        },
        "breaker": {"hmac_key_file": str(key_file)},
    }
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return Config.model_validate(data)


def _topics(config: Config) -> list[TopicSpec]:
    p = config.kafka.topic_prefix
    return [
        TopicSpec(p + USAGE, USAGE_PARTITIONS, {}, 1),
        TopicSpec(p + DEAD_LETTERS, 1, {}, 1),
        TopicSpec(p + BREAKERS, 1, {"cleanup.policy": "compact"}, 1),
    ]


def _admin(config: Config) -> Admin:
    return Admin(config.kafka.bootstrap_servers, client_id="spendstream-tests", timeout_s=60)


@dataclass
class Served:
    """One running server; ``request`` answers (status, headers, body) without raising."""

    server: ServerThread
    backend: KafkaBackend
    config: Config
    workdir: Path
    now: datetime
    token: str | None = TOKEN
    assignment: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.server.url

    def topic(self, name: str) -> str:
        return self.config.kafka.topic_prefix + name

    def request(
        self,
        path: str,
        body: bytes | None = None,
        *,
        token: str | None = TOKEN,
        headers: dict[str, str] | None = None,
        method: str | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(self.url + path, data=body, headers=h, method=method)
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), err.read()

    def post_lines(
        self,
        body: bytes,
        *,
        ctype: str = "application/x-ndjson",
        request_id: str | None = None,
        token: str | None = TOKEN,
    ) -> tuple[int, dict[str, Any]]:
        headers = {"Content-Type": ctype}
        if request_id is not None:
            headers["X-Request-Id"] = request_id
        status, _, answer = self.request("/v1/events", body, token=token, headers=headers)
        return status, json.loads(answer)

    def get_json(self, path: str) -> Any:
        status, _, body = self.request(path)
        assert status == 200, (path, status, body)
        return json.loads(body)

    def metrics(self) -> str:
        status, headers, body = self.request("/metrics")
        assert status == 200 and headers["Content-Type"].startswith("text/plain"), headers
        return body.decode()


@contextmanager
def served(
    config: Config,
    workdir: Path,
    *,
    token: str | None = TOKEN,
    send_timeout_s: float = 30.0,
    ready_timeout_s: float = 30.0,
    create: bool = True,
) -> Iterator[Served]:
    """The server of one worker: its backend lands dead letters in ``workdir``; the clock
    is fixed at the moment it starts (records without ``ts`` get exactly that time)."""
    if create:
        _admin(config).ensure_topics(_topics(config))
    now = datetime.now(UTC).replace(microsecond=0)
    assignment: list[str] = []
    backend = KafkaBackend(
        config,
        workdir=workdir,
        writer="http/test",
        assigned=lambda: list(assignment),
        send_timeout_s=send_timeout_s,
        ready_timeout_s=ready_timeout_s,
    ).start()
    try:
        server = ServerThread(backend, config, token, host="127.0.0.1", port=0, clock=lambda: now)
        with server:
            yield Served(server, backend, config, workdir, now, token, assignment)
    finally:
        backend.close()
        if create:  # keep the shared broker tidy
            with contextlib.suppress(Exception):
                _admin(config).delete_topics([t.name for t in _topics(config)])


def wait_for(check: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)
