"""The configuration: one typed model tree loaded from TOML (shared/CONTRACT.md section 6).

Every key has a default, so an empty file (or no file) is a valid configuration.
Unknown keys and wrong types are errors that name the key. Money is ``Decimal``:
TOML floats are converted through their shortest decimal repr, so ``3.75`` is
exactly ``Decimal("3.75")``.
"""

from __future__ import annotations

import os
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from spendstream.errors import ConfigError
from spendstream.scopes import scope_error

__all__ = [
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
    "WebhookSinkConfig",
    "load_config",
]

ENV_CONFIG = "SPENDSTREAM_CONFIG"


def _to_decimal(value: Any) -> Any:
    # A float from TOML is converted via repr so that 0.1 stays 0.1, not its binary expansion.
    if isinstance(value, bool):
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, int):
        return Decimal(value)
    return value


UsdAmount = Annotated[Decimal, BeforeValidator(_to_decimal), Field(ge=0)]
NonNegativeDecimal = Annotated[Decimal, BeforeValidator(_to_decimal), Field(ge=0)]


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


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaConfig(_Section):
    bootstrap_servers: str = "localhost:9092"
    usage_partitions: int = Field(default=6, ge=1)
    # Prepended to every topic name (e.g. "staging." or a test's unique prefix); "" keeps the
    # contract's names. app_id names the Faust app: its consumer group and internal topics.
    topic_prefix: str = ""
    app_id: str = Field(default="spendstream", min_length=1)
    # A worker silent this long (e.g. killed) leaves the group and its partitions move on.
    session_timeout_s: float = Field(default=30.0, ge=6, le=300)
    # Security of every client the project runs (docs/kafka.md "Security"). Secrets come
    # from an environment variable or a file, never from this file.
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"] = "SCRAM-SHA-512"
    sasl_username: str | None = None
    sasl_password_env: str | None = None
    sasl_password_file: str | None = None
    # PEM file of the CA(s) that signed the brokers' certificates (default: the system's).
    ssl_ca_location: str | None = None
    # Client certificate and key (PEM) for brokers that require mutual TLS.
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None
    ssl_key_password_env: str | None = None
    ssl_key_password_file: str | None = None
    # Check that the broker's certificate names the host connected to (leave on).
    ssl_endpoint_identification: bool = True

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
    factor: NonNegativeDecimal = Decimal("3.0")
    min_baseline_usd: UsdAmount = Decimal("1.0")
    scopes: list[Literal["global", "team", "feature", "project", "user", "api_key", "session"]] = [
        "global",
        "team",
        "feature",
        "api_key",
    ]
    # "plain": previous 24 h mean (contract rule). "seasonal": same hour on previous days.
    method: Literal["plain", "seasonal"] = "plain"
    seasonal_days: int = Field(default=7, ge=1, le=28)


class RunawayConfig(_Section):
    max_calls_per_minute: int = Field(default=120, ge=1)
    max_session_turns: int = Field(default=100, ge=1)
    max_session_cost_usd: UsdAmount = Decimal("50.0")
    max_session_minutes: NonNegativeDecimal = Decimal("30")
    max_attempts: int = Field(default=5, ge=1)


class BudgetConfig(_Section):
    scope: str
    period: Literal["month", "day", "hour"] = "month"
    amount_usd: UsdAmount
    alert_at: list[NonNegativeDecimal] = [Decimal("0.5"), Decimal("0.8"), Decimal("1.0")]
    hard_limit: NonNegativeDecimal | None = None

    @model_validator(mode="after")
    def _scope_form(self) -> BudgetConfig:
        problem = scope_error(self.scope)
        if problem is not None:
            raise ValueError(problem)
        return self


class BreakerConfig(_Section):
    open_on: list[str] = ["runaway_rate", "runaway_session", "budget_exceeded"]
    # A key's rate breaker closes again (half-open first) after this many event-time seconds.
    rate_cooldown_s: int = Field(default=300, ge=1)
    # A breaker that stays open (runaway session, unpriced model) is retired, with a closed
    # event, after this much event time, so no state (engine, topic, client views) grows forever.
    stay_open_retention_s: int = Field(default=7 * 86400, ge=3600)
    # `spendstream run` only: when no fact has been judged for this many seconds (processing
    # time), breakers move on by the idle time as if event time had passed. Without it a key
    # whose breaker stops its only traffic would never see the event time that closes it.
    # 0 turns it off (breakers then move by event time alone, as in `ingest`).
    idle_advance_s: float = Field(default=60.0, ge=0)
    # HMAC-SHA256 key signing every record on the breakers topic (docs/kafka.md "Breaker
    # records"). With a key, clients ignore records they cannot verify; without one, anyone
    # who can produce to the topic can open or close breakers.
    hmac_key_env: str | None = None
    hmac_key_file: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _secrets(cls, data: Any) -> Any:
        return _no_inline_secret(data, ("hmac_key",))


class DetectionConfig(_Section):
    # Events later than this (event time, behind the newest seen) still land but no longer
    # move detector windows, whose state is expired past it.
    allowed_lateness_s: int = Field(default=3600, ge=0)
    # A session with no call for this long is forgotten (its open breaker is kept).
    session_idle_s: int = Field(default=6 * 3600, ge=60)
    # retry_storm, share form: a key's error/retry share this hour vs its previous 24 h.
    # At 100 calls a 30% share is many standard deviations above a normal few-% retry rate.
    retry_share_factor: NonNegativeDecimal = Decimal("3")
    retry_min_share: NonNegativeDecimal = Decimal("0.3")
    retry_min_calls: int = Field(default=100, ge=1)
    # cache_hit_drop: a feature's cache-read share this hour this far below its previous 24 h.
    cache_drop_points: NonNegativeDecimal = Decimal("0.2")
    cache_min_baseline_share: NonNegativeDecimal = Decimal("0.5")
    cache_min_input_tokens: int = Field(default=100_000, ge=1)


class ModelPriceConfig(_Section):
    """A ``[[prices.model]]`` entry: rates for (provider, model), optionally one tier/region.

    Unset rates default to the rate of the tokens they are part of (cache and modal input
    rates to the input rate, 1-hour writes to the cache write rate, cached audio/images to
    the cache read rate, output audio/images to the output rate).
    """

    provider: str
    model: str
    # Only events with this service tier / region (None: any). The most specific entry wins.
    service_tier: str | None = None
    region: str | None = None
    input_per_mtok: UsdAmount
    output_per_mtok: UsdAmount
    cache_read_per_mtok: UsdAmount | None = None
    cache_write_per_mtok: UsdAmount | None = None
    cache_write_1h_per_mtok: UsdAmount | None = None
    input_audio_per_mtok: UsdAmount | None = None
    cache_audio_read_per_mtok: UsdAmount | None = None
    input_image_per_mtok: UsdAmount | None = None
    cache_image_read_per_mtok: UsdAmount | None = None
    output_audio_per_mtok: UsdAmount | None = None
    output_image_per_mtok: UsdAmount | None = None
    request_fee_usd: UsdAmount = Decimal(0)
    # USD per thousand requests of a server-side tool, by tool name: {web_search = 10}.
    tool_per_k: dict[str, UsdAmount] = {}
    batch_discount: NonNegativeDecimal | None = None


class PremiumConfig(_Section):
    """A ``[[prices.premium]]`` row: a percentage added to list price (regional endpoints,
    data residency, a service tier the catalog does not price). Filters narrow it; the most
    specific matching row applies, on top of the catalog's or an override's rates."""

    provider: str | None = None
    model: str | None = None
    service_tier: str | None = None
    region: str | None = None
    percent: Annotated[Decimal, BeforeValidator(_to_decimal), Field(ge=0, le=1000)]


class DiscountConfig(_Section):
    provider: str | None = None
    model: str | None = None
    percent: Annotated[Decimal, BeforeValidator(_to_decimal), Field(ge=0, le=100)]


class PricesConfig(_Section):
    model: list[ModelPriceConfig] = []
    discount: list[DiscountConfig] = []
    premium: list[PremiumConfig] = []


class HttpConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8787, ge=0, le=65535)
    # Bearer token for POST /v1/events; read from this env var or file, never from the TOML itself.
    token_env: str = "SPENDSTREAM_INGEST_TOKEN"
    token_file: str | None = None
    # /metrics labels taken from data (e.g. team) keep at most this many distinct values per
    # metric; later ones are counted under "other", so /metrics stays small.
    metrics_label_values: int = Field(default=100, ge=1, le=10_000)

    @model_validator(mode="before")
    @classmethod
    def _secrets(cls, data: Any) -> Any:
        return _no_inline_secret(data, ("token",))


class PipelineConfig(_Section):
    batch_size: int = Field(default=2000, ge=1)
    # How long a batch may wait to fill: the runaway-stop latency through `spendstream run`
    # follows it (bench/RESULTS.md breaker_latency: p99 671 ms at 0.5, 459 ms at 0.2, 355 ms at 0.1); lower
    # also means more, smaller Parquet files under light traffic (`warehouse compact`).
    batch_within_s: float = Field(default=0.2, gt=0)
    # Embedded `ingest`/`demo` over files: larger batches amortise the per-batch costs (the
    # detectors' state and one Parquet file per table are written with every commit);
    # 2000 -> 20000 took 1M events from 76 s to 46 s. Reading stdin uses batch_size.
    ingest_batch_size: int = Field(default=20_000, ge=1)
    # Kafka runtime: a usage partition whose reader sent no fact and no caught-up marker for
    # this long (processing time; e.g. the worker died) stops holding the others back in
    # event-time alignment before detection (docs/kafka.md).
    align_idle_s: float = Field(default=10.0, gt=0)


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
    """OpenTelemetry GenAI spans -> usage events (POST /v1/traces, ingest --format otlp)."""

    # Per field, the attribute keys to try; a field given here replaces its default list
    # (an empty list turns the field off), fields not given keep their defaults.
    attributes: dict[OtelField, list[str]] = OTEL_DEFAULT_ATTRIBUTES
    # Providers whose instrumentation reports gen_ai.usage.input_tokens WITHOUT the cached
    # tokens (against the semantic conventions): their cache reads and writes are added.
    input_excludes_cache: list[str] = []
    # gen_ai.operation.name values that are not one model call (an agent's span may carry
    # the summed usage of the calls under it: metering it too would count them twice).
    ignore_operations: list[str] = [
        "invoke_agent",
        "create_agent",
        "invoke_workflow",
        "execute_tool",
        "retrieval",
    ]
    # Span or resource attributes copied into the event's tags, under their own key.
    tag_attributes: list[str] = []

    @model_validator(mode="before")
    @classmethod
    def _merge_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("attributes"), dict):
            data = {**data, "attributes": {**OTEL_DEFAULT_ATTRIBUTES, **data["attributes"]}}
        return data


AlertSeverity = Literal["info", "warning", "critical"]


class _SinkBase(_Section):
    name: str = Field(min_length=1)
    # Notifications per scope and sink within rate_window_s; beyond it they are suppressed.
    max_per_scope: int = Field(default=10, ge=1)
    rate_window_s: float = Field(default=3600, gt=0)


class PagerDutySinkConfig(_SinkBase):
    type: Literal["pagerduty"]
    url: str = "https://events.pagerduty.com/v2/enqueue"
    routing_key_env: str | None = "PAGERDUTY_ROUTING_KEY"
    routing_key_file: str | None = None
    source: str = "spendstream"
    # Alert severity -> PagerDuty severity (critical | error | warning | info).
    severity_map: dict[AlertSeverity, Literal["critical", "error", "warning", "info"]] = {
        "critical": "critical",
        "warning": "warning",
        "info": "info",
    }

    @model_validator(mode="before")
    @classmethod
    def _secrets(cls, data: Any) -> Any:
        return _no_inline_secret(data, ("routing_key",))


class SlackSinkConfig(_SinkBase):
    type: Literal["slack"]
    webhook_url_env: str | None = "SLACK_WEBHOOK_URL"
    webhook_url_file: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _secrets(cls, data: Any) -> Any:
        return _no_inline_secret(data, ("webhook_url",))


class WebhookSinkConfig(_SinkBase):
    type: Literal["webhook"]
    url: str
    secret_env: str | None = None
    secret_file: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _secrets(cls, data: Any) -> Any:
        return _no_inline_secret(data, ("secret",))


class ConsoleSinkConfig(_SinkBase):
    type: Literal["console"]
    stream: Literal["stdout", "stderr", "log"] = "stderr"


SinkConfig = Annotated[
    PagerDutySinkConfig | SlackSinkConfig | WebhookSinkConfig | ConsoleSinkConfig,
    Field(discriminator="type"),
]


class RouteConfig(_Section):
    """Which alerts go to which sinks. Empty filters match everything."""

    name: str = Field(min_length=1)
    sinks: list[str] = Field(min_length=1)
    kinds: list[str] = []
    min_severity: AlertSeverity = "info"
    scopes: list[str] = []  # glob patterns over the scope string, e.g. "session:*"
    teams: list[str] = []  # the alert's team (scope team:<t> or details["team"])
    # UTC "HH:MM-HH:MM"; inside it only alerts at quiet_min_severity or above are sent.
    quiet_hours: str | None = Field(default=None, pattern=r"^\d\d:\d\d-\d\d:\d\d$")
    quiet_min_severity: AlertSeverity = "critical"
    # Fields whose equal values fold alerts into one notification with a count
    # ("kind", "scope", "team" or any details key, e.g. "api_key_id"). Empty: one per dedup_key.
    group_by: list[str] = []
    # Resolve an open notification this long after its last alert when no breaker closes it.
    auto_resolve_s: float | None = Field(default=None, gt=0)
    # false: the first matching route wins; true: later routes are tried too.
    continue_matching: bool = False


class DeliveryConfig(_Section):
    max_attempts: int = Field(default=8, ge=1)
    backoff_initial_s: float = Field(default=0.5, gt=0)
    backoff_max_s: float = Field(default=30.0, gt=0)
    # Total time one notification may spend retrying before it is dead-lettered.
    retry_budget_s: float = Field(default=300.0, gt=0)
    timeout_s: float = Field(default=10.0, gt=0)


class AlertsConfig(_Section):
    group_id: str = "spendstream-alerts"
    # Base URL of something that can show a scope (a dashboard); the SQL is shown otherwise.
    link_base_url: str | None = None
    delivery: DeliveryConfig = DeliveryConfig()
    route: list[RouteConfig] = []
    sink: list[SinkConfig] = []

    @model_validator(mode="after")
    def _sinks_exist(self) -> AlertsConfig:
        names = [s.name for s in self.sink]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"sink names must be unique: {', '.join(dupes)}")
        for r in self.route:
            unknown = [s for s in r.sinks if s not in names]
            if unknown:
                raise ValueError(f"route {r.name!r} names unknown sink(s): {', '.join(unknown)}")
        return self


class Config(BaseModel):
    """The whole configuration tree."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kafka: KafkaConfig = KafkaConfig()
    anomaly: AnomalyConfig = AnomalyConfig()
    runaway: RunawayConfig = RunawayConfig()
    budget: list[BudgetConfig] = []
    breaker: BreakerConfig = BreakerConfig()
    detection: DetectionConfig = DetectionConfig()
    prices: PricesConfig = PricesConfig()
    http: HttpConfig = HttpConfig()
    pipeline: PipelineConfig = PipelineConfig()
    alerts: AlertsConfig = AlertsConfig()
    otel: OtelConfig = OtelConfig()


def _describe(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"  {key}: {msg}")
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
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {p}: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"configuration file {p} is not valid TOML: {exc}") from None
    return config_from_dict(data, str(p))
