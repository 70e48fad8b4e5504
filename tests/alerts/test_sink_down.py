"""A dead sink costs one retry budget, not one per notification, and nothing is lost.

Real local servers (a closed port for a sink that is down); only time is injected: the
deliverer's sleep and monotonic clock (``FakeTime``), whose sleeps count the retries.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from spendstream.alerts.delivery import SINK_DOWN, RetryPolicy
from spendstream.alerts.router import state_path

from .conftest import ScriptedServer
from .factories import T0, breaker, make_alert
from .test_router import Harness

# One incident per alert (no group_by): every alert is its own notification on each sink.
BOTH = [{"name": "all", "sinks": ["pd", "slack"]}]
SLACK_ONLY = [{"name": "chat", "sinks": ["slack"]}]
ATTEMPTS = 8  # Harness's RetryPolicy
COOL_DOWN = RetryPolicy().sink_down_s


def alerts(n: int, first: int = 0) -> list[Any]:
    return [make_alert(f"session:s{i}", n=i) for i in range(first, first + n)]


def dead(h: Harness, sink: str = "slack") -> list[tuple[str, int, str]]:
    """(scope, attempts, error) of the sink's dead letters still to replay, oldest first."""
    return [
        (r.notification.alert.scope, r.attempts, r.error)
        for r in h.router.state.dead_letters(pending_only=True)
        if r.sink == sink
    ]


def test_a_dead_sink_retries_once_per_batch_not_once_per_notification(
    tmp_path: Path, http_server: Callable[..., ScriptedServer]
) -> None:
    h = Harness(tmp_path, http_server, routes=SLACK_ONLY, slack_up=False)
    summary = h.router.handle(alerts(3))
    assert summary.dead_lettered == 3 and summary.triggered == 0
    refused = "connection failed (ConnectError)"
    assert dead(h) == [
        ("session:s0", ATTEMPTS, refused),
        ("session:s1", 0, f"{SINK_DOWN} ({refused})"),
        ("session:s2", 0, f"{SINK_DOWN} ({refused})"),
    ]
    assert len(h.time.sleeps) == ATTEMPTS - 1  # one retry budget's waits, not three


def test_a_failing_server_is_asked_one_retry_budget_of_requests_per_batch(
    tmp_path: Path, http_server: Callable[..., ScriptedServer]
) -> None:
    h = Harness(
        tmp_path, http_server, routes=[{"name": "p", "sinks": ["pd"]}], pd_script=[503] * 99
    )
    assert h.router.handle(alerts(4)).dead_lettered == 4
    assert len(h.pd.received) == ATTEMPTS  # not 4 x 8
    assert [a for _, a, _ in dead(h, "pd")] == [ATTEMPTS, 0, 0, 0]


def test_a_dead_sink_holds_back_no_page_of_another_sink(
    tmp_path: Path, http_server: Callable[..., ScriptedServer]
) -> None:
    h = Harness(tmp_path, http_server, routes=BOTH, slack_up=False)
    summary = h.router.handle(alerts(3))
    assert summary.triggered == 3 and summary.dead_lettered == 3
    assert h.pd_actions() == ["trigger"] * 3 and len(h.pd.received) == 3
    assert [a for _, a, _ in dead(h)] == [ATTEMPTS, 0, 0] and dead(h, "pd") == []


def test_the_next_batch_skips_a_sink_that_just_gave_up_then_one_attempt_tries_it_again(
    tmp_path: Path, http_server: Callable[..., ScriptedServer]
) -> None:
    h = Harness(tmp_path, http_server, routes=SLACK_ONLY, slack_up=False)
    h.router.handle(alerts(2))
    waits = len(h.time.sleeps)
    # The next batch, within the cool-down: dead-lettered at once, no attempt, no wait.
    assert h.router.handle(alerts(2, first=2)).dead_lettered == 2
    assert [a for _, a, _ in dead(h)] == [ATTEMPTS, 0, 0, 0] and len(h.time.sleeps) == waits
    # After it: a single attempt (still refused), and the sink is left alone again.
    h.time.now += COOL_DOWN
    assert h.router.handle(alerts(2, first=4)).dead_lettered == 2
    assert [a for _, a, _ in dead(h)][4:] == [1, 0] and len(h.time.sleeps) == waits
    # Back up: the first attempt after the next cool-down delivers, and so do the rest;
    # then the six dead letters of the outage follow (tests/alerts/test_auto_replay.py).
    h.time.now += COOL_DOWN
    h.slack.start()
    summary = h.router.handle(alerts(3, first=6))
    assert (summary.triggered, summary.dead_lettered, summary.replayed) == (3, 0, 6)
    assert len(h.slack.received) == 3 + 6 and len(h.time.sleeps) == waits


def test_resolves_to_a_dead_sink_are_dead_lettered_without_a_retry_each(
    tmp_path: Path, http_server: Callable[..., ScriptedServer]
) -> None:
    h = Harness(tmp_path, http_server, routes=SLACK_ONLY)
    h.router.handle(alerts(3))
    h.slack.stop()  # Slack goes away with three incidents open
    closes = [breaker(f"session:s{i}", at=T0 + timedelta(hours=1, seconds=i)) for i in range(3)]
    summary = h.router.handle([], closes)
    assert summary.dead_lettered == 3 and summary.resolved == 0
    rows = h.router.state.dead_letters(pending_only=True)
    assert [(r.notification.action, r.attempts) for r in rows] == [
        ("resolve", ATTEMPTS),
        ("resolve", 0),
        ("resolve", 0),
    ]
    # Not attempted, yet resolved in the router's state like a resolve that ran out of
    # retries: nothing stays open for ever, and the condition firing again pages afresh
    # (it does not fold into an incident the router could not close).
    assert h.router.state.open_incidents() == []
    assert not any(h.router.state.incident_open("slack", r.notification.key) for r in rows)
    # The replay, once Slack is back, sends each of the three resolves.
    h.slack.start()
    h.router.close()
    h.router = h.open()
    replay = h.router.replay_dead_letters()
    assert (replay.delivered, replay.superseded, replay.still_dead) == (3, 0, 0)
    resolved = [r.json()["text"] for r in h.slack.accepted()][3:]
    assert [t.startswith("Resolved") for t in resolved] == [True] * 3


def test_every_notification_skipped_while_the_sink_was_down_is_replayed_once_it_is_back(
    tmp_path: Path, http_server: Callable[..., ScriptedServer]
) -> None:
    h = Harness(tmp_path, http_server, routes=BOTH, slack_up=False)
    h.router.handle(alerts(3))
    h.router.handle(alerts(2, first=3))
    assert len(dead(h)) == 5
    h.slack.start()
    # `spendstream alerts --replay-dead-letters` is a process of its own: a fresh router.
    h.router.close()
    h.router = h.open()
    replay = h.router.replay_dead_letters()
    assert (replay.delivered, replay.superseded, replay.still_dead) == (5, 0, 0)
    texts = [r.json()["text"] for r in h.slack.accepted()]
    assert [[i for i in range(5) if f"session:s{i}" in t] for t in texts] == [[i] for i in range(5)]
    assert dead(h) == [] and h.pd_actions() == ["trigger"] * 5


def test_a_replay_against_a_sink_still_down_costs_one_retry_budget(
    tmp_path: Path, http_server: Callable[..., ScriptedServer]
) -> None:
    h = Harness(tmp_path, http_server, routes=SLACK_ONLY, slack_up=False)
    h.router.handle(alerts(4))
    h.router.close()
    h.router = h.open()  # the replay command's own process
    waits = len(h.time.sleeps)
    replay = h.router.replay_dead_letters()
    assert (replay.delivered, replay.still_dead) == (0, 4)
    assert len(h.time.sleeps) - waits == ATTEMPTS - 1  # the first is retried, not each one
    # Still dead letters, for the next replay, each with the attempts it has had.
    assert [a for _, a, _ in dead(h)] == [2 * ATTEMPTS, 0, 0, 0]


def test_spendstream_ingest_with_a_dead_webhook_retries_once_and_dead_letters_the_rest(
    tmp_path: Path,
    http_server: Callable[..., ScriptedServer],
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The walkthrough: three models without a price, a webhook on a closed port. Each
    # model's unpriced_model alert is a notification of its own.
    from spendstream.cli import main

    hook = http_server(start=False)
    cfg = tmp_path / "spendstream.toml"
    cfg.write_text(
        f"""
[[alerts.sink]]
name = "hook"
type = "webhook"
url = "{hook.url}"

[alerts.delivery]
max_attempts = 3
backoff_initial_s = 0.001
backoff_max_s = 0.001
"""
    )
    now = datetime.now(UTC).replace(microsecond=0)
    events = tmp_path / "events.jsonl"
    events.write_text(
        "".join(
            json.dumps(
                {
                    "event_id": f"e-{model}",
                    "ts": now.isoformat(),
                    "provider": "anthropic",
                    "model": model,
                    "input_tokens": 100,
                    "output_tokens": 10,
                    "session_id": f"s-{model}",
                    "api_key_id": "key-walkthrough",
                }
            )
            + "\n"
            for model in ("mystery-a", "mystery-b", "mystery-c")
        )
    )
    work = tmp_path / "work"
    argv = ["ingest", str(events), "--workdir", str(work), "--config", str(cfg)]
    assert main(argv) == 0
    assert "notifications: 0 sent, 0 resolved, 3 dead-lettered" in capsys.readouterr().out
    with sqlite3.connect(state_path(work)) as db:
        rows = db.execute(
            "SELECT json_extract(notification, '$.alert.details.model'), attempts "
            "FROM dead_letters ORDER BY id"
        ).fetchall()
    assert sorted(m for m, _ in rows) == ["mystery-a", "mystery-b", "mystery-c"]
    assert [a for _, a in rows] == [3, 0, 0]
    # Nothing lost: with the webhook up, the replay command delivers all three.
    hook.start()
    replay = ["alerts", "--replay-dead-letters", "--workdir", str(work), "--config", str(cfg)]
    assert main(replay) == 0
    assert "3 delivered" in capsys.readouterr().err
    assert sorted(r.json()["alert"]["details"]["model"] for r in hook.accepted()) == [
        "mystery-a",
        "mystery-b",
        "mystery-c",
    ]
