"""Event fields from provider responses, with the cache accounting of the usage event.

Each helper takes a response as a plain dict (the JSON body) or an SDK object (anything
with ``model_dump()`` or ``to_dict()``), or a list of streamed chunks/events, and returns
the event fields ``provider``, ``model``, ``input_tokens`` (ALL input, cached included),
``output_tokens`` (reasoning included), ``cache_read_tokens``, ``cache_write_tokens`` and,
where the provider reports one, ``reported_cost_usd``::

    meter.record(**openai_usage(response), team="search")

The token arithmetic per format is genai-prices' ``extract_usage`` (it adds Anthropic's and
Bedrock's cache reads and writes to their input counts, and Gemini's thoughts to output);
it is imported lazily, here only. Without it (the light install) the helpers raise
``ProviderHelperUnavailable`` naming the extra to install: a second copy of that
arithmetic would drift from the one the pipeline prices with.

What these add to genai-prices: streamed responses (OpenAI's final usage chunk, Anthropic's
``message_start`` + ``message_delta``, Gemini's last ``usageMetadata``, the Responses API's
``response.completed``), SDK objects, snake_case Gemini dicts (google-genai), models absent
from the price catalog (fine-tunes, new releases: still metered, priced later or flagged
unpriced), the model id exactly as returned, and OpenRouter's reported cost.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from spendstream.errors import SpendstreamError

__all__ = [
    "ProviderHelperUnavailable",
    "anthropic_usage",
    "bedrock_usage",
    "gemini_usage",
    "openai_usage",
    "openrouter_usage",
    "usage_from",
]


class ProviderHelperUnavailable(SpendstreamError, ImportError):
    """The provider helpers need genai-prices (``pip install 'spendstream[providers]'``)."""


def openai_usage(response: Any, *, api: str | None = None) -> dict[str, Any]:
    """OpenAI chat completions or Responses API (``api="chat"|"responses"``, else detected).

    ``prompt_tokens`` already includes ``cached_tokens``. For a stream, pass the chunks:
    chat streams carry usage only with ``stream_options={"include_usage": True}``.
    """
    data = _final_openai(response)
    usage = data.get("usage") or {}
    flavor = api or ("responses" if "input_tokens" in usage else "chat")
    return _fields("openai", data, "openai", flavor)


def anthropic_usage(response: Any) -> dict[str, Any]:
    """Anthropic Messages: ``input_tokens`` excludes cache reads and writes; they are added.

    Also Claude through Vertex AI or Bedrock InvokeModel (same body). For a stream, pass
    the events: usage is ``message_start``'s, updated by ``message_delta``'s counts.
    """
    return _fields("anthropic", _final_anthropic(response), "anthropic", "default")


def gemini_usage(response: Any) -> dict[str, Any]:
    """Google Gemini (AI Studio or Vertex): ``promptTokenCount`` includes the cached part,
    output is ``candidatesTokenCount + thoughtsTokenCount``. For a stream, pass the chunks."""
    data = _final_gemini(response)
    return _fields("google", data, "google", "default", model_key="modelVersion")


def openrouter_usage(response: Any) -> dict[str, Any]:
    """OpenRouter (OpenAI-shaped); its ``usage.cost`` becomes ``reported_cost_usd``."""
    data = _final_openai(response)
    out = _fields("openrouter", data, "openrouter", "chat")
    cost = (data.get("usage") or {}).get("cost")
    if cost is not None:
        out["reported_cost_usd"] = Decimal(str(cost))  # str: the figure as sent, no binary float
    return out


def bedrock_usage(response: Any, *, model: str | None = None) -> dict[str, Any]:
    """AWS Bedrock Converse (``inputTokens`` excludes ``cacheRead/WriteInputTokens``: added)
    or InvokeModel with an Anthropic body. Converse does not echo the model: pass it."""
    data = _as_dict(response)
    usage = data.get("usage") or {}
    flavor = "anthropic" if "input_tokens" in usage else "default"
    out = _fields("bedrock", data, "aws", flavor)
    if model is not None:
        out["model"] = model
    return out


def usage_from(provider: str, response: Any, *, api: str | None = None) -> dict[str, Any]:
    """Dispatch on the provider name; OpenAI-compatible servers (vLLM, ...) use OpenAI's shape."""
    name = provider.lower()
    if name == "anthropic":
        out = anthropic_usage(response)
    elif name in ("google", "gemini", "vertex", "vertex_ai"):
        data = _as_dict(response) if not _is_stream(response) else None
        claude = data is not None and "input_tokens" in (data.get("usage") or {})
        out = anthropic_usage(response) if claude else gemini_usage(response)
    elif name == "openrouter":
        out = openrouter_usage(response)
    elif name in ("bedrock", "aws"):
        out = bedrock_usage(response)
    else:
        out = openai_usage(response, api=api)
    out["provider"] = provider
    return out


# -- shapes -------------------------------------------------------------------------------


def _as_dict(obj: Any) -> dict[str, Any]:
    if isinstance(obj, Mapping):
        return dict(obj)
    dump = getattr(obj, "model_dump", None)
    if callable(dump):  # pydantic SDK objects (openai, anthropic, google-genai)
        try:
            out = dump(mode="json", by_alias=True, exclude_none=True)
        except TypeError:
            out = dump()
        return dict(out)
    to_dict = getattr(obj, "to_dict", None)
    if callable(to_dict):
        return dict(to_dict())
    raise TypeError(f"expected a response dict or SDK object, got {type(obj).__name__}")


def _is_stream(obj: Any) -> bool:
    return (
        isinstance(obj, Iterable)
        and not isinstance(obj, Mapping | str | bytes)
        and not (hasattr(obj, "model_dump") or hasattr(obj, "to_dict"))
    )


def _chunks(obj: Any) -> list[dict[str, Any]]:
    return [_as_dict(c) for c in obj]


def _final_openai(response: Any) -> dict[str, Any]:
    if not _is_stream(response):
        data = _as_dict(response)
        if data.get("type") in _RESPONSES_END:
            return _as_dict(data["response"])
        return data
    chunks = _chunks(response)
    for c in reversed(chunks):
        if c.get("type") in _RESPONSES_END:  # Responses API stream
            return _as_dict(c["response"])
    for c in reversed(chunks):
        if c.get("usage"):  # chat stream: the final chunk, choices empty
            model = c.get("model") or next((x["model"] for x in chunks if x.get("model")), None)
            return {**c, "model": model}
    raise ValueError(
        "no usage in the streamed chunks: request it with stream_options={'include_usage': True}"
    )


_RESPONSES_END = ("response.completed", "response.incomplete", "response.failed")


def _final_anthropic(response: Any) -> dict[str, Any]:
    if not _is_stream(response):
        return _as_dict(response)
    message: dict[str, Any] | None = None
    usage: dict[str, Any] = {}
    for event in _chunks(response):
        kind = event.get("type")
        if kind == "message_start":
            message = dict(event["message"])
            usage.update(message.get("usage") or {})
        elif kind == "message_delta":
            # Counts in message_delta are cumulative: the latest non-null value wins.
            usage.update({k: v for k, v in (event.get("usage") or {}).items() if v is not None})
    if message is None:
        raise ValueError("no message_start event in the streamed events")
    return {**message, "usage": usage}


def _final_gemini(response: Any) -> dict[str, Any]:
    if not _is_stream(response):
        return _camel_gemini(_as_dict(response))
    chunks = [_camel_gemini(c) for c in _chunks(response)]
    for c in reversed(chunks):
        if c.get("usageMetadata"):
            model = c.get("modelVersion") or next(
                (x["modelVersion"] for x in chunks if x.get("modelVersion")), None
            )
            return {**c, "modelVersion": model}
    raise ValueError("no usageMetadata in the streamed chunks")


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


def _camel_gemini(data: dict[str, Any]) -> dict[str, Any]:
    # google-genai objects dumped without aliases, or their dicts, are snake_case.
    if "usage_metadata" not in data and "model_version" not in data:
        return data
    out = {_camel(k): v for k, v in data.items()}
    meta = out.get("usageMetadata")
    if isinstance(meta, Mapping):
        out["usageMetadata"] = {_camel(k): v for k, v in meta.items()}
    return out


# -- genai-prices -------------------------------------------------------------------------


def _fields(
    provider: str, data: dict[str, Any], provider_id: str, flavor: str, *, model_key: str = "model"
) -> dict[str, Any]:
    try:
        from genai_prices import extract_usage
    except ImportError as exc:
        raise ProviderHelperUnavailable(
            "spendstream's provider helpers need genai-prices: "
            "pip install 'spendstream[providers]' (or pass token counts to record() yourself)"
        ) from exc
    model = data.get(model_key)
    # Without the model key genai-prices skips its catalog lookup, which raises for models
    # it does not know (fine-tunes, new releases): those must still be metered.
    body = {k: v for k, v in data.items() if k != model_key}
    try:
        usage = extract_usage(body, provider_id=provider_id, api_flavor=flavor).usage
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"no {provider} usage in this response: {exc}") from exc
    out: dict[str, Any] = {
        "provider": provider,
        "input_tokens": _count(usage, "input_tokens"),
        "output_tokens": _count(usage, "output_tokens"),
        "cache_read_tokens": _count(usage, "cache_read_tokens"),
        "cache_write_tokens": _count(usage, "cache_write_tokens"),
    }
    if model:
        out["model"] = str(model)
    return out


def _count(usage: Any, name: str) -> int:
    value = getattr(usage, name, None)
    return int(value) if value else 0
