"""The usage event, schema version 1: the one event model (JSON Schema: usage-event.schema.json).

One event per metered AI API call. The stream validates every record against this
model; a record that fails becomes a dead letter whose reason names the field.
"""

from __future__ import annotations

import difflib
import numbers
import re
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

from spendstream.instants import in_utc
from spendstream.wording import clipped, escape_controls

__all__ = [
    "CACHED_TOKEN_FIELDS",
    "EARLIEST_TS",
    "MAX_LATENCY_MS",
    "MAX_REPORTED_COST_USD",
    "MAX_TAGS",
    "MAX_TOKENS",
    "MAX_TOOLS",
    "MAX_TOOL_REQUESTS",
    "MAX_TURN",
    "REPORTED_COST_SCALE",
    "SCHEMA_VERSION",
    "TOKEN_FIELDS",
    "UsageEvent",
    "describe_validation_error",
    "first_reason",
    "json_kind",
    "token_parts_error",
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
# Requests of one server-side tool in one call: the same bound as a token count.
MAX_TOOL_REQUESTS = MAX_TOKENS
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
MAX_TOOLS = 16
# Every token count of the event: the contract's four, then the finer billable parts (their
# names are genai-prices' usage keys too).
TOKEN_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "input_audio_tokens",
    "cache_audio_read_tokens",
    "input_image_tokens",
    "cache_image_read_tokens",
    "output_audio_tokens",
    "output_image_tokens",
)

Tokens = Annotated[StrictInt, Field(ge=0, le=MAX_TOKENS)]
Id = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=256)]
TagKey = Annotated[str, StringConstraints(min_length=1, max_length=64)]
TagValue = Annotated[str, StringConstraints(max_length=256)]
Status = Literal["ok", "error", "timeout", "refused"]
# Server-side tools billed per request (web_search, code_execution, ...): lower-case names.
ToolName = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z0-9_.:-]+$")
]
ToolCount = Annotated[StrictInt, Field(ge=0, le=MAX_TOOL_REQUESTS)]
Label = Annotated[str, StringConstraints(min_length=1, max_length=64)]


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
    cache_write_1h_tokens: Tokens = Field(
        0, description="Part of cache_write_tokens written with a 1-hour TTL (Anthropic, Bedrock)."
    )
    input_audio_tokens: Tokens = Field(0, description="Part of input_tokens that is audio.")
    cache_audio_read_tokens: Tokens = Field(
        0, description="Part of cache_read_tokens (and of input_audio_tokens) that is audio."
    )
    input_image_tokens: Tokens = Field(0, description="Part of input_tokens that is images.")
    cache_image_read_tokens: Tokens = Field(
        0, description="Part of cache_read_tokens (and of input_image_tokens) that is images."
    )
    output_audio_tokens: Tokens = Field(0, description="Part of output_tokens that is audio.")
    output_image_tokens: Tokens = Field(0, description="Part of output_tokens that is images.")
    tool_requests: dict[ToolName, ToolCount] | None = Field(
        None,
        max_length=MAX_TOOLS,
        description='Server-side tool calls billed per request, by tool: {"web_search": 3}.',
    )
    service_tier: Label | None = Field(
        None, description="The provider's service tier as it answered: flex, priority, default, ..."
    )
    region: Label | None = Field(
        None, description="Where the call was served, when the price depends on it (eu, us, ...)."
    )
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
    lease_id: Id | None = Field(
        None,
        description=(
            "The budget lease(s) the call was reserved under (Meter.reserve): one id, or "
            "several separated by single spaces when more than one hard budget covers the call."
        ),
    )
    schema_version: Literal[1] = 1

    @field_validator("ts", mode="before")
    @classmethod
    def _time_as_text(cls, value: Any) -> Any:
        # pydantic also reads a number, or a string of digits, as unix seconds or
        # milliseconds (guessing which by its size). The contract, the JSON Schema's pattern
        # and docs/bounds.md say RFC 3339 text with its offset: what they refuse is refused.
        number = isinstance(value, numbers.Number) and not isinstance(value, bool)
        if isinstance(value, bytes | bytearray):
            value = value.decode("utf-8", "replace")
        if number or (isinstance(value, str) and _NUMBER.fullmatch(value.strip())):
            raise ValueError(
                f"{clipped(str(value).strip(), 40)} is a number, not an RFC 3339 time with its "
                "offset (e.g. 2026-03-02T10:00:00Z): unix time is not taken (seconds or "
                "milliseconds would be a guess)"
            )
        return value

    @field_validator("ts")
    @classmethod
    def _to_utc(cls, value: datetime) -> datetime:
        # Event time is compared across producers in many zones: normalise once, here.
        utc = in_utc(value)  # a dead letter, not a crash, when UTC has no such time
        if utc < EARLIEST_TS:
            raise ValueError(
                f"{utc.isoformat()} is before {EARLIEST_TS.isoformat()} "
                "(no metered LLM API existed then: a broken clock or a zero value)"
            )
        return utc

    @field_validator("reported_cost_usd", mode="before")
    @classmethod
    def _cost_as_written(cls, value: Any) -> Any:
        # Python's Decimal also reads " 1.5 ", "1_000" and other scripts' digits ("１.５"),
        # which the JSON Schema's pattern and Arrow's decimal read refuse: refused alike.
        if (
            isinstance(value, str)
            and not _DECIMAL_TEXT.fullmatch(value)
            and not _NOT_FINITE.fullmatch(value)  # refused by the field: "finite number"
        ):
            raise ValueError(
                f"{clipped(value, 40)!r} is not a decimal number as JSON writes one (ASCII "
                "digits, one '.', an exponent; no spaces, separators or currency)"
            )
        return value

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
        if isinstance(exponent, int) and exponent > 0:
            # 0E+39 or 1E+5: a whole number (at most 10^6 here) with an exponent Arrow's
            # decimals cannot hold (it failed the whole batch it was in): written out.
            return value.quantize(Decimal(1), context=_COST_CONTEXT)
        return value

    @model_validator(mode="after")
    def _parts_within_wholes(self) -> UsageEvent:
        problem = token_parts_error(self)
        if problem is not None:
            raise ValueError(problem)
        return self

    def to_json_dict(self) -> dict[str, Any]:
        """The event as JSON-ready values, without unset optional fields."""
        return self.model_dump(mode="json", exclude_none=True)


def token_parts_error(e: Any) -> str | None:
    """Why an event's token parts do not fit inside their wholes, or None when they do.

    The parts nest: cached and modal tokens are parts of ``input_tokens``, the 1-hour
    writes part of ``cache_write_tokens``, cached audio/images part of both
    ``cache_read_tokens`` and the modality, output audio/images part of ``output_tokens``.
    Pricing bills each token once at its most specific rate, so every remainder must be
    >= 0. ``e`` is anything with the event's token attributes (a UsageEvent, a row).
    """
    inp, read, write = e.input_tokens, e.cache_read_tokens, e.cache_write_tokens
    if read + write > inp:
        return (
            f"cache_read_tokens ({read}) + cache_write_tokens ({write}) exceeds input_tokens "
            f"({inp}); input_tokens must include cached tokens (Anthropic reports them "
            "separately: add them)"
        )
    if e.cache_write_1h_tokens > write:
        return (
            f"cache_write_1h_tokens ({e.cache_write_1h_tokens}) exceeds cache_write_tokens "
            f"({write}); cache_write_tokens must include the 1-hour writes"
        )
    audio, image = e.input_audio_tokens, e.input_image_tokens
    cached_audio, cached_image = e.cache_audio_read_tokens, e.cache_image_read_tokens
    if cached_audio > audio:
        return (
            f"cache_audio_read_tokens ({cached_audio}) exceeds input_audio_tokens ({audio}); "
            "input_audio_tokens must include the cached audio"
        )
    if cached_image > image:
        return (
            f"cache_image_read_tokens ({cached_image}) exceeds input_image_tokens ({image}); "
            "input_image_tokens must include the cached images"
        )
    if cached_audio + cached_image > read:
        return (
            f"cache_audio_read_tokens ({cached_audio}) + cache_image_read_tokens "
            f"({cached_image}) exceeds cache_read_tokens ({read}); cache_read_tokens must "
            "include cached audio and images"
        )
    if audio + image > inp:
        return (
            f"input_audio_tokens ({audio}) + input_image_tokens ({image}) exceeds input_tokens "
            f"({inp}); input_tokens must include audio and image tokens"
        )
    uncached_media = audio - cached_audio + image - cached_image
    if uncached_media > inp - read - write:
        return (
            f"uncached audio and image tokens ({uncached_media}) exceed the uncached input "
            f"tokens ({inp - read - write} = input_tokens - cache_read_tokens - "
            "cache_write_tokens); cache writes are counted as text"
        )
    out = e.output_tokens
    if e.output_audio_tokens + e.output_image_tokens > out:
        return (
            f"output_audio_tokens ({e.output_audio_tokens}) + output_image_tokens "
            f"({e.output_image_tokens}) exceeds output_tokens ({out}); output_tokens must "
            "include audio and image tokens"
        )
    return None


_JSON_KINDS = {
    "dict": "an object",
    "list": "an array",
    "str": "a string",
    "int": "a number",
    "float": "a number",
    "bool": "true or false",
    "NoneType": "null",
}


def json_kind(value: object) -> str:
    """What JSON calls the kind of a parsed value ("an array", "null"), for messages."""
    name = type(value).__name__
    return _JSON_KINDS.get(name, name)


# Names providers' APIs and other tools use for a field of the event: a producer that copied
# one is told which field it means.
_FIELD_ALIASES = {
    "prompt_tokens": "input_tokens",
    "completion_tokens": "output_tokens",
    "cached_tokens": "cache_read_tokens",
    "cache_read_input_tokens": "cache_read_tokens",
    "cache_creation_input_tokens": "cache_write_tokens",
    "timestamp": "ts",
    "time": "ts",
    "cost": "reported_cost_usd",
    "cost_usd": "reported_cost_usd",
    "id": "event_id",
    # Short names a first event is often written with, each meaning one field only (too far
    # from it for the close-match search: "user" is 0.73 like "user_id").
    "user": "user_id",
    "tokens_in": "input_tokens",
    "tokens_out": "output_tokens",
    "env": "environment",
    "duration_ms": "latency_ms",
}


def _field_hint(name: str) -> str:
    known = [f for f in UsageEvent.model_fields if f != "tags"]
    near = _FIELD_ALIASES.get(name) or next(
        iter(difflib.get_close_matches(name, known, n=1, cutoff=0.75)), None
    )
    return f", did you mean {near}?" if near else ""


# A decimal as JSON (and Arrow's decimal read) writes one; a sign is let through for
# "-0", which is 0 (a negative amount is refused by the field's bound, in its own words).
_DECIMAL_TEXT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", re.ASCII)
_NOT_FINITE = re.compile(r"\s*[+-]?(s?nan|inf(inity)?)\s*", re.IGNORECASE)
# What pydantic would read as unix time: a plain decimal number, as text.
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_NEXT_FIELD = re.compile(r"; (?=[A-Za-z_][\w.]*: )")


def first_reason(description: str) -> str:
    """The first field's reason of a ``describe_validation_error`` line, with its own hint.

    Reasons are joined with "; " and a reason may hold "; " itself (its hint: "...; the
    producer's clock is ahead, ..."): the cut is where the next ``<field>: `` starts."""
    return _NEXT_FIELD.split(description, maxsplit=1)[0]


def describe_validation_error(err: ValidationError) -> str:
    """One line a person can act on: every failing field and why.

    Unknown fields come first: a misspelt field is also reported missing under its right
    name, and the misspelling is the cause (summaries show the first reason only)."""
    parts = []
    errors = sorted(err.errors(include_url=False), key=lambda e: e["type"] != "extra_forbidden")
    # A record of 90,000 unknown keys made a 4 MB reason (and 90,000 close-match searches):
    # the first few say what is wrong.
    shown, errors = errors[:_MAX_REASONS], errors[_MAX_REASONS:]
    for e in shown:
        name = ".".join(str(p) for p in e["loc"])
        loc = _printable(name) or "record"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            hint = _field_hint(name) if len(name) <= _MAX_NAME else ""  # (a misspelling)
            msg = f"unknown field (not in schema version 1{hint})"
        elif e["type"] == "missing":
            msg = "required field is missing"
        elif e["type"] == "model_type" and not e["loc"]:
            got = e.get("input")
            msg = f"a usage event is a JSON object, not {json_kind(got)}"
            if isinstance(got, list):
                msg += " (for several events, write one object per line: JSON Lines)"
        parts.append(f"{loc}: {msg}")
    if errors:
        parts.append(f"and {len(errors):,} more")
    return "; ".join(parts)


_MAX_REASONS = 10
_MAX_NAME = 64


def _printable(name: str) -> str:
    """A field name as it can be shown: control characters escaped (a key holding ESC [2J
    cleared the terminal ``ingest`` printed it to), at most ``_MAX_NAME`` characters."""
    return clipped(escape_controls(name), _MAX_NAME)
