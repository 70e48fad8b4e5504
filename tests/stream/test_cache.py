from __future__ import annotations

from decimal import Decimal

from spendstream.records import Fact
from spendstream.stream.detectors.cache import CacheDetector
from tests.stream.detection_facts import at, config, fact, run


def _calls(hour: int, n: int, share_pct: int, feature: str = "rag") -> list[Fact]:
    return [
        fact(
            at(hours=hour, minutes=i),
            feature=feature,
            input_tokens=10_000,
            cache_read_tokens=100 * share_pct,
        )
        for i in range(n)
    ]


def test_feature_hitting_under_70_percent_after_90_fires_once() -> None:
    det = CacheDetector(config())
    assert run(det, _calls(0, 20, 90)) == []
    # 10 calls = 100k tokens, the minimum an hour needs before it is judged.
    alerts = run(det, _calls(1, 10, 69))
    assert [(a.kind, a.scope, a.value, a.threshold) for a in alerts] == [
        ("cache_hit_drop", "feature:rag", Decimal("0.69"), Decimal("0.70"))
    ]
    assert alerts[0].ts == at(hours=1, minutes=9)
    assert run(det, _calls(1, 5, 10)) == []


def test_share_at_exactly_the_drop_still_fires_and_a_small_dip_does_not() -> None:
    det = CacheDetector(config())
    run(det, _calls(0, 20, 90))
    assert run(det, _calls(1, 10, 75)) == []
    det2 = CacheDetector(config())
    run(det2, _calls(0, 20, 90))
    assert len(run(det2, _calls(1, 10, 70))) == 1


def test_features_without_a_cache_habit_are_not_judged() -> None:
    det = CacheDetector(config())
    run(det, _calls(0, 20, 30))
    assert run(det, _calls(1, 10, 0)) == []


def test_cache_state_restores() -> None:
    cfg = config()
    det = CacheDetector(cfg)
    run(det, _calls(0, 20, 90))
    det2 = CacheDetector.restore(cfg, det.snapshot())
    assert len(run(det2, _calls(1, 10, 50))) == 1
