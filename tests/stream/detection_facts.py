"""Builders of facts for the detector tests: real UsageEvents, exact Decimal costs."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest

from spendstream.config import Config, config_from_dict
from spendstream.producers.event import UsageEvent
from spendstream.records import Alert, BreakerEvent, Cost, Fact
from spendstream.stream.engine import Engine
from spendstream.table_schemas import FACTS, facts_table

__all__ = [
    "T0",
    "Feed",
    "at",
    "both_paths",
    "busy_config",
    "config",
    "fact",
    "rows_table",
    "table",
    "warm_day",
]

T0 = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)
_ids = itertools.count()


def at(seconds: float = 0, *, minutes: float = 0, hours: float = 0) -> datetime:
    return T0 + timedelta(seconds=seconds, minutes=minutes, hours=hours)


def config(**sections: Any) -> Config:
    return config_from_dict(sections)


def fact(ts: datetime, cost: str | Decimal | None = "0.01", **fields: Any) -> Fact:
    """One fact; ``cost=None`` is an unpriced model."""
    data: dict[str, Any] = {
        "event_id": f"e{next(_ids)}",
        "ts": ts,
        "provider": "anthropic",
        "model": "claude-sonnet-4-5",
        "input_tokens": 1000,
        "output_tokens": 100,
    }
    data.update(fields)
    event = UsageEvent.model_validate(data)
    c = None
    if cost is not None:
        d = Decimal(cost)
        c = Cost(d, Decimal(0), Decimal(0), Decimal(0), d, "test")
    return Fact(event=event, cost=c, ingested_at=ts)


def busy_config() -> Config:
    """Low limits, so that random streams of a few dozen facts trip every rule and breaker."""
    return config(
        runaway={
            "max_calls_per_minute": 4,
            "max_session_turns": 6,
            "max_session_cost_usd": "1.00",
            "max_session_minutes": 3,
            "max_attempts": 2,
        },
        anomaly={
            "scopes": ["global", "team", "api_key", "feature", "user", "session"],
            "min_baseline_usd": "0.10",
            "factor": 2,
        },
        budget=[
            {"scope": "team:a", "period": "hour", "amount_usd": 1, "hard_limit": 2},
            {"scope": "global", "period": "day", "amount_usd": 5, "alert_at": [0.5, 1]},
            {"scope": "api_key:k1", "period": "month", "amount_usd": 2, "hard_limit": 1.5},
            {"scope": "user:u1", "period": "hour", "amount_usd": 0.5, "hard_limit": 1},
        ],
        breaker={
            "open_on": [
                "runaway_rate",
                "runaway_session",
                "budget_exceeded",
                "retry_storm",
                "unpriced_model",
            ],
            "rate_cooldown_s": 120,
            "stay_open_retention_s": 3600,
        },
        detection={
            "allowed_lateness_s": 600,
            "session_idle_s": 900,
            "retry_min_calls": 3,
            "retry_min_share": "0.3",
            "retry_share_factor": "1.5",
            "cache_min_input_tokens": 3000,
            "cache_drop_points": "0.2",
            "cache_min_baseline_share": "0.5",
        },
    )


def warm_day(end: datetime) -> list[dict[str, Any]]:
    """26 hours of steady traffic before ``end`` (two teams, two keys, one feature and user):
    the history that anomaly, retry-share and cache baselines need."""
    return [
        {
            "ts": end - timedelta(hours=26 - h),
            "team": team,
            "api_key_id": key,
            "feature": "f",
            "user_id": "u1",
            "cost": "0.10",
            "cache_read_tokens": 900,
        }
        for h in range(26)
        for team, key in (("a", "k1"), ("b", "k2"))
    ]


_ROW_DEFAULTS: dict[str, Any] = {
    "provider": "anthropic",
    "model": "claude-sonnet-4-5",
    "input_tokens": 1000,
    "output_tokens": 100,
    "cache_read_tokens": 0,
    "cache_write_tokens": 0,
    "batch": False,
    "status": "ok",
    "attempt": 1,
    "schema_version": 1,
}


def rows_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Facts straight from dicts (no pydantic: fast enough for property tests). ``cost``:
    a decimal string, or None for an unpriced fact."""
    out = []
    for r in rows:
        d = {**_ROW_DEFAULTS, "event_id": f"e{next(_ids)}", **r}
        cost = d.pop("cost", "0.01")
        c = None if cost is None else Decimal(cost)
        d.update(
            cost_usd=c,
            input_cost_usd=c,
            cache_read_cost_usd=None if c is None else Decimal(0),
            cache_write_cost_usd=None if c is None else Decimal(0),
            output_cost_usd=None if c is None else Decimal(0),
            priced=c is not None,
            price_source=None if c is None else "test",
            ingested_at=d["ts"],
        )
        out.append(d)
    return pa.Table.from_pylist(out, schema=FACTS)


def table(facts: list[Fact]) -> pa.Table:
    return facts_table(facts)


# Which path the engine's tests run: the columnar one, or every group fact by fact (the
# fallback the columnar path takes for what it cannot decide). `both_paths` runs a test twice.
PATH = {"replay_all": False}


@pytest.fixture(params=[False, True], ids=["columnar", "fact-by-fact"])
def both_paths(request: pytest.FixtureRequest) -> Iterator[None]:
    PATH["replay_all"] = request.param
    yield
    PATH["replay_all"] = False


class Feed:
    """An engine fed batches of facts; returns the alerts (of ``kinds``, if given)."""

    def __init__(self, cfg: Config, *kinds: str, state: bytes | None = None) -> None:
        self.cfg = cfg
        self.kinds = kinds
        self.engine = Engine(cfg, state, replay_all=PATH["replay_all"])
        self.events: list[BreakerEvent] = []

    def __call__(self, facts: list[Fact]) -> list[Alert]:
        detection = self.engine.process(facts_table(facts))
        self.events += detection.breaker_events
        return [a for a in detection.alerts if not self.kinds or a.kind in self.kinds]

    def restarted(self) -> Feed:
        """The same stream continuing in a new engine from this one's snapshot (bytes)."""
        return Feed(self.cfg, *self.kinds, state=self.engine.snapshot())
