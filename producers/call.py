"""One metered call as the Meter builds it: ``Call`` (what ``Meter.track`` yields),
``status_of`` (an event status for a call that raised), and the per-call fields of the
``meter.tags()`` blocks the caller is in (``CALL_TAGS``: one context per thread and task)."""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from spendstream.producers.meter import Meter

__all__ = ["CALL_TAGS", "Call", "model_of", "status_of"]

log = logging.getLogger("spendstream.producers")

# Per-call fields set by ``with meter.tags(...)``: one context per thread and per task.
CALL_TAGS: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "spendstream_call_tags", default=MappingProxyType({})
)


class Call:
    """The event being built inside ``Meter.track``; fill in usage before the block ends."""

    __slots__ = ("attempt", "fields", "lenient", "model", "provider", "request_id")

    def __init__(
        self,
        provider: str,
        model: str,
        request_id: str,
        attempt: int,
        fields: dict[str, Any],
        lenient: Meter | None = None,
    ) -> None:
        self.provider = provider
        self.model = model
        self.request_id = request_id
        self.attempt = attempt
        self.fields = fields
        # The Meter, when made with on_invalid="drop": usage missing is then no error.
        self.lenient = lenient

    def set(self, **fields: Any) -> None:
        """Set event fields (tokens, status, tags...)."""
        self.fields.update(fields)

    def usage(self, response: Any, *, api: str | None = None) -> None:
        """Token counts (and reported cost) from a provider response or streamed chunks."""
        from spendstream.producers.providers import usage_from

        try:
            found = usage_from(self.provider, response, api=api)
        except ValueError as exc:
            # Raised inside the block, it recorded a call that succeeded as an error.
            if not self.lenient:
                raise
            log.warning("usage missing (%s): recorded with 0 tokens, tagged usage=missing", exc)
            self.fields["tags"] = self.lenient._usage_missing_tags(self.fields.get("tags"))
            return
        if "model" in found:
            self.model = found.pop("model")
        found.pop("provider", None)
        self.fields.update(found)

    def event_fields(self) -> dict[str, Any]:
        out = {"input_tokens": 0, "output_tokens": 0, **self.fields}
        out.update(
            provider=self.provider,
            model=self.model,
            request_id=self.request_id,
            attempt=self.attempt,
        )
        return out


def status_of(exc: BaseException) -> str:
    """An event status for a call that raised ``exc``: ``timeout`` or ``error``."""
    if isinstance(exc, TimeoutError) or "timeout" in type(exc).__name__.lower():
        return "timeout"
    if getattr(exc, "status_code", None) in (408, 504):  # SDK errors for HTTP timeouts
        return "timeout"
    return "error"


def model_of(response: Any) -> str | None:
    """The model a provider response (or the first of its chunks that says) names."""
    for part in response if isinstance(response, list) else [response]:
        model = part.get("model") if isinstance(part, Mapping) else None
        model = model if model is not None else getattr(part, "model", None)
        if isinstance(model, str):
            return model
    return None
