"""The Meter against a real local HTTP ingest server: batching, bounds, spool, replay, track."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from spendstream.producers import InvalidUsageEvent, Meter, UsageEvent
from spendstream.producers.transports import HttpTransport, Record, SendResult

TOKEN = "test-token"


class IngestServer:
    """``POST /v1/events`` like ``spendstream run`` answers it, with switchable failure modes."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.headers: list[dict[str, str]] = []
        self.status = 200
        self.reject_event_ids: set[str] = set()
        self.delay_s = 0.0
        self.requests = 0  # POSTs read, answered or not
        self.answer: bytes | None = None  # a 200 body to send instead of the usual one
        self.location: str | None = None  # a Location header to answer with
        self.max_body: int | None = None  # a proxy's body limit: 413 past it
        self.answering = threading.Event()  # cleared: requests hang until it is set again
        self.answering.set()
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with server.lock:
                    server.requests += 1
                time.sleep(server.delay_s)
                server.answering.wait()
                with server.lock:
                    status = server.status
                    if server.max_body is not None and len(body) > server.max_body:
                        status = 413
                    elif self.path != "/v1/events":
                        status = 404  # as `spendstream run` answers any other path
                    elif self.headers["Authorization"] != f"Bearer {TOKEN}":
                        status = 401
                    rejected = []
                    if status == 200:
                        server.bodies.append(body)
                        server.headers.append(dict(self.headers))
                        for n, line in enumerate(body.splitlines(), start=1):
                            if json.loads(line)["event_id"] in server.reject_event_ids:
                                rejected.append({"line": n, "error": "model: bad"})
                lines = len(body.splitlines())
                answer = json.dumps({"accepted": lines - len(rejected), "rejected": rejected})
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                if server.location is not None:
                    self.send_header("Location", server.location)
                self.end_headers()
                self.wfile.write(server.answer or answer.encode())

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def event_ids(self) -> list[str]:
        with self.lock:
            return [json.loads(line)["event_id"] for b in self.bodies for line in b.splitlines()]

    def stop(self) -> None:
        self.answering.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[IngestServer]:
    s = IngestServer()
    yield s
    s.stop()


def _fields(i: int, **over: Any) -> dict[str, Any]:
    return {
        "event_id": f"e{i:06d}",
        "provider": "openai",
        "model": "gpt-5-mini",
        "input_tokens": 100 + i,
        "output_tokens": 10,
        **over,
    }


def _meter(server: IngestServer, tmp_path: Path | None, **kw: Any) -> Meter:
    spool = tmp_path / "spool" if tmp_path is not None else None
    kw.setdefault("linger_s", 0.01)
    return Meter.http(server.url, TOKEN, spool_dir=spool, **kw)


def test_recorded_events_arrive_in_order_as_json_lines_with_the_bearer_token(
    server: IngestServer, tmp_path: Path
) -> None:
    with _meter(server, tmp_path, batch_size=40) as meter:
        for i in range(100):
            assert meter.record(**_fields(i)) == f"e{i:06d}"
        assert meter.flush(timeout_s=30)
        assert meter.metrics.sent == 100
    assert server.event_ids() == [f"e{i:06d}" for i in range(100)]
    assert all(len(b.splitlines()) <= 40 for b in server.bodies)
    assert server.headers[0]["Content-Type"] == "application/x-ndjson"
    first = json.loads(server.bodies[0].splitlines()[0])
    assert UsageEvent.model_validate(first).input_tokens == 100
    assert "team" not in first  # unset optionals are not sent


def test_record_fills_in_event_id_time_and_meter_defaults(server: IngestServer) -> None:
    with _meter(server, None, defaults={"team": "search", "environment": "prod"}) as meter:
        event_id = meter.record(
            provider="anthropic",
            model="claude-sonnet-4-5",
            input_tokens=5,
            output_tokens=1,
            team="ads",
        )
        meter.record(UsageEvent.model_validate({**_fields(1), "ts": "2026-01-01T00:00:00Z"}))
        meter.record({**_fields(2)})
        assert meter.flush(timeout_s=30)
    sent = [json.loads(line) for b in server.bodies for line in b.splitlines()]
    assert sent[0]["event_id"] == event_id and len(event_id) == 32
    assert (sent[0]["team"], sent[0]["environment"]) == ("ads", "prod")
    assert sent[0]["ts"].endswith("Z")
    assert [e["event_id"] for e in sent[1:]] == ["e000001", "e000002"]


def test_invalid_event_raises_naming_the_field(server: IngestServer) -> None:
    with _meter(server, None) as meter:
        with pytest.raises(
            InvalidUsageEvent, match=r"input_tokens: Input should be greater than or equal to 0"
        ):
            meter.record(**_fields(1, input_tokens=-5))
        with pytest.raises(InvalidUsageEvent, match="cache_read_tokens"):
            meter.record(**_fields(1, input_tokens=5, cache_read_tokens=9))
        assert meter.metrics.invalid == 0


def test_invalid_event_is_counted_and_logged_when_the_meter_drops_them(
    server: IngestServer, caplog: pytest.LogCaptureFixture
) -> None:
    with _meter(server, None, on_invalid="drop") as meter:
        assert meter.record(**_fields(1, status="exploded")) == ""
        assert meter.metrics.invalid == 1
    assert "status" in caplog.text


def test_receiver_rejections_are_counted_and_not_retried(
    server: IngestServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.reject_event_ids = {"e000003"}
    with _meter(server, None) as meter:
        for i in range(6):
            meter.record(**_fields(i))
        assert meter.flush(timeout_s=30)
        m = meter.metrics
    assert (m.sent, m.rejected) == (5, 1)
    assert server.event_ids().count("e000003") == 1
    assert "model: bad" in caplog.text


def test_server_errors_spool_events_and_replay_them_in_order_on_recovery(
    server: IngestServer, tmp_path: Path
) -> None:
    server.status = 503
    with _meter(server, tmp_path, batch_size=10) as meter:
        for i in range(50):
            meter.record(**_fields(i))
        assert not meter.flush(timeout_s=1.0)
        down = meter.metrics
        assert down.spooled > 0 and down.sent == 0 and down.send_failures > 0
        server.status = 200
        assert meter.flush(timeout_s=30)
        up = meter.metrics
    assert server.event_ids() == [f"e{i:06d}" for i in range(50)]
    assert up.replayed == up.spooled and up.sent == 50 and up.dropped == 0


def test_the_endpoints_own_url_is_taken_and_a_wrong_one_keeps_the_events(
    server: IngestServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The OTLP docs give /v1/traces' full URL: given /v1/events' likewise, events arrive.
    with Meter.http(f"{server.url}/v1/events/", TOKEN, spool_dir=None, linger_s=0.01) as meter:
        meter.record(**_fields(1))
        assert meter.flush(timeout_s=30)
    assert server.event_ids() == ["e000001"]
    # A URL with no ingest endpoint (404) is the operator's to fix, as a wrong token is:
    # the events are kept for retry, not rejected as bad events and lost.
    wrong = Meter.http(f"{server.url}/ingest", TOKEN, spool_dir=tmp_path / "s", linger_s=0.01)
    for i in range(2, 5):
        wrong.record(**_fields(i))
    assert not wrong.flush(timeout_s=1.0)
    m = wrong.metrics
    wrong.close(timeout_s=1.0)
    assert (m.rejected, m.sent) == (0, 0) and m.send_failures > 0
    assert server.event_ids() == ["e000001"]
    assert "answered 404 (no spendstream ingest endpoint there" in caplog.text
    # ... and a retry loop says so once a minute, not at every retry.
    assert caplog.text.count("answered 404") == 1
    [slot] = (tmp_path / "s").glob("slot-*")  # kept on disk, for that destination
    kept = [json.loads(line)["event_id"] for seg in slot.glob("seg-*") for line in seg.open()]
    assert kept == ["e000002", "e000003", "e000004"]


def test_unreachable_server_without_spool_holds_a_batch_and_counts_queue_drops(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = IngestServer()
    url = server.url
    server.stop()  # nothing listens: connection refused
    meter = Meter.http(url, TOKEN, spool_dir=None, queue_size=20, batch_size=5, linger_s=0.01)
    for i in range(100):
        meter.record(**_fields(i))
    m = meter.metrics
    assert m.dropped > 0
    assert m.queued + m.dropped + m.sent == 100  # every event accounted for
    meter.close(timeout_s=0.2)
    assert meter.metrics.dropped + meter.metrics.sent == 100
    # The first drop is said at once, in words: one event, the first of the run.
    assert re.search(r"1 usage event dropped \(.+\); 1 dropped so far", caplog.text)


def test_full_queue_overflows_into_the_spool_and_nothing_is_lost(
    server: IngestServer, tmp_path: Path
) -> None:
    server.status = 503
    with _meter(server, tmp_path, queue_size=5, batch_size=5) as meter:
        for i in range(200):
            meter.record(**_fields(i))
        assert meter.metrics.overflowed > 0
        server.status = 200
        assert meter.flush(timeout_s=30)
        m = meter.metrics
    assert sorted(server.event_ids()) == [f"e{i:06d}" for i in range(200)]
    assert m.dropped == 0 and m.sent == 200


def test_spool_bound_drops_are_counted(server: IngestServer, tmp_path: Path) -> None:
    server.status = 503
    meter = _meter(server, tmp_path, spool_max_bytes=2_000, batch_size=10)
    for i in range(100):
        meter.record(**_fields(i))
    meter.close(timeout_s=0.5)
    m = meter.metrics
    assert m.dropped > 0 and m.spool_bytes <= 2_000
    assert m.spooled + m.dropped == 100


def test_events_spooled_at_close_are_replayed_by_the_next_process(
    server: IngestServer, tmp_path: Path
) -> None:
    server.status = 503
    first = _meter(server, tmp_path)
    for i in range(30):
        first.record(**_fields(i))
    first.close(timeout_s=0.3)
    assert first.metrics.spooled == 30 and first.metrics.dropped == 0
    server.status = 200
    with _meter(server, tmp_path) as second:
        assert second.flush(timeout_s=30)
        assert second.metrics.replayed == 30
    assert server.event_ids() == [f"e{i:06d}" for i in range(30)]


def test_interpreter_exit_flushes_what_was_recorded(server: IngestServer, tmp_path: Path) -> None:
    code = (
        "from spendstream.producers import Meter\n"
        f"m = Meter.http({server.url!r}, {TOKEN!r}, spool_dir={str(tmp_path)!r})\n"
        "for i in range(25):\n"
        "    m.record(event_id=f'x{i}', provider='openai', model='m', input_tokens=1, output_tokens=1)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert server.event_ids() == [f"x{i}" for i in range(25)]


def test_track_measures_latency_and_numbers_retries_of_one_request(server: IngestServer) -> None:
    with _meter(server, None) as meter:
        for attempt in range(3):
            expect = pytest.raises(TimeoutError) if attempt < 2 else contextlib.nullcontext()
            with (
                expect,
                meter.track("anthropic", "claude-sonnet-4-5", request_id="r-1", team="ads") as call,
            ):
                if attempt < 2:
                    raise TimeoutError("read timed out")
                call.usage(
                    {
                        "model": "claude-sonnet-4-5-20250929",
                        "usage": {
                            "input_tokens": 3,
                            "cache_read_input_tokens": 100,
                            "output_tokens": 7,
                        },
                    }
                )
        with pytest.raises(RuntimeError), meter.track("openai", "gpt-5-mini"):
            raise RuntimeError("boom")
        assert meter.flush(timeout_s=30)
    sent = [json.loads(line) for b in server.bodies for line in b.splitlines()]
    assert [(e["attempt"], e["status"]) for e in sent[:3]] == [
        (1, "timeout"),
        (2, "timeout"),
        (3, "ok"),
    ]
    assert {e["request_id"] for e in sent[:3]} == {"r-1"}
    ok = sent[2]
    assert (ok["input_tokens"], ok["cache_read_tokens"], ok["output_tokens"]) == (103, 100, 7)
    assert ok["model"] == "claude-sonnet-4-5-20250929" and ok["team"] == "ads"
    assert all(e["latency_ms"] >= 0 for e in sent)
    assert (sent[3]["status"], sent[3]["attempt"], sent[3]["input_tokens"]) == ("error", 1, 0)


def test_one_line_recording_of_openai_and_anthropic_responses(server: IngestServer) -> None:
    responses = Path(__file__).with_name("responses")
    openai_body = json.loads((responses / "openai_chat.json").read_text())
    anthropic_body = json.loads((responses / "anthropic_message.json").read_text())
    with Meter.http(server.url, TOKEN, spool_dir=None, linger_s=0.01, team="search") as meter:
        meter.record_openai(openai_body, user_id="u-1")
        meter.record_anthropic(anthropic_body, api_key_id="key-1")
        assert meter.defaults == {"team": "search"}
        assert meter.flush(timeout_s=30)
    sent = [json.loads(line) for b in server.bodies for line in b.splitlines()]
    u = anthropic_body["usage"]
    assert (sent[0]["provider"], sent[0]["team"], sent[0]["user_id"]) == ("openai", "search", "u-1")
    assert (
        sent[0]["cache_read_tokens"]
        == openai_body["usage"]["prompt_tokens_details"]["cached_tokens"]
    )
    assert sent[1]["input_tokens"] == (
        u["input_tokens"] + u["cache_creation_input_tokens"] + u["cache_read_input_tokens"]
    )
    assert (sent[1]["api_key_id"], sent[1]["team"]) == ("key-1", "search")


def test_one_line_recording_of_gemini_and_any_providers_responses(server: IngestServer) -> None:
    responses = Path(__file__).with_name("responses")
    gemini_body = json.loads((responses / "gemini.json").read_text())
    openrouter_body = json.loads((responses / "openrouter.json").read_text())
    bedrock_body = json.loads((responses / "bedrock_converse.json").read_text())
    bedrock_model = "anthropic.claude-sonnet-4-5-20250929-v1:0"
    with Meter.http(server.url, TOKEN, spool_dir=None, linger_s=0.01, team="search") as meter:
        meter.record_gemini(gemini_body, feature="summaries")
        meter.record_response("openrouter", openrouter_body, user_id="u-2")
        meter.record_response("bedrock", bedrock_body, model=bedrock_model)
        assert meter.flush(timeout_s=30)
    sent = [json.loads(line) for b in server.bodies for line in b.splitlines()]
    gemini, openrouter, bedrock = sent
    g = gemini_body["usageMetadata"]
    assert (gemini["provider"], gemini["model"]) == ("google", gemini_body["modelVersion"])
    assert (gemini["team"], gemini["feature"]) == ("search", "summaries")
    # Gemini's prompt count includes its cached part; thinking is billed as output.
    assert (gemini["input_tokens"], gemini["cache_read_tokens"]) == (
        g["promptTokenCount"],
        g["cachedContentTokenCount"],
    )
    assert gemini["output_tokens"] == g["candidatesTokenCount"] + g["thoughtsTokenCount"]
    u = openrouter_body["usage"]
    assert (openrouter["provider"], openrouter["user_id"]) == ("openrouter", "u-2")
    assert (openrouter["input_tokens"], openrouter["output_tokens"]) == (
        u["prompt_tokens"],
        u["completion_tokens"],
    )
    assert openrouter["cache_read_tokens"] == u["prompt_tokens_details"]["cached_tokens"]
    # OpenRouter's own cost is carried as sent, exactly: no binary float on the way.
    assert Decimal(str(openrouter["reported_cost_usd"])) == Decimal(str(u["cost"]))
    # Bedrock does not echo the model: the keyword names it.
    b = bedrock_body["usage"]
    assert (bedrock["provider"], bedrock["model"]) == ("bedrock", bedrock_model)
    assert bedrock["input_tokens"] + bedrock["output_tokens"] == b["totalTokens"]


def test_constructor_keywords_split_into_event_defaults_meter_options_and_transport() -> None:
    meter = Meter.kafka(
        "127.0.0.1:1", team="ads", queue_size=7, topic="other-topic", spool_dir=None
    )
    try:
        assert meter.defaults == {"team": "ads"}
        assert meter.queue_size == 7
        assert meter.transport.topic == "other-topic"
    finally:
        meter.close(timeout_s=0)


def test_close_spools_a_batch_whose_send_outlives_the_deadline(
    server: IngestServer, tmp_path: Path
) -> None:
    server.delay_s = 4.0  # the receiver hangs on the request
    meter = _meter(server, tmp_path, timeout_s=30)
    for i in range(10):
        meter.record(**_fields(i))
    time.sleep(0.3)  # the sender is now inside the slow POST
    meter.close(timeout_s=0.1)
    m = meter.metrics
    # Spooled rather than lost; the receiver may still take the batch (same event_ids).
    assert (m.spooled, m.dropped, m.queued) == (10, 0, 0)
    server.delay_s = 0.0
    with _meter(server, tmp_path) as again:
        assert again.flush(timeout_s=30)
        assert again.metrics.replayed == 10


def test_recording_after_close_is_counted_as_dropped(server: IngestServer, tmp_path: Path) -> None:
    meter = _meter(server, tmp_path)
    meter.close()
    assert meter.record(**_fields(1)) == "e000001"
    assert meter.metrics.dropped == 1


def test_a_forked_child_sends_its_own_events_and_not_the_parents(
    server: IngestServer, tmp_path: Path
) -> None:
    meter = _meter(server, tmp_path, batch_size=1000, linger_s=3600)  # the parent's stay queued
    for i in range(5):
        meter.record(**_fields(i))
    pid = os.fork()
    if pid == 0:  # the child: record, deliver, leave without running the parent's atexit
        code = 1
        try:
            for i in range(100, 103):
                meter.record(**_fields(i))
            ok = meter.flush(timeout_s=30)
            code = 0 if ok and meter.metrics.sent == 3 else 1
            meter.close()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert meter.flush(timeout_s=30)
    meter.close()
    assert sorted(server.event_ids()) == [f"e{i:06d}" for i in [0, 1, 2, 3, 4, 100, 101, 102]]


def _spooled_lines(spool: Path) -> list[str]:
    return [
        json.loads(line)["event_id"]
        for seg in sorted(spool.glob("slot-*/seg-*.jsonl"))
        for line in seg.read_bytes().splitlines()
    ]


def test_a_hung_send_puts_the_batch_in_flight_and_the_queue_on_disk_and_sends_once(
    server: IngestServer, tmp_path: Path
) -> None:
    server.answering.clear()  # the endpoint takes the request and never answers (yet)
    meter = _meter(server, tmp_path, batch_size=50, spool_flush_s=0.4, timeout_s=120)
    try:
        for i in range(50):
            meter.record(**_fields(i))
        deadline = time.monotonic() + 60
        while meter.metrics.spooled < 50:  # the batch in flight, spilled by the spill thread
            assert time.monotonic() < deadline, meter.metrics
            time.sleep(0.02)
        for i in range(50, 80):  # recorded while the send still hangs: queued, then spilled
            meter.record(**_fields(i))
        while meter.metrics.spooled < 80:
            assert time.monotonic() < deadline, meter.metrics
            time.sleep(0.02)
        assert _spooled_lines(tmp_path / "spool") == [f"e{i:06d}" for i in range(80)]
        assert server.event_ids() == []  # still nothing answered
        server.answering.set()  # the hung send now succeeds...
        assert meter.flush(timeout_s=60)
        m = meter.metrics
    finally:
        meter.close()
    # ...so its spilled copy leaves the spool unsent: every event arrives exactly once.
    assert server.event_ids() == [f"e{i:06d}" for i in range(80)]
    assert (m.sent, m.spooled, m.replayed, m.dropped) == (80, 80, 80, 0)


def _wait_for(condition: Any, what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


@pytest.mark.parametrize("status", [500, 503, 408, 429, 401, 403, 404, 405])
def test_endpoint_trouble_keeps_the_events_and_refused_credentials_are_errors(
    server: IngestServer, tmp_path: Path, caplog: pytest.LogCaptureFixture, status: int
) -> None:
    server.status = status
    with _meter(server, tmp_path) as meter:
        for i in range(5):
            meter.record(**_fields(i))
        _wait_for(lambda: meter.metrics.spooled == 5, "the events kept in the spool")
        server.status = 200
        assert meter.flush(timeout_s=30)
        m = meter.metrics
    assert server.event_ids() == [f"e{i:06d}" for i in range(5)]
    assert (m.sent, m.rejected, m.dropped) == (5, 0, 0)
    answered = [r for r in caplog.records if f"answered {status}" in r.getMessage()]
    # A credential or a URL is the operator's to fix: an error, not a passing warning.
    level = logging.ERROR if status in (401, 403, 404, 405) else logging.WARNING
    assert answered and {r.levelno for r in answered} == {level}


@pytest.mark.parametrize("status", [400, 413, 422])
def test_a_request_the_endpoint_refuses_rejects_its_events_without_retrying(
    server: IngestServer, tmp_path: Path, caplog: pytest.LogCaptureFixture, status: int
) -> None:
    server.status = status
    with _meter(server, tmp_path) as meter:
        meter.record(**_fields(1))
        assert meter.flush(timeout_s=30)
        m = meter.metrics
    assert (m.sent, m.rejected, m.spooled, m.send_failures) == (0, 1, 0, 0)
    assert server.requests == 1
    assert f"HTTP {status}" in caplog.text


def test_a_batch_past_a_proxys_body_limit_is_sent_in_halves_until_each_fits(
    server: IngestServer,
) -> None:
    # A 413 is about the body, not the events (nginx refuses bodies over 1 MB by default):
    # rejecting the whole batch lost every event in it. Halves are sent until each fits;
    # only an event that is alone too large is rejected.
    lines = [b'{"event_id":"e%06d","pad":"%s"}' % (i, b"x" * 200) for i in range(40)]
    server.max_body = 2000  # ~8 of these lines
    transport = HttpTransport(server.url, TOKEN)
    try:
        result = transport.send([Record(b"k", line) for line in lines])
        assert (result.failed, result.rejected) == ([], [])
        assert server.event_ids() == [f"e{i:06d}" for i in range(40)]
        assert max(len(b) for b in server.bodies) <= 2000
        alone = b'{"event_id":"big","pad":"%s"}' % (b"x" * 3000)
        result = transport.send([Record(b"k", lines[0]), Record(b"k", alone)])
        assert result.failed == [] and [i for i, _ in result.rejected] == [1]
        assert result.rejected[0][1].startswith("HTTP 413")
    finally:
        transport.close()


def test_a_rejected_event_is_logged_with_its_line_in_the_batch(
    server: IngestServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.reject_event_ids = {"e000002"}
    with _meter(server, None, batch_size=3, linger_s=3600) as meter:  # one batch of three
        for i in range(3):
            meter.record(**_fields(i))
        assert meter.flush(timeout_s=30)
        assert (meter.metrics.sent, meter.metrics.rejected) == (2, 1)
    assert "model: bad (line 3)" in caplog.text


def test_http_transport_reports_a_timeout_as_a_failure_and_does_not_raise(
    server: IngestServer,
) -> None:
    server.delay_s = 2.0
    transport = HttpTransport(server.url, TOKEN, timeout_s=0.2)
    try:
        result = transport.send(
            [Record(b"k", b'{"event_id":"a"}'), Record(b"k", b'{"event_id":"b"}')]
        )
    finally:
        transport.close()
    assert (result.failed, result.rejected) == ([0, 1], [])


@pytest.mark.parametrize(
    "answer",
    [
        b"[]",  # e.g. a proxy in front of the endpoint
        b"{}",  # read as "nothing rejected", without a word
        b'{"accepted": 2, "rejected": []}',  # one line short of what was sent
        b'{"accepted": 2, "rejected": [{"line": 9, "error": "x"}]}',  # no such line
    ],
)
def test_a_200_answer_that_does_not_account_for_every_line_is_an_error_counted_as_sent(
    server: IngestServer, caplog: pytest.LogCaptureFixture, answer: bytes
) -> None:
    # Counted as sent, not sent again: a proxy answering so for ever would hold the batch
    # at the spool's head. But said, as an error naming what to check.
    server.answer = answer
    with _meter(server, None, batch_size=3, linger_s=3600) as meter:  # one batch of three
        for i in range(3):
            meter.record(**_fields(i))
        assert meter.flush(timeout_s=30)
        m = meter.metrics
    assert sorted(server.event_ids()) == [f"e{i:06d}" for i in range(3)]  # each once
    assert (m.sent, m.send_failures, m.rejected) == (3, 0, 0)
    said = [r for r in caplog.records if "without saying what it took of 3 events" in r.message]
    assert said and said[0].levelno == logging.ERROR
    assert "is something else at this URL?" in said[0].message


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_keeps_the_events_and_names_where_it_points(
    server: IngestServer, tmp_path: Path, caplog: pytest.LogCaptureFixture, status: int
) -> None:
    # A load balancer sending http to https: httpx follows no redirect of a POST, so
    # nothing was taken. Counted as sent, every event was lost without a word.
    server.status, server.location = status, "https://ingest.example/v1/events"
    with _meter(server, tmp_path) as meter:
        for i in range(5):
            meter.record(**_fields(i))
        _wait_for(lambda: meter.metrics.spooled == 5, "the events kept in the spool")
        assert server.event_ids() == []
        server.status, server.location = 200, None
        assert meter.flush(timeout_s=30)
        m = meter.metrics
    assert server.event_ids() == [f"e{i:06d}" for i in range(5)]
    assert (m.sent, m.rejected, m.dropped) == (5, 0, 0)
    said = [r for r in caplog.records if f"answered {status}" in r.getMessage()]
    assert said and {r.levelno for r in said} == {logging.ERROR}
    assert "(to https://ingest.example/v1/events: give Meter.http that URL)" in said[0].message


def test_the_queue_holds_exactly_queue_size_events_before_it_overflows(
    server: IngestServer, tmp_path: Path
) -> None:
    # The sender sleeps (a long linger, batches never full): only the bound decides.
    with _meter(server, None, queue_size=3, batch_size=100, linger_s=3600) as unspooled:
        for i in range(5):
            unspooled.record(**_fields(i))
        assert (unspooled.metrics.queued, unspooled.metrics.dropped) == (3, 2)
        assert unspooled.flush(timeout_s=30)
    with _meter(server, tmp_path, queue_size=3, batch_size=100, linger_s=3600) as spooling:
        for i in range(5, 10):
            spooling.record(**_fields(i))
        m = spooling.metrics
        assert (m.queued, m.overflowed, m.dropped) == (3, 2, 0)
        assert spooling.flush(timeout_s=30)
    assert sorted(server.event_ids()) == [f"e{i:06d}" for i in [0, 1, 2, *range(5, 10)]]


def test_a_full_batch_is_sent_without_waiting_out_the_linger(server: IngestServer) -> None:
    with _meter(server, None, batch_size=3, linger_s=3600) as meter:
        for i in range(3):
            meter.record(**_fields(i))
        # no flush: the third event fills the batch, which goes now rather than in an hour
        _wait_for(lambda: len(server.event_ids()) == 3, "the full batch")


def test_a_batch_spilled_behind_overflowed_events_is_not_mistaken_for_the_spools_head(
    server: IngestServer, tmp_path: Path
) -> None:
    server.answering.clear()  # the first send hangs
    meter = _meter(server, tmp_path, queue_size=5, batch_size=5, spool_flush_s=2.0, timeout_s=120)
    try:
        for i in range(5):
            meter.record(**_fields(i))
        _wait_for(lambda: server.requests == 1, "the first batch in flight")
        for i in range(5, 13):  # 5 queued, then 3 overflow into the (empty) spool: its head
            meter.record(**_fields(i))
        assert meter.metrics.overflowed == 3
        _wait_for(lambda: meter.metrics.spooled == 13, "the batch in flight spilled behind them")
        server.answering.set()  # the hung send succeeds after all
        assert meter.flush(timeout_s=60)
        m = meter.metrics
    finally:
        meter.close()
    # The spilled batch is re-sent from the spool (same event_ids); the events ahead of it
    # in the spool must not be taken for it and removed unsent.
    assert set(server.event_ids()) == {f"e{i:06d}" for i in range(13)}
    assert m.dropped == 0


def test_close_during_a_hung_send_before_it_was_spilled_accounts_for_the_batch(
    server: IngestServer, tmp_path: Path
) -> None:
    server.answering.clear()
    meter = _meter(server, tmp_path, spool_flush_s=60, timeout_s=120)  # no spill for 30 s
    for i in range(4):
        meter.record(**_fields(i))
    _wait_for(lambda: server.requests == 1, "the batch in flight")
    meter.close(timeout_s=0.1)
    m = meter.metrics
    assert (m.spooled, m.dropped, m.queued) == (4, 0, 0)
    server.answering.set()
    with _meter(server, tmp_path) as again:
        assert again.flush(timeout_s=30)
        assert again.metrics.replayed == 4


class _RaisingFirst(HttpTransport):
    """An HTTP transport with a bug: its first sends raise instead of returning failures."""

    def __init__(self, *args: Any, raises: int, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.raises = raises

    def send(self, records: Any) -> SendResult:
        if self.raises:
            self.raises -= 1
            raise RuntimeError("transport bug")
        return super().send(records)


def test_a_transport_that_raises_is_treated_as_down_and_nothing_is_lost(
    server: IngestServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    transport = _RaisingFirst(server.url, TOKEN, raises=2)
    with Meter(transport, spool_dir=tmp_path / "spool", linger_s=0.01) as meter:
        for i in range(6):
            meter.record(**_fields(i))
        assert meter.flush(timeout_s=30)
        m = meter.metrics
    assert server.event_ids() == [f"e{i:06d}" for i in range(6)]
    assert (m.sent, m.dropped) == (6, 0) and m.send_failures >= 1
    assert "transport http raised" in caplog.text


def test_an_endpoint_that_stays_down_is_retried_less_and_less_often(
    server: IngestServer, tmp_path: Path
) -> None:
    server.status = 503
    with _meter(server, tmp_path) as meter:
        meter.record(**_fields(1))
        time.sleep(3.0)  # retries back off from 0.1 s, doubling: about 5 attempts in 3 s
        attempts = server.requests
        server.status = 200
        assert meter.flush(timeout_s=30)
    # An upper bound only (a slow machine makes fewer attempts): a fixed 0.1 s retry would
    # make some 30.
    assert 1 <= attempts <= 12, attempts


def test_a_hung_batch_the_spool_cannot_hold_whole_stays_in_flight_and_newer_lines_fit(
    server: IngestServer, tmp_path: Path
) -> None:
    # The spill wrote two of the hung batch's three big lines and counted the third dropped
    # (the send still held it). Now the batch is written whole or not at all; the newer,
    # smaller events take the room, and the batch is settled by its send.
    ts = "2026-01-01T00:00:00Z"
    pad = {f"pad{k}": "x" * 250 for k in range(4)}

    def big(i: int) -> dict[str, Any]:
        return _fields(i, ts=ts, tags=pad)

    def line_bytes(fields: dict[str, Any]) -> int:
        return len(UsageEvent.model_validate(fields).model_dump_json(exclude_none=True)) + 1

    # Room for two of the hung batch's three big lines, then for three small ones.
    room = 2 * line_bytes(big(0)) + 3 * line_bytes(_fields(3, ts=ts))
    assert line_bytes(big(0)) > 3 * line_bytes(_fields(3, ts=ts))
    server.answering.clear()
    meter = _meter(
        server, tmp_path, batch_size=3, spool_max_bytes=room, spool_flush_s=0.4, timeout_s=120
    )
    try:
        for i in range(3):
            meter.record(**big(i))
        _wait_for(lambda: server.requests == 1, "the big batch in flight")
        for i in range(3, 6):
            meter.record(**_fields(i, ts=ts))
        _wait_for(lambda: meter.metrics.spooled == 3, "the small ones")
        assert _spooled_lines(tmp_path / "spool") == [f"e{i:06d}" for i in range(3, 6)]
        m = meter.metrics
        assert (m.dropped, m.queued) == (0, 3)  # the big batch, held by its send
        server.answering.set()  # the hung send succeeds
        assert meter.flush(timeout_s=60)
        m = meter.metrics
    finally:
        meter.close()
    assert server.event_ids() == [f"e{i:06d}" for i in range(6)]  # each once
    assert (m.sent, m.replayed, m.dropped) == (6, 3, 0)


def test_close_during_a_hung_replay_leaves_the_spooled_lines_as_they_were(
    server: IngestServer, tmp_path: Path
) -> None:
    server.status = 503
    first = _meter(server, tmp_path)
    for i in range(5):
        first.record(**_fields(i))
    first.close(timeout_s=0.3)
    assert first.metrics.spooled == 5
    server.status = 200
    server.answering.clear()
    before = server.requests
    second = _meter(server, tmp_path, spool_flush_s=60, timeout_s=120)
    _wait_for(lambda: server.requests > before, "the replay in flight")
    second.close(timeout_s=0.1)  # the replay hangs past the deadline
    assert (second.metrics.spooled, second.metrics.dropped) == (0, 0)
    server.answering.set()
    with _meter(server, tmp_path) as third:
        assert third.flush(timeout_s=30)
        assert third.metrics.replayed == 5  # those lines once, not spooled a second time


_RECORD_ON_A_FULL_DISK = r"""
import logging, resource, signal, sys
from spendstream.producers.meter import Meter

logging.basicConfig(level=logging.ERROR, stream=sys.stdout, format="%(message)s")
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
# Nothing answers at the URL: every event overflows the one-event queue into the spool,
# in the caller's thread, which raised OSError there when the disk refused it.
meter = Meter.http(sys.argv[2], "t", spool_dir=sys.argv[1], queue_size=1, linger_s=3600,
                   close_timeout_s=0.5)
_, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (2000, hard))
for i in range(40):
    meter.record(provider="openai", model="gpt-5", input_tokens=1, output_tokens=1,
                 event_id=f"e{i:06d}", ts="2026-11-01T12:00:00Z")
m = meter.metrics
print("counts", m.spooled, m.dropped, m.spooled + m.dropped + m.queued)
"""


def test_record_on_a_disk_that_refuses_the_spool_drops_counts_and_logs_never_raises(
    tmp_path: Path,
) -> None:
    # RLIMIT_FSIZE: the kernel refuses bytes past 2000 (EFBIG) as a full disk does (ENOSPC).
    import subprocess
    import sys

    from spendstream.local.kafka import find_free_port

    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _RECORD_ON_A_FULL_DISK,
            str(tmp_path / "spool"),
            f"http://127.0.0.1:{find_free_port()}",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    counts = next(li for li in proc.stdout.splitlines() if li.startswith("counts "))
    spooled, dropped, total = map(int, counts.split()[1:])
    assert total == 40 and spooled > 0 and dropped > 0
    assert "cannot write the spool in " in proc.stdout and "File too large" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr


def test_a_spool_that_cannot_be_had_leaves_the_meter_working_without_one(
    server: IngestServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A read-only home in a container, or every slot taken: Meter() raised into the
    # application (and a forked child's restart stopped before its sender thread).
    import spendstream.producers.spool as spool_module

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with Meter.http(server.url, TOKEN, spool_dir=blocker / "spool", linger_s=0.01) as meter:
        meter.record(**_fields(1))
        assert meter.flush(timeout_s=30)
    monkeypatch.setattr(spool_module, "_MAX_SLOTS", 1)
    held = spool_module.Spool(tmp_path / "root")
    try:
        with Meter.http(server.url, TOKEN, spool_dir=tmp_path / "root", linger_s=0.01) as meter:
            meter.record(**_fields(2))
            assert meter.flush(timeout_s=30)
    finally:
        held.close()
    assert server.event_ids() == ["e000001", "e000002"]
    said = [r.message for r in caplog.records if "spendstream meter: no spool" in r.message]
    assert len(said) == 2 and "a-file" in said[0] and "all 1 spool slots" in said[1]
    assert all("Give Meter spool_dir=" in m for m in said)


def _record_in_child(meter: Meter, i: int) -> None:
    meter.record(**_fields(i))


def _meter_in_child(url: str, i: int) -> None:
    meter = Meter.http(url, TOKEN, spool_dir=None, linger_s=3600, close_timeout_s=30)
    meter.record(**_fields(i))


def test_what_a_multiprocessing_child_recorded_is_sent_when_it_ends(
    server: IngestServer, tmp_path: Path
) -> None:
    # A Process's child ends in os._exit: atexit never ran, and an hour's linger held
    # every event it recorded until it was gone. Made before the fork (gunicorn --preload,
    # Celery), or in the child, under fork or forkserver.
    import multiprocessing

    fork = multiprocessing.get_context("fork")
    with _meter(server, tmp_path, linger_s=3600, close_timeout_s=30) as meter:
        children = [fork.Process(target=_record_in_child, args=(meter, i)) for i in range(4)]
        children += [fork.Process(target=_meter_in_child, args=(server.url, 4))]
        server_ctx = multiprocessing.get_context("forkserver")
        children += [server_ctx.Process(target=_meter_in_child, args=(server.url, 5))]
        for child in children:
            child.start()
        for child in children:
            child.join(60)
        assert [child.exitcode for child in children] == [0] * 6
        assert sorted(server.event_ids()) == [f"e{i:06d}" for i in range(6)]


def test_a_response_without_usage_is_a_call_tagged_usage_missing_when_invalid_is_dropped(
    server: IngestServer, caplog: pytest.LogCaptureFixture
) -> None:
    # A compatible server that sends no usage (vLLM, some proxies): the helpers raised
    # ValueError into the application even with on_invalid="drop", and inside track() the
    # call, which succeeded and was paid, was recorded as an error.
    bare = {"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-5-mini", "choices": []}
    # A stream without include_usage: chunks, the model in each, no usage anywhere.
    chunk = {"id": "c", "object": "chat.completion.chunk", "model": "gpt-5-mini", "choices": []}
    with _meter(server, None, on_invalid="drop", tags={"region": "eu"}) as meter:
        assert meter.record_openai(bare, event_id="e1", tags={"team": "search"})
        with meter.track("openai", "gpt-5-mini", event_id="e2") as call:
            call.usage(bare)
        assert meter.record_openai([chunk, chunk], event_id="e3")
        assert meter.record_response("openai", iter([chunk]), event_id="e4")
        assert meter.flush(timeout_s=30)
        assert meter.metrics.invalid == 0
    events = {e["event_id"]: e for b in server.bodies for e in map(json.loads, b.splitlines())}
    for eid in ("e1", "e2", "e3", "e4"):
        e = events[eid]
        assert (e["model"], e["input_tokens"], e["output_tokens"]) == ("gpt-5-mini", 0, 0)
        assert e.get("status", "ok") == "ok"
        # The tag joins the Meter's default tags (a tags field alone replaced them).
        assert e["tags"]["usage"] == "missing" and e["tags"]["region"] == "eu"
    assert events["e1"]["tags"] == {"region": "eu", "team": "search", "usage": "missing"}
    assert caplog.text.count("usage missing (no openai usage in this response") == 2
    assert caplog.text.count("usage missing (no usage in the streamed chunks") == 2
    with _meter(server, None) as strict:  # on_invalid="raise": the developer is told
        with pytest.raises(ValueError, match="no openai usage"):
            strict.record_openai(bare)
        with (
            pytest.raises(ValueError, match="no openai usage"),
            strict.track("openai", "gpt-5-mini") as call,
        ):
            call.usage(bare)


@pytest.mark.parametrize("back_up", [False, True])
def test_a_close_after_failed_sends_tries_once_then_leaves_the_rest_to_the_spool(
    server: IngestServer, tmp_path: Path, back_up: bool
) -> None:
    # Closing with the endpoint down retried until close_timeout_s (10 s by default, per
    # Meter) for nothing: the spool keeps the events for the next process. But a failure
    # before close() says nothing of the endpoint now: the close tries it once first
    # (it spooled everything without an attempt though the endpoint was back).
    server.status = 503
    meter = _meter(server, tmp_path, close_timeout_s=30)
    meter.record(**_fields(1))
    _wait_for(lambda: meter.metrics.send_failures >= 1, "the first send failed")
    if back_up:
        server.status = 200
    before = server.requests
    meter.record(**_fields(2))
    meter.close()
    m = meter.metrics
    if back_up:
        assert server.event_ids() == ["e000001", "e000002"]
        assert (m.sent, m.dropped) == (2, 0)
        return
    # One by close (and at most one of the backoff before it), not one per backoff step
    # until the deadline (11 before this).
    assert server.requests - before <= 2
    assert (m.spooled, m.dropped, m.sent) == (2, 0, 0)
    server.status = 200
    with _meter(server, tmp_path) as after:  # the next process sends them
        assert after.flush(timeout_s=30)
    assert server.event_ids() == ["e000001", "e000002"]


def test_meter_jsonl_feeds_the_embedded_pipeline_with_no_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The Python client had no embedded way in: Meter.kafka and Meter.http need `spendstream
    # run`, and SPENDSTREAM_METER_URL=file://... was refused.
    from spendstream.cli import main

    calls = tmp_path / "calls.jsonl"
    with Meter.jsonl(calls, spool_dir=None, team="search") as meter:
        for i in range(3):
            meter.record(**_fields(i))
    monkeypatch.setenv("SPENDSTREAM_METER_URL", f"file://{calls}")
    with Meter.from_env(spool_dir=None) as from_env:
        from_env.record(**_fields(3))
    lines = [json.loads(line) for line in calls.read_text().splitlines()]
    assert [e["event_id"] for e in lines] == [f"e{i:06d}" for i in range(4)]
    assert [e.get("team") for e in lines] == ["search"] * 3 + [None]
    workdir = str(tmp_path / "wd")
    assert main(["ingest", str(calls), "--workdir", workdir]) == 0
    assert "read 4 = landed 4 + duplicates 0 + dead-lettered 0" in capsys.readouterr().out
    assert main(["ingest", str(calls), "--workdir", workdir]) == 0  # a replay adds nothing
    assert "read 4 = landed 0 + duplicates 4 + dead-lettered 0" in capsys.readouterr().out


def test_a_file_that_cannot_be_appended_keeps_the_events_for_retry(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    calls = tmp_path / "missing-dir" / "calls.jsonl"
    meter = Meter.jsonl(calls, spool_dir=tmp_path / "spool", linger_s=0.01)
    meter.record(**_fields(1))
    _wait_for(lambda: meter.metrics.spooled == 1, "the event kept in the spool")
    calls.parent.mkdir()
    assert meter.flush(timeout_s=30)
    meter.close()
    assert [json.loads(li)["event_id"] for li in calls.read_text().splitlines()] == ["e000001"]
    assert f"cannot append to {calls} (" in caplog.text


class _NamelessTransport:
    """A transport as docs/producers.md describes one: ``send`` and ``close``, nothing else."""

    def __init__(self) -> None:
        self.records: list[Record] = []

    def send(self, records: Any) -> Any:
        from spendstream.producers.transports import SendResult

        self.records.extend(records)
        return SendResult()

    def close(self) -> None:
        pass


def test_a_custom_transport_needs_only_send_and_close_and_the_meter_takes_field_defaults() -> None:
    # Meter(T(), team="x") raised TypeError (only Meter.kafka/http took event fields), and a
    # transport without a `name` raised AttributeError inside Meter().
    transport = _NamelessTransport()
    with Meter(transport, spool_dir=None, linger_s=0.01, team="search") as meter:
        meter.record(**_fields(1))
        assert meter.flush(timeout_s=30)
    assert [json.loads(r.value)["team"] for r in transport.records] == ["search"]
    with pytest.raises(TypeError, match="not: colour"):
        Meter(_NamelessTransport(), spool_dir=None, colour="red")


def test_a_line_a_short_write_tore_is_ended_before_the_next_batch(tmp_path: Path) -> None:
    # A disk that filled cut a batch's write short; the batch, sent again, was glued onto
    # the torn piece, and its first event was lost inside one bad line.
    from spendstream.producers.transports import FileTransport

    calls = tmp_path / "calls.jsonl"
    calls.write_bytes(b'{"event_id": "e0", "ts"')  # what a short write left
    transport = FileTransport(calls)
    first = Record(b"k", json.dumps({"event_id": "e1"}).encode())
    assert transport.send([first, first]).failed == []
    assert transport.send([first]).failed == []  # the file ends in a newline: none added
    assert calls.read_bytes().split(b"\n") == [
        b'{"event_id": "e0", "ts"',
        b'{"event_id": "e1"}',
        b'{"event_id": "e1"}',
        b'{"event_id": "e1"}',
        b"",
    ]
