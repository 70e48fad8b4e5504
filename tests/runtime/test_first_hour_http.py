"""A new user's first hour with a worker's HTTP endpoints (the Kafka walkthrough): what a
caller's mistakes answer, and what they leave in the worker's log. No broker: the server is
reached over a real socket in front of a backend that records what it is handed."""

from __future__ import annotations

import json
import logging
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from spendstream.config import Config
from spendstream.records import BreakerEvent, DeadLetter
from spendstream.runtime.http import ServerThread, WorkerMetrics
from spendstream.runtime.http.backend import UsageRecord

TOKEN = "first-hour-token"


class _Backend:
    """A ``WorkerBackend`` that keeps what it is asked to publish."""

    def __init__(self) -> None:
        self.metrics = WorkerMetrics(list)
        self.usage: list[UsageRecord] = []
        self.dead: list[DeadLetter] = []

    def publish(self, usage: Sequence[UsageRecord], dead_letters: Sequence[DeadLetter]) -> None:
        self.usage.extend(usage)
        self.dead.extend(dead_letters)

    def breakers(self, include_closed: bool) -> list[BreakerEvent]:
        return []

    def assigned(self) -> list[str]:
        return []


@pytest.fixture
def server() -> Iterator[tuple[ServerThread, _Backend]]:
    backend = _Backend()
    with ServerThread(backend, Config(), TOKEN, host="127.0.0.1", port=0) as thread:
        yield thread, backend


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, object]]:
    h = {"Authorization": f"Bearer {TOKEN}", **headers}
    req = urllib.request.Request(url, data=body, headers=h, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_a_body_that_is_not_its_content_encoding_is_a_400_and_no_traceback_in_the_log(
    server: tuple[ServerThread, _Backend], caplog: pytest.LogCaptureFixture
) -> None:
    # curl -H "Content-Encoding: gzip" -d 'xx' answered 400, and then the worker's log got an
    # ERROR "aiohttp.server: Unhandled exception" and a 40-line traceback: aiohttp, draining
    # the body after the answer, met the same undecodable bytes. Any caller could do that.
    thread, backend = server
    caplog.set_level(logging.DEBUG)
    for path in ("/v1/events", "/v1/traces"):
        status, answer = _post(
            thread.url + path,
            b"xx" * 64,
            {"Content-Encoding": "gzip", "Content-Type": "application/json"},
        )
        assert status == 400, (path, answer)
        assert str(answer["error"]).startswith("the body is not valid gzip data ("), answer
    time.sleep(0.5)  # the drain runs after the answer is sent
    noisy = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert noisy == [], [f"{r.name}: {r.getMessage()}" for r in noisy]
    assert backend.usage == []
    # The server still answers on.
    status, answer = _post(
        thread.url + "/v1/events",
        b'{"provider": "openai", "model": "gpt-5-mini", "input_tokens": 1, "output_tokens": 2}',
        {"Content-Type": "application/json"},
    )
    assert (status, answer["accepted"]) == (200, 1), answer


def test_json_lines_sent_as_application_json_are_told_how_to_send_several(
    server: tuple[ServerThread, _Backend],
) -> None:
    # A batch of two events, one per line, with the Content-Type the README's curl uses:
    # the answer was "record: Invalid JSON: trailing characters at line 2 column 1", with
    # nothing on what to do (docs/kafka.md: application/json is one event, else JSON Lines).
    thread, backend = server
    line = b'{"provider": "openai", "model": "gpt-5-mini", "input_tokens": 1, "output_tokens": 2}'
    status, answer = _post(
        thread.url + "/v1/events", line + b"\n" + line + b"\n", {"Content-Type": "application/json"}
    )
    assert (status, answer["accepted"]) == (200, 0), answer
    [rejected] = answer["rejected"]  # type: ignore[misc]
    assert "trailing characters" in rejected["error"], rejected
    assert "application/x-ndjson" in rejected["error"], rejected
    assert [d.error for d in backend.dead] == [rejected["error"]]
    # The same body as JSON Lines lands both.
    status, answer = _post(
        thread.url + "/v1/events",
        line + b"\n" + line + b"\n",
        {"Content-Type": "application/x-ndjson"},
    )
    assert (status, answer["accepted"], answer["rejected"]) == (200, 2, []), answer
    # One event pretty-printed over several lines is one event: no such hint on its error.
    pretty = b'{\n  "provider": "openai",\n  "model": "gpt-5-mini",\n  "input_tokens": 1\n}'
    status, answer = _post(thread.url + "/v1/events", pretty, {"Content-Type": "application/json"})
    [rejected] = answer["rejected"]  # type: ignore[misc]
    assert "output_tokens" in rejected["error"] and "x-ndjson" not in rejected["error"], answer


def test_the_answer_producers_md_shows_for_http_has_the_keys_the_server_answers(
    server: tuple[ServerThread, _Backend],
) -> None:
    # docs/producers.md, "5. HTTP": the answer it showed had no request_id, the id a dead
    # letter's source names (http:<request_id>#<line>).
    thread, _ = server
    doc = (Path(__file__).parents[2] / "docs" / "producers.md").read_text()
    shown = doc.split("### 5. HTTP", 1)[1].split("The answer is `", 1)[1].split("`", 1)[0]
    keys = set(re.findall(r'"(\w+)":', shown)) - {"line", "error"}
    status, answer = _post(
        thread.url + "/v1/events", b'{"provider": "openai"}', {"Content-Type": "application/json"}
    )
    assert status == 200
    assert keys == set(answer), (shown, answer)
