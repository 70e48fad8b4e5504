"""The engine's public behaviour: breakers, snapshots, bounded state, the per-event order."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import orjson

from spendstream.config import Config
from spendstream.stream.engine import SNAPSHOT_VERSION, Engine
from spendstream.table_schemas import facts_table
from tests.stream.detection_facts import T0, Feed, at, config, fact


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
    engine = Engine(config(runaway={"max_session_turns": 100}))
    loop = [fact(at(i), "0.01", api_key_id="k", session_id="s", turn=i + 1) for i in range(130)]
    d = engine.process(facts_table(loop))
    assert [(a.kind, a.scope) for a in d.alerts] == [("runaway_session", "session:s")]
    assert d.alerts[0].ts == at(100)
    assert [(e.scope, e.state, e.ts) for e in d.breaker_events] == [("session:s", "open", at(100))]
    status = engine.breakers()["session:s"]
    assert status.state == "open" and status.reason.startswith("runaway_session")
    reset = engine.reset_breaker("session:s", at(200))
    assert reset is not None and (reset.state, reset.ts) == ("closed", at(200))
    assert engine.breakers() == {}


def test_rate_breaker_closes_by_event_time_driven_by_other_traffic() -> None:
    cfg = config(runaway={"max_calls_per_minute": 2}, breaker={"rate_cooldown_s": 120})
    engine = Engine(cfg)
    opened = engine.process(facts_table([fact(at(i), api_key_id="hot") for i in range(3)]))
    assert [(e.scope, e.state) for e in opened.breaker_events] == [("api_key:hot", "open")]
    later = engine.process(
        facts_table([fact(at(130), api_key_id="other"), fact(at(200), api_key_id="other")])
    )
    assert [(e.state, e.ts) for e in later.breaker_events] == [
        ("half_open", at(130)),
        ("closed", at(200)),
    ]


def test_breakers_move_at_the_first_fact_whose_watermark_reaches_the_due_time() -> None:
    # Opened at 2 s, cool-down 120 s: due at 122 s. A late fact (ts 121 < watermark) moves
    # nothing; the first fact past it (123 s) half-opens; 60 s later (183 s) it closes.
    cfg = config(runaway={"max_calls_per_minute": 2}, breaker={"rate_cooldown_s": 120})
    engine = Engine(cfg)
    facts = [fact(at(i), api_key_id="hot") for i in range(3)]
    other = [121.5, 100, 121.9, 123, 182.9, 183]
    facts += [fact(at(t), api_key_id=f"x{i}") for i, t in enumerate(other)]
    events = engine.process(facts_table(facts)).breaker_events
    assert [(e.state, e.ts) for e in events] == [
        ("open", at(2)),
        ("half_open", at(123)),
        ("closed", at(183)),
    ]


def test_a_breaker_due_before_the_watermark_moves_at_the_next_fact_that_raises_it() -> None:
    # A late burst opens k's breaker at 2 s, due at 122 s, but the watermark is at 1000 s
    # already: a fact at 1000 s (no rise) moves nothing, the next one (1001 s) half-opens it.
    cfg = config(runaway={"max_calls_per_minute": 2}, breaker={"rate_cooldown_s": 120})
    engine = Engine(cfg)
    facts = [fact(at(1000), api_key_id="x")]
    facts += [fact(at(i), api_key_id="k") for i in range(3)]
    facts += [fact(at(1000), api_key_id="y"), fact(at(1001), api_key_id="z")]
    events = engine.process(facts_table(facts)).breaker_events
    assert [(e.scope, e.state, e.ts) for e in events] == [
        ("api_key:k", "open", at(2)),
        ("api_key:k", "half_open", at(1001)),
    ]


def test_at_one_fact_breakers_move_on_before_its_alerts_are_judged() -> None:
    # k trips at 2 s (due 122 s). Two calls just before the due time, then one at 130 s that
    # both raises the watermark past it and trips again: half-open first, then open, at 130 s.
    cfg = config(runaway={"max_calls_per_minute": 2}, breaker={"rate_cooldown_s": 120})
    engine = Engine(cfg)
    facts = [fact(at(i), api_key_id="k") for i in range(3)]
    facts += [fact(at(121), api_key_id="k"), fact(at(121.5), api_key_id="k")]
    facts += [fact(at(130), api_key_id="k")]
    events = engine.process(facts_table(facts)).breaker_events
    assert [(e.state, e.ts) for e in events] == [
        ("open", at(2)),
        ("half_open", at(130)),
        ("open", at(130)),
    ]


def test_the_half_open_minute_is_sixty_seconds() -> None:
    cfg = config(runaway={"max_calls_per_minute": 1}, breaker={"rate_cooldown_s": 10})
    for last, closes in ((70.999999, False), (71, True)):
        engine = Engine(cfg)
        engine.process(facts_table([fact(at(0), api_key_id="k"), fact(at(1), api_key_id="k")]))
        events = engine.process(facts_table([fact(at(11), api_key_id="x")])).breaker_events
        assert [e.state for e in events] == ["half_open"]
        events = engine.process(facts_table([fact(at(last), api_key_id="x")])).breaker_events
        assert [e.state for e in events] == (["closed"] if closes else [])


def test_advance_breakers_moves_them_without_events() -> None:
    cfg = config(runaway={"max_calls_per_minute": 1}, breaker={"rate_cooldown_s": 60})
    engine = Engine(cfg)
    engine.process(facts_table([fact(at(0), api_key_id="k"), fact(at(1), api_key_id="k")]))
    assert engine.breaker_time == at(1)
    assert engine.advance_breakers(at(1)) == []
    assert [e.state for e in engine.advance_breakers(at(61))] == ["half_open"]
    assert engine.breaker_time == at(61) and engine.watermark == at(1)
    again = Engine(cfg, engine.snapshot())
    assert again.breaker_time == at(61)
    assert [e.state for e in again.advance_breakers(at(121))] == ["closed"]


def test_advancing_breakers_to_the_time_they_were_judged_at_moves_none() -> None:
    # A late call crosses team:a's hard limit for the hour that ended five minutes before
    # the watermark: the breaker opens at that fact, due already. Breakers move only where
    # time rises past what was judged, so an advance to the breaker time itself (an idle
    # tick with no quiet time) must not close it at the instant it opened.
    engine = Engine(_cfg())
    d = engine.process(
        facts_table(
            [
                fact(at(minutes=59), "1.50", team="a"),
                fact(at(minutes=65), "0", team="b"),
                fact(at(minutes=59, seconds=30), "0.60", team="a"),
            ]
        )
    )
    assert [(e.scope, e.state) for e in d.breaker_events] == [("team:a", "open")]
    assert engine.breaker_time == at(minutes=65)
    assert engine.advance_breakers(at(minutes=65)) == []
    later = at(minutes=65) + timedelta(microseconds=1)
    assert [(e.state, e.ts) for e in engine.advance_breakers(later)] == [("closed", later)]


def test_snapshot_is_compact_bytes_and_restores_to_the_same_state() -> None:
    engine = Engine(_cfg())
    engine.process(
        facts_table(
            [fact(at(i), "0.30", team="a", api_key_id="k", session_id="s") for i in range(8)]
        )
    )
    snap = engine.snapshot()
    assert isinstance(snap, bytes) and orjson.loads(snap)["version"] == SNAPSHOT_VERSION
    again = Engine.restore(_cfg(), snap)
    assert again.snapshot() == snap
    assert again.breakers() == engine.breakers()
    assert Engine.restore(_cfg(), snap.decode()).snapshot() == snap


def test_a_snapshot_of_version_2_restores_retry_storms_requests_from_their_rows() -> None:
    # Version 2 wrote each request as a row; version 3 as columns. A worker upgraded in
    # place carries on from the state it landed before.
    engine = Engine(_cfg())
    engine.process(facts_table([fact(at(i), "0.30", request_id=f"r{i % 3}") for i in range(7)]))
    snap = orjson.loads(engine.snapshot())
    assert snap["version"] == SNAPSHOT_VERSION == 4
    cols = snap["detectors"]["retries"]["requests"]
    fields = ("ids", "attempts", "calls", "last", "fired")
    rows = [list(r) for r in zip(*(cols[k] for k in fields), strict=True)]
    assert sorted(r[0] for r in rows) == ["r0", "r1", "r2"]
    old = {**snap, "version": 2}
    old["detectors"]["retries"]["requests"] = rows
    again = Engine.restore(_cfg(), orjson.dumps(old))
    assert again.snapshot() == engine.snapshot()


def test_a_snapshot_of_version_3_restores_budgets_by_index() -> None:
    # Version 3 named each budget by its [[budget]] index; 4 by scope, period and amount
    # (a worker of 3 fails on the name, so 4 is a new version it starts afresh from).
    cfg = config(budget=[{"scope": "team:a", "period": "day", "amount_usd": 10}])
    engine = Engine(cfg)
    engine.process(facts_table([fact(at(0), "6", team="a")]))
    snap = orjson.loads(engine.snapshot())
    [[key, *rest]] = snap["detectors"]["budgets"]
    assert key == "team:a/day#0/10"
    old = {**snap, "version": 3}
    old["detectors"]["budgets"] = [[0, *rest]]
    assert Engine.restore(cfg, orjson.dumps(old)).snapshot() == engine.snapshot()


def test_a_snapshot_of_another_layout_starts_fresh() -> None:
    for old in (
        {"version": 1, "detectors": {"rate": {"bad": 1}}},
        orjson.dumps({"version": 999}),
        None,
    ):
        engine = Engine.restore(_cfg(), old)
        assert engine.watermark is None and engine.breakers() == {}


def test_alerts_of_one_fact_come_in_detector_order_and_breakers_follow_them() -> None:
    cfg = config(
        runaway={"max_calls_per_minute": 1, "max_session_turns": 1},
        budget=[
            {
                "scope": "api_key:k",
                "period": "day",
                "amount_usd": 1,
                "hard_limit": 1,
                "alert_at": [],
            }
        ],
    )
    engine = Engine(cfg)
    d = engine.process(
        facts_table(
            [
                fact(at(0), "0.5", api_key_id="k", session_id="s"),
                fact(at(1), "0.5", api_key_id="k", session_id="s"),
            ]
        )
    )
    assert [(a.kind, a.scope) for a in d.alerts] == [
        ("runaway_rate", "api_key:k"),
        ("runaway_rate", "session:s"),
        ("runaway_session", "session:s"),
        ("budget_exceeded", "api_key:k"),
    ]
    # The key's breaker opened on its rate alert; the budget finds it open (no second event).
    assert [(e.scope, e.state) for e in d.breaker_events] == [
        ("api_key:k", "open"),
        ("session:s", "open"),
    ]


def test_budget_exceeded_opens_the_budget_scope_until_the_next_hour() -> None:
    engine = Engine(_cfg())
    d = engine.process(facts_table([fact(at(minutes=i), "0.50", team="a") for i in range(5)]))
    assert [a.kind for a in d.alerts if a.kind.startswith("budget")] == ["budget_threshold"] * 3 + [
        "budget_exceeded"
    ]
    assert [(e.scope, e.state) for e in d.breaker_events] == [("team:a", "open")]
    exceeded = next(a for a in d.alerts if a.kind == "budget_exceeded")
    assert exceeded.value == Decimal("2.00")
    events = engine.process(facts_table([fact(at(hours=1), "0", team="b")])).breaker_events
    assert [(e.scope, e.state, e.ts) for e in events] == [("team:a", "closed", at(hours=1))]


def test_an_emitted_dedup_key_is_remembered_for_its_retention_then_forgotten() -> None:
    # retain = 2 x max(600, 900, 86400) s. A session forgotten and rebuilt re-crosses at
    # 2 s + gap; its first alert (at 1 s) is remembered while 1 >= 2 + gap - retain.
    cfg = config(
        runaway={"max_session_turns": 1},
        detection={"allowed_lateness_s": 600, "session_idle_s": 900},
    )
    retain = timedelta(seconds=2 * 86400)
    for gap, again in ((retain - timedelta(seconds=1), False), (retain, True)):
        feed = Feed(cfg, "runaway_session")
        assert len(feed([fact(at(0), session_id="s"), fact(at(1), session_id="s")])) == 1
        alerts = feed([fact(at(1) + gap, session_id="s"), fact(at(2) + gap, session_id="s")])
        assert bool(alerts) is again, gap


def _recross(cfg: Config, first: timedelta, again: timedelta, *before: datetime) -> list[str]:
    """Session s trips max_session_turns = 1 at ``T0 + first``, idles out, and is rebuilt to
    trip again at ``T0 + again`` (each time on a call 0.1 s after the one before); ``before``:
    facts of another session fed first. The second trip's alerts, as dedup_keys."""
    step = timedelta(milliseconds=100)
    feed = Feed(cfg, "runaway_session")
    feed([fact(t, session_id="other") for t in before])
    trip = feed([fact(T0 + first - step, session_id="s"), fact(T0 + first, session_id="s")])
    assert len(trip) == 1
    return [
        a.dedup_key for a in feed([fact(T0 + t, session_id="s") for t in (again - step, again)])
    ]


def test_an_emitted_dedup_key_is_judged_in_whole_seconds_floored() -> None:
    # The alert's ts and the watermark both count in whole seconds, floored: an alert at
    # 1.5 s counts as 1 s, so it is forgotten at 2 s + retain; a watermark of
    # 1 s + retain + 0.5 s counts as 1 s + retain, still within reach of an alert at 1 s.
    cfg = config(runaway={"max_session_turns": 1}, detection={"session_idle_s": 900})
    retain = timedelta(seconds=2 * 86400)
    s, half = timedelta(seconds=1), timedelta(milliseconds=500)
    assert _recross(cfg, s, s + retain + half) == []
    assert len(_recross(cfg, s + half, 2 * s + retain)) == 1


def test_a_late_alert_is_remembered_from_its_own_ts_not_the_watermark() -> None:
    # The session trips on late calls (ts 1 s, watermark 1000 s): its key is forgotten
    # ``retain`` after 1 s, not after 1000 s.
    cfg = config(runaway={"max_session_turns": 1}, detection={"session_idle_s": 3600})
    retain = timedelta(seconds=2 * 86400)
    again = timedelta(seconds=3) + retain
    assert len(_recross(cfg, timedelta(seconds=1), again, at(1000))) == 1


def test_a_dedup_key_exactly_retain_old_survives_the_sweep() -> None:
    # The hourly sweep drops only keys the admission rule has forgotten: at watermark
    # 1 s + retain an alert of 1 s is still remembered, so the sweep then must keep it.
    cfg = config(runaway={"max_session_turns": 1}, detection={"session_idle_s": 900})
    retain = timedelta(seconds=2 * 86400)
    s, half = timedelta(seconds=1), timedelta(milliseconds=500)
    feed = Feed(cfg, "runaway_session")
    assert len(feed([fact(at(0), session_id="s"), fact(at(1), session_id="s")])) == 1
    feed([fact(T0 + s + retain, session_id="other")])  # the sweep runs at this watermark
    rebuilt = [fact(T0 + s + retain + d, session_id="s") for d in (half / 2, half)]
    assert feed(rebuilt) == []


def test_a_session_idle_span_over_a_day_lengthens_the_retention() -> None:
    # retain = 2 x max(lateness, session idle, 1 day): with a 3-day idle span a session can
    # be forgotten and rebuilt 4 days on, still within the 6 days its alert is remembered.
    cfg = config(runaway={"max_session_turns": 1}, detection={"session_idle_s": 3 * 86400})
    day, s = timedelta(days=1), timedelta(seconds=1)
    assert _recross(cfg, s, s + 4 * day) == []
    assert len(_recross(cfg, s, 2 * s + 6 * day)) == 1


def test_state_stays_bounded_over_days_of_new_keys_and_sessions() -> None:
    cfg = config(
        anomaly={"scopes": ["global", "api_key"]},
        runaway={"max_calls_per_minute": 1, "max_session_turns": 1},
        detection={"allowed_lateness_s": 600, "session_idle_s": 3600},
        breaker={"stay_open_retention_s": 86400},
    )
    engine = Engine(cfg)
    # Four days; a new key every hour and a new session every ten minutes, each misbehaving.
    for minute in range(0, 4 * 24 * 60, 5):
        key, sess = f"k{minute // 60}", f"s{minute // 10}"
        engine.process(
            facts_table(
                [
                    fact(at(minutes=minute, seconds=s), api_key_id=key, session_id=sess)
                    for s in (0, 1)
                ]
            )
        )
    snap = orjson.loads(engine.snapshot())
    det = snap["detectors"]
    assert len(det["sessions"]) <= 7 + 1  # idle an hour: forgotten (swept every idle/6)
    assert len(det["rate"]) <= 2 * 12  # (key and session) x minutes within the lateness
    assert len(det["anomaly"]["scopes"]) <= 1 + 24 + 4  # keys with spend in the baseline span
    # Session breakers stay open a day here, then retire: one day of sessions at most.
    assert 0 < len(snap["breakers"]) <= 24 * 6 + 1
    # Each dedup_key is remembered about two days, not forever.
    assert len(snap["emitted"]) < 0.6 * (4 * 24 * 60 // 5) * 3


def test_an_alert_forwarded_to_a_scope_owner_keeps_a_message_holding_the_separator() -> None:
    # A key or session id sent with an escaped \u001f is a valid string, and an alert's
    # message names it: the owner's three-way split of the row failed on every retry.
    from spendstream.records import Alert
    from spendstream.stream.detectors.base import Finding
    from spendstream.stream.engine import _alert_row, _forwarded
    from spendstream.stream.partials import Source

    alert = Alert(
        alert_id="a1",
        kind="runaway_rate",
        scope="team:a\x1fb",
        severity="critical",
        ts=T0,
        value=Decimal(0),
        threshold=Decimal(0),
        message="team:a\x1fb made 9 calls\x1fin a minute",
        dedup_key="d",
        details={"period_end": "2026-11-23T13:00:00+00:00"},
    )
    finding = Finding((1, 0, 3), 0, 1, alert)
    row = _alert_row(finding, Source(0, "0@1", None, 1))
    back = _forwarded(row).alert
    assert (back.kind, back.scope, back.message) == (alert.kind, alert.scope, alert.message)
    assert back.details == {"period_end": "2026-11-23T13:00:00+00:00"}
