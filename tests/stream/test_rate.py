from __future__ import annotations

from spendstream.records import Alert
from spendstream.stream.detectors.rate import RateDetector
from tests.stream.detection_facts import at, config, fact


def _run(det: RateDetector, facts: list) -> list[Alert]:  # type: ignore[type-arg]
    out: list[Alert] = []
    wm = None
    for f in facts:
        wm = f.event.ts if wm is None or f.event.ts > wm else wm
        out.extend(det.observe(f, wm))
    return out


def test_call_over_the_per_minute_limit_of_a_key_fires_once_per_minute() -> None:
    det = RateDetector(config(runaway={"max_calls_per_minute": 5}))
    calls = [fact(at(i), api_key_id="k1") for i in range(5)]
    assert _run(det, calls) == []
    over = _run(det, [fact(at(6), api_key_id="k1"), fact(at(7), api_key_id="k1")])
    assert [(a.kind, a.scope, a.value, a.threshold) for a in over] == [
        ("runaway_rate", "api_key:k1", 6, 5)
    ]
    assert over[0].ts == at(6)
    assert over[0].severity == "critical"
    # A new minute is a new window: it fires again there, once.
    again = _run(det, [fact(at(60 + i), api_key_id="k1") for i in range(8)])
    assert len(again) == 1 and again[0].dedup_key != over[0].dedup_key


def test_session_rate_is_judged_apart_from_its_key() -> None:
    det = RateDetector(config(runaway={"max_calls_per_minute": 3}))
    facts = [fact(at(i), api_key_id=f"k{i}", session_id="s1") for i in range(4)]
    alerts = _run(det, facts)
    assert [a.scope for a in alerts] == ["session:s1"]


def test_calls_spread_over_two_minutes_do_not_fire() -> None:
    det = RateDetector(config(runaway={"max_calls_per_minute": 3}))
    facts = [fact(at(50 + i * 3), api_key_id="k") for i in range(6)]  # 50..65 s: 4 + 2
    alerts = _run(det, facts)
    assert len(alerts) == 1  # 50,53,56,59 are four calls in minute 0
    facts2 = [fact(at(121 + i * 20), api_key_id="k2") for i in range(6)]  # 3 per minute
    assert _run(det, facts2) == []


def test_late_call_counts_in_its_own_minute_and_too_late_ones_are_ignored() -> None:
    cfg = config(runaway={"max_calls_per_minute": 2}, detection={"allowed_lateness_s": 120})
    det = RateDetector(cfg)
    _run(det, [fact(at(0), api_key_id="k"), fact(at(1), api_key_id="k")])
    # Watermark moves 100 s ahead; a late call for minute 0 still lands there and crosses.
    late = _run(det, [fact(at(100), api_key_id="x"), fact(at(2), api_key_id="k")])
    assert [a.scope for a in late] == ["api_key:k"] and late[0].ts == at(2)
    # Far beyond the lateness: minute 0 is gone and a late call neither fires nor re-fires.
    det2 = RateDetector(cfg)
    _run(
        det2,
        [fact(at(0), api_key_id="k"), fact(at(1), api_key_id="k"), fact(at(900), api_key_id="y")],
    )
    assert _run(det2, [fact(at(3), api_key_id="k")]) == []
    assert "api_key:k" not in det2.windows


def test_state_survives_snapshot_and_restore() -> None:
    cfg = config(runaway={"max_calls_per_minute": 2})
    det = RateDetector(cfg)
    _run(det, [fact(at(0), api_key_id="k"), fact(at(1), api_key_id="k")])
    det2 = RateDetector.restore(cfg, det.snapshot())
    assert len(_run(det2, [fact(at(2), api_key_id="k")])) == 1
