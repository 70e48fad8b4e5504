"""A quiet stream still moves breakers on (``[breaker] idle_advance_s``), through a real
broker and ``spendstream run``: the key whose breaker stopped its only traffic recovers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from tests.runtime.kafka_workers import (
    kcat_produce,
    key_calls,
    query,
    running_worker,
    wait_for,
    write_config,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def test_a_tripped_key_breaker_half_opens_while_no_event_arrives(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    config, prefix = write_config(
        tmp_path / "c.toml",
        kafka_bootstrap,
        idle_advance_s=1,
        extra="rate_cooldown_s = 5\n[runaway]\nmax_calls_per_minute = 5\n",
    )
    lines = key_calls("key-idle", 8, datetime.now(UTC), timedelta(milliseconds=1))
    wd = tmp_path / "wd"
    with running_worker(wd, config, prefix, tmp_path) as w:
        kcat_produce(kafka_bootstrap, prefix + "spendstream.usage", lines, keyed=True)
        states = (
            "SELECT state FROM breaker_events WHERE scope = 'api_key:key-idle' ORDER BY ts, state"
        )

        # Opened by the 6th call; no later event ever carries event time past the 5 s
        # cool-down, yet the worker half-opens it after a quiet spell.
        def half_opened() -> bool:
            try:
                return [r[0] for r in query(wd, states)] == ["open", "half_open"]
            except duckdb.Error:  # the worker is still creating the views (startup)
                return False

        wait_for(
            half_opened,
            "the key's breaker never half-opened on a quiet stream",
            w,
        )
        assert w.get_json("/v1/breakers")["breakers"][0]["state"] == "half_open"
