"""The configuration: one typed model tree loaded from TOML.

Every key has a default, so an empty file (or no file) is a valid configuration.
Unknown keys and wrong types are errors that name the key (and suggest the nearest
known key). Money is ``Decimal``: TOML floats are converted through their shortest
decimal repr, so ``3.75`` is exactly ``Decimal("3.75")``.

Each key's meaning is its ``Field(description=...)`` here and nowhere else:
docs/configuration.md is generated from this module (``python -m
spendstream.config_reference``; a test fails when a key has no description or the file
is stale).
"""

from __future__ import annotations

import difflib
import itertools
import json
import os
import tomllib
import types
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, Self, Union, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from spendstream.errors import ConfigError
from spendstream.money import MAX_MONEY_USD, MONEY_CONTEXT
from spendstream.scopes import scope_error

__all__ = [
    "MAX_DURATION_S",
    "AlertsConfig",
    "AnomalyConfig",
    "BreakerConfig",
    "BudgetConfig",
    "Config",
    "ConsoleSinkConfig",
    "DeliveryConfig",
    "DetectionConfig",
    "DiscountConfig",
    "HttpConfig",
    "KafkaConfig",
    "LeasesConfig",
    "ModelPriceConfig",
    "OtelConfig",
    "PagerDutySinkConfig",
    "PipelineConfig",
    "PremiumConfig",
    "PricesConfig",
    "RouteConfig",
    "RunawayConfig",
    "SinkConfig",
    "SlackSinkConfig",
    "WarehouseConfig",
    "WarehouseS3Config",
    "WebhookSinkConfig",
    "below_money_limit",
    "is_model",
    "load_config",
]

ENV_CONFIG = "SPENDSTREAM_CONFIG"
# Every duration key is at most ten years: a larger one overflows the datetime arithmetic it
# enters (ts - allowed_lateness_s, now + a cooldown), in every worker, at every start.
MAX_DURATION_S = 10 * 365 * 86_400


def _to_decimal(value: Any) -> Any:
    # A float from TOML is converted via repr so that 0.1 stays 0.1, not its binary expansion.
    if isinstance(value, bool):
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, int):
        return Decimal(value)
    return value


def below_money_limit(value: Decimal) -> Decimal:
    # A finite but enormous value (the string "9e999999") would overflow the first sum or
    # product it enters, in every worker, at every start (spendstream.money).
    if value >= MAX_MONEY_USD:
        raise ValueError("must be below 1e20 (what the warehouse's DECIMAL(38,18) holds)")
    return value


def _to_instant(value: Any) -> Any:
    # TOML gives a date (`2026-03-01`: UTC midnight) or a date-time; a string may be either.
    if isinstance(value, str):
        text = value.strip()
        try:
            value = date.fromisoformat(text) if len(text) == 10 else datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(
                f"{value!r} is neither an RFC 3339 date-time with an offset "
                "(2026-03-01T08:00:00Z, 2026-03-01T00:00:00-08:00) nor a date (2026-03-01)"
            ) from None
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(
                f"{value.isoformat()} has no offset: write Z or +HH:MM (2026-03-01T08:00:00Z), "
                "or a date (2026-03-01, UTC midnight)"
            )
        try:
            return value.astimezone(UTC)
        except OverflowError:
            raise ValueError(f"{value.isoformat()} is outside the years 1-9999 in UTC") from None
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    return value


Instant = Annotated[datetime, BeforeValidator(_to_instant)]

_FROM_DOC = (
    "The row applies to events at or after this instant: a date (`2026-03-01`, UTC "
    "midnight) or an RFC 3339 date-time with an offset (`2026-03-01T08:00:00Z`, "
    "`2026-03-01T00:00:00-08:00`); unset: since always. Rows with the same match and "
    "different dates are a price history: the one with the latest `effective_from` at or "
    "before an event's `ts` wins; an undated row of the same match prices the times no "
    "dated row covers (and yields to one dated only by `effective_until`, whatever the order)."
)
_UNTIL_DOC = (
    "The row applies to events before this instant (exclusive; same forms as "
    "`effective_from`, which it must follow); unset: until a later row of the same match "
    "takes over, else forever."
)


def instant_label(value: datetime) -> str:
    """``2026-03-01`` for a UTC midnight, else ``2026-03-01T08:00:00Z`` (for messages and
    ``price_source``)."""
    value = value.astimezone(UTC)
    if value.time() == datetime.min.time():
        return value.date().isoformat()
    return value.isoformat().replace("+00:00", "Z")


def _dates_in_order(row: Any) -> Any:
    start, end = row.effective_from, row.effective_until
    if start is not None and end is not None and end <= start:
        raise ValueError(
            f"effective_until ({instant_label(end)}) must be after effective_from "
            f"({instant_label(start)})"
        )
    return row


UsdAmount = Annotated[
    Decimal, BeforeValidator(_to_decimal), Field(ge=0), AfterValidator(below_money_limit)
]
NonNegativeDecimal = Annotated[
    Decimal, BeforeValidator(_to_decimal), Field(ge=0), AfterValidator(below_money_limit)
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _http_url(value: str) -> str:
    """An http(s) URL with a host, or a ValueError saying what is missing: a webhook URL
    written without its scheme (``127.0.0.1:9000/hook``) loaded, then every notification
    failed eight times ("UnsupportedProtocol"), ~30 s each, before its dead letter."""
    from urllib.parse import urlsplit

    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(
            f"{value!r} is not an http:// or https:// URL with a host "
            f"(e.g. http://{value.split('://')[-1].lstrip('/') or 'host:port/path'})"
        )
    return value


def _no_inline_secret(data: Any, secret_keys: tuple[str, ...]) -> Any:
    # A secret written into the TOML ends up in backups and diffs: refuse it with a message
    # that says where to put it instead.
    if isinstance(data, dict):
        for key in secret_keys:
            if key in data:
                raise ValueError(
                    f"{key} must not be written inline; use {key}_env (an environment "
                    f"variable name) or {key}_file (a path)"
                )
    return data


class KafkaConfig(_Section):
    """Where the Kafka cluster is and how spendstream names its topics and group."""

    bootstrap_servers: str = Field(
        default="localhost:9092",
        description="Kafka bootstrap servers, `host:port[,host:port...]`. Left unset (no "
        "`--config`, no key, no `--bootstrap-servers`), `run`, `alerts`, `breakers` and "
        "`leases serve` use a running `spendstream kafka-local` broker if there is one.",
    )
    usage_partitions: int = Field(
        default=6,
        ge=1,
        description="Partitions of `spendstream.usage` when `spendstream run` creates it "
        "(an existing topic keeps its count): the most usage workers that can share the load.",
    )
    topic_prefix: str = Field(
        default="",
        description='Prepended to every topic name (e.g. `"staging."`); `""` keeps the '
        "documented names (`spendstream.usage`, ...).",
    )
    app_id: str = Field(
        default="spendstream",
        min_length=1,
        description="Name of the stream application: the usage loop's consumer group (the scope "
        "loop's is `<app_id>-scopes`).",
    )
    session_timeout_s: float = Field(
        default=30.0,
        ge=6,
        le=300,
        description="A worker silent this long (e.g. killed) leaves the group and its "
        "partitions move to the others.",
    )
    # Security of every client the project runs (docs/kafka.md "Security"). Secrets come
    # from an environment variable or a file, never from this file.
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT",
        description="How every client the project runs (workers, Meter, alert router, "
        "`breakers`) talks to the brokers: `PLAINTEXT`, `SSL`, `SASL_PLAINTEXT` or `SASL_SSL`.",
    )
    sasl_mechanism: Literal["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"] = Field(
        default="SCRAM-SHA-512", description="SASL mechanism for the `SASL_*` protocols."
    )
    sasl_username: str | None = Field(
        default=None, description="SASL user name (needed by the `SASL_*` protocols)."
    )
    sasl_password_env: str | None = Field(
        default=None, description="Environment variable holding the SASL password."
    )
    sasl_password_file: str | None = Field(
        default=None, description="A file holding the SASL password instead."
    )
    ssl_ca_location: str | None = Field(
        default=None,
        description="PEM file of the CA(s) that signed the brokers' certificates; unset: the "
        "system's CAs.",
    )
    ssl_certificate_location: str | None = Field(
        default=None, description="Client certificate (PEM), for brokers that require mutual TLS."
    )
    ssl_key_location: str | None = Field(
        default=None, description="The client certificate's private key (PEM)."
    )
    ssl_key_password_env: str | None = Field(
        default=None, description="Environment variable holding the private key's password."
    )
    ssl_key_password_file: str | None = Field(
        default=None, description="A file holding the private key's password instead."
    )
    ssl_endpoint_identification: bool = Field(
        default=True,
        description="Check that the broker's certificate names the host connected to (leave on).",
    )

    @model_validator(mode="before")
    @classmethod
    def _secrets(cls, data: Any) -> Any:
        return _no_inline_secret(data, ("sasl_password", "ssl_key_password"))

    @model_validator(mode="after")
    def _consistent_security(self) -> KafkaConfig:
        sasl = self.security_protocol.startswith("SASL_")
        tls = self.security_protocol.endswith("SSL")
        if sasl and not self.sasl_username:
            raise ValueError(f"security_protocol {self.security_protocol} needs sasl_username")
        if sasl and not (self.sasl_password_env or self.sasl_password_file):
            raise ValueError(
                f"security_protocol {self.security_protocol} needs sasl_password_env "
                "(an environment variable name) or sasl_password_file (a path)"
            )
        if not sasl and (self.sasl_username or self.sasl_password_env or self.sasl_password_file):
            raise ValueError(
                f"sasl_* keys are set but security_protocol is {self.security_protocol}: "
                "use SASL_PLAINTEXT or SASL_SSL"
            )
        ssl_keys = [
            k
            for k in ("ssl_ca_location", "ssl_certificate_location", "ssl_key_location")
            if getattr(self, k)
        ]
        if ssl_keys and not tls:
            raise ValueError(
                f"{', '.join(ssl_keys)} set but security_protocol is {self.security_protocol}: "
                "use SSL or SASL_SSL"
            )
        if bool(self.ssl_certificate_location) != bool(self.ssl_key_location):
            raise ValueError("ssl_certificate_location and ssl_key_location go together")
        return self


class AnomalyConfig(_Section):
    """`hourly_anomaly`: an hour's spend against the scope's own recent hours."""

    factor: NonNegativeDecimal = Field(
        default=Decimal("3.0"),
        description="Alert when a scope's spend so far in a UTC hour exceeds `factor` x its "
        "mean hourly spend over the previous 24 h (empty hours count as zero).",
    )
    min_baseline_usd: UsdAmount = Field(
        default=Decimal("1.0"),
        description="No anomaly is judged while the previous 24 h spent less than this (USD).",
    )
    scopes: list[Literal["global", "team", "feature", "project", "user", "api_key", "session"]] = (
        Field(
            default=["global", "team", "feature", "api_key"],
            description="Scope kinds judged for anomalies.",
        )
    )
    method: Literal["plain", "seasonal"] = Field(
        default="plain",
        description='`"plain"`: the previous 24 h mean. `"seasonal"`: the same UTC hour on '
        "the previous `seasonal_days` days (for strongly diurnal traffic).",
    )
    seasonal_days: int = Field(
        default=7,
        ge=1,
        le=28,
        description='Days of history the `"seasonal"` method compares the hour with.',
    )


class RunawayConfig(_Section):
    """`runaway_rate`, `runaway_session` and `retry_storm` limits."""

    max_calls_per_minute: int = Field(
        default=120,
        ge=1,
        description="Calls in one UTC minute by one api key, or one session, above which "
        "`runaway_rate` fires (and its breaker opens with the default `[breaker] open_on`).",
    )
    max_session_turns: int = Field(
        default=100,
        ge=1,
        description="Turns of one session (calls, or the highest 1-based `turn`) above which "
        "`runaway_session` fires.",
    )
    max_session_cost_usd: UsdAmount = Field(
        default=Decimal("50.0"),
        description="Spend of one session (USD) above which `runaway_session` fires.",
    )
    max_session_minutes: NonNegativeDecimal = Field(
        le=MAX_DURATION_S // 60,
        default=Decimal("30"),
        description="Event-time span of one session (minutes) above which `runaway_session` fires.",
    )
    max_attempts: int = Field(
        default=5,
        ge=1,
        description="Attempts of one `request_id` above which `retry_storm` fires.",
    )


# A budget level at or above this reads as a percentage or dollars written for a fraction.
LIKELY_NOT_A_FRACTION = Decimal(10)


class BudgetConfig(_Section):
    """One budget (`[[budget]]`, repeatable): spend of a scope per UTC calendar period.

    Its alerts and breaker count the spend landed while it is configured. Across restarts a
    budget is known by its scope and period: moving entries, adding or removing others, or
    changing `amount_usd`, `alert_at` or `hard_limit` keeps its period's spend and what already
    fired. A budget added in the middle of a period (or given another scope or period) starts
    that period at $0 for its alerts and breaker, though the warehouse holds the period's
    earlier spend; budget leases do count that spend, so a new hard budget's leases may refuse
    calls (`BudgetExhausted`) before its `budget_exceeded` fires.
    """

    scope: str = Field(
        description="The scope the budget covers: `global`, `team:<t>`, `feature:<f>`, "
        "`project:<p>`, `user:<u>`, `api_key:<k>` or `session:<s>`.",
    )
    period: Literal["month", "day", "hour"] = Field(
        default="month", description="The UTC calendar period the amount is for."
    )
    amount_usd: UsdAmount = Field(description="The budget per period, in USD.")
    alert_at: list[NonNegativeDecimal] = Field(
        default=[Decimal("0.5"), Decimal("0.8"), Decimal("1.0")],
        description="Fractions of `amount_usd` at which a `budget_threshold` alert fires "
        "(each once per period; a fraction written twice, as `1` and `1.0`, is one level). "
        "Commands warn of a level of 10 or more, or such a `hard_limit`: written for 0.8, "
        "`80` is eighty times the budget.",
    )
    hard_limit: NonNegativeDecimal | None = Field(
        default=None,
        description="Fraction of `amount_usd` at which `budget_exceeded` fires and the "
        "scope's breaker opens until the period ends; unset: no hard limit. It fires once per "
        "period: after `spendstream breakers reset` the breaker stays closed for the rest of "
        "the period (budget leases still grant only what the budget has left).",
    )

    @field_validator("alert_at")
    @classmethod
    def _one_level_per_fraction(cls, levels: list[Decimal]) -> list[Decimal]:
        # Each level is named by its text (alert details, dedup keys, the fired set): `1` and
        # `1.0` were two levels, two alerts at one crossing. The first spelling stays, so a
        # level's name does not change under a running pipeline.
        out: list[Decimal] = []
        for level in levels:
            if level not in out:
                out.append(level)
        return out

    @model_validator(mode="after")
    def _scope_form(self) -> BudgetConfig:
        problem = scope_error(self.scope)
        if problem is not None:
            raise ValueError(problem)
        return self

    def advisories(self) -> list[str]:
        """What in this budget reads as a mistake without being one for certain: a level of
        10 or more is ten times the budget, far likelier a percentage (``80``) or dollars
        than a fraction (``0.8``). A level a little above 1 (an overdraft) is said nothing."""
        named = [("alert_at", level) for level in self.alert_at]
        if self.hard_limit is not None:
            named.append(("hard_limit", self.hard_limit))
        return [
            f"[[budget]] {self.scope}: {name} {level} is {level}x amount_usd "
            f"(${self.amount_usd} -> ${MONEY_CONTEXT.multiply(level, self.amount_usd)}); "
            f"{name} takes fractions of amount_usd (0.8 is 80%)"
            for name, level in named
            if level >= LIKELY_NOT_A_FRACTION
        ]

    @model_validator(mode="after")
    def _bars_below_money_limit(self) -> BudgetConfig:
        # Each bar (amount x level) is an alert's threshold, a column of the alerts table: a
        # bar past what DECIMAL(38,18) holds is one no spend can reach and no table can hold.
        named = [(f"alert_at {level}", level) for level in self.alert_at]
        if self.hard_limit is not None:
            named.append((f"hard_limit {self.hard_limit}", self.hard_limit))
        for name, factor in named:
            bar = MONEY_CONTEXT.multiply(factor, self.amount_usd)
            if bar >= MAX_MONEY_USD:
                raise ValueError(
                    f"amount_usd x {name} is {bar:.6E} USD: a budget's bar must be below 1e20 "
                    "(what the warehouse's DECIMAL(38,18) holds)"
                )
        return self


class BreakerConfig(_Section):
    """Circuit breakers: which alerts open one, and how each closes again."""

    open_on: list[str] = Field(
        default=["runaway_rate", "runaway_session", "budget_exceeded"],
        description="Alert kinds that open a breaker on the alert's scope (clients refuse "
        "calls through `meter.guard()` while it is open).",
    )
    rate_cooldown_s: int = Field(
        le=MAX_DURATION_S,
        default=300,
        ge=1,
        description="A rate breaker goes half-open after this many event-time seconds, and "
        "closes a minute later unless it trips again.",
    )
    stay_open_retention_s: int = Field(
        le=MAX_DURATION_S,
        default=7 * 86400,
        ge=3600,
        description="A breaker that stays open (runaway session, unpriced model) is retired, "
        "with a `closed` event, after this much event time, so no state grows forever.",
    )
    # Without it a key whose breaker stops its only traffic would never see the event time
    # that closes it.
    idle_advance_s: float = Field(
        le=MAX_DURATION_S,
        default=60.0,
        ge=0,
        description="`spendstream run` and a live `spendstream ingest -`: when no fact has "
        "been judged for this many seconds, breakers move on by the quiet time as if event "
        "time had passed. 0 turns it off (breakers then move by event time alone, as in "
        "`ingest` of files).",
    )
    hmac_key_env: str | None = Field(
        default=None,
        description="Environment variable holding the HMAC-SHA256 key (at least 32 "
        "characters) that signs every record on the breakers topic; with a key, clients "
        "ignore records they cannot verify. Unset: anyone who can produce to the topic can "
        "open or close breakers (docs/kafka.md, Breaker records).",
    )
    hmac_key_file: str | None = Field(
        default=None, description="A file holding the breaker HMAC key instead."
    )

    @model_validator(mode="before")
    @classmethod
    def _secrets(cls, data: Any) -> Any:
        return _no_inline_secret(data, ("hmac_key",))


DEFAULT_MAX_FUTURE_SKEW_S = 300


class DetectionConfig(_Section):
    """Lateness, how far ahead of its receipt an event may be, session expiry, and the
    `retry_storm` share and `cache_hit_drop` rules."""

    allowed_lateness_s: int = Field(
        le=MAX_DURATION_S,
        default=3600,
        ge=0,
        description="An event later than this (event time, behind the newest seen) still "
        "lands but no longer moves detector windows.",
    )
    # Capped by allowed_lateness_s: detection's clock is the newest ts it has seen, so a
    # record this far ahead leaves real traffic at most this late, which then still counts.
    max_future_skew_s: int = Field(
        le=MAX_DURATION_S,
        default=DEFAULT_MAX_FUTURE_SKEW_S,
        ge=0,
        description="A record whose `ts` is more than this many seconds after the pipeline "
        "received it is a dead letter (docs/bounds.md). At most `allowed_lateness_s`; "
        "unset: 300, or `allowed_lateness_s` if that is smaller.",
    )
    session_idle_s: int = Field(
        le=MAX_DURATION_S,
        default=6 * 3600,
        ge=60,
        description="A session with no call for this long is forgotten (an open breaker "
        "on it is kept).",
    )
    # At 100 calls a 30% share is many standard deviations above a normal few-% retry rate.
    retry_share_factor: NonNegativeDecimal = Field(
        default=Decimal("3"),
        description="`retry_storm` (share form) fires when a key's error/retry share this "
        "hour is over `retry_share_factor` x its share over the previous 24 h...",
    )
    retry_min_share: NonNegativeDecimal = Field(
        default=Decimal("0.3"),
        description="...and at least this share of the hour's calls...",
    )
    retry_min_calls: int = Field(
        default=100, ge=1, description="...and the key made at least this many calls in the hour."
    )
    cache_drop_points: NonNegativeDecimal = Field(
        default=Decimal("0.2"),
        description="`cache_hit_drop` fires when a feature's cache-read share of input "
        "tokens this hour is this many points (0.2 = 20 points) below its previous 24 h...",
    )
    cache_min_baseline_share: NonNegativeDecimal = Field(
        default=Decimal("0.5"),
        description="...whose share was at least this...",
    )
    cache_min_input_tokens: int = Field(
        default=100_000,
        ge=1,
        description="...and the hour had at least this many input tokens.",
    )

    @model_validator(mode="before")
    @classmethod
    def _skew_default(cls, data: Any) -> Any:
        if isinstance(data, dict) and "max_future_skew_s" not in data:
            lateness = data.get("allowed_lateness_s", 3600)
            if isinstance(lateness, int) and 0 <= lateness < DEFAULT_MAX_FUTURE_SKEW_S:
                return {**data, "max_future_skew_s": lateness}
        return data

    @model_validator(mode="after")
    def _skew_within_lateness(self) -> DetectionConfig:
        if self.max_future_skew_s > self.allowed_lateness_s:
            raise ValueError(
                f"max_future_skew_s ({self.max_future_skew_s}) must not exceed "
                f"allowed_lateness_s ({self.allowed_lateness_s}): one record that far ahead "
                "would make real traffic too late for detection"
            )
        return self


class ModelPriceConfig(_Section):
    """A price override (`[[prices.model]]`, repeatable); it wins over the catalog.

    Unset rates default to the rate of the tokens they are part of (cache and modal input
    rates to the input rate, 1-hour writes to the cache write rate, cached audio/images to
    the cache read rate, output audio/images to the output rate). A row without
    `effective_from`/`effective_until` prices every matching event whatever its `ts`. When a
    provider changes a price you keep here, keep the old row, give it `effective_until` (or
    leave it undated) and add the new one with `effective_from`: each event then takes the
    row in force at its `ts` (the most specific match first, then the latest
    `effective_from`), live and in `spendstream prices reprice`, so repricing any range
    changes only the facts from the new date on. An event no row is in force for (before
    the first dated row, with no undated one) is priced by the catalog, or is unpriced
    when the catalog has no price for it.
    """

    provider: str = Field(description="Provider id as in events (matched case-insensitively).")
    model: str = Field(description="Model id as in events (matched case-insensitively).")
    service_tier: str | None = Field(
        default=None,
        description="Only events with this `service_tier`; unset: any. The most specific "
        "matching entry wins.",
    )
    region: str | None = Field(
        default=None, description="Only events with this `region`; unset: any."
    )
    input_per_mtok: UsdAmount = Field(description="USD per million uncached input tokens.")
    output_per_mtok: UsdAmount = Field(description="USD per million output tokens.")
    cache_read_per_mtok: UsdAmount | None = Field(
        default=None, description="USD per million cache-read tokens; unset: the input rate."
    )
    cache_write_per_mtok: UsdAmount | None = Field(
        default=None, description="USD per million cache-write tokens; unset: the input rate."
    )
    cache_write_1h_per_mtok: UsdAmount | None = Field(
        default=None,
        description="USD per million 1-hour cache-write tokens; unset: the cache-write rate.",
    )
    input_audio_per_mtok: UsdAmount | None = Field(
        default=None,
        description="USD per million uncached audio input tokens; unset: the input rate.",
    )
    cache_audio_read_per_mtok: UsdAmount | None = Field(
        default=None,
        description="USD per million cache-read audio tokens; unset: the cache-read rate if "
        "set, else the audio input rate, else the input rate.",
    )
    input_image_per_mtok: UsdAmount | None = Field(
        default=None,
        description="USD per million uncached image input tokens; unset: the input rate.",
    )
    cache_image_read_per_mtok: UsdAmount | None = Field(
        default=None,
        description="USD per million cache-read image tokens; unset: the cache-read rate if "
        "set, else the image input rate, else the input rate.",
    )
    output_audio_per_mtok: UsdAmount | None = Field(
        default=None, description="USD per million audio output tokens; unset: the output rate."
    )
    output_image_per_mtok: UsdAmount | None = Field(
        default=None, description="USD per million image output tokens; unset: the output rate."
    )
    request_fee_usd: UsdAmount = Field(
        default=Decimal(0), description="A flat fee per request (folded into `input_cost_usd`)."
    )
    tool_per_k: dict[str, UsdAmount] = Field(
        default={},
        description="USD per thousand requests of a server-side tool, by tool name, e.g. "
        "`{web_search = 10}`.",
    )
    batch_discount: NonNegativeDecimal | None = Field(
        default=None,
        description="Fraction off for `batch = true` calls (0.5 = half price); unset: the "
        "catalog's batch price, else 50% for anthropic, openai and google.",
    )
    effective_from: Instant | None = Field(default=None, description=_FROM_DOC)
    effective_until: Instant | None = Field(default=None, description=_UNTIL_DOC)

    @model_validator(mode="after")
    def _dated(self) -> Self:
        return _dates_in_order(self)


class DiscountConfig(_Section):
    """A negotiated discount (`[[prices.discount]]`, repeatable), applied after batch.
    Dated rows (`effective_from`/`effective_until`) apply only to events in their range."""

    provider: str | None = Field(
        default=None, description="Only this provider's calls; unset: every provider."
    )
    model: str | None = Field(
        default=None, description="Only this model's calls; unset: every model."
    )
    percent: Annotated[Decimal, BeforeValidator(_to_decimal), Field(ge=0, le=100)] = Field(
        description="Percent off list price. The most specific matching row wins "
        "(provider+model > model > provider > neither)."
    )
    effective_from: Instant | None = Field(default=None, description=_FROM_DOC)
    effective_until: Instant | None = Field(default=None, description=_UNTIL_DOC)

    @model_validator(mode="after")
    def _dated(self) -> Self:
        return _dates_in_order(self)


class PremiumConfig(_Section):
    """A `[[prices.premium]]` row: a percentage added to list price (regional endpoints,
    data residency, a service tier the catalog does not price). The most specific matching
    row applies, on top of the catalog's or an override's rates; dated rows
    (`effective_from`/`effective_until`) only to events in their range."""

    provider: str | None = Field(default=None, description="Only this provider; unset: any.")
    model: str | None = Field(default=None, description="Only this model; unset: any.")
    service_tier: str | None = Field(
        default=None, description="Only this service tier; unset: any."
    )
    region: str | None = Field(default=None, description="Only this region; unset: any.")
    percent: Annotated[Decimal, BeforeValidator(_to_decimal), Field(ge=0, le=1000)] = Field(
        description="Percent added to list price."
    )
    effective_from: Instant | None = Field(default=None, description=_FROM_DOC)
    effective_until: Instant | None = Field(default=None, description=_UNTIL_DOC)

    @model_validator(mode="after")
    def _dated(self) -> Self:
        return _dates_in_order(self)


class PricesConfig(_Section):
    """Prices: overrides of the genai-prices catalog and negotiated discounts."""

    model: list[ModelPriceConfig] = Field(
        default=[], description="Price overrides, one `[[prices.model]]` table each."
    )
    discount: list[DiscountConfig] = Field(
        default=[], description="Negotiated discounts, one `[[prices.discount]]` table each."
    )
    premium: list[PremiumConfig] = Field(
        default=[], description="Premiums, one `[[prices.premium]]` table each."
    )

    @model_validator(mode="after")
    def _histories(self) -> Self:
        for name in ("model", "discount", "premium"):
            _check_history(name, getattr(self, name))
        return self


def _match_key(row: Any) -> tuple[str | None, ...]:
    # Rows with equal keys compete for the same events (the rate card's matching).
    def norm(v: str | None) -> str | None:
        return None if v is None else v.strip().lower()

    key: tuple[str | None, ...] = (norm(row.provider), norm(row.model))
    if isinstance(row, ModelPriceConfig | PremiumConfig):
        tier, region = row.service_tier, row.region
        if isinstance(row, PremiumConfig):
            tier, region = norm(tier), norm(region)
        key += (tier, region)
    return key


def _check_history(name: str, rows: list[Any]) -> None:
    """Dated rows of one match must not claim the same instant: no two share an
    `effective_from`, and none's `effective_until` runs past the next one's start."""
    histories: dict[tuple[str | None, ...], list[tuple[int, Any]]] = {}
    for i, row in enumerate(rows):
        if row.effective_from is not None or row.effective_until is not None:
            histories.setdefault(_match_key(row), []).append((i, row))
    never = datetime.min.replace(tzinfo=UTC)
    for dated in histories.values():
        dated.sort(key=lambda item: item[1].effective_from or never)
        for (i, a), (j, b) in itertools.pairwise(dated):
            what = f"prices.{name}.{i} and prices.{name}.{j} (the same match)"
            if a.effective_from == b.effective_from:
                since = "always" if a.effective_from is None else instant_label(a.effective_from)
                raise ValueError(f"{what} both have effective_from {since}: one must go")
            # An open row (no effective_until) ends where the next one starts.
            if a.effective_until is not None and a.effective_until > b.effective_from:
                raise ValueError(
                    f"{what} overlap: effective_until {instant_label(a.effective_until)} "
                    f"is after the next row's effective_from {instant_label(b.effective_from)}"
                )


class HttpConfig(_Section):
    """The HTTP endpoints every `spendstream run` worker serves (`POST /v1/events`, ...)."""

    host: str = Field(
        default="127.0.0.1",
        description='Interface to listen on; `"0.0.0.0"` for every interface (containers).',
    )
    port: int = Field(default=8787, ge=0, le=65535, description="Port to listen on.")
    token_env: str = Field(
        default="SPENDSTREAM_INGEST_TOKEN",
        description="Environment variable holding the bearer token every HTTP endpoint but "
        "`/healthz` requires (tokens never go in the TOML). No token: they answer 503.",
    )
    token_file: str | None = Field(
        default=None,
        description="A file holding the bearer token instead (wins over `token_env`).",
    )
    metrics_label_values: int = Field(
        default=100,
        ge=1,
        le=10_000,
        description="`/metrics` labels taken from data (e.g. team) keep at most this many "
        "distinct values per metric; later ones are counted under `other`.",
    )

    @model_validator(mode="before")
    @classmethod
    def _secrets(cls, data: Any) -> Any:
        return _no_inline_secret(data, ("token",))


class PipelineConfig(_Section):
    """Batching of the stream stages."""

    batch_size: int = Field(
        default=2000,
        ge=1,
        description="Records per batch of a usage partition in `spendstream run` (and when "
        "`ingest` reads stdin).",
    )
    # bench.kafka_pipeline, one worker catching up on 1M events: at batch_size 2000 17.4k
    # events/s (16.1k per CPU second), in batches of 20000 ~60k; a batch's commit, facts
    # record and partials cost ~70 ms of the usage thread whatever its size.
    backlog_batch_size: int = Field(
        default=20_000,
        ge=1,
        le=100_000,
        description="`spendstream run`: a usage partition with more than `batch_size` records "
        "unread lands them in batches of up to this many (all it has unread, at most this), "
        "as `ingest` reading stdin does with the lines it has read ahead; "
        "so a worker catching up pays a warehouse commit, a facts record and partials per "
        "this many records instead of per `batch_size`; a live partition keeps `batch_size`. "
        "A worker may buffer up to this many records per partition it reads (~1 KB each). "
        "At or below `batch_size`: every batch is `batch_size`.",
    )
    # bench/RESULTS.md breaker_latency: p99 671 ms at 0.5, 459 ms at 0.2, 355 ms at 0.1.
    batch_within_s: float = Field(
        le=MAX_DURATION_S,
        default=0.2,
        gt=0,
        description="How long a batch may wait to fill in `spendstream run` and in `ingest` "
        "reading stdin (a line on a pipe lands this long after it came, at most): the "
        "runaway-to-refusal latency follows it; lower also means more, smaller Parquet "
        "files under light traffic (`spendstream warehouse compact`).",
    )
    # 2000 -> 20000 took 1M events from 76 s to 46 s.
    ingest_batch_size: int = Field(
        default=20_000,
        ge=1,
        description="Events per batch of `ingest`/`demo` over files: larger batches "
        "amortise the per-commit cost.",
    )
    align_idle_s: float = Field(
        le=MAX_DURATION_S,
        default=10.0,
        gt=0,
        description="`spendstream run`: a usage partition holds the wide-scope merges back "
        "while it has records not yet read (however long that takes: its worker died and "
        "another takes it over); only when the usage topic's end cannot be read does a "
        "partition silent this long stop holding the others back.",
    )


class LeasesConfig(_Section):
    """Budget leases (docs/budget-leases.md): hard caps that hold under concurrency."""

    # The service's side.
    ttl_s: float = Field(
        default=30.0,
        gt=0,
        le=86400,
        description="How long a lease may be drawn on (it ends early at its budget period's end).",
    )
    grace_s: float = Field(
        default=30.0,
        ge=0,
        le=86400,
        description="How long after a lease ends its unused remainder returns to the budget: "
        "time for calls started under it to finish and settle.",
    )
    min_grant_usd: UsdAmount = Field(
        default=Decimal("0.01"),
        description="The smallest lease fair share grants (unless the budget has less left: "
        "then what the call needs, if that much is left).",
    )
    max_grant_usd: UsdAmount | None = Field(
        default=None,
        description="The largest lease fair share grants; unset: no cap but the fair share.",
    )
    # The client's side.
    refill_calls: int = Field(
        default=16,
        ge=1,
        le=1_000_000,
        description="A client's refill asks for this many calls of the size being reserved.",
    )
    idle_return_s: float = Field(
        le=MAX_DURATION_S,
        default=5.0,
        gt=0,
        description="A client gives an unused lease back after this many idle seconds.",
    )
    request_timeout_s: float = Field(
        le=MAX_DURATION_S,
        default=2.0,
        gt=0,
        description="How long a client's refill waits for the lease server; past it the call "
        "is refused with `LeaseUnavailable`.",
    )
    refusal_hold_s: float = Field(
        le=MAX_DURATION_S,
        default=0.25,
        ge=0,
        description="How long a client remembers a refusal before asking again (the "
        "refusal's `retry_after_s` if sooner).",
    )
    # The Kafka path.
    partitions: int = Field(
        default=6,
        ge=1,
        description="Partitions of `spendstream.lease-requests` (keyed by scope); the ledger "
        "changelog has as many.",
    )
    reply_partitions: int = Field(
        default=6, ge=1, description="Partitions of `spendstream.lease-replies`."
    )
    group_id: str = Field(
        default="spendstream-leases",
        min_length=1,
        description="The consumer group of the lease servers (`spendstream leases serve` and "
        "the ones `spendstream run` hosts).",
    )
    serve_in_run: bool = Field(
        default=True,
        description="Each `spendstream run` worker hosts a lease server (in the lease servers' "
        "group) when a `[[budget]]` has `hard_limit`; false: run `spendstream leases serve` "
        "yourself.",
    )

    @model_validator(mode="after")
    def _grant_bounds(self) -> LeasesConfig:
        if self.max_grant_usd is not None and self.max_grant_usd < self.min_grant_usd:
            raise ValueError(
                f"max_grant_usd ({self.max_grant_usd}) is below min_grant_usd ({self.min_grant_usd})"
            )
        return self


# Event fields an OpenTelemetry span can fill from its own or its resource's attributes.
OtelField = Literal[
    "team",
    "feature",
    "project",
    "environment",
    "cost_center",
    "user_id",
    "api_key_id",
    "session_id",
    "parent_session_id",
    "request_id",
    "turn",
    "attempt",
    "reported_cost_usd",
]
# For each field, the attribute keys tried in order; each key is looked up on the span
# first, then on its resource. The first one present wins. docs/producers.md explains each.
OTEL_DEFAULT_ATTRIBUTES: dict[OtelField, list[str]] = {
    "team": ["spendstream.team", "team", "service.namespace"],
    "feature": ["spendstream.feature", "feature", "service.name"],
    "project": ["spendstream.project", "project"],
    "environment": [
        "spendstream.environment",
        "deployment.environment.name",
        "deployment.environment",
    ],
    "cost_center": ["spendstream.cost_center", "cost_center"],
    "user_id": ["spendstream.user_id", "user.id", "enduser.id"],
    "api_key_id": ["spendstream.api_key_id"],
    "session_id": ["spendstream.session_id", "gen_ai.conversation.id", "session.id"],
    "parent_session_id": ["spendstream.parent_session_id"],
    "request_id": ["spendstream.request_id"],
    "turn": ["spendstream.turn"],
    "attempt": ["spendstream.attempt"],
    "reported_cost_usd": ["spendstream.reported_cost_usd", "gen_ai.usage.cost"],
}


class OtelConfig(_Section):
    """OpenTelemetry GenAI spans -> usage events (`POST /v1/traces`, `ingest --format otlp`)."""

    attributes: dict[OtelField, list[str]] = Field(
        default=OTEL_DEFAULT_ATTRIBUTES,
        description="Per event field, the span/resource attribute keys to try in order (the "
        "span first, then its resource; the first present wins). A field given here replaces "
        "its default list (`[]` turns it off); fields not given keep their defaults "
        "(docs/producers.md lists them).",
    )
    input_excludes_cache: list[str] = Field(
        default=[],
        description="Providers whose instrumentation reports `gen_ai.usage.input_tokens` "
        "without the cached tokens (against the semantic conventions): their cache reads "
        "and writes are added to the input.",
    )
    ignore_operations: list[str] = Field(
        default=[
            "invoke_agent",
            "create_agent",
            "invoke_workflow",
            "execute_tool",
            "retrieval",
        ],
        description="`gen_ai.operation.name` values that are not one model call (an agent's "
        "span may carry the summed usage of the calls under it: metering it too would count "
        "them twice).",
    )
    tag_attributes: list[str] = Field(
        default=[], description="Span or resource attributes copied into the event's tags."
    )

    @model_validator(mode="before")
    @classmethod
    def _merge_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("attributes"), dict):
            data = {**data, "attributes": {**OTEL_DEFAULT_ATTRIBUTES, **data["attributes"]}}
        return data


AlertSeverity = Literal["info", "warning", "critical"]


class _SinkBase(_Section):
    name: str = Field(min_length=1, description="The sink's name, used by routes.")
    max_per_scope: int = Field(
        default=10,
        ge=1,
        description="Notifications per scope within `rate_window_s`; beyond it they are "
        "suppressed (counted, not sent).",
    )
    rate_window_s: float = Field(
        le=MAX_DURATION_S,
        default=3600,
        gt=0,
        description="The window of `max_per_scope`, in seconds.",
    )


class PagerDutySinkConfig(_SinkBase):
    """PagerDuty Events API v2."""

    type: Literal["pagerduty"] = Field(description='`"pagerduty"`.')
    url: str = Field(
        default="https://events.pagerduty.com/v2/enqueue",
        description="Events API endpoint (http:// or https://).",
    )

    @field_validator("url")
    @classmethod
    def _url_has_scheme(cls, value: str) -> str:
        return _http_url(value)

    routing_key_env: str | None = Field(
        default="PAGERDUTY_ROUTING_KEY",
        description="Environment variable holding the integration's routing key.",
    )
    routing_key_file: str | None = Field(
        default=None, description="A file holding the routing key instead."
    )
    source: str = Field(default="spendstream", description="The event's `source` field.")
    severity_map: dict[AlertSeverity, Literal["critical", "error", "warning", "info"]] = Field(
        default={"critical": "critical", "warning": "warning", "info": "info"},
        description="Alert severity -> PagerDuty severity (critical, error, warning, info).",
    )

    @model_validator(mode="before")
    @classmethod
    def _secrets(cls, data: Any) -> Any:
        return _no_inline_secret(data, ("routing_key",))


class SlackSinkConfig(_SinkBase):
    """A Slack incoming webhook."""

    type: Literal["slack"] = Field(description='`"slack"`.')
    webhook_url_env: str | None = Field(
        default="SLACK_WEBHOOK_URL",
        description="Environment variable holding the incoming-webhook URL (a secret).",
    )
    webhook_url_file: str | None = Field(
        default=None, description="A file holding the webhook URL instead."
    )

    @model_validator(mode="before")
    @classmethod
    def _secrets(cls, data: Any) -> Any:
        return _no_inline_secret(data, ("webhook_url",))


class WebhookSinkConfig(_SinkBase):
    """A generic JSON webhook, HMAC-signed when a secret is set."""

    type: Literal["webhook"] = Field(description='`"webhook"`.')
    url: str = Field(description="The URL notifications are POSTed to (http:// or https://).")

    @field_validator("url")
    @classmethod
    def _url_has_scheme(cls, value: str) -> str:
        return _http_url(value)

    secret_env: str | None = Field(
        default=None,
        description="Environment variable holding the HMAC-SHA256 signing secret; unset: unsigned.",
    )
    secret_file: str | None = Field(default=None, description="A file holding the secret instead.")

    @model_validator(mode="before")
    @classmethod
    def _secrets(cls, data: Any) -> Any:
        return _no_inline_secret(data, ("secret",))


class ConsoleSinkConfig(_SinkBase):
    """One line per notification on the console."""

    type: Literal["console"] = Field(description='`"console"`.')
    stream: Literal["stdout", "stderr", "log"] = Field(
        default="stderr", description="Where the lines go (`log`: the spendstream logger)."
    )


SinkConfig = Annotated[
    PagerDutySinkConfig | SlackSinkConfig | WebhookSinkConfig | ConsoleSinkConfig,
    Field(discriminator="type"),
]


class RouteConfig(_Section):
    """Which alerts go to which sinks (`[[alerts.route]]`). Empty filters match everything."""

    name: str = Field(min_length=1, description="The route's name (in logs and state).")
    sinks: list[str] = Field(min_length=1, description="Names of the sinks it delivers to.")
    kinds: list[str] = Field(default=[], description="Alert kinds it takes; empty: all.")
    min_severity: AlertSeverity = Field(
        default="info", description="Lowest severity it takes (`info`, `warning`, `critical`)."
    )
    scopes: list[str] = Field(
        default=[], description='Glob patterns over the scope, e.g. `"session:*"`; empty: all.'
    )
    teams: list[str] = Field(
        default=[],
        description='The alert\'s team (scope `team:<t>` or `details["team"]`); empty: all.',
    )
    quiet_hours: str | None = Field(
        default=None,
        pattern=r"^\d\d:\d\d-\d\d:\d\d$",
        description='UTC `"HH:MM-HH:MM"`, from the first minute up to (not including) the '
        "second, wrapping past midnight when the second is earlier; inside it only alerts at "
        '`quiet_min_severity` or above are sent. The same time twice (`"22:00-22:00"`) is an '
        "empty window: never quiet.",
    )
    quiet_min_severity: AlertSeverity = Field(
        default="critical", description="The severity that still pages during quiet hours."
    )
    group_by: list[str] = Field(
        default=[],
        description="Fields whose equal values fold alerts into one notification with a count "
        '(`"kind"`, `"scope"`, `"team"` or any details key, e.g. `"api_key_id"`); empty: one '
        "notification per dedup key.",
    )
    auto_resolve_s: float | None = Field(
        le=MAX_DURATION_S,
        default=None,
        gt=0,
        description="Resolve an open notification this long after its last alert when no "
        "breaker closes it; unset: only a closing breaker resolves.",
    )
    continue_matching: bool = Field(
        default=False,
        description="false: the first matching route wins; true: later routes are tried too.",
    )


class DeliveryConfig(_Section):
    """Retries of a notification before it is dead-lettered."""

    max_attempts: int = Field(default=8, ge=1, description="Attempts per notification and sink.")
    backoff_initial_s: float = Field(
        le=MAX_DURATION_S,
        default=0.5,
        gt=0,
        description="First retry delay; it doubles per attempt.",
    )
    backoff_max_s: float = Field(
        le=MAX_DURATION_S, default=30.0, gt=0, description="Longest retry delay."
    )
    retry_budget_s: float = Field(
        le=MAX_DURATION_S,
        default=300.0,
        gt=0,
        description="Total time one notification may spend retrying before it is dead-lettered "
        "(`spendstream alerts --replay-dead-letters` sends those again).",
    )
    timeout_s: float = Field(
        le=MAX_DURATION_S, default=10.0, gt=0, description="HTTP timeout of one attempt."
    )
    sink_down_s: float = Field(
        le=MAX_DURATION_S,
        default=60.0,
        ge=0,
        description="After a sink has given up on a notification (retries spent on a "
        "connection failure, timeout, 5xx or 429), for this long its other notifications are "
        "dead-lettered without an attempt; then one attempt tells whether it is back. "
        "0: every notification gets its full retries.",
    )
    auto_replay: bool = Field(
        default=True,
        strict=True,
        description="When a sink that gave up answers again, send its dead letters from the "
        "outage (connection failures, timeouts, 5xx, 429, skipped while down) again, oldest "
        "first, superseded ones excepted; with `sink_down_s` > 0 a quiet router also tries a "
        "down sink with its oldest one once the cool-down is over. 4xx refusals are left for "
        "`spendstream alerts --replay-dead-letters`. false: only that command sends them.",
    )


class AlertsConfig(_Section):
    """The alert router (`spendstream alerts`, and `ingest` when sinks are configured)."""

    group_id: str = Field(
        default="spendstream-alerts", description="Kafka consumer group of `spendstream alerts`."
    )
    link_base_url: str | None = Field(
        default=None,
        description="Base URL of a page that can show a scope (a dashboard, `spendstream "
        "serve`); notifications link to `<link_base_url>?scope=<scope>`. Unset: they show "
        "the SQL to investigate.",
    )
    delivery: DeliveryConfig = Field(default=DeliveryConfig(), description=DeliveryConfig.__doc__)
    route: list[RouteConfig] = Field(
        default=[],
        description="Routes, one `[[alerts.route]]` table each; none: every alert goes to "
        "every sink.",
    )
    sink: list[SinkConfig] = Field(
        default=[], description="Sinks, one `[[alerts.sink]]` table each (by `type`)."
    )

    @model_validator(mode="after")
    def _sinks_exist(self) -> AlertsConfig:
        names = [s.name for s in self.sink]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"sink names must be unique: {', '.join(dupes)}")
        for r in self.route:
            unknown = [s for s in r.sinks if s not in names]
            if unknown:
                near = [
                    m for u in unknown for m in difflib.get_close_matches(u, names, n=1, cutoff=0.6)
                ]
                raise ValueError(
                    f"route {r.name!r} names unknown sink(s): {', '.join(unknown)}"
                    + (f"; did you mean {', '.join(near)}?" if near else "")
                    + (
                        f" (the [[alerts.sink]] names: {', '.join(names)})"
                        if names
                        else " (no [[alerts.sink]] is configured)"
                    )
                )
        return self


class WarehouseS3Config(_Section):
    """Object storage for `[warehouse] location = "s3://..."` (any S3-compatible server)."""

    endpoint_url: str | None = Field(
        default=None,
        description="The S3 endpoint; unset: AWS's own endpoints. A local or self-hosted "
        'server: e.g. `"http://127.0.0.1:9000"`.',
    )
    region: str = Field(default="us-east-1", description="The bucket's region.")
    access_key_id_env: str = Field(
        default="AWS_ACCESS_KEY_ID",
        description="Environment variable holding the access key id (never the key itself).",
    )
    secret_access_key_env: str = Field(
        default="AWS_SECRET_ACCESS_KEY",
        description="Environment variable holding the secret access key (never the key itself).",
    )
    # Servers that do not implement the newer AWS SDK checksums (s3proxy 2.6) need
    # "when_required"; real S3 does not.
    checksums: Literal["when_supported", "when_required"] = Field(
        default="when_supported",
        description="`when_required`: send and check request checksums only where the S3 API "
        "requires them (servers without the newer AWS SDK checksums, e.g. s3proxy 2.6, need "
        "it). Sets `AWS_REQUEST_CHECKSUM_CALCULATION` / `AWS_RESPONSE_CHECKSUM_VALIDATION`.",
    )

    @model_validator(mode="before")
    @classmethod
    def _secrets(cls, data: Any) -> Any:
        data = _no_inline_secret(data, ("access_key_id", "secret_access_key"))
        return data


class WarehouseConfig(_Section):
    """Where the Iceberg tables live (docs/warehouse.md). Defaults: all under the workdir."""

    catalog_uri: str = Field(
        default="",
        description="SQLAlchemy URL of the Iceberg SQL catalog. Empty: SQLite at "
        "`<workdir>/warehouse/catalog.db`. A cluster: "
        '`"postgresql+psycopg2://user@host:5432/db"` (no password in it: see '
        "`catalog_password_env`).",
    )
    catalog_password_env: str = Field(
        default="SPENDSTREAM_CATALOG_PASSWORD",
        description="Environment variable holding the catalog database's password.",
    )
    catalog_name: str = Field(
        default="spendstream", min_length=1, description="The Iceberg catalog's name."
    )
    location: str = Field(
        default="",
        description="Where table data and metadata go: an absolute path, `file://...` or "
        '`"s3://bucket/prefix"` (see `[warehouse.s3]`). Empty: `<workdir>/warehouse/tables`.',
    )
    namespace: str = Field(
        default="spendstream",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="The Iceberg namespace holding spendstream's tables.",
    )
    commit_retries: int = Field(
        default=30,
        ge=0,
        description="How many times a commit that lost the race to another writer refreshes "
        "and tries again before it fails.",
    )
    commit_backoff_min_ms: float = Field(
        le=MAX_DURATION_S * 1000,
        default=20.0,
        ge=0,
        description="First wait between commit retries; it doubles (with jitter) up to "
        "`commit_backoff_max_ms`.",
    )
    commit_backoff_max_ms: float = Field(
        le=MAX_DURATION_S * 1000,
        default=2000.0,
        ge=0,
        description="Longest wait between commit retries.",
    )
    dedupe_window_days: int = Field(
        default=2,
        ge=1,
        le=60,
        description="Dedupe by `event_id`: keys of facts whose `ts` is within this many days "
        "of the newest landed `ts` are held in memory; older events are checked against their "
        "own day in the table.",
    )
    snapshot_retention_s: float = Field(
        le=MAX_DURATION_S,
        default=3600.0,
        ge=0,
        description="`warehouse compact` expires snapshots older than this (the newest is "
        "always kept).",
    )
    max_snapshots: int = Field(
        default=128,
        ge=0,
        description="Writers keep the facts table's history under this many snapshots between "
        "compactions (each commit rewrites, and each writer parses, a metadata file listing "
        "them all with every writer's keys): past it, the oldest half goes. 0: only "
        "`warehouse compact` expires snapshots.",
    )
    orphan_grace_s: float = Field(
        le=MAX_DURATION_S,
        default=3600.0,
        ge=0,
        description="Unreferenced files (a killed writer's uncommitted data) are deleted after "
        "this long. Keep it well above a batch's time from being priced to its commit: its "
        "data files are written first and named by nothing until the commit.",
    )
    target_file_mb: int = Field(
        default=128,
        ge=1,
        description="Compaction rewrites a day's files into files of about this size.",
    )
    s3: WarehouseS3Config = Field(
        default=WarehouseS3Config(), description=WarehouseS3Config.__doc__
    )

    @model_validator(mode="after")
    def _no_password_in_uri(self) -> WarehouseConfig:
        from urllib.parse import urlsplit

        if self.catalog_uri and urlsplit(self.catalog_uri).password:
            raise ValueError(
                "catalog_uri must not contain a password; put it in the environment "
                f"variable named by catalog_password_env ({self.catalog_password_env})"
            )
        if self.location and not self.location.startswith(("s3://", "file://", "/")):
            raise ValueError("location must be an absolute path, file://... or s3://bucket/...")
        return self


class Config(BaseModel):
    """The whole configuration tree."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kafka: KafkaConfig = Field(default=KafkaConfig(), description=KafkaConfig.__doc__)
    anomaly: AnomalyConfig = Field(default=AnomalyConfig(), description=AnomalyConfig.__doc__)
    runaway: RunawayConfig = Field(default=RunawayConfig(), description=RunawayConfig.__doc__)
    budget: list[BudgetConfig] = Field(default=[], description=BudgetConfig.__doc__)
    breaker: BreakerConfig = Field(default=BreakerConfig(), description=BreakerConfig.__doc__)
    detection: DetectionConfig = Field(
        default=DetectionConfig(), description=DetectionConfig.__doc__
    )
    prices: PricesConfig = Field(default=PricesConfig(), description=PricesConfig.__doc__)
    http: HttpConfig = Field(default=HttpConfig(), description=HttpConfig.__doc__)
    pipeline: PipelineConfig = Field(default=PipelineConfig(), description=PipelineConfig.__doc__)
    alerts: AlertsConfig = Field(default=AlertsConfig(), description=AlertsConfig.__doc__)
    otel: OtelConfig = Field(default=OtelConfig(), description=OtelConfig.__doc__)
    warehouse: WarehouseConfig = Field(
        default=WarehouseConfig(), description=WarehouseConfig.__doc__
    )
    leases: LeasesConfig = Field(default=LeasesConfig(), description=LeasesConfig.__doc__)


def _union_members(annotation: Any) -> list[Any]:
    if get_origin(annotation) in (Union, types.UnionType):
        return [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) is Annotated:
        return _union_members(get_args(annotation)[0])
    return [annotation]


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The model whose keys are valid at ``loc`` (a pydantic error location), if any."""
    model: type[BaseModel] = Config
    pending: list[Any] = []  # annotations still to unwrap (lists, unions)
    for part in loc:
        if pending:
            candidates = pending
            pending = []
            if isinstance(part, int):
                items = [get_args(c)[0] for c in candidates if get_origin(c) is list]
                pending = [m for a in items for m in _union_members(a)]
                continue
            # A discriminated union names the member by its tag in the location.
            tagged = [
                c
                for c in candidates
                if isinstance(c, type) and issubclass(c, BaseModel) and _tag_of(c) == part
            ]
            if not tagged:
                return None
            model = tagged[0]
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        members = _union_members(field.annotation)
        if len(members) == 1 and isinstance(members[0], type) and issubclass(members[0], BaseModel):
            model = members[0]
        else:
            pending = members
    if pending:
        models = [c for c in pending if isinstance(c, type) and issubclass(c, BaseModel)]
        return models[0] if len(models) == 1 else None
    return model


def _tag_of(model: type[BaseModel]) -> str | None:
    field = model.model_fields.get("type")
    if field is None:
        return None
    args = get_args(field.annotation)
    return str(args[0]) if args else None


def suggest_key(loc: tuple[int | str, ...]) -> str | None:
    """The known key nearest to the unknown last part of ``loc`` (difflib), or None."""
    model = _model_at(loc[:-1])
    if model is None:
        return None
    found = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1, cutoff=0.6)
    return found[0] if found else None


def _holds_tables(loc: tuple[int | str, ...]) -> bool:
    """Whether the key at ``loc`` is a list of tables (``[[budget]]``, ``[[alerts.sink]]``),
    not a list of values (``alert_at``, ``otel.tag_attributes``)."""
    if not all(isinstance(part, str) for part in loc):
        return False
    model = _model_at(loc[:-1])
    field = None if model is None else model.model_fields.get(str(loc[-1]))
    if field is None or get_origin(field.annotation) is not list:
        return False
    (item,) = get_args(field.annotation)
    return all(is_model(member) for member in _union_members(item))


def is_model(annotation: Any) -> bool:
    """Whether an annotation is a section of the configuration (a pydantic model)."""
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


# Errors about a value's type or choices, where the value given is what the user must see.
_SAYS_WHAT_WAS_GIVEN = frozenset(
    {
        "bool_parsing",
        "bool_type",
        "decimal_parsing",
        "decimal_type",
        "float_parsing",
        "float_type",
        "int_parsing",
        "int_type",
        "literal_error",
        "string_type",
    }
)


def _toml_value(value: Any) -> str:
    """A value as it is written in TOML: ``"week"``, ``5``, ``true`` (clipped when long)."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
    else:
        text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _describe(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        msg = e["msg"]
        if e["type"] == "value_error":
            # Our validators' own words; pydantic's "Value error, " before them says nothing.
            msg = msg.removeprefix("Value error, ")
        elif e["type"] in _SAYS_WHAT_WAS_GIVEN and not isinstance(e.get("input"), dict | list):
            # "Input should be a valid decimal" named the key but not what it held: a unit
            # or a quote in it ("5$", "3.0 USD") is the mistake to see.
            msg += f" (got {_toml_value(e.get('input'))})"
        elif e["type"] == "list_type" and isinstance(e.get("input"), str | int | float):
            # `scopes = "team"` where `scopes = ["team"]` was meant.
            given = _toml_value(e.get("input"))
            msg += f" (got {given}; a list is written [{given}])"
        if e["type"] == "extra_forbidden":
            near = suggest_key(tuple(e["loc"]))
            msg = "unknown key" + (f"; did you mean {near}?" if near else "")
        elif (
            e["type"] == "list_type"
            and isinstance(e.get("input"), dict)
            and _holds_tables(tuple(e["loc"]))
        ):
            # `[budget]` where `[[budget]]` was meant: a table, not an array of tables.
            msg += f"; each entry is its own [[{key}]] table (double brackets), not [{key}]"
        elif e["type"] in ("union_tag_not_found", "union_tag_invalid"):
            # A section whose kind is named by a key (alerts.sink's `type`): pydantic says
            # "Unable to extract tag using discriminator 'type'"; say which key, and its values.
            ctx = e.get("ctx") or {}
            key += "." + str(ctx.get("discriminator", "type")).strip("'")
            if e["type"] == "union_tag_not_found":
                msg = "Field required"
            else:
                tags = [t.strip(" '") for t in str(ctx.get("expected_tags", "")).split(",")]
                close = difflib.get_close_matches(str(ctx.get("tag")), tags, n=1, cutoff=0.6)
                msg = f"{ctx.get('tag')!r} is not one of {', '.join(tags)}" + (
                    f"; did you mean {close[0]}?" if close else ""
                )
        lines.append(f"  {key}: {msg}")
    lines.append("  (every key, its type and default: docs/configuration.md)")
    return "\n".join(lines)


def config_from_dict(data: dict[str, Any], source: str = "<dict>") -> Config:
    """Validate a parsed TOML document; raise ConfigError naming every bad key."""
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_describe(err, source)) from None


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Load ``path``, else ``$SPENDSTREAM_CONFIG``, else the defaults."""
    chosen = path or os.environ.get(ENV_CONFIG)
    if not chosen:
        return Config()
    p = Path(chosen).expanduser()
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {p}: {exc.strerror}") from None
    try:
        # utf-8-sig: Windows editors (Notepad) start UTF-8 files with a byte-order mark,
        # which TOML parsers take for a statement ("Invalid statement at line 1").
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
            why = "UTF-16 text (as PowerShell's > writes it)"
        else:
            line = raw.count(b"\n", 0, exc.start) + 1
            why = f"not UTF-8 text (line {line})"
        raise ConfigError(f"configuration file {p} is {why}; save it as UTF-8") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"configuration file {p} is not valid TOML: {exc}") from None
    return config_from_dict(data, str(p))
