"""Each reader defect of issue 14, with the providers' own SDK types where an SDK exists.

Responses are built as the SDKs' response models (``openai.types``, ``anthropic.types``,
``google.genai.types``) from bodies shaped like the providers' API references; Bedrock's
boto3 returns plain dicts, so its bodies are dicts. Each test asserts the exact token
counts the reader returns and the cost the pricer gives the resulting event, against
genai-prices' ``calc_price`` on the expected usage (an independent reference).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from anthropic.types import Message
from anthropic.types.messages import MessageBatchIndividualResponse
from genai_prices import Usage, calc_price
from google.genai import types as gtypes
from openai.types import (
    CreateEmbeddingResponse,
    ImageEditCompletedEvent,
    ImageEditPartialImageEvent,
    ImageGenCompletedEvent,
    ImageGenPartialImageEvent,
    ImagesResponse,
)
from openai.types.chat import ChatCompletion
from openai.types.realtime import ResponseDoneEvent
from openai.types.responses import Response
from pydantic import BaseModel

from spendstream.producers import UsageEvent
from spendstream.producers.event import TOKEN_FIELDS
from spendstream.producers.providers import (
    anthropic_usage,
    batch_result_usage,
    bedrock_usage,
    gemini_usage,
    openai_usage,
    usage_from,
)
from spendstream.stream.pricing import Pricer

T = datetime(2026, 1, 5, 12, tzinfo=UTC)
_TOOLS = {"web_search": "web_searches", "storage_search": "storage_searches"}


def _event(fields: dict[str, Any]) -> UsageEvent:
    clean = {k: v for k, v in fields.items() if k != "custom_id"}
    return UsageEvent.model_validate({"event_id": "e", "ts": T, **clean})


def _priced(fields: dict[str, Any], provider_id: str, model: str | None = None) -> Decimal:
    """The pricer's cost for the reader's event; asserts it equals calc_price's."""
    e = _event(fields)
    cost = Pricer.from_config().price(e)
    assert cost is not None
    usage = {k: v for k, v in e.model_dump().items() if k in _USAGE and v}
    for tool, n in (e.tool_requests or {}).items():
        usage[_TOOLS[tool]] = n
    context: dict[str, str] = {}
    if e.batch:
        context["processing"] = "batch"
    if e.service_tier:
        context["service_tier"] = e.service_tier
    calc = calc_price(
        Usage(**usage),
        model or e.model,
        provider_id=provider_id,
        genai_request_timestamp=T,
        price_context=context or None,
    )
    # Before a catalog has batch prices, batch calls take the documented 50% off list price.
    factor = Decimal("0.5") if "+batch:50%" in cost.price_source else Decimal(1)
    assert cost.cost_usd == calc.total_price * factor
    return cost.cost_usd


_USAGE = TOKEN_FIELDS


def _chat(model: str, usage: dict[str, Any], **extra: Any) -> ChatCompletion:
    return ChatCompletion.model_validate(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1767614400,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": "ok"},
                }
            ],
            "usage": usage,
            **extra,
        }
    )


def _tokens(out: dict[str, Any]) -> dict[str, int]:
    return {k: v for k, v in out.items() if k in _USAGE}


# -- xAI: reasoning tokens are outside completion_tokens ---------------------------------------


def test_xai_grok_4_output_counts_its_reasoning_tokens_678_not_278() -> None:
    response = _chat(
        "grok-4-0709",
        {
            "prompt_tokens": 120,
            "completion_tokens": 278,
            "total_tokens": 798,
            "prompt_tokens_details": {"cached_tokens": 0, "text_tokens": 120},
            "completion_tokens_details": {"reasoning_tokens": 400},
        },
    )
    out = usage_from("xai", response)
    assert (out["input_tokens"], out["output_tokens"]) == (120, 678)
    cost = _priced(out, "x-ai")
    assert cost == Decimal(120) * Decimal("3E-6") + Decimal(678) * Decimal("15E-6")


# -- DeepSeek: prompt_cache_hit_tokens -------------------------------------------------------


def test_deepseek_prompt_cache_hit_tokens_are_cache_reads() -> None:
    response = _chat(
        "deepseek-chat",
        {
            "prompt_tokens": 10_000,
            "completion_tokens": 500,
            "total_tokens": 10_500,
            "prompt_cache_hit_tokens": 8000,
            "prompt_cache_miss_tokens": 2000,
        },
    )
    out = usage_from("deepseek", response)
    assert _tokens(out) == {
        "input_tokens": 10_000,
        "output_tokens": 500,
        "cache_read_tokens": 8000,
        "cache_write_tokens": 0,
    }
    _priced(out, "deepseek")


# -- Mistral and Groq: their own readers -----------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "model", "provider_id"),
    [
        ("mistral", "mistral-large-latest", "mistral"),
        ("groq", "llama-3.3-70b-versatile", "groq"),
    ],
)
def test_mistral_and_groq_chat_responses(provider: str, model: str, provider_id: str) -> None:
    response = _chat(
        model,
        {
            "prompt_tokens": 900,
            "completion_tokens": 300,
            "total_tokens": 1200,
            "prompt_tokens_details": {"cached_tokens": 100},
        },
    )
    out = usage_from(provider, response)
    assert _tokens(out) == {
        "input_tokens": 900,
        "output_tokens": 300,
        "cache_read_tokens": 100,
        "cache_write_tokens": 0,
    }
    assert out["provider"] == provider
    _priced(out, provider_id)


# -- Anthropic: 1-hour cache writes and web search -------------------------------------------


def _claude(model: str = "claude-opus-4-1", **usage: Any) -> Message:
    body = {
        "input_tokens": 50,
        "output_tokens": 700,
        "cache_creation_input_tokens": 10_000,
        "cache_read_input_tokens": 2000,
        "cache_creation": {"ephemeral_5m_input_tokens": 4000, "ephemeral_1h_input_tokens": 6000},
        "server_tool_use": {"web_search_requests": 3, "web_fetch_requests": 0},
        "service_tier": "standard",
    }
    body.update(usage)
    return Message.model_validate(
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": "ok"}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": body,
        }
    )


def test_anthropic_one_hour_cache_writes_and_web_searches_are_read_and_priced() -> None:
    out = anthropic_usage(_claude())
    assert _tokens(out) == {
        "input_tokens": 50 + 10_000 + 2000,
        "output_tokens": 700,
        "cache_read_tokens": 2000,
        "cache_write_tokens": 10_000,
        "cache_write_1h_tokens": 6000,
    }
    assert out["tool_requests"] == {"web_search": 3}
    cost = _priced(out, "anthropic")
    expected = (
        Decimal(50) * Decimal("15E-6")
        + Decimal(2000) * Decimal("1.5E-6")
        + Decimal(4000) * Decimal("18.75E-6")
        + Decimal(6000) * Decimal("30E-6")  # the 1-hour rate, not the 5-minute one
        + Decimal(700) * Decimal("75E-6")
        + Decimal(3) * Decimal("0.01")  # $10 per thousand searches
    )
    assert cost == expected


def test_anthropic_stream_keeps_the_one_hour_writes_and_searches_of_the_final_delta() -> None:
    message = _claude().model_dump(mode="json")
    start = {**message, "usage": {**message["usage"], "output_tokens": 1}}
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": start},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 700, "server_tool_use": {"web_search_requests": 4}},
        },
        {"type": "message_stop"},
    ]
    out = anthropic_usage(events)
    assert (out["output_tokens"], out["cache_write_1h_tokens"]) == (700, 6000)
    assert out["tool_requests"] == {"web_search": 4}


# -- OpenAI: web search, audio tokens, embeddings --------------------------------------------


def _responses_api(
    tools: list[dict[str, Any]], calls: list[dict[str, Any]], cached: int = 0, reasoning: int = 0
) -> Response:
    """A completed Responses API result: ``calls`` (tool calls) before the answer; 3000
    tokens in (``cached`` of them cached), 800 out (``reasoning`` of them reasoning)."""
    answer = {
        "type": "message",
        "id": "msg_1",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": "ok", "annotations": []}],
    }
    return Response.model_validate(
        {
            "id": "resp_1",
            "object": "response",
            "created_at": 1767614400,
            "model": "gpt-5",
            "status": "completed",
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": tools,
            "output": [*calls, answer],
            "usage": {
                "input_tokens": 3000,
                "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
                "output_tokens": 800,
                "output_tokens_details": {"reasoning_tokens": reasoning},
                "total_tokens": 3800,
            },
        }
    )


def test_openai_responses_web_search_calls_are_tool_requests() -> None:
    searches = [
        {
            "type": "web_search_call",
            "id": f"ws_{i}",
            "status": "completed",
            "action": {"type": "search", "query": "spend"},
        }
        for i in (1, 2)
    ]
    response = _responses_api([{"type": "web_search"}], searches, cached=1000, reasoning=500)
    out = openai_usage(response)
    assert _tokens(out) == {
        "input_tokens": 3000,
        "output_tokens": 800,
        "cache_read_tokens": 1000,
        "cache_write_tokens": 0,
    }
    assert out["tool_requests"] == {"web_search": 2}
    cost = _priced(out, "openai")
    assert cost == (
        Decimal(2000) * Decimal("1.25E-6")
        + Decimal(1000) * Decimal("0.125E-6")
        + Decimal(800) * Decimal("10E-6")
        + Decimal(2) * Decimal("0.01")
    )


def test_openai_chat_audio_tokens_are_priced_at_audio_rates() -> None:
    response = _chat(
        "gpt-audio",
        {
            "prompt_tokens": 5000,
            "completion_tokens": 3000,
            "total_tokens": 8000,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 4000},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 2500},
        },
    )
    out = openai_usage(response)
    assert (out["input_audio_tokens"], out["output_audio_tokens"]) == (4000, 2500)
    cost = _priced(out, "openai")
    assert cost == (
        Decimal(1000) * Decimal("2.5E-6")
        + Decimal(4000) * Decimal("32E-6")
        + Decimal(500) * Decimal("10E-6")
        + Decimal(2500) * Decimal("64E-6")
    )


def test_embeddings_are_detected_without_an_api_flag() -> None:
    response = CreateEmbeddingResponse.model_validate(
        {
            "object": "list",
            "model": "text-embedding-3-small",
            "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
            "usage": {"prompt_tokens": 4200, "total_tokens": 4200},
        }
    )
    out = openai_usage(response)
    assert _tokens(out) == {
        "input_tokens": 4200,
        "output_tokens": 0,
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
    }
    assert _priced(out, "openai") == Decimal(4200) * Decimal("0.02E-6")
    assert usage_from("azure", response)["input_tokens"] == 4200  # another embeddings reader


# -- OpenAI images and realtime: their own usage shapes -------------------------------------


def test_openai_images_usage_gives_image_input_and_output_tokens() -> None:
    # An images.edit answer of gpt-image-1: the input image and the prompt text, one image
    # out. ImagesResponse names no model: the caller passes it.
    response = ImagesResponse.model_validate(
        {
            "created": 1767614400,
            "background": "opaque",
            "data": [{"b64_json": "iVBORw0KGgo="}],
            "output_format": "png",
            "quality": "high",
            "size": "1024x1024",
            "usage": {
                "input_tokens": 385,
                "input_tokens_details": {"text_tokens": 62, "image_tokens": 323},
                "output_tokens": 4160,
                "output_tokens_details": {"text_tokens": 0, "image_tokens": 4160},
                "total_tokens": 4545,
            },
        }
    )
    out = usage_from("openai", response, model="gpt-image-1")
    # The text parts are what is left of input/output_tokens: no fields of their own.
    assert _tokens(out) == {
        "input_tokens": 385,
        "output_tokens": 4160,
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
        "input_image_tokens": 323,
        "output_image_tokens": 4160,
    }
    assert out["model"] == "gpt-image-1"
    assert _priced(out, "openai") == (
        Decimal(62) * Decimal("5E-6")
        + Decimal(323) * Decimal("10E-6")
        + Decimal(4160) * Decimal("40E-6")
    )


@pytest.mark.parametrize(
    ("partial", "completed", "kind"),
    [
        (ImageGenPartialImageEvent, ImageGenCompletedEvent, "image_generation"),
        (ImageEditPartialImageEvent, ImageEditCompletedEvent, "image_edit"),
    ],
)
def test_a_streamed_image_keeps_its_image_tokens(
    partial: type[BaseModel], completed: type[BaseModel], kind: str
) -> None:
    # images.generate(stream=True) yields partial images, then one completed event with the
    # usage and no "data": it was read as a Responses body, and the input image tokens were
    # billed at the text rate.
    shape = {"background": "opaque", "created_at": 1767614400, "output_format": "png"}
    shape |= {"quality": "high", "size": "1024x1024"}
    stream = [
        partial.model_validate(
            {"type": f"{kind}.partial_image", "b64_json": "iVBORw0KGgo=", **shape}
            | {"partial_image_index": 0}
        ),
        completed.model_validate(
            {"type": f"{kind}.completed", "b64_json": "iVBORw0KGgo=", **shape}
            | {
                "usage": {
                    "input_tokens": 385,
                    "input_tokens_details": {"text_tokens": 62, "image_tokens": 323},
                    "output_tokens": 4160,
                    "total_tokens": 4545,
                }
            }
        ),
    ]
    out = usage_from("openai", stream, model="gpt-image-1")
    assert _tokens(out)["input_image_tokens"] == 323
    assert _priced(out, "openai") == (
        Decimal(62) * Decimal("5E-6") + Decimal(323) * Decimal("10E-6")
        + Decimal(4160) * Decimal("40E-6")
    )  # fmt: skip


def _realtime_done() -> ResponseDoneEvent:
    # A speech-to-speech turn of gpt-realtime with a screenshot earlier in the conversation:
    # input_tokens counts text, audio and image, cached included; output text and audio.
    return ResponseDoneEvent.model_validate(
        {
            "type": "response.done",
            "event_id": "event_CCXGRvtUVrax5SJAnNOWZ",
            "response": {
                "object": "realtime.response",
                "id": "resp_CCXGRjG1R3BNaY7Ep2Y1S",
                "status": "completed",
                "status_details": None,
                "output": [
                    {
                        "id": "item_CCXGRxbY0n6WE4EszhF5w",
                        "type": "message",
                        "status": "completed",
                        "role": "assistant",
                        "content": [{"type": "output_audio", "transcript": "It is sunny."}],
                    }
                ],
                "conversation_id": "conv_CCXGQ4Nq8qK3bZfXhXz8c",
                "output_modalities": ["audio"],
                "max_output_tokens": "inf",
                "audio": {"output": {"format": {"type": "audio/pcm", "rate": 24000}}},
                "usage": {
                    "total_tokens": 1460,
                    "input_tokens": 1200,
                    "output_tokens": 260,
                    "input_token_details": {
                        "text_tokens": 300,
                        "audio_tokens": 800,
                        "image_tokens": 100,
                        "cached_tokens": 640,
                        "cached_tokens_details": {
                            "text_tokens": 128,
                            "audio_tokens": 512,
                            "image_tokens": 0,
                        },
                    },
                    "output_token_details": {"text_tokens": 60, "audio_tokens": 200},
                },
                "metadata": None,
            },
        }
    )


def test_openai_realtime_response_done_gives_audio_image_and_cached_audio_tokens() -> None:
    done = _realtime_done()
    expected = {
        "input_tokens": 1200,
        "output_tokens": 260,
        "cache_read_tokens": 640,  # text, audio and image reads together
        "cache_write_tokens": 0,
        "input_audio_tokens": 800,
        "cache_audio_read_tokens": 512,
        "input_image_tokens": 100,
        "output_audio_tokens": 200,
    }
    # The response.done event, or its response (what a client keeps): the same reading.
    for response in (done, done.response):
        assert _tokens(openai_usage(response)) == expected
    out = usage_from("openai", done, model="gpt-realtime")  # a realtime response has no model
    assert _tokens(out) == expected
    # Not _priced: genai-prices' calc_price wants the zero cache_image_read_tokens the reader
    # leaves out, explicitly; the pipeline's Pricer takes the missing part as 0.
    cost = Pricer.from_config().price(_event(out))
    assert cost is not None and cost.cost_usd == (
        Decimal(300 - 128) * Decimal("4E-6")  # uncached text
        + Decimal(128) * Decimal("0.4E-6")  # cached text
        + Decimal(800 - 512) * Decimal("32E-6")  # uncached audio
        + Decimal(512) * Decimal("0.4E-6")  # cached audio
        + Decimal(100) * Decimal("5E-6")  # image
        + Decimal(60) * Decimal("16E-6")  # output text
        + Decimal(200) * Decimal("64E-6")  # output audio
    )


# -- Gemini: modality breakdowns and grounding ---------------------------------------------


def _gemini(meta: dict[str, Any], model: str, **extra: Any) -> gtypes.GenerateContentResponse:
    return gtypes.GenerateContentResponse.model_validate(
        {"model_version": model, "usage_metadata": meta, **extra}
    )


def test_gemini_audio_input_and_cached_audio_are_priced_at_audio_rates() -> None:
    response = _gemini(
        {
            "prompt_token_count": 20_000,
            "cached_content_token_count": 12_000,
            "candidates_token_count": 400,
            "prompt_tokens_details": [
                {"modality": "TEXT", "token_count": 4000},
                {"modality": "AUDIO", "token_count": 16_000},
            ],
            "cache_tokens_details": [
                {"modality": "TEXT", "token_count": 2000},
                {"modality": "AUDIO", "token_count": 10_000},
            ],
        },
        "gemini-2.5-flash",
    )
    out = gemini_usage(response)
    assert _tokens(out) == {
        "input_tokens": 20_000,
        "output_tokens": 400,
        "cache_read_tokens": 12_000,
        "cache_write_tokens": 0,
        "input_audio_tokens": 16_000,
        "cache_audio_read_tokens": 10_000,
    }
    cost = _priced(out, "google")
    assert cost == (
        Decimal(2000) * Decimal("0.3E-6")  # uncached text
        + Decimal(6000) * Decimal("1E-6")  # uncached audio
        + Decimal(2000) * Decimal("0.03E-6")  # cached text
        + Decimal(10_000) * Decimal("0.1E-6")  # cached audio
        + Decimal(400) * Decimal("2.5E-6")
    )


def test_gemini_image_output_is_priced_at_the_image_rate() -> None:
    response = _gemini(
        {
            "prompt_token_count": 300,
            "candidates_token_count": 1400,
            "candidates_tokens_details": [
                {"modality": "TEXT", "token_count": 110},
                {"modality": "IMAGE", "token_count": 1290},
            ],
        },
        "gemini-2.5-flash-image",
    )
    out = gemini_usage(response)
    assert (out["output_tokens"], out["output_image_tokens"]) == (1400, 1290)
    assert _priced(out, "google") == (
        Decimal(300) * Decimal("0.3E-6")
        + Decimal(110) * Decimal("2.5E-6")
        + Decimal(1290) * Decimal("30E-6")
    )


def test_gemini_grounding_with_google_search_is_a_web_search() -> None:
    response = _gemini(
        {"prompt_token_count": 1000, "candidates_token_count": 200},
        "gemini-2.5-flash",
        candidates=[
            {
                "content": {"role": "model", "parts": [{"text": "ok"}]},
                "grounding_metadata": {"web_search_queries": ["a", "b"]},
            }
        ],
    )
    out = gemini_usage(response)
    assert out["tool_requests"] == {"web_search": 1}  # one grounded prompt on Gemini 2.5
    assert _priced(out, "google") == (
        Decimal(1000) * Decimal("0.3E-6") + Decimal(200) * Decimal("2.5E-6") + Decimal("0.035")
    )


# -- Bedrock: ConverseStream, 1-hour writes, InvokeModel bodies ------------------------------

CLAUDE_ON_BEDROCK = "anthropic.claude-sonnet-4-5-20250929-v1:0"


def test_bedrock_converse_stream_event_list_and_one_hour_cache_details() -> None:
    usage = {
        "inputTokens": 30,
        "outputTokens": 400,
        "totalTokens": 5430,
        "cacheReadInputTokens": 1000,
        "cacheWriteInputTokens": 4000,
        "cacheDetails": [{"ttl": "1h", "inputTokens": 3000}, {"ttl": "5m", "inputTokens": 1000}],
    }
    events = [
        {"messageStart": {"role": "assistant"}},
        {"contentBlockDelta": {"delta": {"text": "ok"}, "contentBlockIndex": 0}},
        {"contentBlockStop": {"contentBlockIndex": 0}},
        {"messageStop": {"stopReason": "end_turn"}},
        {"metadata": {"usage": usage, "metrics": {"latencyMs": 812}}},
    ]
    out = bedrock_usage(events, model=CLAUDE_ON_BEDROCK)
    assert _tokens(out) == {
        "input_tokens": 5030,
        "output_tokens": 400,
        "cache_read_tokens": 1000,
        "cache_write_tokens": 4000,
        "cache_write_1h_tokens": 3000,
    }
    assert bedrock_usage({"usage": usage}, model=CLAUDE_ON_BEDROCK) == out
    _priced(out, "aws")


def test_bedrock_anthropic_invoke_model_body_with_one_hour_writes() -> None:
    body = _claude(CLAUDE_ON_BEDROCK, server_tool_use=None).model_dump(mode="json")
    out = bedrock_usage(body)
    assert out["cache_write_1h_tokens"] == 6000
    assert out["model"] == CLAUDE_ON_BEDROCK
    _priced(out, "aws")


def test_bedrock_nova_invoke_model_body_keeps_its_cache_reads() -> None:
    body = {
        "output": {"message": {"role": "assistant", "content": [{"text": "ok"}]}},
        "stopReason": "end_turn",
        "usage": {
            "inputTokens": 200,
            "outputTokens": 100,
            "totalTokens": 1300,
            "cacheReadInputTokenCount": 1000,
            "cacheWriteInputTokenCount": 0,
        },
    }
    out = bedrock_usage(body, model="amazon.nova-pro-v1:0")
    assert _tokens(out) == {
        "input_tokens": 1200,
        "output_tokens": 100,
        "cache_read_tokens": 1000,
        "cache_write_tokens": 0,
    }
    assert _priced(out, "aws") == (
        Decimal(200) * Decimal("0.8E-6")
        + Decimal(1000) * Decimal("0.2E-6")
        + Decimal(100) * Decimal("3.2E-6")
    )


@pytest.mark.parametrize(
    ("body", "model", "counts"),
    [
        (
            {"generation": "ok", "prompt_token_count": 640, "generation_token_count": 90},
            "meta.llama3-70b-instruct-v1:0",
            (640, 90),
        ),
        (
            {
                "inputTextTokenCount": 55,
                "results": [{"tokenCount": 210, "outputText": "ok", "completionReason": "FINISH"}],
            },
            "amazon.titan-text-express-v1",
            (55, 210),
        ),
    ],
)
def test_bedrock_llama_and_titan_invoke_model_bodies(
    body: dict[str, Any], model: str, counts: tuple[int, int]
) -> None:
    out = bedrock_usage(body, model=model)
    assert (out["input_tokens"], out["output_tokens"]) == counts
    _priced(out, "aws")


def test_bedrock_invoke_model_stream_metrics_chunk() -> None:
    chunks = [
        {"type": "content_block_delta"},
        {"amazon-bedrock-invocationMetrics": {"inputTokenCount": 70, "outputTokenCount": 30}},
    ]
    out = bedrock_usage(chunks, model="meta.llama3-70b-instruct-v1:0")
    assert (out["input_tokens"], out["output_tokens"]) == (70, 30)


# -- batch result lines ------------------------------------------------------------------------


def test_openai_batch_output_line_is_unwrapped_and_marked_batch() -> None:
    body = _chat(
        "gpt-5",
        {
            "prompt_tokens": 2000,
            "completion_tokens": 100,
            "total_tokens": 2100,
            "prompt_tokens_details": {"cached_tokens": 0},
        },
    ).model_dump(mode="json")
    line = {
        "id": "batch_req_1",
        "custom_id": "row-7",
        "response": {"status_code": 200, "request_id": "req_abc", "body": body},
        "error": None,
    }
    out = batch_result_usage(line)
    assert (out["batch"], out["custom_id"]) == (True, "row-7")
    assert (out["input_tokens"], out["output_tokens"]) == (2000, 100)
    assert openai_usage(line)["input_tokens"] == 2000  # the helpers unwrap lines too
    fields = {k: v for k, v in out.items() if k != "custom_id"}
    cost = _priced(fields, "openai")
    assert cost == Decimal(2000) * Decimal("0.625E-6") + Decimal(100) * Decimal("5E-6")


def test_anthropic_batch_result_is_unwrapped_and_marked_batch() -> None:
    line = MessageBatchIndividualResponse.model_validate(
        {
            "custom_id": "q-42",
            "result": {
                "type": "succeeded",
                "message": _claude(server_tool_use=None).model_dump(mode="json"),
            },
        }
    )
    out = batch_result_usage(line)
    assert (out["batch"], out["custom_id"], out["provider"]) == (True, "q-42", "anthropic")
    assert out["cache_write_1h_tokens"] == 6000
    assert anthropic_usage(line)["input_tokens"] == out["input_tokens"]


def test_a_failed_batch_line_says_why_it_has_no_usage() -> None:
    line = {"custom_id": "q-1", "result": {"type": "errored", "error": {"type": "invalid_request"}}}
    with pytest.raises(ValueError, match=r"q-1.*errored"):
        batch_result_usage(line)


# -- pinned by the mutation pass: dimensions no test above reached ---------------------------


def test_anthropic_service_tier_in_usage_is_the_tier_and_batch_is_a_batch_call() -> None:
    # Anthropic reports the tier in usage.service_tier: standard, priority or batch.
    priority = anthropic_usage(_claude(service_tier="priority"))
    assert (priority["service_tier"], priority.get("batch")) == ("priority", None)
    _priced(priority, "anthropic")
    batch = anthropic_usage(_claude(service_tier="batch"))
    assert (batch["batch"], batch.get("service_tier")) == (True, None)
    assert _priced(batch, "anthropic") < _priced(anthropic_usage(_claude()), "anthropic")


def test_gemini_3_grounding_counts_each_search_query_and_earlier_models_each_prompt() -> None:
    def grounded(queries: list[str]) -> dict[str, Any]:
        return {
            "content": {"role": "model", "parts": [{"text": "ok"}]},
            "grounding_metadata": {"web_search_queries": queries},
        }

    meta = {"prompt_token_count": 1000, "candidates_token_count": 200}
    three = gemini_usage(
        _gemini(meta, "gemini-3-pro-preview", candidates=[grounded(["a", "b", "c"])])
    )
    assert three["tool_requests"] == {"web_search": 3}
    # Two candidates of one grounded prompt on Gemini 2.5 are one billed grounded prompt.
    two_candidates = [grounded(["a", "b"]), grounded(["c"])]
    earlier = gemini_usage(_gemini(meta, "gemini-2.5-flash", candidates=two_candidates))
    assert earlier["tool_requests"] == {"web_search": 1}
    _priced(earlier, "google")


def test_openai_responses_file_search_calls_are_storage_searches() -> None:
    search = {"type": "file_search_call", "id": "fs_1", "status": "completed", "queries": ["q"]}
    response = _responses_api([{"type": "file_search", "vector_store_ids": ["vs_1"]}], [search])
    out = openai_usage(response)
    assert out["tool_requests"] == {"storage_search": 1}
    _priced(out, "openai")


def test_embeddings_from_a_provider_without_an_embeddings_reader_have_no_output() -> None:
    response = CreateEmbeddingResponse.model_validate(
        {
            "object": "list",
            "model": "mistral-embed",
            "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
            "usage": {"prompt_tokens": 4200, "total_tokens": 4200},
        }
    )
    out = usage_from("mistral", response)
    assert _tokens(out) == {
        "input_tokens": 4200,
        "output_tokens": 0,
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
    }


def test_bedrock_invoke_model_stream_metrics_keep_cache_reads_and_writes_apart() -> None:
    metrics = {
        "inputTokenCount": 70,
        "outputTokenCount": 30,
        "cacheReadInputTokenCount": 500,
        "cacheWriteInputTokenCount": 200,
    }
    chunks = [{"type": "content_block_delta"}, {"amazon-bedrock-invocationMetrics": metrics}]
    out = bedrock_usage(chunks, model=CLAUDE_ON_BEDROCK)
    assert _tokens(out) == {  # inputTokenCount excludes the cache, as Converse's inputTokens
        "input_tokens": 70 + 500 + 200,
        "output_tokens": 30,
        "cache_read_tokens": 500,
        "cache_write_tokens": 200,
    }
    _priced(out, "aws")
