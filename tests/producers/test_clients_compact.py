"""``client.responses.compact(...)`` (a compaction pass over a conversation, billed like a
response) with the real openai SDK against the local provider server, which answers as
OpenAI does: the conversation's user messages and one compaction item, with usage."""

from __future__ import annotations

import asyncio
from typing import Any

import openai
from openai.types.responses.compacted_response import CompactedResponse

from spendstream.producers.meter import Meter
from tests.producers.collecting import CollectingTransport, flushed
from tests.producers.provider_server import COMPACT_USAGE, ProviderServer

# The compaction pass's usage, as every form of the call must record it.
COMPACTED = {
    "provider": "openai",
    "model": "gpt-5.4",  # the answer names no model: the requested one
    "input_tokens": COMPACT_USAGE["input_tokens"],
    "cache_read_tokens": COMPACT_USAGE["input_tokens_details"]["cached_tokens"],
    "output_tokens": COMPACT_USAGE["output_tokens"],
    "status": "ok",
    "team": "search",
}


def _compacted(event: dict[str, Any]) -> None:
    assert {k: event.get(k) for k in COMPACTED} == COMPACTED
    assert event["tags"] == {"api": "responses", "provider_request_id": "req_test_123"}


def test_responses_compact_is_metered_like_responses_create(
    server: ProviderServer, metered: tuple[Meter, CollectingTransport]
) -> None:
    # It was not metered at all: POST /responses/compact was not a path instrument wrapped.
    meter, _ = metered
    client = meter.instrument(openai.OpenAI(api_key="k", base_url=server.openai_url))
    compacted = client.responses.compact(model="gpt-5.4", input="a long conversation")
    assert isinstance(compacted, CompactedResponse)  # the caller's answer, unchanged
    assert [item.type for item in compacted.output] == ["message", "compaction"]
    assert server.requests[-1][0] == "/v1/responses/compact"
    raw = client.responses.with_raw_response.compact(model="gpt-5.4", input="again")
    assert raw.parse().usage.output_tokens == COMPACT_USAGE["output_tokens"]
    with meter.tags(user_id="u-7"):
        client.responses.compact(model="gpt-5.4", previous_response_id="resp_1")
    events = flushed(*metered)
    assert len(events) == 3, events
    for event in events:
        _compacted(event)
    assert [e.get("user_id") for e in events] == [None, None, "u-7"]


def test_async_responses_compact_is_metered(
    server: ProviderServer, metered: tuple[Meter, CollectingTransport]
) -> None:
    meter, _ = metered

    async def compact() -> CompactedResponse:
        client = meter.instrument(openai.AsyncOpenAI(api_key="k", base_url=server.openai_url))
        try:
            return await client.responses.compact(model="gpt-5.4", input="a long conversation")
        finally:
            await client.close()

    assert asyncio.run(compact()).object == "response.compaction"
    events = flushed(*metered)
    assert len(events) == 1, events
    _compacted(events[0])
