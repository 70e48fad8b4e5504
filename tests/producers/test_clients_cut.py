"""Answers cut by a network error while they are read: the real openai and anthropic SDKs
against the local provider server, which drops the connection in the middle of the body
(model ``cut``): a failed call, recorded as such however the body was read."""

from __future__ import annotations

import asyncio
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from spendstream.producers.meter import Meter
from tests.producers.collecting import CollectingTransport, flushed
from tests.producers.provider_server import CLAUDE_INPUT, ProviderServer

MESSAGES = [{"role": "user", "content": "hi"}]


def _clients(server: ProviderServer, meter: Meter) -> tuple[openai.OpenAI, anthropic.Anthropic]:
    oa = openai.OpenAI(api_key="k", base_url=server.openai_url, max_retries=0)
    an = anthropic.Anthropic(api_key="k", base_url=server.anthropic_url, max_retries=0)
    return meter.instrument(oa), meter.instrument(an)


def _seen(events: list[dict[str, Any]]) -> list[tuple[str, str, int, int, dict[str, str]]]:
    """(provider, status, input, output tokens, tags but the request id) of each event."""
    return [
        (
            e["provider"],
            e["status"],
            e["input_tokens"],
            e["output_tokens"],
            {k: v for k, v in e["tags"].items() if k != "provider_request_id"},
        )
        for e in events
    ]


def test_a_raw_stream_cut_mid_body_is_a_failed_call_as_a_cut_stream_is(
    server: ProviderServer, metered: tuple[Meter, CollectingTransport]
) -> None:
    # The raw forms were recorded `ok` with tag stream=incomplete, as if the caller had
    # left the stream: the call failed (the connection dropped), as the parsed stream says.
    meter, _ = metered
    oa, an = _clients(server, meter)
    with pytest.raises(openai.APIConnectionError):  # the parsed stream: the reference
        list(oa.chat.completions.create(model="cut", messages=MESSAGES, stream=True))
    raw = oa.chat.completions.with_raw_response.create(model="cut", messages=MESSAGES, stream=True)
    with pytest.raises(httpx2.RemoteProtocolError, match="incomplete chunked read"):
        list(raw.http_response.iter_lines())
    assert len(flushed(*metered)) == 2  # recorded at the error, while the caller holds it
    with (
        an.messages.with_streaming_response.create(
            model="cut", max_tokens=10, messages=MESSAGES, stream=True
        ) as r,
        pytest.raises(httpx2.RemoteProtocolError),
    ):
        for _ in r.iter_lines():
            pass
    with (
        an.messages.with_streaming_response.create(
            model="cut", max_tokens=10, messages=MESSAGES, stream=True
        ) as r,
        pytest.raises(httpx2.RemoteProtocolError),
    ):  # anthropic does not wrap it
        list(r.parse())  # parsed into a stream: recorded by the stream's reader, once
    assert _seen(flushed(*metered)) == [
        ("openai", "error", 0, 0, {"api": "chat", "usage": "missing"}),
        ("openai", "error", 0, 0, {"api": "chat", "usage": "missing"}),
        ("anthropic", "error", CLAUDE_INPUT, 1, {"api": "messages"}),
        ("anthropic", "error", CLAUDE_INPUT, 1, {"api": "messages"}),
    ]
    assert raw is not None


def test_a_streaming_response_body_cut_mid_read_is_a_failed_call(
    server: ProviderServer, metered: tuple[Meter, CollectingTransport]
) -> None:
    # A JSON body cut short under with_streaming_response: recorded `ok` (usage missing)
    # only when the response was collected.
    oa, _ = _clients(server, metered[0])
    with oa.chat.completions.with_streaming_response.create(model="cut", messages=MESSAGES) as r:
        with pytest.raises(httpx2.RemoteProtocolError, match="expected"):
            r.read()
        assert _seen(flushed(*metered)) == [("openai", "error", 0, 0, {"api": "chat"})]
    assert len(flushed(*metered)) == 1


def test_async_raw_streams_cut_mid_body_are_failed_calls(
    server: ProviderServer, metered: tuple[Meter, CollectingTransport]
) -> None:
    meter, _ = metered

    async def calls() -> None:
        oa = meter.instrument(
            openai.AsyncOpenAI(api_key="k", base_url=server.openai_url, max_retries=0)
        )
        an = meter.instrument(
            anthropic.AsyncAnthropic(api_key="k", base_url=server.anthropic_url, max_retries=0)
        )
        async with oa.responses.with_streaming_response.create(
            model="cut", input="hi", stream=True
        ) as r:
            with pytest.raises(httpx2.RemoteProtocolError):
                async for _ in r.iter_lines():
                    pass
        raw = await an.messages.with_raw_response.create(
            model="cut", max_tokens=10, messages=MESSAGES, stream=True
        )
        with pytest.raises(httpx2.RemoteProtocolError):
            async for _ in raw.http_response.aiter_lines():
                pass
        await oa.close()
        await an.close()

    asyncio.run(calls())
    assert _seen(flushed(*metered)) == [
        ("openai", "error", 0, 0, {"api": "responses", "usage": "missing"}),
        ("anthropic", "error", CLAUDE_INPUT, 1, {"api": "messages"}),
    ]


def test_a_raw_stream_whose_read_times_out_mid_body_is_recorded_as_a_timeout(
    server: ProviderServer, metered: tuple[Meter, CollectingTransport]
) -> None:
    # The server sends message_start and then nothing: the client's read timeout ends it.
    an = metered[0].instrument(
        anthropic.Anthropic(api_key="k", base_url=server.anthropic_url, max_retries=0, timeout=0.5)
    )
    with (
        an.messages.with_streaming_response.create(
            model="stall", max_tokens=10, messages=MESSAGES, stream=True
        ) as r,
        pytest.raises(httpx2.ReadTimeout),
    ):
        for _ in r.iter_lines():
            pass
    assert _seen(flushed(*metered)) == [
        ("anthropic", "timeout", CLAUDE_INPUT, 1, {"api": "messages"}),
    ]


def test_a_raw_body_read_cancelled_is_recorded_as_a_parsed_stream_cancelled_is(
    server: ProviderServer, metered: tuple[Meter, CollectingTransport]
) -> None:
    # A task cancelled while it awaits the next bytes of a body (the 'stall' model holds
    # the connection after message_start): recorded once, at the cancel, `error` with the
    # usage read, as the parsed stream's reader records its own; the CancelledError reaches
    # the caller as it was raised (its message kept), neither swallowed nor replaced.
    meter, _ = metered
    reached: list[tuple[str, tuple[object, ...]]] = []

    async def calls() -> None:
        an = meter.instrument(
            anthropic.AsyncAnthropic(api_key="k", base_url=server.anthropic_url, max_retries=0)
        )
        first = asyncio.Event()  # the body's first part read: the next read waits, stalled

        async def raw() -> None:
            async with an.messages.with_streaming_response.create(
                model="stall", max_tokens=10, messages=MESSAGES, stream=True
            ) as r:
                async for _ in r.iter_lines():
                    first.set()

        async def parsed() -> None:
            stream = await an.messages.create(
                model="stall", max_tokens=10, messages=MESSAGES, stream=True
            )
            async for _ in stream:
                first.set()

        for name, read in (("raw", raw), ("parsed", parsed)):
            first.clear()
            task = asyncio.create_task(read())
            await asyncio.wait_for(first.wait(), 10)
            task.cancel(f"leave the {name} body")  # delivered in the stalled read
            try:
                await task
            except asyncio.CancelledError as exc:
                reached.append((name, exc.args))
        await an.close()

    asyncio.run(calls())
    assert reached == [("raw", ("leave the raw body",)), ("parsed", ("leave the parsed body",))]
    assert _seen(flushed(*metered)) == [
        ("anthropic", "error", CLAUDE_INPUT, 1, {"api": "messages"}),
        ("anthropic", "error", CLAUDE_INPUT, 1, {"api": "messages"}),
    ]
