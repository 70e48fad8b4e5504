"""Done when: a runaway session in the pipeline produces exactly one PagerDuty trigger and one
Slack message, and a resolve when its breaker is reset, across a webhook outage.

The pipeline is the real one (stream.embedded.EmbeddedRunner: pricing, detectors, breakers,
the DuckDB warehouse); its alerts and breaker transitions travel as the Kafka runtime
publishes them (``alert_to_wire`` / ``breaker_to_wire`` on the alert and compacted breaker
topics of a real broker) to the alert router, which delivers to real local HTTP servers.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from spendstream.alerts.delivery import HttpDeliverer, RetryPolicy
from spendstream.alerts.router import AlertRouter
from spendstream.config import Config, config_from_dict
from spendstream.runtime.embedded import EmbeddedRunner, read_lines

from .conftest import ScriptedServer, check_pagerduty, check_slack
from .factories import PD_KEY
from .test_consumer import Rig, poll_until
from .test_delivery import FakeTime

START = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
LOOP = "agent-loop-7"
ROUTES = [
    {
        "name": "page-runaways",
        "kinds": ["runaway_session", "runaway_rate"],
        "min_severity": "critical",
        "sinks": ["pd", "slack"],
        # One incident per runaway session, whichever of its limits (turns, cost, time) trip.
        "group_by": ["kind", "session_id"],
    }
]


def _workload(path: Path) -> None:
    """A healthy chat session and an agent stuck in a loop: 40 turns, one every 10 s."""
    lines = []
    for turn in range(40):
        lines.append(
            {
                "event_id": f"loop-{turn}",
                "ts": (START + timedelta(seconds=10 * turn)).isoformat(),
                "provider": "anthropic",
                "model": "claude-sonnet-4-5",
                "input_tokens": 1200,
                "output_tokens": 300,
                "session_id": LOOP,
                "turn": turn,
                "api_key_id": "key-ci-agent",
                "team": "platform",
            }
        )
    for turn in range(5):
        lines.append(
            {
                "event_id": f"chat-{turn}",
                "ts": (START + timedelta(seconds=30 * turn)).isoformat(),
                "provider": "anthropic",
                "model": "claude-sonnet-4-5",
                "input_tokens": 800,
                "output_tokens": 200,
                "session_id": "chat-1",
                "turn": turn,
                "api_key_id": "key-web",
                "team": "search",
            }
        )
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))


def _config(pd: ScriptedServer) -> Config:
    return config_from_dict(
        {
            "runaway": {"max_session_turns": 20},
            "alerts": {
                "sink": [
                    {"name": "pd", "type": "pagerduty", "url": pd.url, "routing_key_env": "PD"},
                    {"name": "slack", "type": "slack", "webhook_url_env": "SLACK"},
                ],
                "route": ROUTES,
            },
        }
    )


def test_a_runaway_session_pages_once_and_resolves_on_reset_through_kafka_across_a_slack_outage(
    kafka_bootstrap: str,
    topic_factory: Any,
    http_server: Callable[..., ScriptedServer],
    tmp_path: Path,
) -> None:
    rig = Rig(kafka_bootstrap, topic_factory, http_server, tmp_path / "alerts-work", slack_up=False)
    try:
        config = _config(rig.pd)
        events = tmp_path / "events.jsonl"
        _workload(events)
        runner = EmbeddedRunner(tmp_path / "pipeline-work", config)
        summary = runner.run(read_lines([str(events)]))
        assert summary.landed == 45
        runaway = [a for a in summary.alerts if a.scope == f"session:{LOOP}"]
        assert runaway and {a.kind for a in runaway} == {"runaway_session"}
        assert any(
            b.scope == f"session:{LOOP}" and b.state == "open" for b in summary.breaker_events
        )

        # Slack's webhook is down at first; it comes back after the third backoff wait.
        rig.time.on_sleep[3] = rig.slack.start
        consumer = rig.start_router()
        rig.publish(summary.alerts, summary.breaker_events)
        poll_until(consumer, lambda: len(rig.slack.accepted()) == 1, "the Slack message")
        assert rig.pd_actions() == ["trigger"]
        page = rig.pd.accepted()[0].json()
        assert page["payload"]["component"] == f"session:{LOOP}"
        assert page["payload"]["severity"] == "critical"

        # What was paged is what the warehouse recorded.
        db = tmp_path / "pipeline-work" / "warehouse" / "spendstream.duckdb"
        with duckdb.connect(str(db), read_only=True) as con:
            keys = {
                r[0]
                for r in con.execute(
                    "SELECT dedup_key FROM alerts WHERE scope = ?", [f"session:{LOOP}"]
                ).fetchall()
            }
        assert page["payload"]["custom_details"]["alert_dedup_key"] in keys

        # An operator resets the breaker (what `spendstream breakers reset` does).
        reset = runner.pipeline.engine.reset_breaker(f"session:{LOOP}", START + timedelta(hours=1))
        assert reset is not None and reset.state == "closed"
        rig.publish(breakers=[reset])
        poll_until(consumer, lambda: rig.pd_actions() == ["trigger", "resolve"], "the resolve")
        assert rig.pd.accepted()[1].json()["dedup_key"] == page["dedup_key"]
        assert len(rig.slack.accepted()) == 2
        assert "Resolved" in rig.slack.accepted()[1].json()["text"]
        assert [r.status for r in rig.slack.received] == [
            202,
            202,
        ]  # the outage was refused connections
    finally:
        rig.close()


def test_the_embedded_entry_point_pages_once_and_resolves_on_reset(
    http_server: Callable[..., ScriptedServer], tmp_path: Path
) -> None:
    pd = http_server(check=check_pagerduty)
    slack = http_server(check=check_slack, script=[503, 503, 502])  # a flaky webhook
    config = _config(pd)
    events = tmp_path / "events.jsonl"
    _workload(events)
    runner = EmbeddedRunner(tmp_path / "work", config)
    summary = runner.run(read_lines([str(events)]))
    t = FakeTime()
    router = AlertRouter.from_config(
        config.alerts,
        tmp_path / "work",
        environ={"PD": PD_KEY, "SLACK": slack.url},
        deliverer=HttpDeliverer(RetryPolicy(), sleep=t.sleep, monotonic=t.monotonic),
    )
    try:
        first = router.handle(summary.alerts, summary.breaker_events)
        assert first.triggered == 2 and first.dead_lettered == 0
        assert runner.run(read_lines([str(events)])).landed == 0  # re-ingest adds nothing...
        assert (
            router.handle(summary.alerts, summary.breaker_events).triggered == 0
        )  # ...pages no one
        reset = runner.pipeline.engine.reset_breaker(f"session:{LOOP}", START + timedelta(hours=1))
        assert reset is not None
        assert router.handle([], [reset]).resolved == 2
        assert [r.json()["event_action"] for r in pd.accepted()] == ["trigger", "resolve"]
        assert len(slack.accepted()) == 2 and len(slack.received) == 5
    finally:
        router.close()


def test_spendstream_ingest_routes_to_the_configured_sinks_once(
    http_server: Callable[..., ScriptedServer],
    tmp_path: Path,
    monkeypatch: Any,
    capsys: Any,
) -> None:
    from spendstream.cli import main

    pd = http_server(check=check_pagerduty)
    slack = http_server(check=check_slack)
    monkeypatch.setenv("PD", PD_KEY)
    monkeypatch.setenv("SLACK", slack.url)
    cfg = tmp_path / "spendstream.toml"
    cfg.write_text(
        f"""
[runaway]
max_session_turns = 20

[[alerts.sink]]
name = "pd"
type = "pagerduty"
url = "{pd.url}"
routing_key_env = "PD"

[[alerts.sink]]
name = "slack"
type = "slack"
webhook_url_env = "SLACK"

[[alerts.route]]
name = "page-runaways"
kinds = ["runaway_session", "runaway_rate"]
min_severity = "critical"
sinks = ["pd", "slack"]
group_by = ["kind", "session_id"]
"""
    )
    events = tmp_path / "events.jsonl"
    _workload(events)
    work = str(tmp_path / "work")
    argv = ["ingest", str(events), "--workdir", work, "--config", str(cfg)]
    assert main([*argv, "--no-route-alerts"]) == 0
    assert pd.received == [] and slack.received == []  # landed, not routed

    # The alert landed by the first run is not raised again (same state), so a second file
    # with the loop's continuation is what pages: the router sees the new turns' alerts.
    more = tmp_path / "more.jsonl"
    more.write_text(
        "".join(
            json.dumps(
                {
                    "event_id": f"loop2-{turn}",
                    "ts": (START + timedelta(minutes=10, seconds=10 * turn)).isoformat(),
                    "provider": "anthropic",
                    "model": "claude-sonnet-4-5",
                    "input_tokens": 1200,
                    "output_tokens": 300,
                    "session_id": "agent-loop-8",
                    "turn": turn,
                    "api_key_id": "key-ci-agent",
                    "team": "platform",
                }
            )
            + "\n"
            for turn in range(30)
        )
    )
    capsys.readouterr()
    assert main(["ingest", str(more), "--workdir", work, "--config", str(cfg)]) == 0
    assert "notifications: 2 sent" in capsys.readouterr().out
    pages = [r.json() for r in pd.accepted()]
    assert [p["event_action"] for p in pages] == ["trigger"]
    assert "agent-loop-8" in json.dumps(pages[0])
    assert len(slack.accepted()) == 1
    # Re-ingesting the same file lands nothing and pages no one.
    assert main(["ingest", str(more), "--workdir", work, "--config", str(cfg)]) == 0
    assert len(pd.received) == 1 and len(slack.received) == 1
