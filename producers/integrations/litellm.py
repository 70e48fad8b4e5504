"""LiteLLM: a callback that meters every call LiteLLM makes, from the SDK or a proxy.

Proxy (``config.yaml``)::

    litellm_settings:
      callbacks: spendstream.producers.integrations.litellm.handler

with ``SPENDSTREAM_METER_URL`` (and ``SPENDSTREAM_METER_TAGS``) in the proxy's environment
(``Meter.from_env``). SDK::

    litellm.callbacks = [SpendstreamLogger(meter)]

One event per call that reached a provider, success or failure (LiteLLM's own cache hits
made no provider call and are not recorded), built from LiteLLM's standard logging payload:

- ``provider``: LiteLLM's ``custom_llm_provider`` in the contract's names (a Claude model
  through ``anthropic`` is ``anthropic``, ``vertex_ai`` is ``google``...);
- ``model``: as the provider returned it, else as requested;
- tokens: LiteLLM's usage is OpenAI-shaped (``prompt_tokens`` includes cached tokens, for
  Anthropic too: LiteLLM adds them); cache reads: the first non-zero of
  ``prompt_tokens_details.cached_tokens``, ``usage.cache_read_input_tokens``; cache writes:
  the first non-zero of ``prompt_tokens_details.cache_creation_tokens``,
  ``prompt_tokens_details.cache_write_tokens``, ``usage.cache_creation_input_tokens``;
  audio and image token counts (``prompt/completion_tokens_details.audio_tokens`` and
  ``image_tokens``) become the fields ``input_audio_tokens``, ``input_image_tokens``,
  ``output_audio_tokens``, ``output_image_tokens`` (left out when they exceed their whole);
  web searches (``server_tool_use.web_search_requests``) become
  ``tool_requests = {web_search: n}``; reasoning tokens and other server tools become tags
  (``reasoning_tokens``, ``server_tool_<name>``);
- ``status``: ``error``, or ``timeout`` for LiteLLM's ``Timeout`` (HTTP 408);
- ``request_id``: LiteLLM's trace id of the call (``litellm_trace_id``), shared by a request's
  retries and fallbacks, never the session id (which LiteLLM's logging payload puts in its
  ``trace_id`` by default);
- ``reported_cost_usd``: LiteLLM's ``response_cost``, so ``spendstream prices reconcile``
  compares it with our own price;
- attribution, first found: the request's ``metadata`` (keys named as event fields:
  ``team``, ``feature``, ``project``, ``environment``, ``cost_center``, ``user_id``,
  ``session_id``, ``parent_session_id``, ``turn``, ``api_key_id``; through the proxy, the
  client's ``metadata``), then the proxy's identities (team alias or id, virtual key alias or
  hash, end user, project), then the logger's defaults.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from litellm.integrations.custom_logger import CustomLogger

from spendstream.errors import SpendstreamError
from spendstream.log_filters import OncePer
from spendstream.producers.event import MAX_TURN
from spendstream.producers.meter import InvalidUsageEvent, Meter
from spendstream.producers.provider_names import canonical_provider

__all__ = ["SpendstreamLogger", "handler"]

log = logging.getLogger("spendstream.producers")

_METADATA_FIELDS = (
    "team",
    "feature",
    "project",
    "environment",
    "cost_center",
    "user_id",
    "api_key_id",
    "session_id",
    "parent_session_id",
    "turn",
)
# Usage details LiteLLM reports that the event has no field for: kept as tags.
_EXTRA_TOKENS = (  # (usage section, key, tag)
    ("completion_tokens_details", "reasoning_tokens", "reasoning_tokens"),
)
# Parts of the input/output token counts that are billed at their own rates: event fields.
_MODAL_TOKENS = (  # (usage section, key, event field)
    ("prompt_tokens_details", "audio_tokens", "input_audio_tokens"),
    ("prompt_tokens_details", "image_tokens", "input_image_tokens"),
    ("completion_tokens_details", "audio_tokens", "output_audio_tokens"),
    ("completion_tokens_details", "image_tokens", "output_image_tokens"),
)
# LiteLLM's server_tool_use keys -> the event's tool names (tool_requests, priced per 1000).
_TOOLS = {"web_search_requests": "web_search"}


class SpendstreamLogger(CustomLogger):  # type: ignore[misc]  # litellm is untyped here
    """Records a usage event per LiteLLM call; ``defaults`` are event fields for every event."""

    def __init__(self, meter: Meter | None = None, **defaults: Any) -> None:
        super().__init__()
        self._meter = meter
        self.defaults = defaults
        self._quiet = OncePer()

    @property
    def meter(self) -> Meter:
        """The given Meter, else one from the environment, made at the first call."""
        if self._meter is None:
            self._meter = Meter.from_env()
        return self._meter

    def log_success_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self._record(kwargs, response_obj, failed=False)

    def log_failure_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self._record(kwargs, response_obj, failed=True)

    # record() only appends to the Meter's queue: nothing here blocks an event loop.
    async def async_log_success_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self._record(kwargs, response_obj, failed=False)

    async def async_log_failure_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self._record(kwargs, response_obj, failed=True)

    def _record(self, kwargs: dict[str, Any], response_obj: Any, *, failed: bool) -> None:
        # A logging callback must never break the caller's LLM call: log and go on.
        try:
            fields = event_fields(kwargs, response_obj, failed=failed)
            if fields is not None:
                self.meter.record(**{**self.defaults, **fields})
        except InvalidUsageEvent as exc:
            log.error("LiteLLM call not metered: %s", exc)
        except SpendstreamError as exc:
            # No Meter from the environment (a variable missing): the same at every call,
            # so once a minute, and without a traceback.
            if self._quiet.due(str(exc)):
                log.error("LiteLLM call not metered: %s", exc)
        except Exception:
            log.exception("LiteLLM call not metered")


def event_fields(
    kwargs: Mapping[str, Any], response_obj: Any, *, failed: bool
) -> dict[str, Any] | None:
    """The usage event of one LiteLLM callback, or None for a LiteLLM cache hit."""
    slo: Mapping[str, Any] = kwargs.get("standard_logging_object") or {}
    if slo.get("cache_hit") and not failed:
        return None
    call_id = str(slo.get("litellm_call_id") or kwargs.get("litellm_call_id") or slo.get("id"))
    response_id = str(slo.get("id") or "")
    event_id = f"litellm-{call_id}"
    if not failed and response_id and response_id != call_id:
        event_id = f"{event_id}-{response_id}"[:128]
    start, end = _epoch(slo.get("startTime")), _epoch(slo.get("endTime"))
    provider = slo.get("custom_llm_provider") or kwargs.get("custom_llm_provider") or "unknown"
    out: dict[str, Any] = {
        "event_id": event_id,
        "ts": datetime.fromtimestamp(end, UTC) if end else datetime.now(UTC),
        "provider": canonical_provider(str(provider)),
        "model": _model(slo, kwargs, response_obj),
        "status": _status(kwargs, slo) if failed else "ok",
    }
    if start and end and end >= start:
        out["latency_ms"] = (end - start) * 1000.0
    # The call's own trace id (kept by LiteLLM across a request's retries and fallbacks),
    # not the logging payload's `trace_id`: by default LiteLLM puts the *session* id there
    # when one is given, and a request id shared by a whole session reads as a retry storm.
    trace = kwargs.get("litellm_trace_id") or slo.get("trace_id")
    if trace:
        out["request_id"] = str(trace)[:128]
    out.update(_tokens(slo, response_obj))
    cost = slo.get("response_cost")
    if (
        isinstance(cost, int | float)
        and math.isfinite(cost)
        and cost >= 0
        and not slo.get("response_cost_failure_debug_info")
    ):
        # LiteLLM computes in binary floats: 15 significant digits are what a float holds
        # reliably (0.009600000000000001 is 0.0096 plus LiteLLM's rounding noise).
        out["reported_cost_usd"] = Decimal(f"{float(cost):.15g}")
    out.update(_attribution(kwargs, slo))
    tags = {**_extra_token_tags(slo, response_obj), **_tags(slo)}
    if tags:
        out["tags"] = tags
    return out


def _epoch(value: Any) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    return float(value) if isinstance(value, int | float) else 0.0


def _model(slo: Mapping[str, Any], kwargs: Mapping[str, Any], response_obj: Any) -> str:
    returned = getattr(response_obj, "model", None)
    if isinstance(returned, str) and returned:
        return returned
    return str(slo.get("model") or kwargs.get("model") or "unknown")


def _status(kwargs: Mapping[str, Any], slo: Mapping[str, Any]) -> str:
    info = slo.get("error_information") or {}
    exc = kwargs.get("exception")
    names = (type(exc).__name__ if exc is not None else "", str(info.get("error_class") or ""))
    if any("timeout" in n.lower() for n in names) or str(info.get("error_code")) == "408":
        return "timeout"
    return "error"


def _usage(slo: Mapping[str, Any], response_obj: Any) -> dict[str, Any]:
    metadata = slo.get("metadata") or {}
    usage = metadata.get("usage_object")
    if isinstance(usage, Mapping):
        return dict(usage)
    found = getattr(response_obj, "usage", None)
    if found is not None and hasattr(found, "model_dump"):
        return dict(found.model_dump())
    return {}


def _tokens(slo: Mapping[str, Any], response_obj: Any) -> dict[str, Any]:
    usage = _usage(slo, response_obj)
    details = usage.get("prompt_tokens_details") or {}
    cache_read = details.get("cached_tokens") or usage.get("cache_read_input_tokens") or 0
    cache_write = (
        details.get("cache_creation_tokens")
        or details.get("cache_write_tokens")
        or usage.get("cache_creation_input_tokens")
        or 0
    )
    out: dict[str, Any] = {
        "input_tokens": int(usage.get("prompt_tokens") or slo.get("prompt_tokens") or 0),
        "output_tokens": int(usage.get("completion_tokens") or slo.get("completion_tokens") or 0),
        "cache_read_tokens": int(cache_read),
        "cache_write_tokens": int(cache_write),
    }
    for section, key, name in _MODAL_TOKENS:
        value = (usage.get(section) or {}).get(key)
        if isinstance(value, int) and value > 0:
            out[name] = value
    # A provider's details that do not add up (parts over their whole) are left out rather
    # than making the whole event invalid: the call is still metered at text rates.
    if out.get("input_audio_tokens", 0) + out.get("input_image_tokens", 0) > max(
        0, out["input_tokens"] - out["cache_read_tokens"] - out["cache_write_tokens"]
    ):
        out.pop("input_audio_tokens", None)
        out.pop("input_image_tokens", None)
    if out.get("output_audio_tokens", 0) + out.get("output_image_tokens", 0) > out["output_tokens"]:
        out.pop("output_audio_tokens", None)
        out.pop("output_image_tokens", None)
    tools = usage.get("server_tool_use") or {}
    if isinstance(tools, Mapping):
        counted = {
            _TOOLS[k]: int(v) for k, v in tools.items() if k in _TOOLS and isinstance(v, int) and v
        }
        if counted:
            out["tool_requests"] = counted
    return out


def _extra_token_tags(slo: Mapping[str, Any], response_obj: Any) -> dict[str, str]:
    usage = _usage(slo, response_obj)
    tags: dict[str, str] = {}
    for section, key, tag in _EXTRA_TOKENS:
        value = (usage.get(section) or {}).get(key)
        if value:
            tags[tag] = str(value)
    tools = usage.get("server_tool_use") or {}
    if isinstance(tools, Mapping):
        for key, value in tools.items():
            if value and key not in _TOOLS:  # the ones the event has no tool name for
                tags[f"server_tool_{key}"[:64]] = str(value)
    return tags


def _attribution(kwargs: Mapping[str, Any], slo: Mapping[str, Any]) -> dict[str, Any]:
    meta: Mapping[str, Any] = slo.get("metadata") or {}
    params = kwargs.get("litellm_params") or {}
    requested: dict[str, Any] = {}
    # Through the proxy the client's metadata is requester_metadata; from the SDK it is the
    # call's metadata. Either may name event fields directly.
    for source in (params.get("metadata"), meta.get("requester_metadata")):
        if isinstance(source, Mapping):
            for name in _METADATA_FIELDS:
                if source.get(name) not in (None, "") and name not in requested:
                    requested[name] = source[name]
    identities = {
        "team": meta.get("user_api_key_team_alias") or meta.get("user_api_key_team_id"),
        "api_key_id": meta.get("user_api_key_alias") or meta.get("user_api_key_hash"),
        "user_id": slo.get("end_user")
        or meta.get("user_api_key_end_user_id")
        or kwargs.get("user"),
        "project": meta.get("user_api_key_project_alias") or meta.get("user_api_key_project_id"),
        "session_id": slo.get("session_id"),
    }
    out: dict[str, Any] = {k: str(v)[:256] for k, v in identities.items() if v}
    for name, value in requested.items():
        if name != "turn":
            out[name] = str(value)[:256]
        elif (turn := _turn(value)) is not None:
            out[name] = turn
    return out


def _turn(value: Any) -> int | None:
    # A client's metadata may carry the turn as text ("3"); one that is no turn (text, a
    # boolean, a negative or out-of-bounds number) is left out rather than making the whole
    # event invalid: the call is still metered. isascii: "²".isdigit() is true, int() fails.
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TURN:
        return value
    return None


def _tags(slo: Mapping[str, Any]) -> dict[str, str]:
    tags = {"call_type": str(slo.get("call_type") or "")}
    if slo.get("model_group"):
        tags["model_group"] = str(slo["model_group"])[:256]
    if slo.get("request_tags"):
        tags["litellm_tags"] = ",".join(map(str, slo["request_tags"]))[:256]
    return {k: v for k, v in tags.items() if v}


# What a LiteLLM proxy's config names: its Meter comes from the environment at the first call.
handler = SpendstreamLogger()
