"""AlertRouter.handle end to end against real local PagerDuty- and Slack-shaped servers."""

from __future__ import annotations

import io
import itertools
import logging
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spendstream.alerts.delivery import HttpDeliverer, RetryPolicy
from spendstream.alerts.notification import Notification
from spendstream.alerts.router import AlertRouter
from spendstream.alerts.sinks import ConsoleSink
from spendstream.alerts.state import DeliveryState
from spendstream.config import AlertsConfig, RouteConfig, config_from_dict
from spendstream.errors import ConfigError

from .conftest import ScriptedServer, check_pagerduty, check_slack
from .factories import PD_KEY, T0, breaker, make_alert
from .test_delivery import FakeTime

ROUTES: list[dict[str, Any]] = [
    {
        "name": "page",
        "kinds": ["runaway_session", "runaway_rate", "budget_exceeded"],
        "min_severity": "critical",
        "sinks": ["pd", "slack"],
        "group_by": ["kind", "api_key_id"],
    },
    {
        "name": "chat",
        "sinks": ["slack"],
        "quiet_hours": "22:00-07:00",
        "quiet_min_severity": "critical",
    },
]


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class Harness:
    def __init__(
        self,
        tmp_path: Path,
        http_server: Callable[..., ScriptedServer],
        routes: list[dict[str, Any]] | None = None,
        *,
        pd_script: list[Any] | None = None,
        slack_script: list[Any] | None = None,
        slack_up: bool = True,
        sink_extra: dict[str, Any] | None = None,
    ) -> None:
        self.pd = http_server(script=pd_script, check=check_pagerduty)
        self.slack = http_server(script=slack_script, check=check_slack, start=slack_up)
        self.tmp_path = tmp_path
        self.clock = Clock(datetime(2026, 11, 23, 12, 30, tzinfo=UTC))
        self.time = FakeTime()
        extra = sink_extra or {}
        self.config: AlertsConfig = config_from_dict(
            {
                "alerts": {
                    "sink": [
                        {
                            "name": "pd",
                            "type": "pagerduty",
                            "url": self.pd.url,
                            "routing_key_env": "PD",
                            **extra,
                        },
                        {"name": "slack", "type": "slack", "webhook_url_env": "SLACK", **extra},
                    ],
                    "route": ROUTES if routes is None else routes,
                }
            }
        ).alerts
        self.router = self.open()

    def open(self) -> AlertRouter:
        policy = RetryPolicy(
            max_attempts=8, backoff_initial_s=1, backoff_max_s=30, retry_budget_s=300, timeout_s=5
        )
        deliverer = HttpDeliverer(
            policy, sleep=self.time.sleep, monotonic=self.time.monotonic, rng=random.Random(3)
        )
        return AlertRouter.from_config(
            self.config,
            self.tmp_path / "work",
            environ={"PD": PD_KEY, "SLACK": self.slack.url},
            clock=self.clock,
            deliverer=deliverer,
        )

    def pd_actions(self) -> list[str]:
        return [r.json()["event_action"] for r in self.pd.accepted()]


@pytest.fixture
def harness(tmp_path: Path, http_server: Callable[..., ScriptedServer]) -> Harness:
    return Harness(tmp_path, http_server)


def storm(n: int, key: str = "key-ci") -> list[Any]:
    return [
        make_alert(f"session:{key}-s{i}", n=i, details={"api_key_id": key, "team": "platform"})
        for i in range(n)
    ]


def test_a_storm_of_runaway_sessions_from_one_key_is_one_page_with_a_count(
    harness: Harness,
) -> None:
    summary = harness.router.handle(storm(300))
    assert summary.triggered == 2  # one PagerDuty page, one Slack message
    (page,) = harness.pd.accepted()
    assert page.json()["payload"]["custom_details"]["count"] == 300
    assert page.json()["payload"]["summary"].startswith("300 runaway_session alerts")
    (msg,) = harness.slack.accepted()
    assert "x300" in msg.json()["blocks"][0]["text"]["text"]


def test_two_keys_storming_page_separately(harness: Harness) -> None:
    harness.router.handle(storm(5, "key-a") + storm(5, "key-b"))
    keys = {r.json()["dedup_key"] for r in harness.pd.accepted()}
    assert len(keys) == 2


def test_repeats_of_an_open_condition_in_later_batches_page_no_one(harness: Harness) -> None:
    a = make_alert()
    harness.router.handle([a])
    again = harness.router.handle([make_alert(n=1), make_alert(n=2)])
    assert again.triggered == 0 and again.decisions == {"folded": 4}  # 2 alerts x 2 sinks
    assert harness.pd_actions() == ["trigger"]


def test_the_breaker_closing_resolves_with_the_same_dedup_key(harness: Harness) -> None:
    harness.router.handle([make_alert()])
    summary = harness.router.handle([], [breaker("session:s1")])
    assert summary.resolved == 2
    assert harness.pd_actions() == ["trigger", "resolve"]
    trig, res = (r.json() for r in harness.pd.accepted())
    assert trig["dedup_key"] == res["dedup_key"]
    assert "Resolved" in harness.slack.accepted()[1].json()["text"]


def test_a_grouped_page_resolves_when_its_last_scope_closes(harness: Harness) -> None:
    harness.router.handle(storm(3))
    assert (
        harness.router.handle(
            [], [breaker("session:key-ci-s0"), breaker("session:key-ci-s1")]
        ).resolved
        == 0
    )
    assert harness.router.handle([], [breaker("session:key-ci-s2")]).resolved == 2
    assert harness.pd_actions() == ["trigger", "resolve"]


def test_the_condition_paging_again_after_its_resolve_is_a_new_page(harness: Harness) -> None:
    harness.router.handle([make_alert()])
    harness.router.handle([], [breaker("session:s1", at=T0 + timedelta(minutes=1))])
    harness.router.handle([make_alert(n=600)])  # ten minutes later, over the limit again
    assert harness.pd_actions() == ["trigger", "resolve", "trigger"]


def test_an_alert_read_after_its_breaker_closed_pages_no_one(harness: Harness) -> None:
    summary = harness.router.handle([make_alert()], [breaker("session:s1")])
    assert summary.decisions == {"stale": 2}
    assert harness.pd.received == [] and harness.slack.received == []


def test_delivery_state_survives_a_restart_without_duplicate_pages(harness: Harness) -> None:
    alerts = storm(20)
    harness.router.handle(alerts)
    harness.router.close()
    harness.router = harness.open()  # a new process, the same workdir
    replay = harness.router.handle(alerts)  # offsets were not committed: read again
    assert replay.triggered == 0 and replay.decisions == {"duplicate": 40}
    harness.router.handle([], [breaker(f"session:key-ci-s{i}") for i in range(20)])
    assert harness.pd_actions() == ["trigger", "resolve"]
    assert len(harness.slack.accepted()) == 2


def test_a_webhook_outage_delays_the_slack_message_but_sends_it_once(
    tmp_path: Path, http_server: Callable[..., ScriptedServer]
) -> None:
    h = Harness(tmp_path, http_server, slack_up=False)
    h.time.on_sleep[4] = h.slack.start  # Slack comes back after four backoff waits
    summary = h.router.handle([make_alert()])
    assert summary.triggered == 2 and summary.dead_lettered == 0
    assert len(h.slack.accepted()) == 1 and h.pd_actions() == ["trigger"]


def test_failing_and_throttling_endpoints_are_retried_to_one_delivery(
    tmp_path: Path, http_server: Callable[..., ScriptedServer]
) -> None:
    h = Harness(
        tmp_path,
        http_server,
        pd_script=[500, 503, 502],
        slack_script=[(429, {"Retry-After": "12"})],
    )
    assert h.router.handle([make_alert()]).triggered == 2
    assert h.pd_actions() == ["trigger"] and len(h.pd.received) == 4
    assert len(h.slack.accepted()) == 1 and 12.0 in h.time.sleeps


def test_a_refused_page_is_dead_lettered_and_pages_afresh_next_time(
    tmp_path: Path, http_server: Callable[..., ScriptedServer], caplog: pytest.LogCaptureFixture
) -> None:
    h = Harness(tmp_path, http_server, pd_script=[400])
    with caplog.at_level(logging.DEBUG):
        summary = h.router.handle([make_alert()])
    assert summary.dead_lettered == 1 and summary.triggered == 1
    (dead,) = h.router.state.dead_letters()
    assert dead.sink == "pd" and dead.error == "HTTP 400" and dead.attempts == 1
    assert dead.notification.alert.scope == "session:s1"
    assert PD_KEY not in caplog.text and h.slack.url not in caplog.text  # secrets never logged
    h.router.handle([make_alert(n=1)])  # not folded into a page that never happened
    assert h.pd_actions() == ["trigger"]


def test_quiet_hours_hold_back_chat_but_not_pages(
    tmp_path: Path, http_server: Callable[..., ScriptedServer]
) -> None:
    h = Harness(tmp_path, http_server)
    h.clock.now = datetime(2026, 11, 23, 23, 15, tzinfo=UTC)
    summary = h.router.handle(
        [make_alert("team:search", kind="budget_threshold", severity="warning"), make_alert()]
    )
    assert summary.decisions == {"quiet": 1, "send": 2}
    assert len(h.slack.accepted()) == 1 and h.pd_actions() == ["trigger"]


def test_minimum_severity_keeps_warnings_off_the_pager(harness: Harness) -> None:
    harness.router.handle([make_alert(severity="warning")])
    assert harness.pd.received == [] and len(harness.slack.accepted()) == 1


def test_rate_limit_per_scope_and_sink(
    tmp_path: Path, http_server: Callable[..., ScriptedServer]
) -> None:
    h = Harness(
        tmp_path,
        http_server,
        routes=[{"name": "all", "sinks": ["slack"]}],
        sink_extra={"max_per_scope": 2},
    )
    kinds = ["budget_threshold", "hourly_anomaly", "cache_hit_drop"]
    summary = h.router.handle(
        [make_alert("team:search", kind=k, severity="warning") for k in kinds]
    )
    assert summary.decisions == {"send": 2, "rate_limited": 1}
    h.clock.now += timedelta(hours=2)  # the window has passed
    assert h.router.handle([make_alert("team:search", kind="retry_storm")]).triggered == 1


def test_unrouted_alerts_are_counted(
    tmp_path: Path, http_server: Callable[..., ScriptedServer]
) -> None:
    h = Harness(
        tmp_path,
        http_server,
        routes=[{"name": "budgets", "kinds": ["budget_exceeded"], "sinks": ["slack"]}],
    )
    assert h.router.handle([make_alert()]).unrouted == 1


def test_auto_resolve_closes_incidents_no_breaker_will_close(
    tmp_path: Path, http_server: Callable[..., ScriptedServer]
) -> None:
    routes = [{"name": "anomalies", "sinks": ["pd"], "auto_resolve_s": 3600}]
    h = Harness(tmp_path, http_server, routes=routes)
    h.router.handle([make_alert("team:search", kind="hourly_anomaly")])
    h.clock.now += timedelta(minutes=59)
    assert h.router.tick().resolved == 0
    h.clock.now += timedelta(minutes=2)
    assert h.router.tick().resolved == 1
    assert h.pd_actions() == ["trigger", "resolve"]


def test_a_route_naming_an_unknown_kind_is_a_config_error(tmp_path: Path) -> None:
    cfg = config_from_dict(
        {
            "alerts": {
                "sink": [{"name": "c", "type": "console"}],
                "route": [{"name": "r", "sinks": ["c"], "kinds": ["runaway"]}],
            }
        }
    )
    with pytest.raises(
        ConfigError, match=r"alerts\.route\.r\.kinds: unknown alert kind\(s\) runaway"
    ):
        AlertRouter.from_config(cfg.alerts, tmp_path)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    keys=st.lists(st.sampled_from(["k1", "k2", "k3"]), min_size=1, max_size=40),
    cuts=st.lists(st.integers(min_value=0, max_value=40), max_size=6),
)
def test_any_batch_split_of_a_storm_gives_one_page_per_key_and_counts_every_alert(
    tmp_path_factory: pytest.TempPathFactory, keys: list[str], cuts: list[int]
) -> None:
    alerts = [
        make_alert(f"session:{k}-{i}", n=i, details={"api_key_id": k}) for i, k in enumerate(keys)
    ]
    bounds = sorted({0, len(alerts), *(c for c in cuts if c < len(alerts))})
    out = io.StringIO()
    router = AlertRouter(
        [RouteConfig(name="r", sinks=["c"], group_by=["kind", "api_key_id"])],
        [ConsoleSink(name="c", out=out, max_per_scope=1000)],
        DeliveryState(tmp_path_factory.mktemp("split") / "state.sqlite"),
        HttpDeliverer(RetryPolicy()),
    )
    try:
        for lo, hi in itertools.pairwise(bounds):
            router.handle(alerts[lo:hi])
        incidents = router.state.open_incidents()
        assert sorted(i.trigger.group["api_key_id"] for i in incidents) == sorted(set(keys))
        assert sum(i.count for i in incidents) == len(alerts)
        assert len(out.getvalue().splitlines()) == len(set(keys))
    finally:
        router.close()


def test_a_reset_and_a_new_trip_in_one_batch_resolve_then_page_again(harness: Harness) -> None:
    harness.router.handle([make_alert()])
    reset = breaker("session:s1", at=T0 + timedelta(minutes=5))
    again = make_alert(n=900)  # fifteen minutes in: the session runs away again
    summary = harness.router.handle([again], [reset])
    assert summary.resolved == 2 and summary.triggered == 2
    assert harness.pd_actions() == ["trigger", "resolve", "trigger"]


def test_replaying_dead_letters_delivers_what_is_still_relevant(
    tmp_path: Path, http_server: Callable[..., ScriptedServer]
) -> None:
    h = Harness(tmp_path, http_server, pd_script=[400, 400])  # PagerDuty refuses twice
    h.router.handle(
        [make_alert("session:a"), make_alert("session:b", details={"api_key_id": "k2"})]
    )
    h.router.handle([], [breaker("session:b")])  # b is over before anyone replays
    assert len(h.router.state.dead_letters(pending_only=True)) == 2
    replay = h.router.replay_dead_letters()
    assert (replay.delivered, replay.superseded, replay.still_dead) == (1, 1, 0)
    assert [r.json()["payload"]["component"] for r in h.pd.accepted()] == ["session:a"]
    assert h.router.replay_dead_letters().delivered == 0  # nothing left to replay
    h.router.handle([], [breaker("session:a")])  # the replayed page resolves like any other
    assert h.pd_actions() == ["trigger", "resolve"]


def test_a_dead_letter_superseded_by_a_newer_page_is_not_replayed(
    tmp_path: Path, http_server: Callable[..., ScriptedServer]
) -> None:
    h = Harness(tmp_path, http_server, pd_script=[503] * 8)  # the whole retry budget fails
    # The manual replay's rule; left on, the router would have superseded it itself
    # (tests/alerts/test_auto_replay.py).
    h.router.auto_replay = False
    h.router.handle([make_alert()])
    h.clock.now += timedelta(minutes=1)
    h.time.now += RetryPolicy().sink_down_s  # and past the minute pd is left alone as down
    h.router.handle([make_alert(n=60)])  # PagerDuty is back: this one pages
    assert h.router.replay_dead_letters().superseded == 1
    assert h.pd_actions() == ["trigger"]


def test_a_replay_that_fails_again_stays_a_dead_letter(
    tmp_path: Path, http_server: Callable[..., ScriptedServer]
) -> None:
    h = Harness(tmp_path, http_server, pd_script=[401, 401])
    h.router.handle([make_alert()])
    assert h.router.replay_dead_letters().still_dead == 1
    (row,) = h.router.state.dead_letters(pending_only=True)
    assert row.attempts == 2 and row.error == "HTTP 401"


def test_a_breaker_closed_twice_in_one_batch_resolves_once(harness: Harness) -> None:
    harness.router.handle([make_alert()])
    closes = [breaker("session:s1"), breaker("session:s1", at=T0 + timedelta(hours=2))]
    assert harness.router.handle([], closes).resolved == 2  # one per sink
    assert harness.pd_actions() == ["trigger", "resolve"]


def test_resolves_go_out_in_the_order_their_breakers_closed(harness: Harness) -> None:
    harness.router.handle(
        [make_alert("session:a"), make_alert("session:b", details={"api_key_id": "k2"})]
    )
    late, early = breaker("session:b", at=T0 + timedelta(hours=2)), breaker("session:a")
    harness.router.handle([], [late, early])
    sent = [r.json() for r in harness.pd.accepted()]
    component = {e["dedup_key"]: e["payload"]["component"] for e in sent[:2]}
    assert [component[e["dedup_key"]] for e in sent[2:]] == ["session:a", "session:b"]


def test_an_alert_read_twice_in_one_batch_is_counted_once(harness: Harness) -> None:
    a = make_alert()
    summary = harness.router.handle([a, a])
    assert summary.decisions["duplicate"] == summary.decisions["send"] > 0
    assert set(summary.decisions) == {"send", "duplicate"}
    (page,) = harness.pd.accepted()
    assert page.json()["payload"]["custom_details"]["count"] == 1


def test_a_scope_alerting_twice_in_a_grouped_page_is_listed_once(harness: Harness) -> None:
    harness.router.handle([make_alert(n=0), make_alert(n=1), make_alert("session:s2", n=2)])
    (page,) = harness.pd.accepted()
    details = page.json()["payload"]["custom_details"]
    assert details["count"] == 3 and details["scopes"] == ["session:s1", "session:s2"]


def test_auto_resolve_closes_an_incident_idle_for_exactly_its_auto_resolve_s(
    tmp_path: Path, http_server: Callable[..., ScriptedServer]
) -> None:
    routes = [{"name": "anomalies", "sinks": ["pd"], "auto_resolve_s": 3600}]
    h = Harness(tmp_path, http_server, routes=routes)
    h.router.handle([make_alert("team:search", kind="hourly_anomaly")])
    h.clock.now += timedelta(seconds=3600)
    assert h.router.tick().resolved == 1


PD_ONLY: list[dict[str, Any]] = [{"name": "p", "sinks": ["pd"], "group_by": ["kind", "api_key_id"]}]


def test_each_page_and_resolve_delivered_is_logged_naming_sink_kind_and_scope(
    tmp_path: Path, http_server: Callable[..., ScriptedServer], caplog: pytest.LogCaptureFixture
) -> None:
    # `spendstream alerts` logs at info: an operator tailing it sees what went out.
    h = Harness(tmp_path, http_server, routes=PD_ONLY)
    with caplog.at_level(logging.INFO, logger="spendstream.alerts.router"):
        h.router.handle([make_alert()])
        (incident,) = h.router.state.open_incidents()
        h.router.handle([], [breaker("session:s1")])
    lines = [r.getMessage() for r in caplog.records if r.name == "spendstream.alerts.router"]
    assert lines == [
        f"paged pd: runaway_session on session:s1 (1 alert; incident {incident.key})",
        f"resolved on pd: incident {incident.key} (session:s1)",
    ]
    assert h.pd_actions() == ["trigger", "resolve"] and PD_KEY not in caplog.text


def test_a_dead_lettered_resolve_is_delivered_on_replay(
    tmp_path: Path, http_server: Callable[..., ScriptedServer]
) -> None:
    h = Harness(tmp_path, http_server, routes=PD_ONLY, pd_script=[202, 400])  # resolve refused
    h.router.handle([make_alert()])
    assert h.router.handle([], [breaker("session:s1")]).dead_lettered == 1
    replay = h.router.replay_dead_letters()
    assert (replay.delivered, replay.superseded, replay.still_dead) == (1, 0, 0)
    assert h.pd_actions() == ["trigger", "resolve"]


def test_a_dead_lettered_resolve_is_not_replayed_over_a_later_page(
    tmp_path: Path, http_server: Callable[..., ScriptedServer]
) -> None:
    h = Harness(tmp_path, http_server, routes=PD_ONLY, pd_script=[202, 400])
    h.router.handle([make_alert()])
    h.router.handle([], [breaker("session:s1", at=T0 + timedelta(minutes=5))])  # dead letter
    h.clock.now += timedelta(minutes=1)
    h.router.handle([make_alert(n=900)])  # the session runs away again: a new page
    assert h.router.replay_dead_letters().superseded == 1
    assert h.pd_actions() == ["trigger", "trigger"]


def test_a_dead_lettered_resolve_is_not_replayed_over_a_page_of_its_own_batch(
    tmp_path: Path, http_server: Callable[..., ScriptedServer]
) -> None:
    # A reset and a new trip read in one batch: the resolve goes first and dies, the new
    # page opens its incident at the same instant. Replaying the resolve would close the
    # incident that is running now (a mutation pass found it).
    h = Harness(tmp_path, http_server, routes=PD_ONLY, pd_script=[202, 400])
    h.router.handle([make_alert()])
    reset = breaker("session:s1", at=T0 + timedelta(minutes=5))
    batch = h.router.handle([make_alert(n=900)], [reset])
    assert (batch.dead_lettered, batch.triggered) == (1, 1)
    h.clock.now += timedelta(minutes=1)
    assert h.router.replay_dead_letters().superseded == 1
    assert h.pd_actions() == ["trigger", "trigger"]
    assert len(h.router.state.open_incidents()) == 1


def test_a_dead_resolve_replayed_before_a_later_dead_page_does_not_suppress_the_page(
    tmp_path: Path, http_server: Callable[..., ScriptedServer]
) -> None:
    # Both died: the resolve of the first runaway, then the page of the second. Replayed
    # oldest first, the resolve is delivered; the page must be too (the session ran away
    # again after the reset), not judged "resolved after it died" by the replay's own time.
    h = Harness(tmp_path, http_server, routes=PD_ONLY, pd_script=[202, 400, 400])
    h.router.handle([make_alert()])
    h.router.handle([], [breaker("session:s1", at=T0 + timedelta(minutes=5))])  # dead resolve
    h.clock.now += timedelta(minutes=1)
    assert h.router.handle([make_alert(n=900)]).dead_lettered == 1  # dead page
    h.clock.now += timedelta(minutes=1)
    replay = h.router.replay_dead_letters()
    assert (replay.delivered, replay.superseded, replay.still_dead) == (2, 0, 0)
    assert h.pd_actions() == ["trigger", "resolve", "trigger"]
    assert len(h.router.state.open_incidents()) == 1


def test_a_dead_lettered_grouped_page_is_replayed_while_one_of_its_scopes_still_runs(
    tmp_path: Path, http_server: Callable[..., ScriptedServer]
) -> None:
    h = Harness(tmp_path, http_server, routes=PD_ONLY, pd_script=[400])
    h.router.handle(storm(2))  # one page for two sessions, refused
    h.router.handle([], [breaker("session:key-ci-s0")])  # one is over, the other is not
    replay = h.router.replay_dead_letters()
    assert (replay.delivered, replay.superseded) == (1, 0)
    assert h.pd_actions() == ["trigger"]


def test_sends_are_kept_for_the_longest_rate_window_of_any_sink_then_pruned(
    tmp_path: Path, http_server: Callable[..., ScriptedServer]
) -> None:
    h = Harness(tmp_path, http_server)
    h.router.close()
    h.config = config_from_dict(
        {
            "alerts": {
                "sink": [
                    {"name": "pd", "type": "pagerduty", "url": h.pd.url, "routing_key_env": "PD"},
                    {
                        "name": "slack",
                        "type": "slack",
                        "webhook_url_env": "SLACK",
                        "rate_window_s": 7200,
                    },
                ],
                "route": [{"name": "all", "sinks": ["pd", "slack"]}],
            }
        }
    ).alerts
    h.router = h.open()
    h.router.handle([make_alert("team:search", kind="hourly_anomaly")])

    def sends() -> list[str]:
        rows = h.router.state.conn.execute("SELECT sink FROM sends ORDER BY sink").fetchall()
        return [sink for (sink,) in rows]

    h.router.tick()
    h.clock.now += timedelta(minutes=90)  # past pd's window, inside Slack's
    h.router.tick()
    assert sends() == ["pd", "slack"]  # Slack's limit still counts its send
    h.clock.now += timedelta(minutes=60)  # past both
    h.router.tick()
    assert sends() == []


def test_a_breaker_transition_read_again_later_does_not_undo_a_newer_one(
    harness: Harness,
) -> None:
    h = harness
    h.router.handle([], [breaker("session:s1", "open", at=T0 + timedelta(minutes=10))])
    h.router.handle([], [breaker("session:s1", "closed", at=T0 + timedelta(minutes=30))])
    # A re-read (restart before the commit) brings the older trip back after the reset.
    h.router.handle([], [breaker("session:s1", "open", at=T0 + timedelta(minutes=10))])
    # Two transitions with one timestamp: the one read last is the newer.
    same = T0 + timedelta(minutes=30)
    h.router.handle([], [breaker("session:s2", "open", at=same), breaker("session:s2", at=same)])
    # Alerts raised before those resets and read late are over already.
    late = [make_alert("session:s1", n=1200), make_alert("session:s2", n=1200)]
    assert h.router.handle(late).decisions == {"stale": 4}
    assert h.pd.received == [] and h.slack.received == []


def test_a_scope_alerting_again_inside_an_open_grouped_page_keeps_it_open(
    harness: Harness,
) -> None:
    h = harness
    h.router.handle(storm(2))  # one page for s0 and s1
    h.router.handle([], [breaker("session:key-ci-s0")])  # s0 is over, s1 still runs
    h.router.handle([make_alert("session:key-ci-s0", n=7200)])  # s0 runs away again: folded
    h.router.handle([], [breaker("session:key-ci-s1", at=T0 + timedelta(hours=3))])
    assert h.pd_actions() == ["trigger"]  # s0 still runs
    h.router.handle([], [breaker("session:key-ci-s0", at=T0 + timedelta(hours=3))])
    assert h.pd_actions() == ["trigger", "resolve"]


def test_a_new_page_for_a_key_does_not_inherit_the_scopes_of_its_resolved_page(
    harness: Harness,
) -> None:
    h = harness
    h.router.handle(storm(2))
    h.router.handle([], [breaker("session:key-ci-s0"), breaker("session:key-ci-s1")])
    h.router.handle([make_alert("session:key-ci-s0", n=7200)])  # only s0, two hours later
    assert h.pd_actions() == ["trigger", "resolve", "trigger"]
    # s1 trips and resets again without alerting: the new page is about s0 alone.
    h.router.handle([], [breaker("session:key-ci-s1", at=T0 + timedelta(hours=3))])
    assert h.pd_actions() == ["trigger", "resolve", "trigger"]
    h.router.handle([], [breaker("session:key-ci-s0", at=T0 + timedelta(hours=3))])
    assert h.pd_actions() == ["trigger", "resolve", "trigger", "resolve"]


def test_a_second_replay_leaves_what_the_first_settled_alone(
    tmp_path: Path, http_server: Callable[..., ScriptedServer]
) -> None:
    h = Harness(tmp_path, http_server, pd_script=[400, 400])
    h.router.handle(
        [make_alert("session:a"), make_alert("session:b", details={"api_key_id": "k2"})]
    )
    h.router.handle([], [breaker("session:b")])
    first = h.router.replay_dead_letters()
    assert (first.delivered, first.superseded, first.still_dead) == (1, 1, 0)
    again = h.router.replay_dead_letters()
    assert (again.delivered, again.superseded, again.still_dead) == (0, 0, 0)
    assert [r.replay for r in h.router.state.dead_letters()] == ["delivered", "superseded"]


def test_a_notification_survives_its_json_round_trip_through_the_state() -> None:
    # Dead letters and open incidents are stored as Notification.to_json: a replayed storm
    # page must keep its count, scopes, group and the time its incident opened.
    n = Notification(
        "resolve",
        "group-1",
        "page",
        make_alert(),
        count=312,
        scopes=("session:a", "session:b"),
        group={"api_key_id": "key-ci"},
        opened_at=T0 - timedelta(hours=1),
    )
    assert Notification.from_json(n.to_json()) == n
