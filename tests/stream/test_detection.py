from __future__ import annotations

import itertools
import json
from datetime import timedelta
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spendstream.config import Config
from spendstream.records import Alert, BreakerEvent, Fact
from spendstream.stream.detection import DetectionEngine
from tests.stream.detection_facts import at, config, fact


def _cfg() -> Config:
    return config(
        runaway={"max_calls_per_minute": 4, "max_session_turns": 6, "max_attempts": 2},
        anomaly={"scopes": ["global", "team"], "min_baseline_usd": 0},
        budget=[{"scope": "team:a", "period": "hour", "amount_usd": 1, "hard_limit": 2}],
        breaker={
            "open_on": ["runaway_rate", "runaway_session", "budget_exceeded"],
            "rate_cooldown_s": 120,
        },
        detection={"allowed_lateness_s": 600, "session_idle_s": 900},
    )


def test_agent_loop_opens_its_session_and_key_breakers() -> None:
    engine = DetectionEngine(config(runaway={"max_session_turns": 100}))
    loop = [fact(at(i), "0.01", api_key_id="k", session_id="s", turn=i + 1) for i in range(130)]
    alerts, events = engine.process(loop)
    assert [(a.kind, a.scope) for a in alerts] == [("runaway_session", "session:s")]
    assert alerts[0].ts == at(100)
    assert [(e.scope, e.state, e.ts) for e in events] == [("session:s", "open", at(100))]
    status = engine.breakers()["session:s"]
    assert status.state == "open" and status.reason.startswith("runaway_session")
    reset = engine.reset_breaker("session:s", at(200))
    assert reset is not None and (reset.state, reset.ts) == ("closed", at(200))
    assert engine.breakers() == {}


def test_rate_breaker_closes_by_event_time_driven_by_other_traffic() -> None:
    cfg = config(runaway={"max_calls_per_minute": 2}, breaker={"rate_cooldown_s": 120})
    engine = DetectionEngine(cfg)
    _, opened = engine.process([fact(at(i), api_key_id="hot") for i in range(3)])
    assert [(e.scope, e.state) for e in opened] == [("api_key:hot", "open")]
    _, later = engine.process(
        [fact(at(130), api_key_id="other"), fact(at(200), api_key_id="other")]
    )
    assert [(e.state, e.ts) for e in later] == [("half_open", at(130)), ("closed", at(200))]


def test_snapshot_is_json_and_restores_to_the_same_state() -> None:
    engine = DetectionEngine(_cfg())
    engine.process(
        [fact(at(i), "0.30", team="a", api_key_id="k", session_id="s") for i in range(8)]
    )
    snap = json.loads(json.dumps(engine.snapshot()))
    again = DetectionEngine.restore(_cfg(), snap)
    assert again.snapshot() == engine.snapshot()
    assert again.breakers() == engine.breakers()


def test_snapshot_of_another_layout_starts_fresh() -> None:
    engine = DetectionEngine.restore(_cfg(), {"version": 999, "detectors": {"rate": {"bad": 1}}})
    assert engine.snapshot()["watermark"] is None


def test_late_event_after_its_session_was_forgotten_never_duplicates_an_alert() -> None:
    engine = DetectionEngine(_cfg())
    alerts, _ = engine.process([fact(at(i * 20), session_id="s") for i in range(7)])
    assert [a.kind for a in alerts] == ["runaway_session"]
    # The session idles out, then replayed late calls rebuild its state: no second alert.
    engine.process([fact(at(minutes=40), session_id="other")])
    assert "s" not in engine.detectors[1].snapshot()["sessions"]
    again, _ = engine.process([fact(at(minutes=31 + i / 10), session_id="s") for i in range(7)])
    assert [a.kind for a in again if a.kind == "runaway_session"] == []


# --- the same events in any batch split (with the state saved and reloaded in between)
# --- give the same alerts and breaker events.

_event = st.tuples(
    # Seconds: a burst, then hours a day later (so hourly anomalies can be judged); the
    # unsorted draws make some events late and a few too late.
    st.one_of(
        st.integers(min_value=-90, max_value=240),
        st.integers(min_value=0, max_value=40),
        st.integers(min_value=23 * 3600, max_value=26 * 3600),
    ),
    st.sampled_from(["k1", "k2"]),
    st.sampled_from(["s1", "s2", "s3"]),
    st.sampled_from(["a", "b"]),
    st.sampled_from(["0.05", "0.40", "0"]),
    st.sampled_from([None, "r1", "r2"]),
)


def _facts(specs: list[tuple[int, str, str, str, str, str | None]]) -> list[Fact]:
    out = []
    for i, (sec, key, sess, team, cost, req) in enumerate(specs):
        ts = at(sec) + timedelta(microseconds=i)
        out.append(
            fact(
                ts,
                cost,
                api_key_id=key,
                session_id=sess,
                team=team,
                request_id=req,
                cache_read_tokens=900 if i % 3 else 0,
                feature="f",
            )
        )
    return out


def _in_batches(facts: list[Fact], cuts: list[int]) -> tuple[list[Alert], list[BreakerEvent]]:
    cfg = _cfg()
    snap = None
    alerts: list[Alert] = []
    events: list[BreakerEvent] = []
    bounds = [0, *sorted(c % (len(facts) + 1) for c in cuts), len(facts)]
    for lo, hi in itertools.pairwise(bounds):
        engine = DetectionEngine.restore(cfg, snap)
        a, e = engine.process(facts[lo:hi])
        alerts += a
        events += e
        snap = json.loads(json.dumps(engine.snapshot()))
    return alerts, events


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    specs=st.lists(_event, min_size=1, max_size=60), cuts=st.lists(st.integers(0, 60), max_size=5)
)
def test_any_batch_split_with_state_reloads_gives_the_same_alerts(
    specs: list, cuts: list[int]
) -> None:  # type: ignore[type-arg]
    facts = _facts(specs)
    whole = DetectionEngine(_cfg()).process(facts)
    assert _in_batches(facts, cuts) == whole
    keys = [a.dedup_key for a in whole[0]]
    assert len(keys) == len(set(keys))


def test_budget_exceeded_opens_the_budget_scope_until_the_next_hour() -> None:
    engine = DetectionEngine(_cfg())
    alerts, events = engine.process([fact(at(minutes=i), "0.50", team="a") for i in range(5)])
    assert [a.kind for a in alerts if a.kind.startswith("budget")] == ["budget_threshold"] * 3 + [
        "budget_exceeded"
    ]
    assert [(e.scope, e.state) for e in events] == [("team:a", "open")]
    exceeded = next(a for a in alerts if a.kind == "budget_exceeded")
    assert exceeded.value == Decimal("2.00")
    _, events = engine.process([fact(at(hours=1), "0", team="b")])
    assert [(e.scope, e.state, e.ts) for e in events] == [("team:a", "closed", at(hours=1))]


def test_state_stays_bounded_over_days_of_new_keys_and_sessions() -> None:
    cfg = config(
        anomaly={"scopes": ["global", "api_key"]},
        runaway={"max_calls_per_minute": 1, "max_session_turns": 1},
        detection={"allowed_lateness_s": 600, "session_idle_s": 3600},
        breaker={"stay_open_retention_s": 86400},
    )
    engine = DetectionEngine(cfg)
    # Four days; a new key every hour and a new session every ten minutes, each misbehaving.
    for minute in range(0, 4 * 24 * 60, 5):
        key, sess = f"k{minute // 60}", f"s{minute // 10}"
        engine.process(
            [fact(at(minutes=minute, seconds=s), api_key_id=key, session_id=sess) for s in (0, 1)]
        )
    snap = engine.snapshot()
    det = snap["detectors"]
    assert len(det["sessions"]["sessions"]) <= 7  # idle an hour: forgotten
    assert len(det["rate"]["windows"]) <= 2 * 7 + 12  # minutes within the lateness
    assert len(det["anomaly"]["scopes"]) <= 1 + 24 + 4  # keys with spend in the baseline span
    # Session breakers stay open a day here, then retire: one day of sessions at most.
    assert 0 < len(snap["breakers"]["breakers"]) <= 24 * 6 + 1
    # Each dedup_key is remembered about two days, not forever.
    assert len(snap["emitted"]) < 0.6 * (4 * 24 * 60 // 5) * 3
