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

__all__ = [
    "AlertsConfig",
    "AnomalyConfig",
    "BreakerConfig",
    "BudgetConfig",
    "Config",
    "DetectionConfig",
    "DiscountConfig",
    "HttpConfig",
    "KafkaConfig",
    "ModelPriceConfig",
    "PipelineConfig",
    "PricesConfig",
    "RunawayConfig",
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


Money = Annotated[Decimal, BeforeValidator(_to_decimal), Field(ge=0)]
Fraction = Annotated[Decimal, BeforeValidator(_to_decimal), Field(ge=0)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaConfig(_Section):
    bootstrap_servers: str = "localhost:9092"
    usage_partitions: int = Field(default=6, ge=1)


class AnomalyConfig(_Section):
    factor: Fraction = Decimal("3.0")
    min_baseline_usd: Money = Decimal("1.0")
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
    max_session_cost_usd: Money = Decimal("50.0")
    max_session_minutes: Fraction = Decimal("30")
    max_attempts: int = Field(default=5, ge=1)


class BudgetConfig(_Section):
    scope: str
    period: Literal["month", "day", "hour"] = "month"
    amount_usd: Money
    alert_at: list[Fraction] = [Decimal("0.5"), Decimal("0.8"), Decimal("1.0")]
    hard_limit: Fraction | None = None

    @model_validator(mode="after")
    def _scope_form(self) -> BudgetConfig:
        if self.scope != "global" and ":" not in self.scope:
            raise ValueError(
                f"scope {self.scope!r} must be 'global' or '<kind>:<value>', e.g. 'team:search'"
            )
        kind = self.scope.split(":", 1)[0]
        if kind not in {"global", "team", "feature", "project", "user", "api_key", "session"}:
            raise ValueError(f"scope kind {kind!r} is not one of the contract's scope kinds")
        return self


class BreakerConfig(_Section):
    open_on: list[str] = ["runaway_rate", "runaway_session", "budget_exceeded"]
    # A key's rate breaker closes again (half-open first) after this many event-time seconds.
    rate_cooldown_s: int = Field(default=300, ge=1)


class DetectionConfig(_Section):
    # Events later than this (event time, behind the newest seen) still land but no longer
    # move detector windows, whose state is expired past it.
    allowed_lateness_s: int = Field(default=3600, ge=0)
    # A session with no call for this long is forgotten (its open breaker is kept).
    session_idle_s: int = Field(default=6 * 3600, ge=60)
    # retry_storm, share form: a key's error/retry share this hour vs its previous 24 h.
    retry_share_factor: Fraction = Decimal("2")
    retry_min_share: Fraction = Decimal("0.2")
    retry_min_calls: int = Field(default=20, ge=1)
    # cache_hit_drop: a feature's cache-read share this hour this far below its previous 24 h.
    cache_drop_points: Fraction = Decimal("0.2")
    cache_min_baseline_share: Fraction = Decimal("0.5")
    cache_min_input_tokens: int = Field(default=100_000, ge=1)


class ModelPriceConfig(_Section):
    provider: str
    model: str
    input_per_mtok: Money
    output_per_mtok: Money
    cache_read_per_mtok: Money | None = None
    cache_write_per_mtok: Money | None = None
    batch_discount: Fraction | None = None


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
    batch_within_s: float = Field(default=0.5, gt=0)


class AlertsConfig(_Section):
    # Routes and sinks are free-form here and validated by the alert router, which owns them.
    route: list[dict[str, Any]] = []
    sink: list[dict[str, Any]] = []


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
