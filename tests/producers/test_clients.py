"""``meter.instrument(client)`` with the real openai and anthropic SDKs against a real local
HTTP server that answers like the providers (JSON, SSE streams, errors)."""

from __future__ import annotations

import asyncio
import threading
from decimal import Decimal
from typing import Any

import anthropic
import openai
import pytest
from openai.types.chat import ChatCompletion

from spendstream.producers.meter import Meter
from tests.producers.collecting import CollectingTransport, collecting_meter, flushed
from tests.producers.provider_server import ProviderServer

MESSAGES = [{"role": "user", "content": "hi"}]
GPT = {"provider": "openai", "input_tokens": 1200, "cache_read_tokens": 1024, "output_tokens": 300}
RESP = {"provider": "openai", "input_tokens": 900, "cache_read_tokens": 512, "output_tokens": 80}
CLAUDE = {
    "provider": "anthropic",
    "input_tokens": 2325,  # 25 + 2000 read + 300 written: the helper adds Anthropic's parts
    "cache_read_tokens": 2000,
    "cache_write_tokens": 300,
    "output_tokens": 150,
}


def _oa(server: ProviderServer, meter: Meter, **kw: Any) -> openai.OpenAI:
    client = openai.OpenAI(
        api_key="k", base_url=server.openai_url, max_retries=kw.pop("retries", 0)
    )
    return meter.instrument(client, **kw)


def _an(server: ProviderServer, meter: Meter, **kw: Any) -> anthropic.Anthropic:
    client = anthropic.Anthropic(
        api_key="k", base_url=server.anthropic_url, max_retries=kw.pop("retries", 0)
    )
    return meter.instrument(client, **kw)


def _one(metered: tuple[Meter, CollectingTransport]) -> dict[str, Any]:
    events = flushed(*metered)
    assert len(events) == 1, events
    return events[0]


def _has(event: dict[str, Any], expected: dict[str, Any]) -> None:
    assert {k: event.get(k, 0) for k in expected} == expected


# -- OpenAI ---------------------------------------------------------------------------------


def test_chat_completion_is_recorded_and_the_client_is_unchanged(
    server: ProviderServer, metered: tuple[Meter, CollectingTransport]
) -> None:
    meter, _ = metered
    raw = openai.OpenAI(api_key="k", base_url=server.openai_url, max_retries=0)
    client = meter.instrument(raw, feature="faq")
    assert client is raw and type(client) is openai.OpenAI
    response = client.chat.completions.create(model="gpt-5", messages=MESSAGES)
    assert isinstance(response, ChatCompletion) and response.choices[0].message.content == "hello"
    event = _one(metered)
    _has(event, GPT)
    assert (event["model"], event["status"], event["team"], event["feature"]) == (
        "gpt-5-2025-08-07",
        "ok",
        "search",
        "faq",
    )
    assert event["tags"] == {"api": "chat", "provider_request_id": "req_test_123"}
    assert event["latency_ms"] > 0


def test_chat_stream_gets_usage_without_the_caller_seeing_the_usage_chunk(
    server: ProviderServer, metered: tuple[Meter, CollectingTransport]
) -> None:
    client = _oa(server, metered[0])
    stream = client.chat.completions.create(model="gpt-5", messages=MESSAGES, stream=True)
    assert type(stream) is openai.Stream
    chunks = list(stream)
    assert chunks and all(c.choices for c in chunks)  # what a caller without usage sees
    assert server.requests[-1][1]["stream_options"] == {"include_usage": True}
    event = _one(metered)
    _has(event, GPT)
    assert event["model"] == "gpt-5-2025-08-07" and "stream" not in event["tags"]
    assert event["attempt"] == 1
    assert event["tags"]["provider_request_id"] == "req_test_123"  # from the stream's headers


def test_a_callers_own_include_usage_chunk_is_left_to_the_caller(
    server: ProviderServer, metered: tuple[Meter, CollectingTransport]
) -> None:
    client = _oa(server, metered[0])
    chunks = list(
        client.chat.completions.create(
            model="gpt-5",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    _has(_one(metered), GPT)


def test_stream_usage_false_leaves_stream_options_alone(
    server: ProviderServer, metered: tuple[Meter, CollectingTransport]
) -> None:
    client = _oa(server, metered[0], stream_usage=False)
    list(client.chat.completions.create(model="gpt-5", messages=MESSAGES, stream=True))
    assert "stream_options" not in server.requests[-1][1]
    event = _one(metered)
    assert (event["input_tokens"], event["tags"]["usage"]) == (0, "missing")


class _EmptyStreams:
    """A server whose every answer is a 200 event stream that ends without an event (a
    proxy that drops them, say)."""

    def __enter__(self) -> str:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from threading import Thread

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        Thread(target=self.httpd.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_a_stream_that_ends_without_an_event_is_recorded_with_its_usage_missing(
    metered: tuple[Meter, CollectingTransport],
) -> None:
    # It was recorded as an ok call of 0 tokens with nothing to say its usage was never seen.
    meter, _ = metered
    with _EmptyStreams() as url:
        oa = meter.instrument(openai.OpenAI(api_key="k", base_url=url + "/v1", max_retries=0))
        assert list(oa.chat.completions.create(model="gpt-5", messages=MESSAGES, stream=True)) == []
        an = meter.instrument(anthropic.Anthropic(api_key="k", base_url=url, max_retries=0))
        with an.messages.stream(model="claude-haiku-4-5", max_tokens=10, messages=MESSAGES) as s:
            assert list(s) == []
    events = flushed(*metered)
    assert [
        (e["provider"], e["status"], e["input_tokens"], e["tags"].get("usage")) for e in events
    ] == [
        ("openai", "ok", 0, "missing"),
        ("anthropic", "ok", 0, "missing"),
    ]


def test_the_chat_stream_helper_is_recorded(
    server: ProviderServer, metered: tuple[Meter, CollectingTransport]
) -> None:
    client = _oa(server, metered[0])
    with client.chat.completions.stream(model="gpt-5", messages=MESSAGES) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content == "hello"
    _has(_one(metered), GPT)


def test_responses_api_plain_streamed_and_helper(
    server: ProviderServer, metered: tuple[Meter, CollectingTransport]
) -> None:
    client = _oa(server, metered[0])
    assert client.responses.create(model="gpt-5", input="hi").output_text == "hello"
    list(client.responses.create(model="gpt-5", input="hi", stream=True))
    with client.responses.stream(model="gpt-5", input="hi") as stream:
        for _ in stream:
            pass
    events = flushed(*metered)
    assert len(events) == 3
    for event in events:
        _has(event, RESP)
        assert event["tags"]["api"] == "responses"
    assert all(
        "stream_options" not in body for path, body in server.requests if "responses" in path
    )


def test_embeddings_are_recorded(
    server: ProviderServer, metered: tuple[Meter, CollectingTransport]
) -> None:
    client = _oa(server, metered[0])
    client.embeddings.create(model="text-embedding-3-small", input="hi")
    event = _one(metered)
    _has(event, {"input_tokens": 64, "output_tokens": 0})
    assert (event["model"], event["tags"]["api"]) == ("text-embedding-3-small", "embeddings")


def test_openrouter_calls_carry_the_cost_openrouter_reported(
    server: ProviderServer, metered: tuple[Meter, CollectingTransport]
) -> None:
    meter = metered[0]
    # provider= stands in for the host: openrouter.ai is what names it in production.
    client = meter.instrument(
        openai.OpenAI(api_key="k", base_url=server.openrouter_url, max_retries=0),
        provider="openrouter",
    )
    model = "anthropic/claude-sonnet-4.5"
    response = client.chat.completions.create(model=model, messages=MESSAGES)
    assert response.choices[0].message.content == "hello"
    chunks = list(client.chat.completions.create(model=model, messages=MESSAGES, stream=True))
    assert chunks and all(c.choices for c in chunks)
    assert [path for path, _ in server.requests[-2:]] == ["/api/v1/chat/completions"] * 2
    events = flushed(*metered)
    assert len(events) == 2
    for event in events:
        # The figure as sent: the float 0.109326 is 0.109326000000000006507... (18 places kept)
        assert Decimal(event["reported_cost_usd"]) == Decimal("0.109326")
        _has(event, {"input_tokens": 61942, "cache_read_tokens": 40000, "output_tokens": 2100})
        assert (event["provider"], event["model"]) == ("openrouter", model)


def test_async_openai_calls_and_streams_are_recorded(
    server: ProviderServer, metered: tuple[Meter, CollectingTransport]
) -> None:
    async def calls() -> None:
        client = metered[0].instrument(
            openai.AsyncOpenAI(api_key="k", base_url=server.openai_url, max_retries=0)
        )
        await client.chat.completions.create(model="gpt-5", messages=MESSAGES)
        stream = await client.chat.completions.create(model="gpt-5", messages=MESSAGES, stream=True)
        assert type(stream) is openai.AsyncStream
        assert all([c.choices async for c in stream])
        await client.responses.create(model="gpt-5", input="hi")
        await client.close()

    asyncio.run(calls())
    gpt, streamed, resp = flushed(*metered)
    _has(gpt, GPT)
    _has(streamed, GPT)
    _has(resp, RESP)


# -- Anthropic ------------------------------------------------------------------------------


def test_anthropic_message_adds_cached_tokens_to_input(
    server: ProviderServer, metered: tuple[Meter, CollectingTransport]
) -> None:
    client = _an(server, metered[0])
    message = client.messages.create(model="claude-sonnet-4-5", max_tokens=100, messages=MESSAGES)
    assert type(message).__name__ == "Message"
    event = _one(metered)
    _has(event, CLAUDE)
    assert event["model"] == "claude-sonnet-4-5-20250929"
    assert event["tags"]["api"] == "messages"


def test_anthropic_streams_create_and_helper_sync_and_async(
    server: ProviderServer, metered: tuple[Meter, CollectingTransport]
) -> None:
    client = _an(server, metered[0])
    events = list(
        client.messages.create(
            model="claude-sonnet-4-5", max_tokens=100, messages=MESSAGES, stream=True
        )
    )
    assert events[0].type == "message_start"
    with client.messages.stream(
        model="claude-sonnet-4-5", max_tokens=100, messages=MESSAGES
    ) as stream:
        assert stream.get_final_text() == "hello"

    async def helper() -> None:
        aclient = metered[0].instrument(
            anthropic.AsyncAnthropic(api_key="k", base_url=server.anthropic_url, max_retries=0)
        )
        async with aclient.messages.stream(
            model="claude-sonnet-4-5", max_tokens=100, messages=MESSAGES
        ) as astream:
            assert await astream.get_final_text() == "hello"
        await aclient.messages.create(model="claude-sonnet-4-5", max_tokens=100, messages=MESSAGES)
        await aclient.close()

    asyncio.run(helper())
    recorded = flushed(*metered)
    assert len(recorded) == 4
    for event in recorded:
        _has(event, CLAUDE)


def test_count_tokens_is_not_a_metered_call(
    server: ProviderServer, metered: tuple[Meter, CollectingTransport]
) -> None:
    client = _an(server, metered[0])
    assert (
        client.messages.count_tokens(model="claude-sonnet-4-5", messages=MESSAGES).input_tokens
        == 42
    )
    assert flushed(*metered) == []


# -- failures, retries, tags ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("family", "model", "status", "error"),
    [
        ("openai", "fail-500", "error", openai.InternalServerError),
        ("openai", "fail-429", "error", openai.RateLimitError),
        ("openai", "fail-408", "timeout", openai.APIStatusError),
        ("openai", "slow", "timeout", openai.APITimeoutError),
        ("anthropic", "fail-529", "error", anthropic.APIStatusError),
        ("anthropic", "slow", "timeout", anthropic.APITimeoutError),
    ],
)
def test_failed_calls_are_recorded_and_reraised(
    server: ProviderServer,
    metered: tuple[Meter, CollectingTransport],
    family: str,
    model: str,
    status: str,
    error: type[Exception],
) -> None:
    meter = metered[0]
    with pytest.raises(error):
        if family == "openai":
            client = meter.instrument(
                openai.OpenAI(api_key="k", base_url=server.openai_url, max_retries=0, timeout=0.5)
            )
            client.chat.completions.create(model=model, messages=MESSAGES)
        else:
            aclient = meter.instrument(
                anthropic.Anthropic(
                    api_key="k", base_url=server.anthropic_url, max_retries=0, timeout=0.5
                )
            )
            aclient.messages.create(model=model, max_tokens=10, messages=MESSAGES)
    event = _one(metered)
    assert (event["status"], event["model"], event["provider"]) == (status, model, family)
    assert (event["input_tokens"], event["output_tokens"]) == (0, 0)


def test_sdk_retries_show_as_attempt_where_the_exchange_is_visible(
    server: ProviderServer, metered: tuple[Meter, CollectingTransport]
) -> None:
    client = _oa(server, metered[0], retries=2)
    list(client.chat.completions.create(model="flaky-stream", messages=MESSAGES, stream=True))
    with pytest.raises(openai.InternalServerError):
        _oa(server, metered[0], retries=1).chat.completions.create(
            model="fail-500", messages=MESSAGES
        )
    streamed, failed = flushed(*metered)
    assert (streamed["attempt"], streamed["status"]) == (2, "ok")
    assert (failed["attempt"], failed["status"]) == (2, "error")


def test_tags_blocks_add_fields_per_call_and_streams_keep_their_calls_tags(
    server: ProviderServer, metered: tuple[Meter, CollectingTransport]
) -> None:
    meter = metered[0]
    client = _oa(server, meter, feature="default-feature")
    with meter.tags(feature="summarise", user_id="u-1"):
        with meter.tags(session_id="s-9", tags={"experiment": "b"}):
            client.chat.completions.create(model="gpt-5", messages=MESSAGES)
            stream = client.chat.completions.create(model="gpt-5", messages=MESSAGES, stream=True)
        client.chat.completions.create(model="gpt-5", messages=MESSAGES)
    client.chat.completions.create(model="gpt-5", messages=MESSAGES)
    with meter.tags(project="elsewhere"):
        list(stream)  # consumed in another block: recorded with the tags of its call only
    inner, outer, plain, streamed = flushed(*metered)
    assert (inner["feature"], inner["user_id"], inner["session_id"]) == ("summarise", "u-1", "s-9")
    assert inner["tags"]["experiment"] == "b" and inner["team"] == "search"
    assert (outer["feature"], outer.get("session_id")) == ("summarise", None)
    assert (plain["feature"], plain.get("user_id")) == ("default-feature", None)
    assert (streamed["session_id"], streamed["feature"]) == ("s-9", "summarise")
    assert "project" not in streamed
    with pytest.raises(TypeError, match="colour"), meter.tags(colour="red"):
        pass


def test_a_stream_dropped_early_is_recorded_as_incomplete(
    server: ProviderServer, metered: tuple[Meter, CollectingTransport]
) -> None:
    client = _an(server, metered[0])
    stream = client.messages.create(
        model="claude-sonnet-4-5", max_tokens=100, messages=MESSAGES, stream=True
    )
    first = next(iter(stream))
    assert first.type == "message_start"
    stream.close()  # recorded now, while the caller still holds the stream (not at collection)
    event = _one(metered)
    assert event["tags"]["stream"] == "incomplete"
    assert event["input_tokens"] == CLAUDE["input_tokens"]  # message_start said so much
    stream.close()  # closed twice, recorded once
    assert len(flushed(*metered)) == 1


def test_streams_left_early_by_every_form_are_recorded_when_closed(
    server: ProviderServer, metered: tuple[Meter, CollectingTransport]
) -> None:
    meter = metered[0]
    oa, an = _oa(server, meter), _an(server, meter)
    with oa.chat.completions.create(model="gpt-5", messages=MESSAGES, stream=True) as chat:
        for _ in chat:
            break
    with an.messages.stream(model="claude-sonnet-4-5", max_tokens=100, messages=MESSAGES) as s:
        for _ in s:
            break
    never_read = oa.chat.completions.create(model="gpt-5", messages=MESSAGES, stream=True)
    never_read.close()

    async def leave_async() -> None:
        aclient = meter.instrument(
            openai.AsyncOpenAI(api_key="k", base_url=server.openai_url, max_retries=0)
        )
        stream = await aclient.chat.completions.create(
            model="gpt-5", messages=MESSAGES, stream=True
        )
        async for _ in stream:
            break
        await stream.close()
        await aclient.close()

    asyncio.run(leave_async())
    events = flushed(*metered)  # all four, before any of the streams is collected
    assert [e["tags"]["stream"] for e in events] == ["incomplete"] * 4, events
    assert {e["tags"]["provider_request_id"] for e in events} == {"req_test_123"}
    assert [e["provider"] for e in events] == ["openai", "anthropic", "openai", "openai"]
    assert chat is not None and s is not None and never_read is not None  # still referenced


def test_raw_responses_are_recorded_when_parsed(
    server: ProviderServer, metered: tuple[Meter, CollectingTransport]
) -> None:
    client = _oa(server, metered[0])
    raw = client.chat.completions.with_raw_response.create(model="gpt-5", messages=MESSAGES)
    assert raw.headers["x-request-id"] == "req_test_123"
    assert raw.parse().choices[0].message.content == "hello"
    raw.parse()  # parsed twice, recorded once
    _has(_one(metered), GPT)


def test_instrumenting_twice_records_once_and_other_objects_are_refused(
    server: ProviderServer, metered: tuple[Meter, CollectingTransport]
) -> None:
    meter = metered[0]
    client = _oa(server, meter)
    assert meter.instrument(client) is client
    client.chat.completions.create(model="gpt-5", messages=MESSAGES)
    assert len(flushed(*metered)) == 1
    with pytest.raises(TypeError, match="OpenAI and Anthropic"):
        meter.instrument(object())


def test_provider_follows_the_clients_endpoint(metered: tuple[Meter, CollectingTransport]) -> None:
    from spendstream.producers.integrations.clients import _openai_provider

    assert (
        _openai_provider(openai.OpenAI(api_key="k", base_url="https://openrouter.ai/api/v1"))
        == "openrouter"
    )
    assert _openai_provider(openai.OpenAI(api_key="k")) == "openai"
    azure = openai.AzureOpenAI(
        api_key="k", api_version="2024-10-21", azure_endpoint="https://x.openai.azure.com"
    )
    assert _openai_provider(azure) == "azure"


def test_claude_through_vertex_and_bedrock_clients_is_google_and_bedrock() -> None:
    from spendstream.producers.integrations.clients import _anthropic_provider

    vertex = anthropic.AnthropicVertex(region="us-east5", project_id="p", access_token="t")
    bedrock = anthropic.AnthropicBedrock(
        aws_region="us-east-1", aws_access_key="a", aws_secret_key="b"
    )
    assert _anthropic_provider(vertex) == "google"
    assert _anthropic_provider(bedrock) == "bedrock"
    assert _anthropic_provider(anthropic.Anthropic(api_key="k")) == "anthropic"


# -- every way an answer is consumed, or not: one event each ---------------------------------

INCOMPLETE_UNREAD = {"stream": "incomplete", "usage": "missing"}


def _tags(events: list[dict[str, Any]]) -> list[tuple[str, int, int, dict[str, str]]]:
    """(provider, input, output tokens, tags but the request id) of each event."""
    return [
        (
            e["provider"],
            e["input_tokens"],
            e["output_tokens"],
            {k: v for k, v in e["tags"].items() if k != "provider_request_id"},
        )
        for e in events
    ]


def test_streams_dropped_unread_are_recorded_when_collected(
    server: ProviderServer, metered: tuple[Meter, CollectingTransport]
) -> None:
    # Never read, never closed: nothing was recorded, though each call was made and billed.
    import gc

    meter = metered[0]
    oa, an = _oa(server, meter), _an(server, meter)
    oa.chat.completions.create(model="gpt-5", messages=MESSAGES, stream=True)
    an.messages.create(model="claude-sonnet-4-5", max_tokens=10, messages=MESSAGES, stream=True)

    async def drop_async() -> None:
        aclient = meter.instrument(
            anthropic.AsyncAnthropic(api_key="k", base_url=server.anthropic_url, max_retries=0)
        )
        await aclient.messages.create(
            model="claude-sonnet-4-5", max_tokens=10, messages=MESSAGES, stream=True
        )
        gc.collect()
        await aclient.close()

    asyncio.run(drop_async())
    gc.collect()
    # Anthropic's are freed, and recorded, when dropped; OpenAI's stream is in a cycle of
    # the SDK's own, recorded just after whichever collection finds it.
    assert sorted(_tags(_flushed_until(*metered, 3)), key=lambda e: e[0]) == [
        ("anthropic", 0, 0, {"api": "messages", **INCOMPLETE_UNREAD}),
        ("anthropic", 0, 0, {"api": "messages", **INCOMPLETE_UNREAD}),
        ("openai", 0, 0, {"api": "chat", **INCOMPLETE_UNREAD}),
    ]


def test_stream_helpers_left_unread_are_recorded_when_their_block_ends(
    server: ProviderServer, metered: tuple[Meter, CollectingTransport]
) -> None:
    # The OpenAI helpers close the HTTP response, not the stream under them: nothing was
    # recorded while the caller held the helper (and, read partly, the usage seen was lost).
    meter = metered[0]
    oa, an = _oa(server, meter), _an(server, meter)
    with oa.chat.completions.stream(model="gpt-5", messages=MESSAGES) as chat:
        pass
    with oa.responses.stream(model="gpt-5", input="hi") as resp:
        pass
    with an.messages.stream(model="claude-sonnet-4-5", max_tokens=10, messages=MESSAGES) as msg:
        next(iter(msg))  # message_start: its usage is known

    async def leave_async() -> None:
        aclient = meter.instrument(
            openai.AsyncOpenAI(api_key="k", base_url=server.openai_url, max_retries=0)
        )
        async with aclient.chat.completions.stream(model="gpt-5", messages=MESSAGES):
            pass
        await aclient.close()

    asyncio.run(leave_async())
    assert _tags(flushed(*metered)) == [
        ("openai", 0, 0, {"api": "chat", **INCOMPLETE_UNREAD}),
        ("openai", 0, 0, {"api": "responses", **INCOMPLETE_UNREAD}),
        ("anthropic", CLAUDE["input_tokens"], 1, {"api": "messages", "stream": "incomplete"}),
        ("openai", 0, 0, {"api": "chat", **INCOMPLETE_UNREAD}),
    ]
    assert chat is not None and resp is not None and msg is not None  # still referenced


def test_a_stream_read_to_its_end_and_then_closed_is_recorded_once_complete(
    server: ProviderServer, metered: tuple[Meter, CollectingTransport]
) -> None:
    client = _oa(server, metered[0])
    with client.chat.completions.create(model="gpt-5", messages=MESSAGES, stream=True) as s:
        assert [c.choices[0].delta.content for c in s][1:3] == ["hel", "lo"]
        s.close()
    event = _one(metered)
    _has(event, GPT)
    assert event["tags"] == {"api": "chat", "provider_request_id": "req_test_123"}


@pytest.mark.parametrize("read", ["read", "parse", "json", "text", "iter_bytes", "iter_lines"])
def test_a_streaming_response_is_recorded_however_its_body_is_read(
    server: ProviderServer, metered: tuple[Meter, CollectingTransport], read: str
) -> None:
    # Only parse() was recorded; read(), json(), iter_lines()... were not.
    oa, an = _oa(server, metered[0]), _an(server, metered[0])
    with oa.chat.completions.with_streaming_response.create(model="gpt-5", messages=MESSAGES) as r:
        body = getattr(r, read)()
        list(body) if read.startswith("iter") else body
    with an.messages.with_streaming_response.create(
        model="claude-sonnet-4-5", max_tokens=10, messages=MESSAGES
    ) as r:
        body = getattr(r, read)()
        list(body) if read.startswith("iter") else body
        if not read.startswith("iter"):
            r.parse()  # read twice: recorded once
    gpt, claude = flushed(*metered)
    _has(gpt, GPT)
    _has(claude, CLAUDE)
    for event, api in ((gpt, "chat"), (claude, "messages")):
        assert event["tags"] == {"api": api, "provider_request_id": "req_test_123"}
        assert event["attempt"] == 1


def test_a_streamed_streaming_response_is_recorded_from_its_lines_or_its_parsed_stream(
    server: ProviderServer, metered: tuple[Meter, CollectingTransport]
) -> None:
    oa, an = _oa(server, metered[0]), _an(server, metered[0])
    with oa.chat.completions.with_streaming_response.create(
        model="gpt-5", messages=MESSAGES, stream=True
    ) as r:
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    with an.messages.with_streaming_response.create(
        model="claude-sonnet-4-5", max_tokens=10, messages=MESSAGES, stream=True
    ) as r:
        assert [e.type for e in r.parse()][-1] == "message_stop"
    with oa.chat.completions.with_streaming_response.create(
        model="gpt-5", messages=MESSAGES, stream=True
    ) as r:
        chunks = list(r.parse())
    assert chunks and all(c.choices for c in chunks)  # the usage chunk kept from the caller
    gpt, claude, parsed = flushed(*metered)
    _has(gpt, GPT)
    _has(claude, CLAUDE)
    _has(parsed, GPT)
    assert [e["tags"].get("stream") for e in (gpt, claude, parsed)] == [None] * 3


class _HeldStream:
    """A server whose every answer is an Anthropic event stream that sends message_start,
    then holds the rest until ``release`` is set: what the client has read is known."""

    def __enter__(self) -> _HeldStream:
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from tests.producers.provider_server import _message_events

        self.release = threading.Event()
        held = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                for n, event in enumerate(_message_events("claude-sonnet-4-5")):
                    if n == 1:
                        held.release.wait(10)
                    line = f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"
                    try:
                        self.wfile.write(line.encode())
                        self.wfile.flush()
                    except OSError:
                        return  # the client has gone: as it may

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def test_a_streaming_response_closed_unread_or_partly_read_is_recorded_with_what_was_read(
    server: ProviderServer, metered: tuple[Meter, CollectingTransport]
) -> None:
    oa = _oa(server, metered[0])
    with oa.chat.completions.with_streaming_response.create(model="gpt-5", messages=MESSAGES):
        pass
    with _HeldStream() as held:
        an = metered[0].instrument(anthropic.Anthropic(api_key="k", base_url=held.url))
        with an.messages.with_streaming_response.create(
            model="claude-sonnet-4-5", max_tokens=10, messages=MESSAGES, stream=True
        ) as r:
            for line in r.iter_lines():
                if line.startswith("data:"):
                    break  # message_start read; the rest is held
        held.release.set()
    assert _tags(flushed(*metered)) == [
        ("openai", 0, 0, {"api": "chat", "usage": "missing"}),
        ("anthropic", CLAUDE["input_tokens"], 1, {"api": "messages", "stream": "incomplete"}),
    ]


def test_async_streaming_responses_are_recorded_however_read(
    server: ProviderServer, metered: tuple[Meter, CollectingTransport]
) -> None:
    async def calls() -> None:
        client = metered[0].instrument(
            openai.AsyncOpenAI(api_key="k", base_url=server.openai_url, max_retries=0)
        )
        async with client.chat.completions.with_streaming_response.create(
            model="gpt-5", messages=MESSAGES
        ) as r:
            await r.json()
        async with client.chat.completions.with_streaming_response.create(
            model="gpt-5", messages=MESSAGES, stream=True
        ) as r:
            assert [line async for line in r.iter_lines() if line][-1] == "data: [DONE]"
        async with client.chat.completions.with_streaming_response.create(
            model="gpt-5", messages=MESSAGES
        ):
            pass
        await client.close()

    asyncio.run(calls())
    whole, lines, unread = flushed(*metered)
    _has(whole, GPT)
    _has(lines, GPT)
    assert (unread["input_tokens"], unread["tags"]["usage"]) == (0, "missing")


def test_raw_responses_are_recorded_when_they_return_parsed_or_not(
    server: ProviderServer, metered: tuple[Meter, CollectingTransport]
) -> None:
    # Recorded only by parse(): the body read through http_response was not metered.
    import gc

    oa, an = _oa(server, metered[0]), _an(server, metered[0])
    raw = oa.chat.completions.with_raw_response.create(model="gpt-5", messages=MESSAGES)
    assert raw.http_response.json()["choices"][0]["message"]["content"] == "hello"
    raw_claude = an.messages.with_raw_response.create(
        model="claude-sonnet-4-5", max_tokens=10, messages=MESSAGES
    )
    assert raw_claude.http_response.json()["usage"]["input_tokens"] == 25
    raw_claude.parse()  # parsed too: still one
    lines = oa.chat.completions.with_raw_response.create(
        model="gpt-5", messages=MESSAGES, stream=True
    )
    assert list(lines.http_response.iter_lines())[-2:] == ["data: [DONE]", ""]
    oa.chat.completions.with_raw_response.create(model="gpt-5", messages=MESSAGES, stream=True)
    gc.collect()  # a raw stream dropped unread: recorded when collected
    assert _tags(_flushed_until(*metered, 4)) == [
        ("openai", 1200, 300, {"api": "chat"}),
        ("anthropic", CLAUDE["input_tokens"], 150, {"api": "messages"}),
        ("openai", 1200, 300, {"api": "chat"}),
        ("openai", 0, 0, {"api": "chat", **INCOMPLETE_UNREAD}),
    ]


def test_the_meters_default_tags_are_kept_on_every_instrumented_call(
    server: ProviderServer,
) -> None:
    # record() took the call's tags ({"api": ...}) as the whole of the event's tags: the
    # Meter's own were lost, on every call and on those recorded with usage missing.
    meter, transport = collecting_meter(team="search", tags={"env": "prod", "api": "x"})
    try:
        client = _oa(server, meter, tags={"service": "faq"})
        with meter.tags(tags={"experiment": "b"}):
            client.chat.completions.create(model="gpt-5", messages=MESSAGES)
        client.chat.completions.create(model="gpt-5", messages=MESSAGES, stream=True).close()
        ok, missing = flushed(meter, transport)
    finally:
        meter.close(timeout_s=5)
    assert ok["tags"] == {
        "env": "prod",
        "api": "chat",
        "service": "faq",
        "experiment": "b",
        "provider_request_id": "req_test_123",
    }
    assert missing["tags"] == {
        "env": "prod",
        "api": "chat",
        "service": "faq",
        "stream": "incomplete",
        "provider_request_id": "req_test_123",
        "usage": "missing",
    }


# -- ends found by the garbage collector, bodies that cannot be read -------------------------


def _flushed_until(
    meter: Meter, transport: CollectingTransport, count: int, timeout_s: float = 10.0
) -> list[dict[str, Any]]:
    """The events sent once ``count`` have arrived: a call whose answer the garbage
    collector ends is recorded by a thread of its own, just after the collection."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        events = flushed(meter, transport)
        if len(events) >= count or time.monotonic() > deadline:
            return events
        time.sleep(0.01)


class _LockedMeter(Meter):
    """A Meter whose ``record()`` takes a lock of its own, as the real one does in places
    (its counters, its spool when the queue is full): a collection that strikes while that
    lock is held, in the thread that holds it, must not need it."""

    def __init__(self, transport: CollectingTransport) -> None:
        super().__init__(transport, spool_dir=None, linger_s=0.001)
        self.lock = threading.Lock()

    def record(self, *args: Any, **fields: Any) -> str:
        with self.lock:
            return super().record(*args, **fields)


def test_a_collection_inside_a_lock_the_meter_holds_does_not_deadlock(
    server: ProviderServer,
) -> None:
    # The finalizer recorded from inside the collection, in whatever thread it struck:
    # if that thread held a lock record() needs, it waited on itself for ever.
    import gc

    transport = CollectingTransport()
    meter = _LockedMeter(transport)
    try:
        client = _oa(server, meter)
        gc.collect()
        gc.disable()  # the collection below, and no other, finds the stream
        try:
            client.chat.completions.create(model="gpt-5", messages=MESSAGES, stream=True)

            def collect_holding_the_meters_lock() -> None:
                with meter.lock:
                    gc.collect()

            collector = threading.Thread(target=collect_holding_the_meters_lock, daemon=True)
            collector.start()
            collector.join(5)
        finally:
            gc.enable()
        assert not collector.is_alive(), "deadlocked: the collector waits on its own lock"
        assert _tags(_flushed_until(meter, transport, 1)) == [
            ("openai", 0, 0, {"api": "chat", **INCOMPLETE_UNREAD})
        ]
    finally:
        meter.close(timeout_s=5)


def test_answers_dropped_unread_are_freed_and_recorded_when_dropped_not_at_a_collection(
    server: ProviderServer, metered: tuple[Meter, CollectingTransport]
) -> None:
    # Patching close/iter_bytes/parse with closures over bound methods put each HTTP response
    # in a reference cycle: held (with its body) until the cyclic collector ran, and
    # recorded only then, though the SDK alone frees it the moment it is dropped.
    import gc
    import weakref

    oa, an = _oa(server, metered[0]), _an(server, metered[0])
    gc.collect()
    gc.disable()
    try:
        stream = an.messages.create(
            model="claude-sonnet-4-5", max_tokens=10, messages=MESSAGES, stream=True
        )
        streamed = weakref.ref(stream.response)
        del stream
        with oa.chat.completions.with_streaming_response.create(
            model="gpt-5", messages=MESSAGES
        ) as r:
            r.read()
        body = weakref.ref(r.http_response)
        del r
        raw = oa.chat.completions.with_raw_response.create(model="gpt-5", messages=MESSAGES)
        rawhttp = weakref.ref(raw.http_response)
        del raw
        assert (streamed(), body(), rawhttp()) == (None, None, None)
        assert _tags(flushed(*metered)) == [
            ("anthropic", 0, 0, {"api": "messages", **INCOMPLETE_UNREAD}),
            ("openai", 1200, 300, {"api": "chat"}),
            ("openai", 1200, 300, {"api": "chat"}),
        ]
    finally:
        gc.enable()


class _DeepJson:
    """A server whose every answer is a 200 JSON object nested deeper than Python's json
    module decodes (a RecursionError, not a ValueError)."""

    def __enter__(self) -> str:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                payload = ('{"a":' + "[" * 5000 + "]" * 5000 + "}").encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_a_body_instrument_cannot_decode_never_raises_into_the_call(
    metered: tuple[Meter, CollectingTransport],
) -> None:
    # with_raw_response raised RecursionError from the call, and read() from the read,
    # where the SDK alone raises nothing; neither call was recorded.
    with _DeepJson() as url:
        client = metered[0].instrument(openai.OpenAI(api_key="k", base_url=url, max_retries=0))
        raw = client.chat.completions.with_raw_response.create(model="gpt-5", messages=MESSAGES)
        assert raw.http_response.status_code == 200
        with client.chat.completions.with_streaming_response.create(
            model="gpt-5", messages=MESSAGES
        ) as r:
            assert r.read().startswith(b'{"a":[[[')
    assert _tags(flushed(*metered)) == [
        ("openai", 0, 0, {"api": "chat", "usage": "missing"}),
        ("openai", 0, 0, {"api": "chat", "usage": "missing"}),
    ]
