"""A real local HTTP server that answers like the OpenAI and Anthropic APIs (JSON and SSE
streams, with usage; error statuses), for the real SDKs to call in tests.

Under ``/api/v1`` (``openrouter_url``) it answers like OpenRouter: chat completions whose
usage carries the call's ``cost`` in USD. The model name steers the answer: ``fail-<status>`` answers that HTTP error, ``flaky-...``
fails the first request of each distinct body with a 503 and then answers, ``slow`` waits
2 s, ``cut...`` drops the connection in the middle of the body (a stream after its first
events, chunked, with no final chunk; a JSON body halfway through its ``Content-Length``),
``stall...`` sends as much and then holds the connection, silent, until the server stops
(a client's read timeout ends it). Every request body is kept in ``requests`` (path, JSON) for assertions.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

OPENAI_USAGE = {
    "prompt_tokens": 1200,
    "completion_tokens": 300,
    "total_tokens": 1500,
    "prompt_tokens_details": {"cached_tokens": 1024},
    "completion_tokens_details": {"reasoning_tokens": 100},
}
RESPONSES_USAGE = {
    "input_tokens": 900,
    "input_tokens_details": {"cached_tokens": 512},
    "output_tokens": 80,
    "output_tokens_details": {"reasoning_tokens": 20},
    "total_tokens": 980,
}
# A compaction pass (responses.compact): the conversation read, the compacted state written.
COMPACT_USAGE = {
    "input_tokens": 4200,
    "input_tokens_details": {"cached_tokens": 3072},
    "output_tokens": 610,
    "output_tokens_details": {"reasoning_tokens": 448},
    "total_tokens": 4810,
}
# OpenRouter's usage: OpenAI's counts plus the cost it charged (a JSON number, in USD): a
# Claude Sonnet 4.5 call, 21942 uncached input tokens at $3/M, 40000 cache reads at
# $0.30/M, 2100 output tokens at $15/M.
OPENROUTER_USAGE = {
    "prompt_tokens": 61942,
    "completion_tokens": 2100,
    "total_tokens": 64042,
    "cost": 0.109326,
    "is_byok": False,
    "prompt_tokens_details": {"cached_tokens": 40000, "audio_tokens": 0},
    "cost_details": {
        "upstream_inference_cost": None,
        "upstream_inference_prompt_cost": 0.077826,
        "upstream_inference_completions_cost": 0.0315,
    },
    "completion_tokens_details": {"reasoning_tokens": 0, "image_tokens": 0},
}
ANTHROPIC_USAGE = {
    "input_tokens": 25,  # Anthropic's own count: without the cached parts
    "cache_read_input_tokens": 2000,
    "cache_creation_input_tokens": 300,
    "output_tokens": 150,
}
# The input tokens an event records for ANTHROPIC_USAGE: Anthropic's own with the cached
# parts added.
CLAUDE_INPUT = (
    ANTHROPIC_USAGE["input_tokens"]
    + ANTHROPIC_USAGE["cache_read_input_tokens"]
    + ANTHROPIC_USAGE["cache_creation_input_tokens"]
)


class ProviderServer:
    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()  # ends the stalled answers
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                body = json.loads(raw or b"{}")
                with server._lock:
                    server.requests.append((self.path, body))
                    first = raw.decode() not in server._seen
                    server._seen.add(raw.decode())
                server._answer(self, self.path.split("?", 1)[0], body, first)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> ProviderServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    @property
    def openai_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def openrouter_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1"

    @property
    def anthropic_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- answers ----------------------------------------------------------------------------

    def _answer(
        self, h: BaseHTTPRequestHandler, path: str, body: dict[str, Any], first: bool
    ) -> None:
        model = str(body.get("model", ""))
        anthropic = path.startswith("/v1/messages")
        if model.startswith("fail-"):
            return _json(h, int(model.split("-")[1]), _error(anthropic, "failed on purpose"))
        if model.startswith("flaky") and first:
            return _json(h, 503, _error(anthropic, "try again"))
        if model == "slow":
            time.sleep(2)
        if model.startswith("cut"):
            return _cut(h, path, model, body)
        if model.startswith("stall"):
            return _cut(h, path, model, body, stall=self._stopping)
        if path == "/api/v1/chat/completions":
            if body.get("stream"):
                return _sse(h, _openrouter_chunks(model, body))
            return _json(h, 200, _openrouter_chat(model))
        if path == "/v1/chat/completions":
            if body.get("stream"):
                return _sse(h, _chat_chunks(model, body))
            return _json(h, 200, _chat(model))
        if path == "/v1/responses/compact":
            return _json(h, 200, _compacted(body))
        if path == "/v1/responses":
            if body.get("stream"):
                return _sse(h, _responses_events(model))
            return _json(h, 200, _response(model))
        if path == "/v1/embeddings":
            return _json(
                h,
                200,
                {
                    "object": "list",
                    "model": model,
                    "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
                    "usage": {"prompt_tokens": 64, "total_tokens": 64},
                },
            )
        if path == "/v1/messages/count_tokens":
            return _json(h, 200, {"input_tokens": 42})
        if path == "/v1/messages":
            if body.get("stream"):
                return _sse(h, _message_events(model), named=True)
            return _json(h, 200, _message(model))
        return _json(h, 404, {"error": {"message": f"no route {path}"}})


def _cut(
    h: BaseHTTPRequestHandler,
    path: str,
    model: str,
    body: dict[str, Any],
    stall: threading.Event | None = None,
) -> None:
    """The answer ``path`` would get, but the connection dropped in the middle of its body
    (after ``stall`` is set, if given: silent until then)."""
    if not body.get("stream"):
        answer = {"/v1/messages": _message, "/v1/responses": _response}.get(path, _chat)(model)
        whole = json.dumps(answer).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(whole)))
        h.send_header("x-request-id", "req_test_123")
        h.send_header("request-id", "req_test_123")
        h.end_headers()
        h.wfile.write(whole[: len(whole) // 2])
    else:
        named = path == "/v1/messages"
        if named:  # message_start (its usage) and the first content block
            events, keep = _message_events(model), 2
        elif path == "/v1/responses":  # response.created only
            events, keep = _responses_events(model), 1
        else:  # the role chunk and the first word
            events, keep = _chat_chunks(model, body), 2
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.send_header("Transfer-Encoding", "chunked")
        h.send_header("x-request-id", "req_test_123")
        h.send_header("request-id", "req_test_123")
        h.end_headers()
        for _, event in zip(range(keep), events, strict=False):
            head = f"event: {event['type']}\n" if named else ""
            data = f"{head}data: {json.dumps(event)}\n\n".encode()
            h.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
    h.wfile.flush()
    if stall is not None:
        stall.wait(60)
    h.close_connection = True  # closed with no final chunk: the peer sees the body cut


def _error(anthropic: bool, message: str) -> dict[str, Any]:
    if anthropic:
        return {"type": "error", "error": {"type": "api_error", "message": message}}
    return {"error": {"message": message, "type": "server_error", "code": None}}


def _json(h: BaseHTTPRequestHandler, status: int, data: dict[str, Any]) -> None:
    payload = json.dumps(data).encode()
    h.send_response(status)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(payload)))
    h.send_header("x-request-id", "req_test_123")
    h.send_header("request-id", "req_test_123")
    h.end_headers()
    h.wfile.write(payload)


def _sse(
    h: BaseHTTPRequestHandler, events: Iterator[dict[str, Any]], *, named: bool = False
) -> None:
    h.send_response(200)
    h.send_header("Content-Type", "text/event-stream")
    h.send_header("Connection", "close")
    h.send_header("x-request-id", "req_test_123")
    h.send_header("request-id", "req_test_123")
    h.end_headers()
    for event in events:
        head = f"event: {event['type']}\n" if named else ""
        h.wfile.write(f"{head}data: {json.dumps(event)}\n\n".encode())
        h.wfile.flush()
    if not named:
        h.wfile.write(b"data: [DONE]\n\n")
    h.wfile.flush()
    h.close_connection = True


def _chat(model: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1_790_000_000,
        "model": model + "-2025-08-07",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "hello"},
                "finish_reason": "stop",
            }
        ],
        "usage": OPENAI_USAGE,
    }


def _chat_chunks(model: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1_790_000_000}
    base["model"] = model + "-2025-08-07"
    yield {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}
    for word in ("hel", "lo"):
        yield {**base, "choices": [{"index": 0, "delta": {"content": word}}]}
    yield {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    if (body.get("stream_options") or {}).get("include_usage"):
        yield {**base, "choices": [], "usage": OPENAI_USAGE}


def _openrouter_chat(model: str) -> dict[str, Any]:
    # OpenRouter names the upstream provider and echoes the routed model id.
    return {
        "id": "gen-1762331234-abcDEF123",
        "provider": "Anthropic",
        "model": model,
        "object": "chat.completion",
        "created": 1_762_331_234,
        "choices": [
            {
                "logprobs": None,
                "finish_reason": "stop",
                "native_finish_reason": "end_turn",
                "index": 0,
                "message": {"role": "assistant", "content": "hello", "refusal": None},
            }
        ],
        "usage": OPENROUTER_USAGE,
    }


def _openrouter_chunks(model: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    base = {"id": "gen-1762331234-abcDEF123", "provider": "Anthropic", "model": model}
    base |= {"object": "chat.completion.chunk", "created": 1_762_331_234}
    yield {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "hello"}}]}
    yield {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    if (body.get("stream_options") or {}).get("include_usage"):
        yield {**base, "choices": [], "usage": OPENROUTER_USAGE}


def _response(model: str) -> dict[str, Any]:
    return {
        "id": "resp_1",
        "object": "response",
        "created_at": 1_790_000_000,
        "model": model + "-2025-08-07",
        "status": "completed",
        "output": [
            {
                "type": "message",
                "id": "msg_1",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "hello", "annotations": []}],
            }
        ],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": RESPONSES_USAGE,
    }


def _compacted(body: dict[str, Any]) -> dict[str, Any]:
    """``POST /v1/responses/compact``: the conversation's user messages and one compaction
    item, with the usage of the compaction pass (no ``model`` in it: the answer names none)."""
    given = body.get("input")
    text = given if isinstance(given, str) else "hi"
    return {
        "id": "resp_cmp_1",
        "object": "response.compaction",
        "created_at": 1_790_000_100,
        "output": [
            {
                "id": "msg_0",
                "type": "message",
                "status": "completed",
                "role": "user",
                "content": [{"type": "input_text", "text": text}],
            },
            {
                "id": "cmp_1",
                "type": "compaction",
                "encrypted_content": "gAAAAABpM0Yj-compacted-state==",
            },
        ],
        "usage": COMPACT_USAGE,
    }


def _responses_events(model: str) -> Iterator[dict[str, Any]]:
    created = {**_response(model), "status": "in_progress", "output": [], "usage": None}
    yield {"type": "response.created", "sequence_number": 0, "response": created}
    yield {"type": "response.completed", "sequence_number": 1, "response": _response(model)}


def _message(model: str) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": model + "-20250929",
        "content": [{"type": "text", "text": "hello"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": ANTHROPIC_USAGE,
    }


def _message_events(model: str) -> Iterator[dict[str, Any]]:
    start = {**_message(model), "content": [], "stop_reason": None}
    start["usage"] = {**ANTHROPIC_USAGE, "output_tokens": 1}
    yield {"type": "message_start", "message": start}
    yield {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    yield {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": "hello"},
    }
    yield {"type": "content_block_stop", "index": 0}
    yield {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": ANTHROPIC_USAGE["output_tokens"]},
    }
    yield {"type": "message_stop"}
