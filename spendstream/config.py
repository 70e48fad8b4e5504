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
    "PagerDutySinkConfig",
    "PipelineConfig",
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


DEFAULT_MAX_FUTURE_SKEW_S = 300


class DetectionConfig(_Section):
    # Events later than this (event time, behind the newest seen) still land but no longer
    # move detector windows, whose state is expired past it.
    allowed_lateness_s: int = Field(default=3600, ge=0)
    # A record whose ts is more than this after its receipt is a dead letter (docs/bounds.md).
    # It must not exceed allowed_lateness_s: detection's clock is the newest ts it has seen,
    # so a record this far ahead leaves real traffic at most this late, which then still
    # counts. Unset, it is 300 s, or allowed_lateness_s if that is smaller.
    max_future_skew_s: int = Field(default=DEFAULT_MAX_FUTURE_SKEW_S, ge=0)
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
    provider: str
    model: str
    input_per_mtok: UsdAmount
    output_per_mtok: UsdAmount
    cache_read_per_mtok: UsdAmount | None = None
    cache_write_per_mtok: UsdAmount | None = None
    batch_discount: NonNegativeDecimal | None = None


class DiscountConfig(_Section):
    provider: str | None = None
    model: str | None = None
    percent: Annotated[Decimal, BeforeValidator(_to_decimal), Field(ge=0, le=100)]


class PricesConfig(_Section):
    model: list[ModelPriceConfig] = []
    discount: list[DiscountConfig] = []


class HttpConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8787, ge=0, le=65535)
    # Bearer token for POST /v1/events; read from this env var or file, never from the TOML itself.
    token_env: str = "SPENDSTREAM_INGEST_TOKEN"
    token_file: str | None = None


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


AlertSeverity = Literal["info", "warning", "critical"]


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
