"""cache_hit_drop through the engine: a feature's cache-read share falling below its own level."""

from __future__ import annotations

from decimal import Decimal

import pytest

from spendstream.records import Fact
from tests.stream.detection_facts import Feed, at, both_paths, config, fact

# Every test here runs on the columnar path and on the fact-by-fact fallback.
pytestmark = pytest.mark.usefixtures(both_paths.__name__)

DROP = "cache_hit_drop"


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
    feed = Feed(config(), DROP)
    assert feed(_calls(0, 20, 90)) == []
    # 10 calls = 100k tokens, the minimum an hour needs before it is judged.
    alerts = feed(_calls(1, 10, 69))
    assert [(a.kind, a.scope, a.value, a.threshold) for a in alerts] == [
        ("cache_hit_drop", "feature:rag", Decimal("0.69"), Decimal("0.70"))
    ]
    assert alerts[0].ts == at(hours=1, minutes=9)
    assert alerts[0].message == (
        "feature:rag read 69% of its input tokens from the prompt cache in the hour from "
        "2026-03-02 01:00 UTC, against 90% over the previous 24 h"
    )
    assert alerts[0].details == {
        "window_start": "2026-03-02T01:00:00+00:00",
        "baseline_share": "0.9000",
    }
    assert feed(_calls(1, 5, 10)) == []


def test_share_at_exactly_the_drop_still_fires_and_a_small_dip_does_not() -> None:
    feed = Feed(config(), DROP)
    feed(_calls(0, 20, 90))
    assert feed(_calls(1, 10, 75)) == []
    exactly = Feed(config(), DROP)
    exactly(_calls(0, 20, 90))
    assert len(exactly(_calls(1, 10, 70))) == 1


def test_an_hour_is_judged_from_cache_min_input_tokens_on() -> None:
    feed = Feed(config(), DROP)
    feed(_calls(0, 20, 90))
    assert feed(_calls(1, 9, 0)) == []  # 90k tokens: not judged yet
    assert [
        a.ts for a in feed([fact(at(hours=1, minutes=50), feature="rag", input_tokens=10_000)])
    ] == [at(hours=1, minutes=50)]


def test_the_baseline_needs_min_tokens_and_a_cache_habit() -> None:
    for n, pct, fires in ((10, 50, True), (9, 90, False), (20, 49, False)):
        feed = Feed(config(), DROP)
        feed(_calls(0, n, pct))
        assert bool(feed(_calls(1, 10, 0))) is fires, (n, pct)


def test_a_dip_that_recovers_inside_one_batch_fires_only_where_it_was_low() -> None:
    feed = Feed(config(), DROP)
    feed(_calls(0, 20, 90))
    calls = _calls(1, 10, 90) + _calls(1, 30, 0)[10:]  # the hour drops from its 11th call
    alerts = feed(calls)
    assert len(alerts) == 1 and alerts[0].value <= Decimal("0.70")


def test_cache_state_restores() -> None:
    feed = Feed(config(), DROP)
    feed(_calls(0, 20, 90))
    assert len(feed.restarted()(_calls(1, 10, 50))) == 1


_LATE_CFG = dict(
    detection={
        "allowed_lateness_s": 7200,
        "cache_min_input_tokens": 3000,
        "cache_drop_points": "0.2",
        "cache_min_baseline_share": "0.5",
    }
)


def _k1(sec: int, read: int, tokens: int = 1000) -> Fact:
    return fact(at(sec), feature="k1", input_tokens=tokens, cache_read_tokens=read)


def _hour_24_lifted_late() -> list[Fact]:
    """Hours 0..22: one call each at a 90% cache share; hour 23 collapses (fires); hour 24
    reads 75%, fine against the 24 h before it; then a large, fully cached call arrives
    late into hour 23, which lifts hour 24's baseline so that its 75% is now a drop."""
    calls = [_k1(h * 3600, 900) for h in range(23)]
    calls += [_k1(23 * 3600 + i, 0) for i in range(3)]
    calls += [_k1(24 * 3600 + i, 750) for i in range(3)]
    return [*calls, _k1(23 * 3600 + 10, 100_000, 100_000)]


def test_a_late_call_in_a_fired_hour_moves_the_current_hours_baseline() -> None:
    # The late call into hour 23 is not judged (that hour already fired), but the drop it
    # makes of hour 24's 75% must be said at hour 24's next call.
    calls = [*_hour_24_lifted_late(), _k1(24 * 3600 + 10, 750)]
    for split in (len(calls), 26, 27, 28):
        feed = Feed(config(**_LATE_CFG), DROP)
        alerts = feed(calls[:split]) + feed(calls[split:])
        assert [a.ts for a in alerts] == [at(23 * 3600 + 2), at(24 * 3600 + 10)], split


def test_the_baseline_reaches_back_a_full_24_hours() -> None:
    # Hours 0..23 are hour 24's previous 24 h: the oldest of them counts too.
    feed = Feed(config(), DROP)
    feed(_calls(0, 20, 90))  # hour 0 only: the whole baseline of hour 24
    assert [a.details["window_start"] for a in feed(_calls(24, 10, 0))] == [
        at(hours=24).isoformat()
    ]


def test_an_hour_low_before_it_was_judged_fires_at_the_call_that_makes_it_judged() -> None:
    feed = Feed(config(), DROP)
    feed(_calls(0, 20, 90))
    assert feed(_calls(1, 9, 0)) == []  # 90k tokens at 0%: not judged yet
    # A fully cached call: the hour's share is 10%, its first share that is judged.
    call = fact(
        at(hours=1, minutes=50), feature="rag", input_tokens=10_000, cache_read_tokens=10_000
    )
    assert [(a.ts, a.value) for a in feed([call])] == [(at(hours=1, minutes=50), Decimal("0.1"))]


def test_a_dip_that_recovers_by_the_end_of_its_batch_still_fires() -> None:
    # The rule judges every running share, not the batch's final one.
    feed = Feed(config(), DROP)
    feed(_calls(0, 20, 90))
    calls = _calls(1, 10, 0) + _calls(1, 40, 100)[10:]  # 0% for 100k tokens, then 75% overall
    assert [(a.ts, a.value) for a in feed(calls)] == [(at(hours=1, minutes=9), Decimal("0"))]


def test_a_call_without_input_tokens_is_not_judged() -> None:
    # As above, a late, fully cached call lifts hour 24's baseline so that its 75% is now a
    # drop. A call of hour 24 without input tokens has no share to judge: it must not be
    # the one that fires; the next call with tokens is.
    calls = _hour_24_lifted_late()
    feed = Feed(config(**_LATE_CFG), DROP)
    assert [a.ts for a in feed(calls)] == [at(23 * 3600 + 2)]
    assert feed([_k1(24 * 3600 + 10, 0, 0)]) == []
    assert [a.ts for a in feed([_k1(24 * 3600 + 11, 750)])] == [at(24 * 3600 + 11)]


def test_the_baseline_reaches_back_24_hours_and_no_further() -> None:
    # Hour 0 is 25 hours before hour 25: not part of its baseline, which is then empty (no
    # cache habit to drop from). A baseline of 25 hours survived a mutation pass.
    feed = Feed(config(), DROP)
    feed(_calls(0, 20, 90))
    assert feed(_calls(25, 10, 0)) == []
