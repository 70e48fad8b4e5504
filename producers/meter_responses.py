"""``Meter.record_openai`` / ``record_anthropic`` / ``record_gemini`` / ``record_response``:
a provider's response (or its stream's chunks) read into one event's usage
(``producers/providers.py``), and what a response without usable usage becomes (raised, or
with ``on_invalid="drop"`` recorded with 0 tokens and tagged ``usage=missing``)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal

from spendstream.producers.call import CALL_TAGS, model_of

if TYPE_CHECKING:
    from spendstream.producers.event import UsageEvent

__all__ = ["ProviderResponses"]

log = logging.getLogger("spendstream.producers")


class ProviderResponses:
    """Recording provider responses, for a Meter (its base class)."""

    on_invalid: Literal["raise", "drop"]
    _defaults: dict[str, Any]  # the Meter's default event fields

    if TYPE_CHECKING:

        def record(
            self, event: UsageEvent | Mapping[str, Any] | None = None, /, **fields: Any
        ) -> str: ...

    def record_openai(self, response: Any, /, *, api: str | None = None, **fields: Any) -> str:
        """Record an OpenAI chat completion or Responses API result (or its stream chunks)."""
        from spendstream.producers.providers import openai_usage

        return self._record_read("openai", lambda r: openai_usage(r, api=api), response, fields)

    def record_anthropic(self, response: Any, /, **fields: Any) -> str:
        """Record an Anthropic message (or its stream events); cached tokens are added."""
        from spendstream.producers.providers import anthropic_usage

        return self._record_read("anthropic", anthropic_usage, response, fields)

    def record_gemini(self, response: Any, /, **fields: Any) -> str:
        """Record a Gemini generateContent response (or its stream chunks)."""
        from spendstream.producers.providers import gemini_usage

        return self._record_read("gemini", gemini_usage, response, fields)

    def record_response(self, provider: str, response: Any, /, **fields: Any) -> str:
        """Record any supported provider's response (``usage_from``): openrouter, bedrock..."""
        from spendstream.producers.providers import usage_from

        return self._record_read(provider, lambda r: usage_from(provider, r), response, fields)

    def _record_read(
        self,
        provider: str,
        read: Callable[[Any], dict[str, Any]],
        response: Any,
        fields: dict[str, Any],
    ) -> str:
        """Record what ``read`` finds in a provider response. One without usable usage (a
        compatible server that sends none, a stream without ``include_usage``, a negative
        count) raises ``ValueError``; with ``on_invalid="drop"`` the call is recorded with
        0 tokens and the tag ``usage=missing`` instead, and logged: it was made, and paid."""
        from spendstream.producers.shapes import is_stream

        if is_stream(response):
            response = list(response)  # read once below, and looked at again if it fails
        try:
            usage = read(response)
        except ValueError as exc:
            if self.on_invalid == "raise":
                raise
            usage = {"provider": provider, "input_tokens": 0, "output_tokens": 0}
            model = model_of(response)
            if model is not None:
                usage["model"] = model
            fields = {**fields, "tags": self._usage_missing_tags(fields.get("tags"))}
            log.warning("usage missing (%s): recorded with 0 tokens, tagged usage=missing", exc)
        return self.record(**{**usage, **fields})

    def _usage_missing_tags(self, tags: Mapping[str, str] | None) -> dict[str, str]:
        """The tags of a call recorded without usage: those the event would carry (the
        Meter's defaults, ``meter.tags()`` blocks, ``tags``) and ``usage=missing``. A
        ``tags`` field replaces the others in ``record()``: given alone, it lost them."""
        return {
            **(self._defaults.get("tags") or {}),
            **(CALL_TAGS.get().get("tags") or {}),
            **(tags or {}),
            "usage": "missing",
        }
