"""retry_storm through the engine: a request over max_attempts; a key's error/retry share jumping."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest

from spendstream.config import Config
from spendstream.records import Alert, Fact
from tests.stream.detection_facts import Feed, at, both_paths, config, fact

# Every test here runs on the columnar path and on the fact-by-fact fallback.
pytestmark = pytest.mark.usefixtures(both_paths.__name__)

STORM = "retry_storm"


def test_request_over_max_attempts_fires_once_on_its_key() -> None:
    feed = Feed(config(runaway={"max_attempts": 3}), STORM)
    tries = [
        fact(at(i), api_key_id="k", request_id="r1", attempt=i + 1, status="error")
        for i in range(3)
    ]
    assert feed(tries) == []
    alerts = feed([fact(at(3), api_key_id="k", request_id="r1", attempt=4)])
    assert [(a.kind, a.scope, a.value, a.threshold, a.details["request_id"]) for a in alerts] == [
        ("retry_storm", "api_key:k", 4, 3, "r1")
    ]
    assert alerts[0].message == "request r1 on api_key:k made 4 attempts (limit 3)"
    assert alerts[0].details == {"request_id": "r1", "form": "attempts"}
    assert feed([fact(at(4), api_key_id="k", request_id="r1", attempt=5)]) == []


def test_resent_calls_of_one_request_count_even_without_attempt_numbers() -> None:
    feed = Feed(config(runaway={"max_attempts": 2}), STORM)
    alerts = feed([fact(at(i), session_id="s", request_id="r") for i in range(3)])
    assert [(a.scope, a.ts) for a in alerts] == [("session:s", at(2))]


def test_a_request_without_key_or_session_is_a_global_storm() -> None:
    feed = Feed(config(runaway={"max_attempts": 1}), STORM)
    alerts = feed([fact(at(0), request_id="r"), fact(at(1), request_id="r")])
    assert [a.scope for a in alerts] == ["global"]


def test_a_request_is_forgotten_once_its_last_call_is_an_hour_behind() -> None:
    cfg = config(runaway={"max_attempts": 2}, detection={"allowed_lateness_s": 600})
    kept = Feed(cfg, STORM)
    kept([fact(at(0), request_id="r"), fact(at(1), request_id="r")])
    # max(lateness, 3600) = 3600 s after its last call it still counts: the third call fires.
    assert len(kept([fact(at(3601), request_id="r")])) == 1
    forgotten = Feed(cfg, STORM)
    forgotten([fact(at(0), request_id="r"), fact(at(1), request_id="r")])
    assert forgotten([fact(at(3602), request_id="r")]) == []


def _hour(feed: Feed, hour: int, calls: int, bad: int, key: str = "k") -> list[Alert]:
    # Failures spread evenly through the hour, as a steady error rate would be.
    facts = [
        fact(
            at(hours=hour, seconds=i),
            api_key_id=key,
            status="error" if (i * bad) % calls < bad else "ok",
        )
        for i in range(calls)
    ]
    return feed(facts)


def test_key_whose_error_share_jumps_fires_once_per_hour() -> None:
    feed = Feed(config(detection={"retry_min_calls": 20}), STORM)
    assert _hour(feed, 0, 100, 5) == []  # 5% baseline
    alerts = _hour(feed, 1, 40, 40)
    assert len(alerts) == 1
    a = alerts[0]
    assert (a.kind, a.scope, a.details["form"]) == ("retry_storm", "api_key:k", "share")
    # It fires as soon as the hour has retry_min_calls calls and the share is over the bar.
    assert a.ts == at(hours=1, seconds=19)
    assert (a.value, a.threshold) == (Decimal("1.0000"), Decimal("0.3000"))
    assert a.message == (
        "api_key:k: 100% of calls failed or were retries in the hour from 2026-03-02 01:00 UTC, "
        "against 5% over the previous 24 h"
    )


def test_steady_error_share_does_not_fire() -> None:
    feed = Feed(config(), STORM)
    _hour(feed, 0, 100, 30)
    assert _hour(feed, 1, 100, 35) == []  # 35% is not more than 3 x 30%


def _share_cfg(**detection: object) -> Config:
    return config(detection={"retry_min_calls": 10, **detection})


def _exact_hour(bad_first: int, ok_then: int) -> list[Fact]:
    """An hour of ``bad_first`` failed calls, then ``ok_then`` good ones."""
    return [
        fact(at(hours=1, seconds=i), api_key_id="k", status="error" if i < bad_first else "ok")
        for i in range(bad_first + ok_then)
    ]


def test_a_share_exactly_at_retry_min_share_fires() -> None:
    # Baseline 5%: the 3 x factor bar (15%) is below min_share, so min_share decides.
    feed = Feed(_share_cfg(retry_min_share="0.3"), STORM)
    _hour(feed, 0, 100, 5)
    alerts = feed(_exact_hour(3, 7))  # at the 10th call: 3/10 = 30% exactly
    assert [(a.ts, a.value) for a in alerts] == [(at(hours=1, seconds=9), Decimal("0.3000"))]
    below = Feed(_share_cfg(retry_min_share="0.3"), STORM)
    _hour(below, 0, 100, 5)
    assert below(_exact_hour(2, 8)) == []  # 20%


def test_a_share_exactly_factor_times_the_baseline_does_not_fire() -> None:
    # Baseline 10% and factor 3: 30% is not more than 3 x 10%, 40% is.
    cfg = _share_cfg(retry_min_share="0.2", retry_share_factor="3")
    at_bar = Feed(cfg, STORM)
    _hour(at_bar, 0, 100, 10)
    assert at_bar(_exact_hour(3, 7)) == []
    over = Feed(cfg, STORM)
    _hour(over, 0, 100, 10)
    assert [a.value for a in over(_exact_hour(4, 6))] == [Decimal("0.4000")]


def test_the_baseline_needs_retry_min_calls_calls() -> None:
    enough = Feed(_share_cfg(), STORM)
    _hour(enough, 0, 10, 0)  # exactly retry_min_calls calls in the 24 h before
    assert len(enough(_exact_hour(10, 0))) == 1
    short = Feed(_share_cfg(), STORM)
    _hour(short, 0, 9, 0)
    assert short(_exact_hour(10, 0)) == []


def test_the_hour_itself_needs_retry_min_calls_calls() -> None:
    feed = Feed(_share_cfg(), STORM)
    _hour(feed, 0, 100, 0)
    assert feed(_exact_hour(9, 0)) == []  # nine calls, all failed: not judged yet
    assert [a.ts for a in feed([fact(at(hours=1, seconds=50), api_key_id="k")])] == [
        at(hours=1, seconds=50)
    ]


def test_the_baseline_is_the_24_hours_before_the_hour() -> None:
    # A failing hour 25 h back is outside the baseline; 24 h back is inside it.
    for back, fires in ((25, True), (24, False)):
        feed = Feed(_share_cfg(allowed_lateness_s=0), STORM)
        _hour(feed, 26 - back, 100, 100)  # 100% failed, `back` hours before hour 26
        _hour(feed, 25, 100, 0)
        assert bool(_hour(feed, 26, 10, 10)) is fires, back


def test_retry_state_restores() -> None:
    feed = Feed(config(runaway={"max_attempts": 2}), STORM)
    feed([fact(at(0), api_key_id="k", request_id="r", attempt=2)])
    assert len(feed.restarted()([fact(at(1), api_key_id="k", request_id="r", attempt=3)])) == 1


def test_a_late_call_in_a_fired_hour_moves_the_current_hours_retry_baseline() -> None:
    # Hours 0..22: 30% failed calls. Hour 23 fails outright (fires). Hour 24 at 2 in 5 is
    # under 1.5x the 24 h share (31%). Then 200 good calls arrive late into hour 23 (not
    # judged: it fired) and drop the baseline to 17%: hour 24's next call must fire.
    cfg = config(
        detection={
            "allowed_lateness_s": 7200,
            "retry_min_calls": 3,
            "retry_min_share": "0.3",
            "retry_share_factor": "1.5",
        }
    )

    def call(sec: int, status: str = "ok") -> Fact:
        return fact(at(sec), api_key_id="k1", status=status)

    calls = [
        call(h * 3600 + i, "error" if i in (1, 4, 7) else "ok")
        for h in range(23)
        for i in range(10)
    ]
    calls += [call(23 * 3600 + i, "error") for i in range(5)]
    calls += [call(24 * 3600 + i, "error" if i in (2, 4) else "ok") for i in range(5)]
    calls += [call(23 * 3600 + 100 + i) for i in range(200)]
    calls.append(call(24 * 3600 + 10))
    for split in (len(calls), 235, 240, 300):
        feed = Feed(cfg, STORM)
        alerts = feed(calls[:split]) + feed(calls[split:])
        assert [a.ts for a in alerts] == [at(23 * 3600 + 2), at(24 * 3600 + 10)], split


def test_a_request_storm_of_a_call_with_key_and_session_is_scoped_to_the_key() -> None:
    # The api key first, then the session: the key's breaker is the one that stops the calls.
    feed = Feed(config(runaway={"max_attempts": 1}), STORM)
    calls = [fact(at(i), api_key_id="k", session_id="s", request_id="r") for i in range(2)]
    assert [a.scope for a in feed(calls)] == ["api_key:k"]


def test_a_successful_retry_counts_toward_the_error_retry_share() -> None:
    # A call with attempt > 1 is a retry even when it succeeded: retries multiply the bill.
    feed = Feed(_share_cfg(), STORM)
    _hour(feed, 0, 100, 0)
    retries = [fact(at(hours=1, seconds=i), api_key_id="k", attempt=2) for i in range(10)]
    assert [(a.details["form"], a.value) for a in feed(retries)] == [("share", Decimal("1.0000"))]


def test_an_hour_before_the_last_one_that_fired_is_not_judged_again() -> None:
    # Hour 2 fires; late failures then land in hour 1 (still within the lateness). Hour 1 is
    # over the bar on its own, but it is before the hour that fired: no second storm.
    feed = Feed(_share_cfg(allowed_lateness_s=7200), STORM)
    _hour(feed, 0, 100, 0)
    assert len(_hour(feed, 2, 10, 10)) == 1
    late = [fact(at(hours=1, seconds=i), api_key_id="k", status="error") for i in range(10)]
    assert feed(late) == []


def test_the_baseline_hours_are_kept_while_the_hour_they_judge_takes_calls() -> None:
    # Hour 16 is the 24th hour before hour 40. The state sweep (set off at 40:30 by an old
    # window of another key, hour 9) runs while hour 40 still takes calls, and must keep
    # hour 16: dropped, the baseline would be hour 38's clean calls alone and the failing
    # hour 40 would fire.
    feed = Feed(_share_cfg(allowed_lateness_s=0), STORM)
    feed([fact(at(hours=9), api_key_id="old")])
    _hour(feed, 16, 100, 100)
    _hour(feed, 38, 100, 0)
    feed([fact(at(hours=40, minutes=30), api_key_id="other")])
    hours = orjson.loads(feed.engine.snapshot())["detectors"]["retries"]["hours"]
    assert "old" not in {key for _, key, _, _ in hours}  # the sweep did run
    failing = [
        fact(at(hours=40, minutes=31, seconds=i), api_key_id="k", status="error") for i in range(10)
    ]
    assert feed(failing) == []  # 100% against 50% over hours 16..39: not over 3 x that


def test_a_keys_fired_hour_is_forgotten_once_that_hour_expires() -> None:
    # A key's fired hour is dropped when that very hour of the key expires. Dropped only by
    # a later hour, it would stay in the state (and every snapshot) of a quiet key forever.
    feed = Feed(config(detection={"retry_min_calls": 20}), STORM)
    _hour(feed, 0, 100, 5)
    assert len(_hour(feed, 1, 40, 40)) == 1
    for hour in range(2, 80):
        feed([fact(at(hours=hour), api_key_id="other")])
    assert orjson.loads(feed.engine.snapshot())["detectors"]["retries"]["fired"] == []


def test_a_share_exactly_at_a_min_share_floats_overshoot_still_fires() -> None:
    # 0.28 x 25 is 7.000000000000001 as floats: 7 bad calls of 25 are 28% exactly, which
    # fires (equal fires). The columnar screen must leave a margin below the float bar, or
    # the key is never judged exactly (it survived a mutation pass without the margin).
    feed = Feed(_share_cfg(retry_min_share="0.28", retry_min_calls=25), STORM)
    _hour(feed, 0, 100, 5)  # 5%: 3 x 5% is below 28%, so min_share decides
    alerts = feed(_exact_hour(7, 18))  # at the 25th call: 7/25 = 28% exactly
    assert [(a.ts, a.value) for a in alerts] == [(at(hours=1, seconds=24), Decimal("0.2800"))]
