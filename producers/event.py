"""The usage event, schema version 1 (shared/CONTRACT.md section 1): the one event model.

One event per metered AI API call. The stream validates every record against this
model; a record that fails becomes a dead letter whose reason names the field.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

__all__ = [
    "MAX_TAGS",
    "SCHEMA_VERSION",
    "UsageEvent",
    "describe_validation_error",
]

SCHEMA_VERSION = 1
INT64_MAX = 2**63 - 1
MAX_TAGS = 64

Tokens = Annotated[StrictInt, Field(ge=0, le=INT64_MAX)]
Id = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=256)]
TagKey = Annotated[str, StringConstraints(min_length=1, max_length=64)]
TagValue = Annotated[str, StringConstraints(max_length=256)]
Status = Literal["ok", "error", "timeout", "refused"]


class UsageEvent(BaseModel):
    """One metered call. ``input_tokens`` includes cached tokens (OpenAI/OpenTelemetry convention)."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        str_strip_whitespace=False,
        json_schema_extra={
            "$id": "https://spendstream.dev/schemas/usage-event-v1.json",
            "title": "spendstream usage event (schema version 1)",
        },
    )

    event_id: Id = Field(description="Idempotency key; the same id sent twice is one call.")
    ts: AwareDatetime = Field(description="RFC 3339 timestamp with offset: when the call finished.")
    provider: Name = Field(description="anthropic, openai, google, openrouter, bedrock, ...")
    model: Name = Field(description="Model id as requested or returned.")
    input_tokens: Tokens = Field(description="ALL input tokens, cached ones included.")
    output_tokens: Tokens = Field(description="All output tokens, reasoning tokens included.")
    cache_read_tokens: Tokens = Field(0, description="Part of input_tokens read from the cache.")
    cache_write_tokens: Tokens = Field(0, description="Part of input_tokens written to the cache.")
    batch: StrictBool = Field(False, description="Sent through a provider batch API.")
    status: Status = Field("ok", description="Outcome; failed calls can still cost money.")
    attempt: Annotated[StrictInt, Field(ge=1, le=1_000_000)] = Field(
        1, description="1 for the first try, 2+ for retries of the same logical request."
    )
    request_id: Id | None = Field(None, description="The logical request, shared by its retries.")
    latency_ms: Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False)] | None = Field(
        None, description="Wall time of the call, in milliseconds."
    )
    team: Name | None = None
    feature: Name | None = None
    project: Name | None = None
    environment: Name | None = None
    cost_center: Name | None = None
    user_id: Name | None = Field(None, description="Opaque end-user id, no personal data.")
    api_key_id: Name | None = Field(None, description="Opaque credential id, never the secret.")
    session_id: Name | None = Field(None, description="An agent run or chat session.")
    parent_session_id: Name | None = Field(None, description="The session that dispatched this.")
    turn: Annotated[StrictInt, Field(ge=0, le=INT64_MAX)] | None = None
    reported_cost_usd: Annotated[Decimal, Field(ge=0, allow_inf_nan=False)] | None = Field(
        None, description="Cost already reported by the provider or gateway (reconciliation)."
    )
    tags: dict[TagKey, TagValue] | None = Field(None, max_length=MAX_TAGS)
    lease_id: Id | None = Field(
        None,
        description=(
            "The budget lease(s) the call was reserved under (Meter.reserve): one id, or "
            "several separated by single spaces when more than one hard budget covers the call."
        ),
    )
    schema_version: Literal[1] = 1

    @field_validator("ts")
    @classmethod
    def _to_utc(cls, value: datetime) -> datetime:
        # Event time is compared across producers in many zones: normalise once, here.
        return value.astimezone(UTC)

    @model_validator(mode="after")
    def _cache_within_input(self) -> UsageEvent:
        cached = self.cache_read_tokens + self.cache_write_tokens
        if cached > self.input_tokens:
            raise ValueError(
                f"cache_read_tokens ({self.cache_read_tokens}) + cache_write_tokens "
                f"({self.cache_write_tokens}) exceeds input_tokens ({self.input_tokens}); "
                "input_tokens must include cached tokens (Anthropic reports them separately: add them)"
            )
        return self

    def to_json_dict(self) -> dict[str, Any]:
        """The event as JSON-ready values, without unset optional fields."""
        return self.model_dump(mode="json", exclude_none=True)


def describe_validation_error(err: ValidationError) -> str:
    """One line a person can act on: every failing field and why."""
    parts = []
    for e in err.errors(include_url=False):
        loc = ".".join(str(p) for p in e["loc"]) or "record"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown field (not in schema version 1)"
        elif e["type"] == "missing":
            msg = "required field is missing"
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)
