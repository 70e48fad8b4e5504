"""Event fields from provider responses, every billable dimension included.

Each helper takes a response as a plain dict (the JSON body) or an SDK object (anything
with ``model_dump()`` or ``to_dict()``), a list of streamed chunks/events, or a batch
result line, and returns the event fields ``provider``, ``model``, ``input_tokens`` (ALL
input, cached included), ``output_tokens`` (reasoning included), the cache and modality
parts the response reports (``cache_read_tokens``, ``cache_write_tokens``,
``cache_write_1h_tokens``, ``input_audio_tokens``, ``cache_audio_read_tokens``,
``input_image_tokens``, ``cache_image_read_tokens``, ``output_audio_tokens``,
``output_image_tokens``), ``tool_requests`` for billed server-side tools, and where the
response says so ``service_tier``, ``batch`` and ``reported_cost_usd``::

    meter.record(**usage_from("xai", response), team="search")

The token arithmetic per format is genai-prices' ``extract_usage``, for every provider
it has a reader for (anthropic, openai, google, aws bedrock, x-ai, deepseek, mistral,
groq, azure, cohere, perplexity, moonshot, ...); it is imported lazily, here only.
Without it (the light install) the helpers raise ``ProviderHelperUnavailable`` naming
the extra to install: a second copy of that arithmetic would drift from the one the
pipeline prices with.

What these add to genai-prices: the API flavor detected from the body (chat,
Responses, embeddings, Anthropic-shaped, realtime, images); streamed responses; SDK
objects; snake_case Gemini dicts (google-genai); batch result lines (OpenAI
``response.body``, Anthropic ``result.message``); Bedrock ConverseStream events and
InvokeModel bodies of Llama, Nova (with cache reads) and Titan models; DeepSeek's
``prompt_cache_hit_tokens``; server tools genai-prices does not read (OpenAI Responses
``web_search_call``/``file_search_call`` items, Gemini grounding); models absent from
the price catalog (still metered, priced later or flagged unpriced); the model id exactly
as returned; and OpenRouter's reported cost.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from spendstream.errors import SpendstreamError
from spendstream.producers.event import TOKEN_FIELDS
from spendstream.producers.shapes import (
    as_dict,
    final_anthropic,
    final_bedrock,
    final_gemini,
    final_openai,
    is_stream,
    unwrap_batch_line,
)

__all__ = [
    "ProviderHelperUnavailable",
    "anthropic_usage",
    "batch_result_usage",
    "bedrock_usage",
    "gemini_usage",
    "openai_usage",
    "openrouter_usage",
    "usage_from",
]

_TOOL_FIELDS = {
    "web_searches": "web_search",
    "code_executions": "code_execution",
    "storage_searches": "storage_search",
    "social_searches": "social_search",
}
_RESPONSES_TOOLS = {"web_search_call": "web_search", "file_search_call": "storage_search"}
_GOOGLE = ("google", "gemini", "vertex", "vertex_ai", "vertexai")
_BEDROCK = ("bedrock", "aws", "aws_bedrock", "amazon-bedrock")


class ProviderHelperUnavailable(SpendstreamError, ImportError):
    """The provider helpers need genai-prices (``pip install 'spendstream[providers]'``)."""


def openai_usage(response: Any, *, api: str | None = None) -> dict[str, Any]:
    """OpenAI chat completions, Responses, embeddings, realtime or images (``api=`` forces
    one; by default the body says which). ``prompt_tokens`` already includes
    ``cached_tokens``. For a chat stream, pass the chunks: usage comes only with
    ``stream_options={"include_usage": True}``."""
    return _read("openai", "openai", final_openai(response), api)


def anthropic_usage(response: Any) -> dict[str, Any]:
    """Anthropic Messages: ``input_tokens`` excludes cache reads and writes; they are added.

    Also reads 1-hour cache writes (``cache_creation.ephemeral_1h_input_tokens``) and web
    searches (``server_tool_use.web_search_requests``). Claude through Vertex AI or Bedrock
    InvokeModel has the same body. For a stream, pass the events.
    """
    return _read("anthropic", "anthropic", final_anthropic(response), None)


def gemini_usage(response: Any) -> dict[str, Any]:
    """Google Gemini (AI Studio or Vertex): ``promptTokenCount`` includes the cached part,
    output is ``candidatesTokenCount + thoughtsTokenCount``; per-modality details give
    audio and image tokens; grounding with Google Search counts as web searches."""
    return _read("google", "google", final_gemini(response), None)


def openrouter_usage(response: Any) -> dict[str, Any]:
    """OpenRouter (OpenAI-shaped); its ``usage.cost`` becomes ``reported_cost_usd``."""
    data = final_openai(response)
    out = _read("openrouter", "openrouter", data, "chat")
    cost = (data.get("usage") or {}).get("cost")
    if cost is not None:
        out["reported_cost_usd"] = Decimal(str(cost))  # str: the figure as sent, no binary float
    return out


def bedrock_usage(response: Any, *, model: str | None = None) -> dict[str, Any]:
    """AWS Bedrock: Converse or ConverseStream events (``inputTokens`` excludes the cache
    reads and writes: added; ``cacheDetails`` gives 1-hour writes), or an InvokeModel body
    (Anthropic, Llama, Nova, Titan). Bedrock does not echo the model: pass it."""
    out = _read("bedrock", "aws", _bedrock_body(final_bedrock(response)), None)
    if model is not None:
        out["model"] = model
    return out


def usage_from(
    provider: str, response: Any, *, api: str | None = None, model: str | None = None
) -> dict[str, Any]:
    """Dispatch on the provider name to genai-prices' reader for it; providers it has no
    reader for (vLLM, self-hosted, ...) are read as OpenAI-compatible. ``model`` fills in
    the model where the body does not carry it (Bedrock)."""
    name = provider.lower()
    if is_stream(response):
        response = list(response)  # peeked at below, then read: an iterator only once
    if name == "openrouter":
        out = openrouter_usage(response)
    elif name in _BEDROCK:
        out = bedrock_usage(response, model=model)
    elif name in _GOOGLE and not _anthropic_shaped(_peek(response)):
        out = gemini_usage(response)
    elif name == "anthropic" or _anthropic_shaped(_peek(response)):
        out = _read(provider, _provider_id(name) or "anthropic", final_anthropic(response), None)
    else:
        out = _read(provider, _provider_id(name), final_openai(response), api)
    out["provider"] = provider
    if model is not None and "model" not in out:
        out["model"] = model
    return out


def batch_result_usage(line: Any, *, provider: str | None = None) -> dict[str, Any]:
    """One line of an OpenAI or Anthropic batch results file: the event fields with
    ``batch = True``, plus ``custom_id`` (the request's id within the batch).

    The provider is the line's shape (``result.message``: anthropic; ``response.body``:
    openai) unless given.
    """
    data = as_dict(line)
    body, custom_id = unwrap_batch_line(data)
    if custom_id is None:
        raise ValueError("not a batch result line: no custom_id with response.body or result")
    if provider is None:
        provider = "anthropic" if "result" in data else "openai"
    out = usage_from(provider, body)
    out["batch"] = True
    out["custom_id"] = str(custom_id)
    return out


# -- reading ------------------------------------------------------------------------------


def _peek(response: Any) -> dict[str, Any]:
    if is_stream(response):
        # An Anthropic stream (Claude on Vertex AI) opens with message_start: its message.
        first = as_dict(response[0]) if response else {}
        message = first.get("message") if first.get("type") == "message_start" else None
        return dict(message) if isinstance(message, Mapping) else {}
    data, _ = unwrap_batch_line(as_dict(response))
    return data


def _anthropic_shaped(data: Mapping[str, Any]) -> bool:
    usage = data.get("usage")
    return data.get("type") == "message" or (
        isinstance(usage, Mapping)
        and "input_tokens" in usage
        and ("cache_creation_input_tokens" in usage or "cache_read_input_tokens" in usage)
    )


def _snapshot() -> Any:
    try:
        from genai_prices import data_snapshot
    except ImportError as exc:
        if sys.meta_path is None:  # the interpreter is shutting down: nothing is missing
            raise ProviderHelperUnavailable(
                f"provider helpers cannot load while Python shuts down ({exc}): record a "
                "stream's call before exit (close the stream, or read it to its end)"
            ) from exc
        raise ProviderHelperUnavailable(
            "spendstream's provider helpers need genai-prices: "
            "pip install 'spendstream[providers]' (or pass token counts to record() yourself)"
        ) from exc
    return data_snapshot.get_snapshot()


def _provider_id(name: str) -> str | None:
    try:
        return str(_snapshot().find_provider(None, name, None).id)
    except LookupError:
        return None


# A streamed images.generate/edit ends with this event; it holds the usage and no "data".
_IMAGE_STREAM_ENDS = ("image_generation.completed", "image_edit.completed")


def _flavor(provider: Any, data: Mapping[str, Any], api: str | None) -> str:
    """The genai-prices API flavor for this body (``api`` wins when the provider has it)."""
    flavors = [e.api_flavor for e in provider.extractors or ()]
    usage = data.get("usage")
    usage = usage if isinstance(usage, Mapping) else {}
    if api is not None and api in flavors:
        return api
    wanted: list[str]
    if "usageMetadata" in data:
        wanted = ["default"]
    elif "input_token_details" in usage or "output_token_details" in usage:
        wanted = ["realtime"]
    elif _anthropic_shaped(data):
        wanted = ["default"] if provider.id == "anthropic" else ["anthropic"]
    elif "inputTokens" in usage:
        wanted = ["default"]
    elif "image_tokens" in (usage.get("input_tokens_details") or {}) and (
        "data" in data or data.get("type") in _IMAGE_STREAM_ENDS
    ):
        wanted = ["images"]
    elif "input_tokens" in usage:
        wanted = ["responses", "default"]
    elif "prompt_tokens" in usage and "completion_tokens" not in usage:
        wanted = ["embeddings", "chat", "default"]
    elif "reasoning_tokens" in usage and "completion_tokens_details" not in usage:
        wanted = ["default", "chat"]  # x-ai's native shape: reasoning at the top level
    else:
        wanted = ["chat", "default"]
    for f in wanted:
        if f in flavors:
            return f
    raise LookupError(f"no {provider.id} reader for this response shape ({', '.join(wanted)})")


def _read(
    name: str, provider_id: str | None, data: dict[str, Any], api: str | None
) -> dict[str, Any]:
    snapshot = _snapshot()
    model = data.get("modelVersion") if "usageMetadata" in data else data.get("model")
    # Without the model key genai-prices skips its catalog lookup, which raises for models
    # it does not know (fine-tunes, new releases): those must still be metered.
    body = {k: v for k, v in data.items() if k not in ("model", "modelVersion")}
    usage_obj = body.get("usage")
    try:
        provider = snapshot.find_provider(None, provider_id or "openai", None)
        if not provider.extractors:
            provider = snapshot.find_provider(None, "openai", None)
        try:
            flavor = _flavor(provider, body, api)
        except LookupError:
            provider = snapshot.find_provider(None, "openai", None)
            flavor = _flavor(provider, body, api)
        if (
            flavor != "embeddings"
            and isinstance(usage_obj, Mapping)
            and "prompt_tokens" in usage_obj
            and "completion_tokens" not in usage_obj
        ):
            # Embeddings from a provider without an embeddings reader: no output tokens.
            body["usage"] = {**usage_obj, "completion_tokens": 0}
        if flavor == "realtime":
            # genai-prices' realtime reader takes the response.done event (usage at
            # response.usage); final_openai unwrapped it to the response.
            body = {"response": body}
        usage = provider.extract_usage(body, api_flavor=flavor)[1]
    except (KeyError, TypeError, ValueError, LookupError) as exc:
        raise ValueError(f"no {name} usage in this response: {exc}") from exc
    reported = usage.__dict__
    out: dict[str, Any] = {"provider": name}
    for i, field in enumerate(TOKEN_FIELDS):
        count = int(reported.get(field) or 0)
        if count or i < 4:  # the contract's four always; the finer parts when reported
            out[field] = count
    tools = {t: int(reported[k]) for k, t in _TOOL_FIELDS.items() if reported.get(k)}
    for kind, count in _extra_tools(data).items():
        tools[kind] = tools.get(kind, 0) + count
    if tools:
        out["tool_requests"] = tools
    _deepseek_cache_hits(body, out)
    tier = data.get("service_tier") or (usage_obj or {}).get("service_tier")
    if tier == "batch":  # Anthropic batch results say so in usage.service_tier
        out["batch"] = True
    elif isinstance(tier, str) and tier:
        out["service_tier"] = tier
    if model:
        out["model"] = str(model)
    return out


def _deepseek_cache_hits(body: Mapping[str, Any], out: dict[str, Any]) -> None:
    # DeepSeek reports cache hits as usage.prompt_cache_hit_tokens (inside prompt_tokens).
    usage = body.get("usage")
    if isinstance(usage, Mapping) and not out["cache_read_tokens"]:
        hits = usage.get("prompt_cache_hit_tokens")
        if isinstance(hits, int) and hits > 0:
            out["cache_read_tokens"] = hits


def _extra_tools(data: Mapping[str, Any]) -> dict[str, int]:
    """Server-side tool requests genai-prices' readers do not count."""
    out: dict[str, int] = {}
    for item in data.get("output") or ():  # OpenAI Responses API output items
        if isinstance(item, Mapping) and item.get("type") in _RESPONSES_TOOLS:
            kind = _RESPONSES_TOOLS[item["type"]]
            out[kind] = out.get(kind, 0) + 1
    if "usageMetadata" in data:
        # Grounding with Google Search: Gemini 3 bills each search query, earlier models
        # each grounded prompt.
        model = str(data.get("modelVersion") or "")
        for cand in data.get("candidates") or ():
            meta = cand.get("groundingMetadata") if isinstance(cand, Mapping) else None
            queries = (meta or {}).get("webSearchQueries") or []
            if queries:
                n = len(queries) if model.startswith("gemini-3") else 1
                out["web_search"] = max(out.get("web_search", 0), n)
    return out


def _bedrock_body(data: dict[str, Any]) -> dict[str, Any]:
    """InvokeModel bodies of non-Anthropic models in the Converse usage shape."""
    usage = data.get("usage")
    if isinstance(usage, Mapping) and (
        "cacheReadInputTokenCount" in usage or "cacheWriteInputTokenCount" in usage
    ):
        # Nova InvokeModel: Converse's counts under other names (inputTokens excludes them).
        renamed = {
            "cacheReadInputTokenCount": "cacheReadInputTokens",
            "cacheWriteInputTokenCount": "cacheWriteInputTokens",
        }
        return {**data, "usage": {renamed.get(k, k): v for k, v in usage.items()}}
    if "prompt_token_count" in data and "generation_token_count" in data:  # Meta Llama
        return {
            "usage": {
                "inputTokens": data["prompt_token_count"],
                "outputTokens": data["generation_token_count"],
            }
        }
    if "inputTextTokenCount" in data:  # Amazon Titan text and embeddings
        results = data.get("results") or ()
        output = sum(int(r.get("tokenCount") or 0) for r in results if isinstance(r, Mapping))
        return {"usage": {"inputTokens": data["inputTextTokenCount"], "outputTokens": output}}
    metrics = data.get("amazon-bedrock-invocationMetrics")
    if isinstance(metrics, Mapping):  # the last InvokeModelWithResponseStream chunk
        return {
            "usage": {
                "inputTokens": metrics.get("inputTokenCount", 0),
                "outputTokens": metrics.get("outputTokenCount", 0),
                "cacheReadInputTokens": metrics.get("cacheReadInputTokenCount", 0),
                "cacheWriteInputTokens": metrics.get("cacheWriteInputTokenCount", 0),
            }
        }
    return data
