"""OpenAI Responses API calls made with ``background=True``, through ``meter.instrument``:
with the real openai SDK against a real local HTTP server that runs them as OpenAI does
(queued at creation, finished later, read with ``retrieve`` or ``cancel``, or streamed)."""

from __future__ import annotations

import asyncio
import gc
import json
import threading
import time
import weakref
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx2
import openai
import pytest

from spendstream.producers.meter import Meter
from tests.producers.collecting import CollectingTransport, collecting_meter, flushed
from tests.producers.provider_server import RESPONSES_USAGE, _response

# What a cancelled response had used when it was stopped.
PARTIAL_USAGE = {
    "input_tokens": 900,
    "input_tokens_details": {"cached_tokens": 512},
    "output_tokens": 7,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 907,
}
RESP = {"input_tokens": 900, "cache_read_tokens": 512, "output_tokens": 80}


class BackgroundServer:
    """Answers ``POST /v1/responses`` like OpenAI in background mode: ``queued``, no usage.
    The first ``GET /v1/responses/{id}`` answers ``in_progress``, later ones ``completed``
    with usage; ``POST .../cancel`` answers ``cancelled`` with the usage so far. With
    ``stream``, the create streams ``response.created`` ... ``response.completed``.
    ``created_at`` is a minute ago and ``completed_at`` 3 s later (the event's ts)."""

    def __init__(self) -> None:
        self.created_at = int(time.time()) - 60
        self.retrieved: dict[str, int] = {}
        self.foreground: set[str] = set()  # ids created without background=True
        self.next_id = 0
        self.newer_item = False  # finished output holds an item type newer than the SDK
        self.cut_streams = False  # a stream's connection dropped after response.created
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                path = self.path.split("?", 1)[0]
                if path.endswith("/cancel"):
                    rid = path.split("/")[-2]
                    return server._json(self, server.state(rid, "cancelled", PARTIAL_USAGE))
                with server._lock:
                    server.next_id += 1
                    rid = f"resp_bg_{server.next_id}"
                background = bool(body.get("background"))
                if body.get("stream"):
                    return server._sse(self, rid, background)
                if background:
                    return server._json(self, server.state(rid, "queued", None))
                server.foreground.add(rid)
                return server._json(self, server.state(rid, "completed"))

            def do_GET(self) -> None:
                rid = self.path.split("?", 1)[0].rsplit("/", 1)[-1]
                with server._lock:
                    seen = server.retrieved[rid] = server.retrieved.get(rid, 0) + 1
                if seen == 1:
                    return server._json(self, server.state(rid, "in_progress", None))
                return server._json(self, server.state(rid, "completed"))

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> BackgroundServer:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    @property
    def ts(self) -> datetime:
        return datetime.fromtimestamp(self.created_at + 3, UTC)

    def state(
        self, rid: str, status: str, usage: dict[str, Any] | None = RESPONSES_USAGE
    ) -> dict[str, Any]:
        finished = status in ("completed", "cancelled", "failed", "incomplete")
        return {
            **_response("gpt-5"),
            "id": rid,
            "status": status,
            "background": rid not in self.foreground,
            "created_at": self.created_at,
            "completed_at": self.created_at + 3 if finished else None,
            "output": self.output() if status == "completed" else [],
            "usage": usage,
        }

    def output(self) -> list[dict[str, Any]]:
        output: list[dict[str, Any]] = _response("gpt-5")["output"]
        if self.newer_item:  # an API newer than the installed SDK: a type it does not know
            output = [*output, {"type": "brand_new_item", "id": "bni_1", "data": {"n": 1}}]
        return output

    def _json(self, h: BaseHTTPRequestHandler, data: dict[str, Any]) -> None:
        payload = json.dumps(data).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(payload)))
        h.send_header("x-request-id", "req_bg")
        h.end_headers()
        h.wfile.write(payload)

    def _sse(self, h: BaseHTTPRequestHandler, rid: str, background: bool) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.send_header("Connection", "close")
        if self.cut_streams:  # more than is sent: the peer sees the body cut
            h.send_header("Content-Length", str(1 << 20))
        h.end_headers()
        events = [
            ("response.created", self.state(rid, "queued", None)),
            ("response.in_progress", self.state(rid, "in_progress", None)),
            ("response.completed", self.state(rid, "completed")),
        ]
        if self.cut_streams:
            events = events[:1]
        for n, (kind, response) in enumerate(events):
            data = {"type": kind, "sequence_number": n, "response": response}
            data["response"]["background"] = background
            h.wfile.write(f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode())
            h.wfile.flush()
        h.close_connection = True


@pytest.fixture(scope="module")
def server() -> Iterator[BackgroundServer]:
    with BackgroundServer() as s:
        yield s


@pytest.fixture
def metered() -> Iterator[tuple[Meter, CollectingTransport]]:
    meter, transport = collecting_meter(team="search", tags={"env": "prod"})
    yield meter, transport
    meter.close(timeout_s=5)


def _client(server: BackgroundServer, meter: Meter) -> openai.OpenAI:
    return meter.instrument(openai.OpenAI(api_key="k", base_url=server.url, max_retries=0))


def _finished(event: dict[str, Any], server: BackgroundServer, rid: str, status: str) -> None:
    assert event["event_id"] == f"openai-response:{rid}"
    assert (event["provider"], event["model"], event["status"]) == (
        "openai",
        "gpt-5-2025-08-07",
        "ok",
    )
    assert datetime.fromisoformat(event["ts"]) == server.ts
    assert event["latency_ms"] == 3000.0  # the provider's completed_at - created_at
    assert event["tags"] == {"env": "prod", "api": "responses", "background": status}


def test_a_background_response_is_recorded_once_when_it_is_retrieved_finished(
    server: BackgroundServer, metered: tuple[Meter, CollectingTransport]
) -> None:
    # It was recorded at creation with 0 tokens (usage missing), and retrieve() not at all.
    meter = metered[0]
    client = _client(server, meter)
    with meter.tags(session_id="s-1", feature="report"):
        queued = client.responses.create(model="gpt-5", input="hi", background=True)
    assert queued.status == "queued"
    assert flushed(*metered) == []  # queued: nothing used yet
    with meter.tags(session_id="poller"):
        assert client.responses.retrieve(queued.id).status == "in_progress"
        assert flushed(*metered) == []
        assert client.responses.retrieve(queued.id).status == "completed"
        assert client.responses.retrieve(queued.id).output_text == "hello"  # read again
    (event,) = flushed(*metered)
    _finished(event, server, queued.id, "completed")
    assert {k: event.get(k, 0) for k in RESP} == RESP
    # The fields of the call that created it, not of the one that polled.
    assert (event["session_id"], event["feature"], event["team"]) == ("s-1", "report", "search")


def test_a_background_response_created_elsewhere_is_recorded_by_the_process_that_reads_it(
    server: BackgroundServer, metered: tuple[Meter, CollectingTransport]
) -> None:
    meter = metered[0]
    plain = openai.OpenAI(api_key="k", base_url=server.url, max_retries=0)  # another process
    rid = plain.responses.create(model="gpt-5", input="hi", background=True).id
    client = _client(server, meter)
    with meter.tags(session_id="worker-7"):
        client.responses.retrieve(rid)  # in progress
        client.responses.with_raw_response.retrieve(rid).http_response.json()  # completed
        client.responses.retrieve(rid)
    (event,) = flushed(*metered)
    _finished(event, server, rid, "completed")
    assert event["session_id"] == "worker-7"
    assert {k: event.get(k, 0) for k in RESP} == RESP


def test_a_cancelled_background_response_is_recorded_with_what_it_used(
    server: BackgroundServer, metered: tuple[Meter, CollectingTransport]
) -> None:
    client = _client(server, metered[0])
    rid = client.responses.create(model="gpt-5", input="hi", background=True).id
    assert client.responses.cancel(rid).status == "cancelled"
    client.responses.cancel(rid)
    (event,) = flushed(*metered)
    _finished(event, server, rid, "cancelled")
    assert (event["input_tokens"], event["cache_read_tokens"], event["output_tokens"]) == (
        900,
        512,
        7,
    )


def test_a_background_stream_is_recorded_at_its_end_or_when_retrieved_after_it_is_left(
    server: BackgroundServer, metered: tuple[Meter, CollectingTransport]
) -> None:
    client = _client(server, metered[0])
    read = list(client.responses.create(model="gpt-5", input="hi", background=True, stream=True))
    assert [e.type for e in read][-1] == "response.completed"
    rid_read = read[0].response.id
    client.responses.retrieve(rid_read)
    client.responses.retrieve(rid_read)  # finished: seen once already, by its stream
    left = client.responses.create(model="gpt-5", input="hi", background=True, stream=True)
    rid_left = next(iter(left)).response.id
    left.close()  # the response runs on at OpenAI: not a call cut short
    assert [e["event_id"] for e in flushed(*metered)] == [f"openai-response:{rid_read}"]
    client.responses.retrieve(rid_left)
    client.responses.retrieve(rid_left)
    first, second = flushed(*metered)
    for event, rid in ((first, rid_read), (second, rid_left)):
        _finished(event, server, rid, "completed")
        assert {k: event.get(k, 0) for k in RESP} == RESP


def test_a_stored_response_that_is_not_background_is_recorded_by_its_create_only(
    server: BackgroundServer, metered: tuple[Meter, CollectingTransport]
) -> None:
    client = _client(server, metered[0])
    rid = client.responses.create(model="gpt-5", input="hi").id
    client.responses.retrieve(rid)
    client.responses.retrieve(rid)
    (event,) = flushed(*metered)
    assert event["tags"] == {"env": "prod", "api": "responses", "provider_request_id": "req_bg"}
    assert {k: event.get(k, 0) for k in RESP} == RESP


def test_async_background_responses_are_recorded_once_when_retrieved_finished(
    server: BackgroundServer, metered: tuple[Meter, CollectingTransport]
) -> None:
    meter = metered[0]

    async def calls() -> str:
        client = meter.instrument(
            openai.AsyncOpenAI(api_key="k", base_url=server.url, max_retries=0)
        )
        with meter.tags(session_id="s-async"):
            queued = await client.responses.create(model="gpt-5", input="hi", background=True)
        while (await client.responses.retrieve(queued.id)).status != "completed":
            pass
        await client.responses.retrieve(queued.id)
        await client.close()
        return queued.id

    rid = asyncio.run(calls())
    (event,) = flushed(*metered)
    _finished(event, server, rid, "completed")
    assert event["session_id"] == "s-async"


def test_a_background_create_left_unread_is_recorded_once_when_seen_finished(
    server: BackgroundServer, metered: tuple[Meter, CollectingTransport]
) -> None:
    # Left before its id was read, it was recorded then (0 tokens, usage=missing) and again,
    # with its tokens, when retrieved finished: two events for one call.
    client = _client(server, metered[0])
    client.responses.create(model="gpt-5", input="hi", background=True, stream=True).close()
    streamed = f"resp_bg_{server.next_id}"
    with client.responses.with_streaming_response.create(
        model="gpt-5", input="hi", background=True
    ):
        pass
    unread = f"resp_bg_{server.next_id}"
    assert flushed(*metered) == []  # nothing says what was created: it runs on at OpenAI
    for rid in (streamed, unread):
        client.responses.retrieve(rid)  # in progress
        client.responses.retrieve(rid)  # completed
    first, second = flushed(*metered)
    for event, rid in ((first, streamed), (second, unread)):
        _finished(event, server, rid, "completed")
        assert {k: event.get(k, 0) for k in RESP} == RESP


def test_a_closed_meter_with_a_background_call_still_pending_is_freed(
    server: BackgroundServer,
) -> None:
    # The pending call holds its Meter, and the per-Meter table (keyed weakly on the Meter)
    # held the call: a closed Meter and its calls were never freed.
    meter, _ = collecting_meter()
    client = _client(server, meter)
    queued = client.responses.create(model="gpt-5", input="hi", background=True)
    assert queued.status == "queued"  # pending: waits to be seen finished
    meter.close(timeout_s=5)
    gone = weakref.ref(meter)
    client.close()
    del meter, client, queued
    gc.collect()
    assert gone() is None


@pytest.mark.filterwarnings("error")  # as the pytest config says: a warning fails the test
def test_answers_holding_an_item_the_sdk_does_not_know_are_recorded_without_warnings(
    server: BackgroundServer, metered: tuple[Meter, CollectingTransport]
) -> None:
    # An output item of a type newer than the installed openai SDK is parsed into a model it
    # does not fit: pydantic warned when the answer was dumped to read its usage. A
    # background response's state and a stream's events were dumped with the warning on:
    # at every such call a warning in the app's process (under -W error: raised, caught,
    # and the call not metered: no event).
    server.newer_item = True
    try:
        client = _client(server, metered[0])
        rid = client.responses.create(model="gpt-5", input="hi", background=True).id
        client.responses.retrieve(rid)  # in progress
        assert client.responses.retrieve(rid).status == "completed"
        streamed = list(client.responses.create(model="gpt-5", input="hi", stream=True))
        assert streamed[-1].type == "response.completed"
        bg = list(client.responses.create(model="gpt-5", input="hi", background=True, stream=True))
        foreground = client.responses.create(model="gpt-5", input="hi")
    finally:
        server.newer_item = False
    assert [item.type for item in foreground.output][-1] == "brand_new_item"
    events = flushed(*metered)
    background = [e["event_id"] for e in events if e["tags"].get("background")]
    assert background == [f"openai-response:{rid}", f"openai-response:{bg[0].response.id}"]
    assert len(events) == 4, events  # and the stream and the foreground create
    for event in events:
        assert {k: event.get(k, 0) for k in RESP} == RESP
        assert "usage" not in event["tags"]


def test_a_forked_child_records_background_responses_with_locks_of_its_own(
    server: BackgroundServer, metered: tuple[Meter, CollectingTransport]
) -> None:
    # The table's locks, held at the fork by another thread of the parent (here by the
    # forking thread itself), stayed held in the child for ever: its next background call
    # hung in pend() (or in the table's lookup).
    import os
    import signal

    from spendstream.producers.integrations import background_responses

    meter = metered[0]
    client = _client(server, meter)
    client.responses.create(model="gpt-5", input="hi", background=True)  # the Meter's table
    table = background_responses._background_of(meter)
    held = [background_responses._BACKGROUND_LOCK, table.lock]
    for lock in held:
        lock.acquire()
    try:
        pid = os.fork()
        if pid == 0:  # the child: a background create and its retrieve, finished
            code = 1
            try:
                signal.alarm(20)  # a hang ends the child, which the parent sees as a failure
                rid = client.responses.create(model="gpt-5", input="hi", background=True).id
                client.responses.retrieve(rid)
                client.responses.retrieve(rid)
                code = 0
            finally:
                os._exit(code)
    finally:
        for lock in held:
            lock.release()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_background_stream_cut_mid_body_is_recorded_once_when_seen_finished(
    server: BackgroundServer, metered: tuple[Meter, CollectingTransport]
) -> None:
    # Its connection dropped after response.created: the response runs on at OpenAI, and
    # is recorded when seen finished, however the stream was read. Read raw, the cut was
    # recorded at once (error, 0 tokens) and the finished response again when retrieved:
    # two events for one call.
    client = _client(server, metered[0])
    server.cut_streams = True
    try:
        with pytest.raises(openai.APIConnectionError):  # parsed: the SDK wraps the cut
            list(client.responses.create(model="gpt-5", input="hi", background=True, stream=True))
        parsed = f"resp_bg_{server.next_id}"
        with (
            client.responses.with_streaming_response.create(
                model="gpt-5", input="hi", background=True, stream=True
            ) as r,
            pytest.raises(httpx2.RemoteProtocolError),
        ):
            for _ in r.iter_lines():
                pass
        raw = f"resp_bg_{server.next_id}"
    finally:
        server.cut_streams = False
    assert flushed(*metered) == []  # nothing used yet that a retrieve will not say
    for rid in (parsed, raw):
        client.responses.retrieve(rid)  # in progress
        client.responses.retrieve(rid)  # completed
    events = flushed(*metered)
    assert [e["event_id"] for e in events] == [
        f"openai-response:{parsed}",
        f"openai-response:{raw}",
    ], events
    for event, rid in zip(events, (parsed, raw), strict=True):
        _finished(event, server, rid, "completed")
        assert {k: event.get(k, 0) for k in RESP} == RESP
