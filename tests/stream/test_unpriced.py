"""unpriced_model: once per model and UTC day; survives snapshot/restore; joins the engine."""

from __future__ import annotations

import json

from spendstream.stream.detection import DetectionEngine, detector_types
from spendstream.stream.unpriced import UnpricedModelDetector
from tests.stream.detection_facts import at, config, fact, run


def test_first_unpriced_call_of_a_model_alerts_once_that_day() -> None:
    det = UnpricedModelDetector(config())
    alerts = run(
        det,
        [fact(at(minutes=m), cost=None, model="mystery-1") for m in range(5)]
        + [fact(at(minutes=6), cost="0.01")],
    )
    assert len(alerts) == 1
    a = alerts[0]
    assert (a.kind, a.scope, a.severity) == ("unpriced_model", "global", "warning")
    assert a.ts == at()
    assert a.details == {"provider": "anthropic", "model": "mystery-1", "day": "2026-03-02"}
    assert "anthropic/mystery-1" in a.message


def test_each_model_and_each_day_alerts_separately() -> None:
    det = UnpricedModelDetector(config())
    alerts = run(
        det,
        [
            fact(at(hours=1), cost=None, model="a"),
            fact(at(hours=2), cost=None, model="b"),
            fact(at(hours=3), cost=None, model="a", provider="openai"),
            fact(at(hours=25), cost=None, model="a"),
            fact(at(hours=26), cost=None, model="a"),
        ],
    )
    assert [(a.details["provider"], a.details["model"], a.details["day"]) for a in alerts] == [
        ("anthropic", "a", "2026-03-02"),
        ("anthropic", "b", "2026-03-02"),
        ("openai", "a", "2026-03-02"),
        ("anthropic", "a", "2026-03-03"),
    ]
    assert len({a.dedup_key for a in alerts}) == 4


def test_priced_facts_never_alert() -> None:
    det = UnpricedModelDetector(config())
    assert run(det, [fact(at(minutes=m)) for m in range(10)]) == []


def test_snapshot_restore_continues_without_repeating() -> None:
    cfg = config()
    det = UnpricedModelDetector(cfg)
    assert len(run(det, [fact(at(), cost=None, model="x")])) == 1
    snap = json.loads(json.dumps(det.snapshot()))
    again = UnpricedModelDetector.restore(cfg, snap)
    assert run(again, [fact(at(hours=5), cost=None, model="x")]) == []
    assert len(run(again, [fact(at(hours=5), cost=None, model="y")])) == 1


def test_old_days_are_forgotten_so_state_stays_small() -> None:
    det = UnpricedModelDetector(config())
    run(det, [fact(at(hours=24 * d), cost=None, model=f"m{d}") for d in range(30)])
    assert len(det.fired) <= 3


def test_detection_engine_runs_the_unpriced_detector() -> None:
    assert UnpricedModelDetector in detector_types()
    engine = DetectionEngine(config())
    alerts, _ = engine.process(
        [fact(at(), cost=None, model="zz"), fact(at(1), cost=None, model="zz")]
    )
    assert [a.kind for a in alerts] == ["unpriced_model"]
