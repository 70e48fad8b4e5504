"""The usage event, schema version 1 (shared/CONTRACT.md section 1): the one event model.

One event per metered AI API call. The stream validates every record against this
model; a record that fails becomes a dead letter whose reason names the field.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Context, Decimal
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
    "CACHED_TOKEN_FIELDS",
    "EARLIEST_TS",
    "MAX_LATENCY_MS",
    "MAX_REPORTED_COST_USD",
    "MAX_TAGS",
    "MAX_TOKENS",
    "MAX_TURN",
    "REPORTED_COST_SCALE",
    "SCHEMA_VERSION",
    "UsageEvent",
    "describe_validation_error",
]

SCHEMA_VERSION = 1
MAX_TAGS = 64
# Bounds on every field (docs/bounds.md). Each is far above any real call, and together they
# keep every sum the warehouse takes inside DECIMAL(38, 18) and every time inside datetime.
# No metered LLM API existed before 2015; a ts before it is a broken clock or a zero value.
EARLIEST_TS = datetime(2015, 1, 1, tzinfo=UTC)
# A billion tokens in one call is ~1000x today's largest context windows.
MAX_TOKENS = 1_000_000_000
MAX_TURN = 1_000_000_000
MAX_LATENCY_MS = 1e9  # 11.6 days
MAX_REPORTED_COST_USD = Decimal(1_000_000)
# reported_cost_usd is kept as DECIMAL(38, 18): finer input is rounded (half-even) to this.
REPORTED_COST_SCALE = 18
_COST_QUANTUM = Decimal(1).scaleb(-REPORTED_COST_SCALE)
# Enough digits for MAX_REPORTED_COST_USD at that scale, whatever the caller's context says.
_COST_CONTEXT = Context(prec=38, rounding=ROUND_HALF_EVEN)
# The parts of input_tokens that came from the prompt cache: together at most input_tokens.
# The columnar validator (stream/validator.py) reads this tuple too, so a new cached kind
# added here is checked in both places.
CACHED_TOKEN_FIELDS = ("cache_read_tokens", "cache_write_tokens")

Tokens = Annotated[StrictInt, Field(ge=0, le=MAX_TOKENS)]
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
    ts: AwareDatetime = Field(
        description="RFC 3339 timestamp with offset: when the call finished. Not before "
        "2015-01-01T00:00:00Z, and at most [detection] max_future_skew_s (default 300 s) "
        "after the pipeline receives it."
    )
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
    latency_ms: (
        Annotated[float, Field(strict=True, ge=0, le=MAX_LATENCY_MS, allow_inf_nan=False)] | None
    ) = Field(None, description="Wall time of the call, in milliseconds.")
    team: Name | None = None
    feature: Name | None = None
    project: Name | None = None
    environment: Name | None = None
    cost_center: Name | None = None
    user_id: Name | None = Field(None, description="Opaque end-user id, no personal data.")
    api_key_id: Name | None = Field(None, description="Opaque credential id, never the secret.")
    session_id: Name | None = Field(None, description="An agent run or chat session.")
    parent_session_id: Name | None = Field(None, description="The session that dispatched this.")
    turn: Annotated[StrictInt, Field(ge=0, le=MAX_TURN)] | None = None
    reported_cost_usd: (
        Annotated[Decimal, Field(ge=0, le=MAX_REPORTED_COST_USD, allow_inf_nan=False)] | None
    ) = Field(
        None,
        description="Cost already reported by the provider or gateway (reconciliation); "
        "kept to 18 decimal places (finer values are rounded half-even).",
    )
    tags: dict[TagKey, TagValue] | None = Field(None, max_length=MAX_TAGS)
    schema_version: Literal[1] = 1

    @field_validator("ts")
    @classmethod
    def _to_utc(cls, value: datetime) -> datetime:
        # Event time is compared across producers in many zones: normalise once, here.
        try:
            utc = value.astimezone(UTC)
        except OverflowError:
            # 0001-01-01T00:00:00+01:00 is before year 1 in UTC (9999-12-31...-01:00 after
            # 9999): datetime cannot hold it, and it must be a dead letter, not a crash.
            raise ValueError(
                f"{value.isoformat()} is out of range in UTC (before year 1 or after 9999)"
            ) from None
        if utc < EARLIEST_TS:
            raise ValueError(
                f"{utc.isoformat()} is before {EARLIEST_TS.isoformat()} "
                "(no metered LLM API existed then: a broken clock or a zero value)"
            )
        return utc

    @field_validator("reported_cost_usd")
    @classmethod
    def _to_cost_scale(cls, value: Decimal | None) -> Decimal | None:
        # A float such as 1.2345678901234567e-05 has more digits than DECIMAL(38, 18) keeps:
        # round once, here, so the model holds exactly what the warehouse stores.
        if value is None:
            return None
        exponent = value.as_tuple().exponent
        if isinstance(exponent, int) and exponent < -REPORTED_COST_SCALE:
            return value.quantize(_COST_QUANTUM, context=_COST_CONTEXT)
        return value

    @model_validator(mode="after")
    def _cache_within_input(self) -> UsageEvent:
        parts = [getattr(self, name) for name in CACHED_TOKEN_FIELDS]
        if sum(parts) > self.input_tokens:
            named = " + ".join(
                f"{n} ({v})" for n, v in zip(CACHED_TOKEN_FIELDS, parts, strict=True)
            )
            raise ValueError(
                f"{named} exceeds input_tokens ({self.input_tokens}); "
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
