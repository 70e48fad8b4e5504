"""Provider helpers: the contract's token accounting from each provider's response shape.

Fixtures in responses/ are response bodies in the shapes of the providers' public API
references (OpenAI chat/responses and their streams, Anthropic messages and stream events,
Gemini generateContent and its stream, OpenRouter, Bedrock Converse). Expected values are
computed here from each body by the provider's documented rule, not copied.
"""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from spendstream.producers import (
    UsageEvent,
    anthropic_usage,
    bedrock_usage,
    gemini_usage,
    openai_usage,
    openrouter_usage,
    usage_from,
)

RESPONSES = Path(__file__).with_name("responses")


def _load(name: str) -> Any:
    return json.loads((RESPONSES / f"{name}.json").read_text())


def _valid(fields: dict[str, Any]) -> UsageEvent:
    # Every helper's output must make a valid event with only an id and a time added.
    return UsageEvent.model_validate({"event_id": "e", "ts": "2026-01-01T00:00:00Z", **fields})


def test_openai_chat_cached_tokens_are_already_inside_prompt_tokens() -> None:
    body = _load("openai_chat")
    u = body["usage"]
    out = openai_usage(body)
    assert out == {
        "provider": "openai",
        "model": body["model"],
        "input_tokens": u["prompt_tokens"],
        "output_tokens": u["completion_tokens"],  # reasoning is already inside
        "cache_read_tokens": u["prompt_tokens_details"]["cached_tokens"],
        "cache_write_tokens": 0,
        "service_tier": body["service_tier"],  # the tier that served the call, for pricing
    }
    _valid(out)


def test_openai_chat_stream_takes_the_final_usage_chunk() -> None:
    chunks = _load("openai_chat_stream")
    u = chunks[-1]["usage"]
    out = openai_usage(chunks)
    assert out["model"] == chunks[0]["model"]
    assert (out["input_tokens"], out["output_tokens"], out["cache_read_tokens"]) == (
        u["prompt_tokens"],
        u["completion_tokens"],
        u["prompt_tokens_details"]["cached_tokens"],
    )


def test_openai_chat_stream_without_usage_says_how_to_ask_for_it() -> None:
    chunks = [c for c in _load("openai_chat_stream") if c["usage"] is None]
    with pytest.raises(ValueError, match="include_usage"):
        openai_usage(chunks)


def test_openai_responses_api_usage_with_cached_and_reasoning_tokens() -> None:
    body = _load("openai_responses")
    u = body["usage"]
    out = openai_usage(body)
    assert out["input_tokens"] == u["input_tokens"]
    assert out["cache_read_tokens"] == u["input_tokens_details"]["cached_tokens"]
    assert out["output_tokens"] == u["output_tokens"]
    assert out["model"] == body["model"]
    _valid(out)


def test_openai_responses_stream_uses_the_completed_event() -> None:
    events = _load("openai_responses_stream")
    u = events[-1]["response"]["usage"]
    out = openai_usage(events)
    assert (out["input_tokens"], out["output_tokens"]) == (u["input_tokens"], u["output_tokens"])
    assert openai_usage(events[-1]) == out  # the completed event alone works too


@pytest.mark.parametrize("name", ["anthropic_message", "anthropic_message_cache_hit"])
def test_anthropic_input_tokens_get_cache_reads_and_writes_added(name: str) -> None:
    body = _load(name)
    u = body["usage"]
    out = anthropic_usage(body)
    assert out["input_tokens"] == (
        u["input_tokens"] + u["cache_creation_input_tokens"] + u["cache_read_input_tokens"]
    )
    assert out["cache_read_tokens"] == u["cache_read_input_tokens"]
    assert out["cache_write_tokens"] == u["cache_creation_input_tokens"]
    assert out["output_tokens"] == u["output_tokens"]
    assert out["model"] == body["model"]
    _valid(out)  # the cache invariant holds


def test_anthropic_stream_combines_message_start_and_final_message_delta() -> None:
    events = _load("anthropic_stream")
    start = events[0]["message"]["usage"]
    final_output = next(e for e in events if e["type"] == "message_delta")["usage"]
    out = anthropic_usage(events)
    assert out["input_tokens"] == (
        start["input_tokens"]
        + start["cache_creation_input_tokens"]
        + start["cache_read_input_tokens"]
    )
    assert out["output_tokens"] == final_output["output_tokens"]  # not message_start's 1
    assert out["cache_write_tokens"] == start["cache_creation_input_tokens"]
    assert out["model"] == events[0]["message"]["model"]


def test_anthropic_stream_delta_with_cumulative_input_counts_wins() -> None:
    events = _load("anthropic_stream")
    delta = next(e for e in events if e["type"] == "message_delta")
    delta["usage"] = {"input_tokens": 30, "cache_read_input_tokens": 4800, "output_tokens": 20}
    out = anthropic_usage(events)
    start = events[0]["message"]["usage"]
    assert out["input_tokens"] == 30 + 4800 + start["cache_creation_input_tokens"]
    assert out["output_tokens"] == 20


def test_gemini_output_counts_thoughts_and_input_includes_cached_content() -> None:
    body = _load("gemini")
    m = body["usageMetadata"]
    out = gemini_usage(body)
    assert out["input_tokens"] == m["promptTokenCount"]
    assert out["cache_read_tokens"] == m["cachedContentTokenCount"]
    assert out["output_tokens"] == m["candidatesTokenCount"] + m["thoughtsTokenCount"]
    assert out["model"] == body["modelVersion"]
    _valid(out)


def test_gemini_stream_takes_the_last_usage_metadata() -> None:
    chunks = _load("gemini_stream")
    m = chunks[-1]["usageMetadata"]
    out = gemini_usage(chunks)
    assert out["output_tokens"] == m["candidatesTokenCount"] + m["thoughtsTokenCount"]
    assert out["input_tokens"] == m["promptTokenCount"]


def test_gemini_snake_case_dict_from_google_genai_is_understood() -> None:
    body = _load("gemini")
    snake = {
        "model_version": body["modelVersion"],
        "usage_metadata": {
            "prompt_token_count": body["usageMetadata"]["promptTokenCount"],
            "cached_content_token_count": body["usageMetadata"]["cachedContentTokenCount"],
            "candidates_token_count": body["usageMetadata"]["candidatesTokenCount"],
            "thoughts_token_count": body["usageMetadata"]["thoughtsTokenCount"],
        },
    }
    assert gemini_usage(snake) == gemini_usage(body)


def test_openrouter_reported_cost_is_kept_as_an_exact_decimal() -> None:
    body = _load("openrouter")
    out = openrouter_usage(body)
    assert out["reported_cost_usd"] == Decimal(str(body["usage"]["cost"]))
    assert out["input_tokens"] == body["usage"]["prompt_tokens"]
    assert out["cache_read_tokens"] == body["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert out["model"] == body["model"]
    assert _valid(out).reported_cost_usd == Decimal("0.0007326")


def test_bedrock_converse_input_tokens_get_cache_tokens_added() -> None:
    body = _load("bedrock_converse")
    u = body["usage"]
    out = bedrock_usage(body, model="anthropic.claude-sonnet-4-5-20250929-v1:0")
    assert (
        out["input_tokens"]
        == u["inputTokens"] + u["cacheReadInputTokens"] + u["cacheWriteInputTokens"]
    )
    assert out["input_tokens"] + out["output_tokens"] == u["totalTokens"]
    assert out["cache_read_tokens"] == u["cacheReadInputTokens"]
    _valid(out)


def test_bedrock_invoke_model_with_anthropic_body_uses_anthropic_accounting() -> None:
    body = _load("anthropic_message")
    assert bedrock_usage(body)["input_tokens"] == anthropic_usage(body)["input_tokens"]


def test_claude_on_vertex_is_recognised_under_provider_google() -> None:
    body = _load("anthropic_message")
    out = usage_from("google", body)
    assert out["provider"] == "google"
    assert out["input_tokens"] == anthropic_usage(body)["input_tokens"]


def test_claude_on_vertex_stream_is_recognised_under_provider_google() -> None:
    events = _load("anthropic_stream")
    expected = {**anthropic_usage(events), "provider": "google"}
    assert usage_from("google", events) == expected
    assert usage_from("google", iter(events)) == expected  # a stream read once, as it comes


def test_model_missing_from_the_price_catalog_is_still_metered() -> None:
    body = {**_load("openai_chat"), "model": "ft:gpt-4o-mini:acme:support:9xYz"}
    assert openai_usage(body)["model"] == "ft:gpt-4o-mini:acme:support:9xYz"


def test_openai_compatible_servers_use_the_openai_shape() -> None:
    out = usage_from("self-hosted", _load("openai_chat"))
    assert out["provider"] == "self-hosted"
    assert out["input_tokens"] == _load("openai_chat")["usage"]["prompt_tokens"]


class _Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int


class _Completion(BaseModel):
    # Same structure as the OpenAI SDK's pydantic ChatCompletion (no SDK dependency).
    model: str
    usage: _Usage


class _ToDict:
    def __init__(self, body: dict[str, Any]) -> None:
        self._body = body

    def to_dict(self) -> dict[str, Any]:
        return self._body


def test_sdk_objects_with_model_dump_or_to_dict_are_accepted() -> None:
    sdk = _Completion(model="gpt-5-mini", usage=_Usage(prompt_tokens=7, completion_tokens=3))
    out = openai_usage(sdk)
    assert (out["model"], out["input_tokens"], out["output_tokens"]) == ("gpt-5-mini", 7, 3)
    assert anthropic_usage(_ToDict(_load("anthropic_message"))) == anthropic_usage(
        _load("anthropic_message")
    )


def test_response_without_usage_is_an_error_naming_the_provider() -> None:
    with pytest.raises(ValueError, match="anthropic"):
        anthropic_usage({"model": "claude-sonnet-4-5"})


def test_without_genai_prices_the_helpers_say_what_to_install() -> None:
    code = (
        "import sys; sys.modules['genai_prices'] = None\n"
        "from spendstream.producers import openai_usage, ProviderHelperUnavailable\n"
        "try:\n"
        "    openai_usage({'model': 'm', 'usage': {'prompt_tokens': 1, 'completion_tokens': 1}})\n"
        "except ProviderHelperUnavailable as e:\n"
        "    print('unavailable:', e)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "unavailable:" in done.stdout
    assert "spendstream[providers]" in done.stdout


def test_gemini_tool_use_prompt_tokens_count_as_input() -> None:
    body = _load("gemini")
    body["usageMetadata"]["toolUsePromptTokenCount"] = 321
    m = body["usageMetadata"]
    out = gemini_usage(body)
    assert out["input_tokens"] == m["promptTokenCount"] + m["toolUsePromptTokenCount"]
    _valid(out)
