from __future__ import annotations

from spendstream.stream.detectors.retries import RetryDetector
from tests.stream.detection_facts import at, config, fact, run


def test_request_over_max_attempts_fires_once_on_its_key() -> None:
    det = RetryDetector(config(runaway={"max_attempts": 3}))
    tries = [
        fact(at(i), api_key_id="k", request_id="r1", attempt=i + 1, status="error")
        for i in range(3)
    ]
    assert run(det, tries) == []
    alerts = run(det, [fact(at(3), api_key_id="k", request_id="r1", attempt=4)])
    assert [(a.kind, a.scope, a.value, a.threshold, a.details["request_id"]) for a in alerts] == [
        ("retry_storm", "api_key:k", 4, 3, "r1")
    ]
    assert run(det, [fact(at(4), api_key_id="k", request_id="r1", attempt=5)]) == []


def test_resent_calls_of_one_request_count_even_without_attempt_numbers() -> None:
    det = RetryDetector(config(runaway={"max_attempts": 2}))
    alerts = run(det, [fact(at(i), session_id="s", request_id="r") for i in range(3)])
    assert [a.scope for a in alerts] == ["session:s"]


def _hour(det: RetryDetector, hour: int, calls: int, bad: int, key: str = "k") -> list:  # type: ignore[type-arg]
    # Failures spread evenly through the hour, as a steady error rate would be.
    facts = [
        fact(
            at(hours=hour, seconds=i),
            api_key_id=key,
            status="error" if (i * bad) % calls < bad else "ok",
        )
        for i in range(calls)
    ]
    return run(det, facts)


def test_key_whose_error_share_jumps_fires_once_per_hour() -> None:
    det = RetryDetector(config(detection={"retry_min_calls": 20}))
    assert _hour(det, 0, 100, 5) == []  # 5% baseline
    alerts = _hour(det, 1, 40, 40)
    assert len(alerts) == 1
    a = alerts[0]
    assert (a.kind, a.scope, a.details["form"]) == ("retry_storm", "api_key:k", "share")
    # It fires as soon as the hour has retry_min_calls calls and the share is over the bar.
    assert a.ts == at(hours=1, seconds=19)


def test_steady_error_share_does_not_fire() -> None:
    det = RetryDetector(config())
    _hour(det, 0, 100, 30)
    assert _hour(det, 1, 100, 35) == []  # 35% is not more than 2 x 30%


def test_retry_state_restores() -> None:
    cfg = config(runaway={"max_attempts": 2})
    det = RetryDetector(cfg)
    run(det, [fact(at(0), api_key_id="k", request_id="r", attempt=2)])
    det2 = RetryDetector.restore(cfg, det.snapshot())
    assert len(run(det2, [fact(at(1), api_key_id="k", request_id="r", attempt=3)])) == 1
