"""The columnar engine equals the per-event reference engine (tests/stream/reference).

Random streams with bursts, late and too-late rows, idle gaps, hour, day and month
boundaries, unpriced rows, retries, sessions and budgets; cut into random batches, with the
state saved to bytes and restored between some of them: every alert (all fields) and every
breaker event, in order, equals the oracle's on the whole stream in one go.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spendstream.config import Config
from spendstream.records import Alert, BreakerEvent
from spendstream.stream.engine import Engine
from tests.stream.detection_facts import busy_config, rows_table, warm_day
from tests.stream.reference import ReferenceEngine

# Two hours before a month's end: hour, day and month boundaries fall inside the streams.
T0 = datetime(2026, 3, 31, 22, 0, tzinfo=UTC)


_fact = st.fixed_dictionaries(
    {
        "step": st.one_of(
            st.integers(0, 3),
            st.integers(0, 40),
            st.sampled_from([300, 700, 1000, 3600, 7200, 22000]),
        ),
        "late": st.one_of(st.just(0), st.just(0), st.integers(1, 700), st.integers(700, 9000)),
        "us": st.sampled_from([0, 0, 1, 999_999]),
        "api_key_id": st.sampled_from(["k1", "k2", None]),
        "session_id": st.sampled_from(["s1", "s2", "s3", None]),
        "team": st.sampled_from(["a", "b", None]),
        "feature": st.sampled_from(["f", None]),
        "user_id": st.sampled_from(["u1", "u2", None]),
        "cost": st.sampled_from(["0.05", "0.40", "0", None, "0.000000000000000001"]),
        "request_id": st.sampled_from([None, None, "r1", "r2"]),
        "attempt": st.sampled_from([1, 1, 2, 3]),
        "status": st.sampled_from(["ok", "ok", "error"]),
        "turn": st.sampled_from([None, None, 1, 5, 9]),
        "cache_read_tokens": st.sampled_from([0, 500, 900, 1000]),
        "model": st.sampled_from(["claude-sonnet-4-5", "mystery"]),
        # A burst: the same call repeated a second apart (rate limits, session costs).
        "repeat": st.sampled_from([1, 1, 1, 1, 1, 6, 12]),
    }
)


def _rows(specs: list[dict[str, Any]], warm: bool) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = warm_day(T0) if warm else []
    cursor = T0
    for s in specs:
        s = dict(s)
        cursor += timedelta(seconds=s.pop("step"))
        ts = cursor - timedelta(seconds=s.pop("late"), microseconds=s.pop("us"))
        for i in range(s.pop("repeat")):
            rows.append({"ts": ts + timedelta(seconds=i), **s})
    return rows


def _in_batches(
    cfg: Config, table: pa.Table, cuts: list[int], reload: list[bool], replay_all: bool = False
) -> tuple[list[Alert], list[BreakerEvent]]:
    n = table.num_rows
    bounds = [0, *sorted(c % (n + 1) for c in cuts), n]
    engine = Engine(cfg, replay_all=replay_all)
    alerts: list[Alert] = []
    events: list[BreakerEvent] = []
    for (lo, hi), again in zip(itertools.pairwise(bounds), itertools.cycle(reload or [False])):
        if again:
            engine = Engine(cfg, engine.snapshot(), replay_all=replay_all)
        d = engine.process(table.slice(lo, hi - lo))
        alerts += d.alerts
        events += d.breaker_events
    return alerts, events


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    specs=st.lists(_fact, min_size=1, max_size=90),
    warm=st.booleans(),
    cuts=st.lists(st.integers(0, 200), max_size=6),
    reload=st.lists(st.booleans(), max_size=4),
)
def test_engine_equals_the_per_event_reference(
    specs: list[dict[str, Any]], warm: bool, cuts: list[int], reload: list[bool]
) -> None:
    cfg = busy_config()
    table = rows_table(_rows(specs, warm))
    expected = ReferenceEngine(cfg).process(table)
    assert _in_batches(cfg, table, cuts, reload) == expected


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    specs=st.lists(_fact, min_size=1, max_size=60),
    warm=st.booleans(),
    cuts=st.lists(st.integers(0, 200), max_size=4),
)
def test_the_fact_by_fact_fallback_equals_the_reference_too(
    specs: list[dict[str, Any]], warm: bool, cuts: list[int]
) -> None:
    cfg = busy_config()
    table = rows_table(_rows(specs, warm))
    expected = ReferenceEngine(cfg).process(table)
    assert _in_batches(cfg, table, cuts, [True], replay_all=True) == expected
