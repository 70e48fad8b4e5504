"""Retries against real local HTTP servers; only time (sleep) and jitter are injected."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spendstream.alerts.delivery import (
    SINK_DOWN,
    HttpDeliverer,
    HttpRequest,
    RetryPolicy,
    parse_retry_after,
)

from .conftest import ScriptedServer

FAST = RetryPolicy(
    max_attempts=6, backoff_initial_s=0.5, backoff_max_s=8, retry_budget_s=60, timeout_s=5
)


class FakeTime:
    """sleep() advances a monotonic clock instead of waiting; hooks run at chosen sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self.on_sleep: dict[int, Callable[[], None]] = {}

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s
        hook = self.on_sleep.get(len(self.sleeps))
        if hook:
            hook()

    def monotonic(self) -> float:
        return self.now


def deliverer(t: FakeTime, policy: RetryPolicy = FAST) -> HttpDeliverer:
    return HttpDeliverer(policy, sleep=t.sleep, monotonic=t.monotonic, rng=random.Random(7))


def req(server: ScriptedServer) -> HttpRequest:
    return HttpRequest(server.url, b'{"hello": 1}', {"Content-Type": "application/json"})


def test_5xx_answers_are_retried_until_accepted(http_server: Callable[..., ScriptedServer]) -> None:
    server = http_server(script=[500, 502, 503])
    t = FakeTime()
    result = deliverer(t).send("hook", req(server))
    assert result.delivered and result.attempts == 4
    assert len(server.received) == 4 and len(server.accepted()) == 1
    assert len(t.sleeps) == 3


def test_429_waits_exactly_its_retry_after_seconds(
    http_server: Callable[..., ScriptedServer],
) -> None:
    server = http_server(script=[(429, {"Retry-After": "7"})])
    t = FakeTime()
    result = deliverer(t).send("hook", req(server))
    assert result.delivered and result.attempts == 2
    assert t.sleeps == [7.0]


def test_retry_after_as_an_http_date_is_honoured() -> None:
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    header = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(header, now) == 30.0
    assert parse_retry_after("soon", now) is None


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422])
def test_4xx_other_than_429_is_never_retried(
    http_server: Callable[..., ScriptedServer], status: int
) -> None:
    server = http_server(script=[status])
    t = FakeTime()
    result = deliverer(t).send("hook", req(server))
    assert result.status == "dead" and result.attempts == 1
    assert result.error == f"HTTP {status}"
    assert len(server.received) == 1 and t.sleeps == []


def test_a_server_down_for_a_while_gets_the_notification_when_it_returns(
    http_server: Callable[..., ScriptedServer],
) -> None:
    server = http_server(start=False)
    t = FakeTime()
    t.on_sleep[3] = server.start  # back after the third wait
    result = deliverer(t).send("hook", req(server))
    assert result.delivered and result.attempts == 4
    assert len(server.received) == 1


def test_a_timeout_is_retried(http_server: Callable[..., ScriptedServer]) -> None:
    server = http_server(script=[(202, {}, 1.0)])  # first answer comes after the client gave up
    policy = RetryPolicy(max_attempts=3, backoff_initial_s=0.1, retry_budget_s=60, timeout_s=0.2)
    t = FakeTime()
    result = deliverer(t, policy).send("hook", req(server))
    assert result.delivered and result.attempts == 2


def test_attempts_run_out_into_a_dead_letter(
    http_server: Callable[..., ScriptedServer], caplog: pytest.LogCaptureFixture
) -> None:
    server = http_server(script=[503] * 10)
    t = FakeTime()
    result = deliverer(t).send("hook", req(server))
    assert result.status == "dead" and result.attempts == FAST.max_attempts
    assert result.error == "HTTP 503"
    assert len(server.received) == FAST.max_attempts
    assert f"hook: giving up after {FAST.max_attempts} attempts in " in caplog.text


def test_one_attempt_is_said_in_the_singular(
    http_server: Callable[..., ScriptedServer], caplog: pytest.LogCaptureFixture
) -> None:
    server = http_server(script=[503])
    policy = RetryPolicy(max_attempts=1, backoff_initial_s=0.1, retry_budget_s=60, timeout_s=0.2)
    assert deliverer(FakeTime(), policy).send("hook", req(server)).attempts == 1
    assert "hook: giving up after 1 attempt in " in caplog.text


def test_the_time_budget_runs_out_before_the_attempts(
    http_server: Callable[..., ScriptedServer],
) -> None:
    server = http_server(script=[(429, {"Retry-After": "45"})] * 10)
    t = FakeTime()
    result = deliverer(t).send("hook", req(server))  # budget 60 s: one 45 s wait, not two
    assert result.status == "dead" and result.attempts == 2
    assert t.sleeps == [45.0]


@given(attempt=st.integers(min_value=1, max_value=40), seed=st.integers(0, 2**32))
def test_backoff_is_full_jitter_under_a_doubling_cap(attempt: int, seed: int) -> None:
    wait = FAST.backoff_s(attempt, random.Random(seed))
    assert 0 <= wait <= min(FAST.backoff_max_s, FAST.backoff_initial_s * 2 ** (attempt - 1))


@pytest.mark.parametrize("status", [300, 301, 302, 307])
def test_a_redirect_is_not_a_delivery_and_is_not_followed(
    http_server: Callable[..., ScriptedServer], status: int
) -> None:
    server = http_server(script=[(status, {"Location": "/elsewhere"})])
    t = FakeTime()
    result = deliverer(t).send("hook", req(server))
    assert result.status == "dead" and result.attempts == 1
    assert result.error == f"HTTP {status}" and len(server.received) == 1


def test_retry_after_as_a_date_already_past_is_no_wait() -> None:
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    header = format_datetime(now - timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(header, now) == 0.0


def test_retry_after_as_a_date_without_a_zone_is_read_as_utc() -> None:
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    assert parse_retry_after("Mon, 23 Nov 2026 12:00:30 -0000", now) == 30.0


def test_a_retry_that_ends_exactly_at_the_budget_is_still_made(
    http_server: Callable[..., ScriptedServer],
) -> None:
    server = http_server(script=[(429, {"Retry-After": "30"})] * 10)
    t = FakeTime()
    result = deliverer(t).send("hook", req(server))  # budget 60 s: 30 + 30 fit, not a third
    assert result.status == "dead" and result.attempts == 3
    assert t.sleeps == [30.0, 30.0]


def test_a_timeout_that_runs_out_the_attempts_is_reported_as_a_timeout(
    http_server: Callable[..., ScriptedServer],
) -> None:
    server = http_server(script=[(202, {}, 1.0)] * 2)  # both answers come too late
    policy = RetryPolicy(max_attempts=2, backoff_initial_s=0.1, retry_budget_s=60, timeout_s=0.2)
    result = deliverer(FakeTime(), policy).send("hook", req(server))
    assert result.status == "dead" and result.error == "timeout (ReadTimeout)"


def test_a_sink_that_gave_up_is_not_attempted_again_until_its_cool_down_has_passed(
    http_server: Callable[..., ScriptedServer],
) -> None:
    server = http_server(start=False)  # a closed port: every connection refused
    t = FakeTime()
    d = deliverer(t)
    first = d.send("hook", req(server))
    assert first.status == "dead" and first.attempts == FAST.max_attempts
    waits = len(t.sleeps)
    assert waits == FAST.max_attempts - 1
    # Given up: the next ones are not attempted, and wait for nothing.
    for _ in range(3):
        skipped = d.send("hook", req(server))
        assert (skipped.status, skipped.attempts) == ("dead", 0)
        assert skipped.error == f"{SINK_DOWN} (connection failed (ConnectError))"
    assert len(t.sleeps) == waits and d.down("hook") == "connection failed (ConnectError)"
    # Past the cool-down, one attempt (not a whole retry budget) finds it still down...
    t.now += FAST.sink_down_s
    assert d.down("hook") is None
    probe = d.send("hook", req(server))
    assert (probe.status, probe.attempts) == ("dead", 1) and len(t.sleeps) == waits
    assert d.send("hook", req(server)).attempts == 0  # ...and it is down again
    # Back: the first attempt after the cool-down delivers, and so does everything after it.
    t.now += FAST.sink_down_s
    server.start()
    back = [d.send("hook", req(server)) for _ in range(3)]
    assert [(r.status, r.attempts) for r in back] == [("delivered", 1)] * 3
    assert len(server.accepted()) == 3 and d.down("hook") is None


def test_sink_down_s_comes_from_the_configuration_and_0_gives_each_notification_its_retries(
    http_server: Callable[..., ScriptedServer],
) -> None:
    from spendstream.config import DeliveryConfig

    assert RetryPolicy.from_config(DeliveryConfig(sink_down_s=5)).sink_down_s == 5
    policy = RetryPolicy.from_config(
        DeliveryConfig(max_attempts=3, backoff_initial_s=0.1, sink_down_s=0)
    )
    server = http_server(start=False)
    t = FakeTime()
    d = deliverer(t, policy)
    assert [d.send("hook", req(server)).attempts for _ in range(3)] == [3, 3, 3]
    assert d.down("hook") is None


def test_a_down_sink_costs_another_sink_nothing(
    http_server: Callable[..., ScriptedServer],
) -> None:
    dead, alive = http_server(start=False), http_server(script=[503])
    t = FakeTime()
    d = deliverer(t)
    assert d.send("dead", req(dead)).attempts == FAST.max_attempts
    assert d.send("dead", req(dead)).attempts == 0
    result = d.send("alive", req(alive))  # retried as usual, not judged by the other sink
    assert result.delivered and result.attempts == 2 and d.down("alive") is None


def test_a_refusal_is_an_answer_not_an_outage(
    http_server: Callable[..., ScriptedServer],
) -> None:
    server = http_server(script=[422])  # one request refused, the next accepted
    t = FakeTime()
    d = deliverer(t)
    assert d.send("hook", req(server)).attempts == 1
    assert d.send("hook", req(server)).delivered and d.down("hook") is None


def test_a_down_sink_that_answers_its_probe_with_a_refusal_is_up_again(
    http_server: Callable[..., ScriptedServer],
) -> None:
    server = http_server(script=[503] * FAST.max_attempts + [422, 503])
    t = FakeTime()
    d = deliverer(t)
    assert d.send("hook", req(server)).attempts == FAST.max_attempts
    t.now += FAST.sink_down_s
    probe = d.send("hook", req(server))
    assert (probe.status, probe.attempts, probe.error) == ("dead", 1, "HTTP 422")
    assert d.down("hook") is None
    # Up: the next one has the whole retry budget again, not a probe's single attempt.
    after = d.send("hook", req(server))
    assert after.delivered and after.attempts == 2


def test_a_probe_that_delivers_gives_the_next_notification_its_full_retries(
    http_server: Callable[..., ScriptedServer],
) -> None:
    # Down, then its probe is accepted: the sink is up, so a 503 on the next notification
    # is retried as usual rather than taken for another failed probe (a sink left "probing"
    # after a delivery would give it a single attempt and be down for another cool-down).
    server = http_server(script=[503] * FAST.max_attempts + [202, 503])
    t = FakeTime()
    d = deliverer(t)
    assert d.send("hook", req(server)).attempts == FAST.max_attempts
    t.now += FAST.sink_down_s
    assert d.send("hook", req(server)).delivered  # the probe
    after = d.send("hook", req(server))
    assert (after.status, after.attempts) == ("delivered", 2)
    assert d.down("hook") is None


def test_the_cool_down_counts_from_when_the_sink_gave_up_not_from_its_first_attempt(
    http_server: Callable[..., ScriptedServer],
) -> None:
    # Exact waits (Retry-After: 5 on every 503): giving up takes 5 retries x 5 s = 25 s.
    server = http_server(script=[(503, {"Retry-After": "5"})] * 99)
    t = FakeTime()
    d = deliverer(t)
    assert d.send("hook", req(server)).attempts == FAST.max_attempts
    assert t.sleeps == [5.0] * (FAST.max_attempts - 1)
    gave_up = t.now
    t.now = gave_up + FAST.sink_down_s - 1  # one second short of the cool-down
    assert d.send("hook", req(server)).attempts == 0 and d.down("hook") == "HTTP 503"
    assert len(server.received) == FAST.max_attempts
    t.now = gave_up + FAST.sink_down_s
    assert d.send("hook", req(server)).attempts == 1  # now, and only now, the probe


def test_a_429_on_the_probe_is_not_waited_for_the_sink_stays_down(
    http_server: Callable[..., ScriptedServer],
) -> None:
    # docs/alerts.md: the probe is one attempt; a 429 on it, even one asking for a second,
    # dead-letters that notification and leaves the sink down for another cool-down.
    server = http_server(script=[503] * FAST.max_attempts + [(429, {"Retry-After": "1"})])
    t = FakeTime()
    d = deliverer(t)
    assert d.send("hook", req(server)).attempts == FAST.max_attempts
    waits = len(t.sleeps)
    t.now += FAST.sink_down_s
    probe = d.send("hook", req(server))
    assert (probe.status, probe.attempts, probe.error) == ("dead", 1, "HTTP 429")
    assert len(t.sleeps) == waits and d.down("hook") == "HTTP 429"
    assert d.send("hook", req(server)).attempts == 0
