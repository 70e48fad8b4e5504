"""A sink back from an outage gets that outage's dead letters without a human replay.

Real local servers (a closed port for a sink that is down, scripted 4xx/429/5xx answers);
only time is injected: the deliverer's sleep and monotonic clock (``FakeTime``).
"""

from __future__ import annotations

import logging
import random
import sqlite3
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from spendstream.alerts.consumer import ConsumeSummary
from spendstream.alerts.delivery import SINK_DOWN, HttpDeliverer, RetryPolicy, is_outage
from spendstream.alerts.router import AlertRouter, HandleSummary, state_path
from spendstream.config import config_from_dict
from spendstream.errors import ConfigError

from .conftest import ScriptedServer
from .factories import breaker, make_alert
from .test_router import Harness

SLACK_ONLY = [{"name": "chat", "sinks": ["slack"]}]
ATTEMPTS = 8  # Harness's RetryPolicy
COOL_DOWN = RetryPolicy().sink_down_s
REFUSED = "connection failed (ConnectError)"


def alerts(n: int, first: int = 0) -> list[Any]:
    return [make_alert(f"session:s{i}", n=i) for i in range(first, first + n)]


def pending(h: Harness, sink: str = "slack") -> list[tuple[str, int, str]]:
    """(scope, attempts, error) of the sink's dead letters still to replay, oldest first."""
    return [
        (r.notification.alert.scope, r.attempts, r.error)
        for r in h.router.state.dead_letters(pending_only=True)
        if r.sink == sink
    ]


def outcomes(h: Harness) -> list[tuple[str, str | None]]:
    """(scope, replay outcome) of every dead letter, oldest first."""
    return [(r.notification.alert.scope, r.replay) for r in h.router.state.dead_letters()]


def slack_scopes(h: Harness) -> list[str]:
    """The scope each accepted Slack message is about, in the order they arrived."""
    out = []
    for r in h.slack.accepted():
        text = r.json()["text"]
        out.append(next(f"session:s{i}" for i in range(50) if f"session:s{i} " in text + " "))
    return out


def down_for_good(h: Harness, n: int) -> float:
    """``n`` notifications die on a closed port; returns when the sink gave up (monotonic)."""
    summary = h.router.handle(alerts(n))
    assert summary.dead_lettered == n
    assert [a for _, a, _ in pending(h)] == [ATTEMPTS] + [0] * (n - 1)
    return h.time.now


def test_a_delivery_to_a_sink_back_from_an_outage_replays_its_dead_letters_after_the_batch(
    tmp_path: Path, http_server: Callable[..., ScriptedServer]
) -> None:
    h = Harness(tmp_path, http_server, routes=SLACK_ONLY, slack_up=False)
    down_for_good(h, 3)
    h.time.now += COOL_DOWN
    h.slack.start()
    summary = h.router.handle(alerts(1, first=3))
    # The batch's own page is counted as before; the outage's three as replayed.
    assert (summary.triggered, summary.dead_lettered) == (1, 0)
    assert (summary.replayed, summary.replay_superseded) == (3, 0)
    # The notification in hand first, then the dead letters, oldest first.
    assert slack_scopes(h) == ["session:s3", "session:s0", "session:s1", "session:s2"]
    assert pending(h) == []
    assert [o for _, o in outcomes(h)] == ["delivered"] * 3
    # Replayed triggers open their incidents: a repeat folds instead of paging again.
    assert all(
        h.router.state.incident_open("slack", make_alert(f"session:s{i}").dedup_key)
        for i in range(4)
    )
    assert h.router.handle([make_alert("session:s0", n=99)]).decisions == {"folded": 1}


def test_a_quiet_router_probes_a_down_sink_with_its_oldest_dead_letter_exactly_at_the_cool_down(
    tmp_path: Path, http_server: Callable[..., ScriptedServer]
) -> None:
    h = Harness(tmp_path, http_server, routes=SLACK_ONLY, slack_up=False)
    gave_up = down_for_good(h, 2)
    h.slack.start()
    h.time.now = gave_up + COOL_DOWN - 0.001
    assert h.router.tick().replayed == 0
    assert h.slack.received == []  # still cooling down: not even a probe
    h.time.now = gave_up + COOL_DOWN
    summary = h.router.tick()
    assert (summary.replayed, summary.triggered, summary.dead_lettered) == (2, 0, 0)
    assert slack_scopes(h) == ["session:s0", "session:s1"]
    assert pending(h) == []
    assert h.router.tick().replayed == 0  # nothing left, nothing sent twice
    assert len(h.slack.received) == 2


def test_a_probe_that_fails_leaves_every_dead_letter_and_the_sink_down_for_another_cool_down(
    tmp_path: Path, http_server: Callable[..., ScriptedServer]
) -> None:
    h = Harness(tmp_path, http_server, routes=SLACK_ONLY, slack_up=False)
    gave_up = down_for_good(h, 2)
    h.time.now = gave_up + COOL_DOWN
    waits = len(h.time.sleeps)
    assert h.router.tick().replayed == 0
    # One attempt (the probe, not retried), on the oldest; the other untouched.
    assert pending(h) == [
        ("session:s0", ATTEMPTS + 1, REFUSED),
        ("session:s1", 0, f"{SINK_DOWN} ({REFUSED})"),
    ]
    assert len(h.time.sleeps) == waits
    # Down again from the failed probe: the next ticks of that minute ask nothing.
    h.slack.start()
    h.time.now += COOL_DOWN - 1
    assert h.router.tick().replayed == 0 and h.slack.received == []
    h.time.now += 1
    assert h.router.tick().replayed == 2
    assert slack_scopes(h) == ["session:s0", "session:s1"]


def test_only_outage_dead_letters_are_replayed_not_4xx_refusals(
    tmp_path: Path,
    http_server: Callable[..., ScriptedServer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # s0 refused (400: not an outage), s1 throttled past its retries (429), s2 skipped while
    # down, s3 the probe after the cool-down answered 503; then Slack accepts everything.
    h = Harness(
        tmp_path,
        http_server,
        routes=SLACK_ONLY,
        slack_script=[400] + [429] * ATTEMPTS + [503],
    )
    h.router.handle(alerts(1))
    h.router.handle(alerts(2, first=1))
    h.time.now += COOL_DOWN
    h.router.handle(alerts(1, first=3))
    assert pending(h) == [
        ("session:s0", 1, "HTTP 400"),
        ("session:s1", ATTEMPTS, "HTTP 429"),
        ("session:s2", 0, f"{SINK_DOWN} (HTTP 429)"),
        ("session:s3", 1, "HTTP 503"),
    ]
    asked = len(h.slack.received)
    h.time.now += COOL_DOWN
    with caplog.at_level(logging.INFO, logger="spendstream.alerts.router"):
        assert h.router.tick().replayed == 3
    sent = [r.json()["text"] for r in h.slack.received[asked:]]
    assert [next(s for s in ("s1", "s2", "s3") if f"session:{s}" in t) for t in sent] == [
        "s1",
        "s2",
        "s3",
    ]
    # The refusal is still a dead letter, untried, for a human's replay.
    assert pending(h) == [("session:s0", 1, "HTTP 400")]
    (line,) = [r for r in caplog.records if "is back" in r.getMessage()]
    assert line.levelno == logging.INFO
    assert line.getMessage() == (
        "alert sink slack is back: its dead letters from the outage replayed: 3 delivered, "
        "0 superseded, 0 still dead; 1 refusal (4xx) left for spendstream alerts "
        "--replay-dead-letters"
    )
    assert "127.0.0.1" not in caplog.text and "http" not in line.getMessage()


@pytest.mark.parametrize(
    ("error", "outage"),
    [
        ("connection failed (ConnectError)", True),
        ("timeout (ReadTimeout)", True),
        ("HTTP 429", True),
        ("HTTP 500", True),
        ("HTTP 503", True),
        ("HTTP 599", True),
        (f"{SINK_DOWN} (HTTP 502)", True),
        ("HTTP 400", False),
        ("HTTP 401", False),
        ("HTTP 404", False),
        ("HTTP 428", False),
        ("HTTP 430", False),
        ("HTTP 499", False),
        ("sink 'gone' is no longer configured", False),
    ],
)
def test_which_errors_are_an_outage(error: str, outage: bool) -> None:
    assert is_outage(error) is outage


def test_superseded_dead_letters_are_marked_superseded_not_sent(
    tmp_path: Path, http_server: Callable[..., ScriptedServer]
) -> None:
    h = Harness(tmp_path, http_server, routes=SLACK_ONLY, slack_up=False)
    down_for_good(h, 3)
    h.time.now += COOL_DOWN
    h.clock.now += timedelta(minutes=1)
    h.slack.start()
    # The batch that finds Slack back: s0's breaker closed (its condition is over), and s1
    # fired again (a new page of the same incident key). Only s2's page is still owed.
    summary = h.router.handle([make_alert("session:s1", n=100)], [breaker("session:s0")])
    assert (summary.triggered, summary.replayed, summary.replay_superseded) == (1, 1, 2)
    assert slack_scopes(h) == ["session:s1", "session:s2"]
    assert outcomes(h) == [
        ("session:s0", "superseded"),
        ("session:s1", "superseded"),
        ("session:s2", "delivered"),
    ]


def test_a_sink_down_again_mid_replay_keeps_the_rest_as_dead_letters_and_nothing_loops(
    tmp_path: Path, http_server: Callable[..., ScriptedServer]
) -> None:
    # The probe gets through, then the next one fails its whole retry budget.
    h = Harness(tmp_path, http_server, routes=SLACK_ONLY, slack_up=False)
    h.slack.script = [202] + [503] * ATTEMPTS
    gave_up = down_for_good(h, 4)
    h.slack.start()
    h.time.now = gave_up + COOL_DOWN
    summary = h.router.tick()
    assert (summary.replayed, summary.dead_lettered) == (1, 0)
    assert len(h.slack.received) == 1 + ATTEMPTS  # one retry budget, not one per letter
    skipped = f"{SINK_DOWN} ({REFUSED})"
    assert pending(h) == [
        ("session:s1", ATTEMPTS, "HTTP 503"),
        ("session:s2", 0, skipped),
        ("session:s3", 0, skipped),
    ]
    # Within the new cool-down nothing is asked, however often the router ticks.
    for _ in range(5):
        assert h.router.tick().replayed == 0
    assert len(h.slack.received) == 1 + ATTEMPTS
    # After it, the oldest left is the probe, and the rest follow.
    h.time.now += COOL_DOWN
    assert h.router.tick().replayed == 3
    assert slack_scopes(h) == ["session:s0", "session:s1", "session:s2", "session:s3"]
    assert pending(h) == []


def test_with_sink_down_s_0_a_delivery_after_a_give_up_replays_but_no_tick_probes(
    tmp_path: Path, http_server: Callable[..., ScriptedServer]
) -> None:
    h = Harness(tmp_path, http_server, routes=SLACK_ONLY, slack_up=False)
    h.router.deliverer = HttpDeliverer(
        RetryPolicy(
            max_attempts=8,
            backoff_initial_s=1,
            backoff_max_s=30,
            retry_budget_s=300,
            timeout_s=5,
            sink_down_s=0,
        ),
        sleep=h.time.sleep,
        monotonic=h.time.monotonic,
        rng=random.Random(3),
    )
    h.router.handle(alerts(2))
    assert [a for _, a, _ in pending(h)] == [ATTEMPTS, ATTEMPTS]  # no down state: full retries
    h.slack.start()
    # No down state, so no cool-down to end: a tick probing would spend a whole retry
    # budget each time while the sink is still dead.
    h.time.now += 10 * COOL_DOWN
    assert h.router.tick().replayed == 0 and h.slack.received == []
    # The next notification gets through: the sink answers again, its outage follows.
    summary = h.router.handle(alerts(1, first=2))
    assert (summary.triggered, summary.replayed) == (1, 2)
    assert slack_scopes(h) == ["session:s2", "session:s0", "session:s1"]


def test_auto_replay_false_leaves_the_dead_letters_to_the_replay_command(
    tmp_path: Path, http_server: Callable[..., ScriptedServer]
) -> None:
    h = Harness(tmp_path, http_server, routes=SLACK_ONLY, slack_up=False)
    h.config = config_from_dict(
        {
            "alerts": {
                "sink": [{"name": "slack", "type": "slack", "webhook_url_env": "SLACK"}],
                "route": SLACK_ONLY,
                "delivery": {"auto_replay": False},
            }
        }
    ).alerts
    h.router.close()
    h.router = h.open()
    assert h.router.auto_replay is False
    gave_up = down_for_good(h, 2)
    h.slack.start()
    h.time.now = gave_up + COOL_DOWN
    assert h.router.tick().replayed == 0 and h.slack.received == []
    summary = h.router.handle(alerts(1, first=2))
    assert (summary.triggered, summary.replayed) == (1, 0)
    assert len(pending(h)) == 2
    replay = h.router.replay_dead_letters()
    assert (replay.delivered, replay.superseded, replay.still_dead) == (2, 0, 0)


def test_auto_replay_is_on_by_default_and_must_be_a_boolean(tmp_path: Path) -> None:
    router = AlertRouter.from_config(config_from_dict({}).alerts, tmp_path / "work")
    try:
        assert router.auto_replay is True
    finally:
        router.close()
    with pytest.raises(ConfigError, match=r"alerts\.delivery\.auto_replay"):
        config_from_dict({"alerts": {"delivery": {"auto_replay": "no"}}})


def test_the_consumer_summary_counts_auto_replayed_dead_letters() -> None:
    total = ConsumeSummary()
    total.add(HandleSummary(triggered=1, replayed=3, replay_superseded=2))
    assert (total.triggered, total.replayed, total.replay_superseded) == (1, 3, 2)


def test_the_replayed_rows_say_so_in_the_state_database(
    tmp_path: Path, http_server: Callable[..., ScriptedServer]
) -> None:
    h = Harness(tmp_path, http_server, routes=SLACK_ONLY, slack_up=False)
    gave_up = down_for_good(h, 2)
    h.slack.start()
    h.time.now = gave_up + COOL_DOWN
    h.router.tick()
    with sqlite3.connect(state_path(tmp_path / "work")) as db:
        rows = db.execute("SELECT replay, replayed_at IS NOT NULL FROM dead_letters").fetchall()
    assert rows == [("delivered", 1), ("delivered", 1)]


def test_a_long_backlog_gives_way_to_the_next_batches_and_goes_on_between_them(
    tmp_path: Path,
    http_server: Callable[..., ScriptedServer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Replayed in one go, a backlog of hundreds (Slack takes about one message a second)
    # held every sink's new pages, the batch's commit and the consumer's next poll for
    # minutes. Past replay_slice_s the replay stops and goes on at the next handle or tick,
    # after that batch's own pages.
    h = Harness(tmp_path, http_server, routes=SLACK_ONLY, slack_up=False)
    gave_up = down_for_good(h, 3)
    h.router.replay_slice_s = 0  # one dead letter per call
    h.slack.start()
    h.time.now = gave_up + COOL_DOWN
    with caplog.at_level(logging.INFO, logger="spendstream.alerts.router"):
        summary = h.router.handle(alerts(1, first=3))
    assert (summary.triggered, summary.replayed) == (1, 1)
    assert [s for s, _, _ in pending(h)] == ["session:s1", "session:s2"]
    (line,) = [r.getMessage() for r in caplog.records if "is back" in r.getMessage()]
    assert line.endswith(
        "1 delivered, 0 superseded, 0 still dead; 2 more to follow, between batches"
    )
    # The next batch's page first, then the replay goes on where it stopped.
    assert h.router.handle(alerts(1, first=4)).replayed == 1
    assert h.router.tick().replayed == 1
    assert h.router.tick().replayed == 0
    assert slack_scopes(h) == ["session:s3", "session:s0", "session:s4", "session:s1", "session:s2"]
    assert pending(h) == []


def test_a_replay_that_gave_way_stops_when_its_sink_gives_up_meanwhile(
    tmp_path: Path, http_server: Callable[..., ScriptedServer]
) -> None:
    h = Harness(tmp_path, http_server, routes=SLACK_ONLY, slack_up=False)
    gave_up = down_for_good(h, 3)
    h.router.replay_slice_s = 0
    h.slack.start()
    h.time.now = gave_up + COOL_DOWN
    assert h.router.tick().replayed == 1
    h.slack.stop()
    # The batch's page gives up (one retry budget): the sink is down, the rest wait for it.
    assert h.router.handle(alerts(1, first=3)).dead_lettered == 1
    asked = len(h.slack.received)
    for _ in range(3):
        assert h.router.tick().replayed == 0
    assert len(h.slack.received) == asked
    assert [s for s, _, _ in pending(h)] == ["session:s1", "session:s2", "session:s3"]


def test_a_failed_probe_after_superseded_letters_does_not_say_the_sink_is_back(
    tmp_path: Path,
    http_server: Callable[..., ScriptedServer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # s0's breaker closed meanwhile (superseded, not sent), s1 is the probe and fails: the
    # sink never answered. It logged "alert sink slack is back: ... 1 superseded".
    h = Harness(tmp_path, http_server, routes=SLACK_ONLY, slack_up=False)
    gave_up = down_for_good(h, 2)
    h.clock.now += timedelta(minutes=1)
    h.router.handle([], [breaker("session:s0")])
    h.time.now = gave_up + COOL_DOWN
    with caplog.at_level(logging.INFO, logger="spendstream.alerts.router"):
        summary = h.router.tick()
    assert (summary.replayed, summary.replay_superseded) == (0, 1)
    assert [s for s, _, _ in pending(h)] == ["session:s1"]
    assert "is back" not in caplog.text
    assert (
        "alert sink slack has not answered again; 1 of its dead letters superseded by newer "
        "notifications meanwhile (not sent), 1 still dead"
    ) in caplog.text


def test_a_failed_probe_logs_no_replay(
    tmp_path: Path,
    http_server: Callable[..., ScriptedServer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = Harness(tmp_path, http_server, routes=SLACK_ONLY, slack_up=False)
    h.time.now = down_for_good(h, 2) + COOL_DOWN
    with caplog.at_level(logging.INFO, logger="spendstream.alerts.router"):
        assert h.router.tick().replayed == 0
    assert "is back" not in caplog.text and "has not answered" not in caplog.text


def test_the_mid_replay_give_up_counts_every_letter_left_dead_once(
    tmp_path: Path,
    http_server: Callable[..., ScriptedServer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = Harness(tmp_path, http_server, routes=SLACK_ONLY, slack_up=False)
    h.slack.script = [202] + [503] * ATTEMPTS
    h.time.now = down_for_good(h, 4) + COOL_DOWN
    h.slack.start()
    with caplog.at_level(logging.INFO, logger="spendstream.alerts.router"):
        h.router.tick()
    (line,) = [r for r in caplog.records if "is back" in r.getMessage()]
    assert line.levelno == logging.WARNING
    assert line.getMessage().endswith("1 delivered, 0 superseded, 3 still dead")


def test_a_refusal_in_the_middle_of_a_replay_does_not_stop_it(
    tmp_path: Path, http_server: Callable[..., ScriptedServer]
) -> None:
    # A 4xx is the sink answering: that letter is refused, the sink is up, the rest go.
    h = Harness(tmp_path, http_server, routes=SLACK_ONLY, slack_up=False)
    h.slack.script = [202, 400]
    h.time.now = down_for_good(h, 3) + COOL_DOWN
    h.slack.start()
    assert h.router.tick().replayed == 2
    assert slack_scopes(h) == ["session:s0", "session:s2"]
    assert pending(h) == [("session:s1", 1, "HTTP 400")]


def test_a_sink_that_answers_and_gives_up_again_in_one_batch_gets_no_replay_of_the_rest(
    tmp_path: Path, http_server: Callable[..., ScriptedServer]
) -> None:
    # The batch's first page is the probe and gets through (the sink is back); its second
    # gives up (down again). The replay after the batch tries nothing: its dead letters keep
    # their errors and attempts (not rewritten as skipped).
    h = Harness(tmp_path, http_server, routes=SLACK_ONLY, slack_up=False)
    h.slack.script = [202] + [503] * ATTEMPTS
    h.time.now = down_for_good(h, 2) + COOL_DOWN
    h.slack.start()
    summary = h.router.handle(alerts(2, first=2))
    assert (summary.triggered, summary.dead_lettered, summary.replayed) == (1, 1, 0)
    assert len(h.slack.received) == 1 + ATTEMPTS
    assert pending(h) == [
        ("session:s0", ATTEMPTS, REFUSED),
        ("session:s1", 0, f"{SINK_DOWN} ({REFUSED})"),
        ("session:s3", ATTEMPTS, "HTTP 503"),
    ]


def test_a_letter_replayed_meanwhile_by_hand_is_not_sent_again(
    tmp_path: Path, http_server: Callable[..., ScriptedServer]
) -> None:
    # `spendstream alerts --replay-dead-letters` run beside a live router: what it settled
    # while the router was replaying (read once, at the start) is skipped, not sent twice.
    h = Harness(tmp_path, http_server, routes=SLACK_ONLY, slack_up=False)
    h.time.now = down_for_good(h, 3) + COOL_DOWN
    db = state_path(tmp_path / "work")

    def settle_s1(body: Any) -> list[str]:
        if "session:s0 " in body["text"] + " ":
            with sqlite3.connect(db) as other:
                other.execute(
                    "UPDATE dead_letters SET replay = 'delivered' WHERE id = "
                    "(SELECT min(id) + 1 FROM dead_letters)"
                )
        return []

    h.slack.check = settle_s1
    h.slack.start()
    assert h.router.tick().replayed == 2
    assert slack_scopes(h) == ["session:s0", "session:s2"]


def test_nothing_to_probe_is_not_looked_up_again_until_a_new_dead_letter(
    tmp_path: Path, http_server: Callable[..., ScriptedServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A down sink whose outage letters were all settled (here: superseded) has nothing to
    # probe with; a router ticking once a second does not read its dead letters each time.
    h = Harness(tmp_path, http_server, routes=SLACK_ONLY, slack_up=False)
    gave_up = down_for_good(h, 1)
    h.clock.now += timedelta(minutes=1)
    h.router.handle([], [breaker("session:s0")])
    h.time.now = gave_up + COOL_DOWN
    assert h.router.tick().replay_superseded == 1
    looked: list[str] = []
    real = h.router.state.pending_dead_letter_errors

    def spy(sink: str) -> list[tuple[int, str]]:
        looked.append(sink)
        return real(sink)

    monkeypatch.setattr(h.router.state, "pending_dead_letter_errors", spy)
    for _ in range(3):
        h.router.tick()
    assert looked == ["slack"]
    # A new dead letter (the next page's single attempt fails): probed again after its
    # cool-down, and delivered once the sink is back.
    assert h.router.handle(alerts(1, first=1)).dead_lettered == 1
    h.slack.start()
    h.time.now += COOL_DOWN
    assert h.router.tick().replayed == 1
    assert slack_scopes(h) == ["session:s1"]


def test_a_sink_that_answered_is_no_longer_failing(tmp_path: Path) -> None:
    # Kept failing, its every later delivery was "back" again: a replay and a log line each.
    from .test_delivery import FakeTime

    t = FakeTime()
    d = HttpDeliverer(
        RetryPolicy(max_attempts=1, sink_down_s=0), sleep=t.sleep, monotonic=t.monotonic
    )
    hook = ScriptedServer(script=[503]).start()
    try:
        from spendstream.alerts.delivery import HttpRequest

        req = HttpRequest(hook.url, b"{}")
        assert not d.send("hook", req).delivered
        assert d.failing("hook")
        assert d.send("hook", req).delivered
        assert not d.failing("hook") and d.take_back() == ["hook"]
        assert d.send("hook", req).delivered
        assert d.take_back() == []
    finally:
        hook.stop()


def test_with_sink_down_s_0_a_replay_that_gave_way_stops_once_the_sink_gives_up(
    tmp_path: Path, http_server: Callable[..., ScriptedServer]
) -> None:
    # No down state to skip with: going on would spend a whole retry budget on a dead sink.
    h = Harness(tmp_path, http_server, routes=SLACK_ONLY, slack_up=False)
    h.router.deliverer = HttpDeliverer(
        RetryPolicy(max_attempts=2, backoff_initial_s=1, sink_down_s=0),
        sleep=h.time.sleep,
        monotonic=h.time.monotonic,
        rng=random.Random(3),
    )
    h.router.replay_slice_s = 0
    h.router.handle(alerts(3))
    h.slack.start()
    assert h.router.handle(alerts(1, first=3)).replayed == 1  # s0; s1, s2 to follow
    h.slack.stop()
    assert h.router.handle(alerts(1, first=4)).dead_lettered == 1
    assert h.router.tick().replayed == 0
    # s1 and s2 not tried again (2 attempts each: their own give-ups), after s4's or since.
    assert pending(h) == [
        ("session:s1", 2, REFUSED),
        ("session:s2", 2, REFUSED),
        ("session:s4", 2, REFUSED),
    ]


def test_a_dead_page_whose_incident_was_paged_and_auto_resolved_since_is_superseded(
    tmp_path: Path, http_server: Callable[..., ScriptedServer]
) -> None:
    # A kind that opens no breaker: the incident paged after it died is over (auto_resolve_s)
    # and nothing is open; only "paged or resolved after it died" tells the page is stale.
    routes = [{"name": "chat", "sinks": ["slack"], "auto_resolve_s": 60}]
    h = Harness(tmp_path, http_server, routes=routes, slack_up=False)
    h.router.auto_replay = False
    anomaly = make_alert("team:search", kind="hourly_anomaly")
    assert h.router.handle([anomaly]).dead_lettered == 1
    h.clock.now += timedelta(minutes=1)
    h.time.now += COOL_DOWN
    h.slack.start()
    assert h.router.handle([make_alert("team:search", kind="hourly_anomaly", n=60)]).triggered == 1
    h.clock.now += timedelta(minutes=2)
    assert h.router.tick().resolved == 1
    assert h.router.replay_dead_letters().superseded == 1
    assert len(h.slack.accepted()) == 2  # the page and its resolve; not the stale page


def test_a_dead_page_whose_incident_was_opened_in_the_same_instant_is_superseded(
    tmp_path: Path, http_server: Callable[..., ScriptedServer]
) -> None:
    # Opened "after it died" reads time; a clock that has not moved between two batches
    # (coarse clocks) leaves only "its incident is open now" to tell.
    h = Harness(tmp_path, http_server, routes=SLACK_ONLY, slack_up=False)
    h.router.auto_replay = False
    assert h.router.handle([make_alert("session:s0")]).dead_lettered == 1
    h.time.now += COOL_DOWN
    h.slack.start()
    assert h.router.handle([make_alert("session:s0", n=99)]).triggered == 1
    assert h.router.replay_dead_letters().superseded == 1
    assert len(h.slack.accepted()) == 1


def test_with_sink_down_s_0_a_sink_that_answers_and_gives_up_in_one_batch_costs_no_replay(
    tmp_path: Path, http_server: Callable[..., ScriptedServer]
) -> None:
    # No down state to skip with: replayed after the batch, the oldest letter spent another
    # whole retry budget on the sink that had just given up again.
    h = Harness(tmp_path, http_server, routes=SLACK_ONLY, slack_up=False)
    h.router.deliverer = HttpDeliverer(
        RetryPolicy(max_attempts=2, backoff_initial_s=1, sink_down_s=0),
        sleep=h.time.sleep,
        monotonic=h.time.monotonic,
        rng=random.Random(3),
    )
    h.router.handle(alerts(2))
    h.slack.script = [202, 503, 503]
    h.slack.start()
    summary = h.router.handle(alerts(2, first=2))
    assert (summary.triggered, summary.dead_lettered, summary.replayed) == (1, 1, 0)
    assert len(h.slack.received) == 3
    assert pending(h) == [
        ("session:s0", 2, REFUSED),
        ("session:s1", 2, REFUSED),
        ("session:s3", 2, "HTTP 503"),
    ]
    # Once it answers again, the outage's letters follow, oldest first.
    assert h.router.handle(alerts(1, first=4)).replayed == 3
    assert slack_scopes(h) == ["session:s2", "session:s4", "session:s0", "session:s1", "session:s3"]
