"""unpriced_model through the engine: once per model and UTC day; survives snapshot/restore."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.stream.detection_facts import Feed, at, both_paths, config, fact

# Every test here runs on the columnar path and on the fact-by-fact fallback.
pytestmark = pytest.mark.usefixtures(both_paths.__name__)

UNPRICED = "unpriced_model"


def test_first_unpriced_call_of_a_model_alerts_once_that_day() -> None:
    feed = Feed(config(), UNPRICED)
    alerts = feed(
        [fact(at(minutes=m), cost=None, model="mystery-1") for m in range(5)]
        + [fact(at(minutes=6), cost="0.01")]
    )
    assert len(alerts) == 1
    a = alerts[0]
    assert (a.kind, a.scope, a.severity, a.value, a.threshold) == (
        "unpriced_model",
        "global",
        "warning",
        1,
        0,
    )
    assert a.ts == at()
    assert a.details == {"provider": "anthropic", "model": "mystery-1", "day": "2026-03-02"}
    assert a.message == (
        "no price for anthropic/mystery-1: its calls on 2026-03-02 land with priced = false and "
        "null costs; add a [[prices.model]] entry to the configuration (`spendstream prices "
        "unpriced` lists every such model)"
    )


def test_a_name_with_spaces_around_it_is_quoted_in_the_alert() -> None:
    feed = Feed(config(), UNPRICED)
    [a] = feed([fact(at(), cost=None, model="gpt-4o ")])
    assert a.message.startswith(
        "no price for 'anthropic'/'gpt-4o ' (spaces around the name): its calls on 2026-03-02"
    )
    assert a.details["model"] == "gpt-4o "


def test_each_model_and_each_day_alerts_separately() -> None:
    feed = Feed(config(), UNPRICED)
    alerts = feed(
        [
            fact(at(hours=1), cost=None, model="a"),
            fact(at(hours=2), cost=None, model="b"),
            fact(at(hours=3), cost=None, model="a", provider="openai"),
            fact(at(hours=25), cost=None, model="a"),
            fact(at(hours=26), cost=None, model="a"),
        ]
    )
    assert [(a.details["provider"], a.details["model"], a.details["day"]) for a in alerts] == [
        ("anthropic", "a", "2026-03-02"),
        ("anthropic", "b", "2026-03-02"),
        ("openai", "a", "2026-03-02"),
        ("anthropic", "a", "2026-03-03"),
    ]
    assert len({a.dedup_key for a in alerts}) == 4


def test_priced_facts_never_alert() -> None:
    assert Feed(config(), UNPRICED)([fact(at(minutes=m)) for m in range(10)]) == []


def test_a_late_call_into_a_day_alerts_in_its_day_while_the_day_takes_it() -> None:
    cfg = config(detection={"allowed_lateness_s": 3600})
    for wm, day in (
        (at(hours=25), "2026-03-02"),
        (at(hours=25) + timedelta(microseconds=1), "2026-03-03"),
    ):
        feed = Feed(cfg, UNPRICED)
        feed([fact(wm, cost="0.01")])
        [a] = feed([fact(at(hours=23), cost=None, model="late")])
        assert (a.ts, a.details["day"]) == (at(hours=23), day)


def test_a_call_too_late_for_its_day_alerts_once_in_its_watermarks_day_saying_when_dated() -> None:
    # A model seen only in calls that came too late for their day (a gateway's backlog,
    # last week's file ingested after today's) raised nothing, though each landed unpriced.
    feed = Feed(config(), UNPRICED)
    feed([fact(at(hours=24 * 9), cost="0.01")])
    late = [fact(at(hours=24 * d), cost=None, model="old-1") for d in (2, 1, 3)]
    [a] = feed([*late, fact(at(hours=24 * 9 + 1), cost=None, model="old-1")])
    assert (a.ts, a.dedup_key) == (
        at(hours=24 * 2),
        "unpriced_model|global|anthropic/old-1|2026-03-11",
    )
    assert a.details == {
        "provider": "anthropic", "model": "old-1", "day": "2026-03-11", "call_day": "2026-03-04",
    }  # fmt: skip
    assert a.message.startswith(
        "no price for anthropic/old-1: its calls arriving on 2026-03-11 (the first dated "
        "2026-03-04, late) land with priced = false and null costs"
    )
    # Once per model and day: the next day's late call is a new alert.
    [b] = feed(
        [fact(at(hours=24 * 10), cost="0.01"), fact(at(hours=24 * 1), cost=None, model="old-1")]
    )
    assert b.details["day"] == "2026-03-12"


def test_a_late_call_counts_in_the_day_of_its_own_rows_watermark_not_its_batchs() -> None:
    # One batch whose watermark starts on the call's own day, and passes midnight again
    # after it: the call's day is judged, and replaced, by the watermark at its own row
    # (as the per-event engine does, and as each usage partition's rows carry it).
    feed = Feed(config(), UNPRICED)
    [a] = feed(
        [
            fact(at(hours=12), cost="0.01"),
            fact(at(hours=24 * 9 + 12), cost="0.01"),
            fact(at(hours=13), cost=None, model="late-1"),
            fact(at(hours=24 * 10 + 1), cost="0.01"),
        ]
    )
    assert (a.details["day"], a.details["call_day"]) == ("2026-03-11", "2026-03-02")


def test_a_late_calls_day_survives_snapshot_restore() -> None:
    # Its alert is dated by the old call, so the engine's memory of emitted keys (kept by
    # alert ts) does not hold it: only the detector's own state says the day has fired.
    feed = Feed(config(), UNPRICED)
    feed([fact(at(hours=24 * 9), cost="0.01")])
    assert len(feed([fact(at(hours=24 * 2), cost=None, model="old-2")])) == 1
    again = feed.restarted()
    assert again([fact(at(hours=24 * 3), cost=None, model="old-2")]) == []
    assert again([fact(at(hours=24 * 9 + 2), cost=None, model="old-2")]) == []


def test_snapshot_restore_continues_without_repeating() -> None:
    feed = Feed(config(), UNPRICED)
    assert len(feed([fact(at(), cost=None, model="x")])) == 1
    again = feed.restarted()
    assert again([fact(at(hours=5), cost=None, model="x")]) == []
    assert len(again([fact(at(hours=5), cost=None, model="y")])) == 1


def test_the_alert_is_the_first_call_to_arrive_not_the_earliest_in_time() -> None:
    # As judged one fact at a time: the call that revealed the missing price (a later call
    # that arrives late is not it).
    feed = Feed(config(), UNPRICED)
    alerts = feed(
        [fact(at(hours=2), cost=None, model="m"), fact(at(hours=1), cost=None, model="m")]
    )
    assert [a.ts for a in alerts] == [at(hours=2)]
