"""Response shapes: SDK objects to dicts, streams to their final usage, batch lines unwrapped.

Everything here turns what a provider (or its SDK) hands back into the one JSON body a
usage reader understands; no token arithmetic lives here (``providers`` and genai-prices
do that).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "as_dict",
    "final_anthropic",
    "final_bedrock",
    "final_gemini",
    "final_openai",
    "is_stream",
    "unwrap_batch_line",
]

_RESPONSES_END = ("response.completed", "response.incomplete", "response.failed")


def as_dict(obj: Any) -> dict[str, Any]:
    """A response as a plain dict: a mapping, a pydantic SDK object, or one with to_dict()."""
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


def is_stream(obj: Any) -> bool:
    return (
        isinstance(obj, Iterable)
        and not isinstance(obj, Mapping | str | bytes)
        and not (hasattr(obj, "model_dump") or hasattr(obj, "to_dict"))
    )


def _chunks(obj: Any) -> list[dict[str, Any]]:
    return [as_dict(c) for c in obj]


def unwrap_batch_line(data: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """A batch result line's response body and its custom_id (the body itself otherwise).

    OpenAI batch output lines carry ``response.body``; Anthropic Message Batches results
    ``result.message`` (``result.type`` "succeeded"). A line that failed has no usage:
    ValueError names why, with the provider's own error message where the line has one
    (OpenAI: ``response.body.error`` or the line's ``error``; Anthropic: ``result.error``).
    """
    custom_id = data.get("custom_id")
    response = data.get("response")
    if isinstance(response, Mapping) and "body" in response:
        body = response.get("body")
        if not isinstance(body, Mapping) or not body.get("usage"):
            error = _provider_error(body, data.get("error"))
            raise ValueError(
                f"batch line {custom_id!r} has no usage: status {response.get('status_code')}"
                + (f", error: {error}" if error else "")
            )
        return dict(body), custom_id
    if custom_id is not None and response is None and isinstance(data.get("error"), Mapping):
        # OpenAI: a request that failed without an HTTP response has only the line's error.
        raise ValueError(
            f"batch line {custom_id!r} has no usage: error: {_provider_error(data['error'])}"
        )
    result = data.get("result")
    if isinstance(result, Mapping) and "type" in result:
        if result.get("type") != "succeeded" or not isinstance(result.get("message"), Mapping):
            error = _provider_error(result.get("error"))
            raise ValueError(
                f"batch line {custom_id!r} has no usage: result type {result.get('type')!r}"
                + (f", error: {error}" if error else "")
            )
        return dict(result["message"]), custom_id
    return data, None


def _provider_error(*found: Any) -> str | None:
    """The first provider error message among ``found`` ("message (type)"), else None.

    Each is an error object (``{"message", "type" or "code"}``) or holds one under
    ``error``: OpenAI's error body and Anthropic's error response nest it so.
    """
    for error in found:
        if isinstance(error, str) and error:
            return error
        if not isinstance(error, Mapping):
            continue
        nested = _provider_error(error.get("error"))
        if nested is not None:
            return nested
        message, kind = error.get("message"), error.get("type") or error.get("code")
        if kind == "error":  # Anthropic's wrapper type says nothing more
            kind = None
        if isinstance(message, str) and message:
            return f"{message} ({kind})" if isinstance(kind, str) and kind else message
        if isinstance(kind, str) and kind:
            return kind
    return None


def final_openai(response: Any) -> dict[str, Any]:
    """The body with the usage: a response, a Responses API stream, or chat chunks."""
    if not is_stream(response):
        data, _ = unwrap_batch_line(as_dict(response))
        if data.get("type") in _RESPONSES_END or data.get("type") == "response.done":
            return as_dict(data["response"])
        return data
    chunks = _chunks(response)
    for c in reversed(chunks):
        if c.get("type") in _RESPONSES_END:  # Responses API stream
            return as_dict(c["response"])
    for c in reversed(chunks):
        if c.get("usage"):  # chat stream: the final chunk, choices empty
            model = c.get("model") or next((x["model"] for x in chunks if x.get("model")), None)
            return {**c, "model": model}
    raise ValueError(
        "no usage in the streamed chunks: request it with stream_options={'include_usage': True}"
    )


def final_anthropic(response: Any) -> dict[str, Any]:
    """The message with its final usage: a message, a batch line, or stream events."""
    if not is_stream(response):
        data, _ = unwrap_batch_line(as_dict(response))
        return data
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


def final_gemini(response: Any) -> dict[str, Any]:
    if not is_stream(response):
        return _camel_gemini(as_dict(response))
    chunks = [_camel_gemini(c) for c in _chunks(response)]
    for c in reversed(chunks):
        if c.get("usageMetadata"):
            model = c.get("modelVersion") or next(
                (x["modelVersion"] for x in chunks if x.get("modelVersion")), None
            )
            grounded = next((x for x in reversed(chunks) if _grounding(x)), None)
            out = {**c, "modelVersion": model}
            if grounded is not None and not _grounding(c):
                out["candidates"] = grounded["candidates"]
            return out
    raise ValueError("no usageMetadata in the streamed chunks")


def _grounding(chunk: dict[str, Any]) -> bool:
    return any(
        isinstance(c, Mapping) and c.get("groundingMetadata") for c in chunk.get("candidates") or ()
    )


def final_bedrock(response: Any) -> dict[str, Any]:
    """A Converse body, or the ``metadata`` event of a ConverseStream, or the last
    InvokeModelWithResponseStream chunk's ``amazon-bedrock-invocationMetrics``."""
    if not is_stream(response):
        return as_dict(response)
    events = _chunks(response)
    for e in reversed(events):
        meta = e.get("metadata")
        if isinstance(meta, Mapping) and meta.get("usage"):
            return {"usage": dict(meta["usage"])}
        metrics = e.get("amazon-bedrock-invocationMetrics")
        if isinstance(metrics, Mapping):
            return {"amazon-bedrock-invocationMetrics": dict(metrics)}
    raise ValueError(
        "no usage in the streamed Bedrock events: ConverseStream sends it in the final "
        "'metadata' event"
    )


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


def _camel_keys(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {_camel(k): _camel_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_camel_keys(v) for v in value]
    return value


def _camel_gemini(data: dict[str, Any]) -> dict[str, Any]:
    # google-genai objects dumped without aliases, or their dicts, are snake_case.
    if "usage_metadata" not in data and "model_version" not in data:
        return data
    out: dict[str, Any] = _camel_keys(data)
    return out
