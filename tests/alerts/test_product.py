"""The whole product, as processes: usage topic -> ``spendstream run`` -> alert and breaker
topics -> ``spendstream alerts`` -> PagerDuty and Slack (real local servers), then
``breakers reset`` (``publish_reset``, what the command runs) -> resolve.

Done when: a runaway session in the pipeline produces exactly one PagerDuty trigger and one
Slack message, and a resolve when its breaker is reset, across a webhook outage.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from spendstream.config import load_config
from spendstream.local.kafka import find_free_ports
from spendstream.runtime.kafka.breaker_control import publish_reset
from spendstream.topics import partition_key
from tests.kafka_fixtures import produce

from .conftest import ScriptedServer, check_pagerduty, check_slack
from .factories import PD_KEY

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

# Deadlines only turn a hang into a failure with the logs; nothing here asserts speed.
DEADLINE_S = 240.0
LOOP = "agent-loop-e2e"


class Proc:
    def __init__(self, name: str, args: list[str], log: Path, env: dict[str, str]) -> None:
        self.name, self.log = name, log
        with log.open("wb") as fh:
            self.p = subprocess.Popen(
                [sys.executable, "-m", "spendstream", *args],
                stdout=fh,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
            )

    def tail(self) -> str:
        return f"--- {self.name} ---\n" + "\n".join(
            self.log.read_text(errors="replace").splitlines()[-30:]
        )

    def stop(self) -> int:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(60)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(30)
        return self.p.returncode


def wait_for(cond: Callable[[], bool], what: str, procs: list[Proc]) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        if cond():
            return
        for p in procs:
            if p.p.poll() is not None:
                pytest.fail(f"{what}: {p.name} exited ({p.p.returncode})\n{p.tail()}")
        time.sleep(0.3)
    pytest.fail(f"{what}: not after {DEADLINE_S:.0f} s\n" + "\n".join(p.tail() for p in procs))


def _assigned(port: int, topic: str) -> bool:
    try:
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).json()
    except (httpx.HTTPError, ValueError):
        return False
    return any(a.startswith(topic) for a in health.get("assigned", []))


def test_spendstream_run_and_alerts_page_once_and_resolve_on_reset_across_a_slack_outage(
    kafka_bootstrap: str, http_server: Callable[..., ScriptedServer], tmp_path: Path
) -> None:
    pd = http_server(check=check_pagerduty)
    slack = http_server(check=check_slack, start=False)  # down until PagerDuty has been paged
    prefix = f"al{uuid.uuid4().hex[:8]}."
    (port,) = find_free_ports(1)
    cfg = tmp_path / "spendstream.toml"
    cfg.write_text(
        f"""
[kafka]
bootstrap_servers = "{kafka_bootstrap}"
topic_prefix = "{prefix}"
app_id = "{prefix}app"
usage_partitions = 1

[pipeline]
batch_within_s = 0.1

[runaway]
max_session_turns = 20

[alerts]
group_id = "{prefix}alerts"

[alerts.delivery]
max_attempts = 1000
backoff_initial_s = 0.2
backoff_max_s = 1.0
retry_budget_s = 600

[[alerts.sink]]
name = "pd"
type = "pagerduty"
url = "{pd.url}"
routing_key_env = "E2E_PD_KEY"

[[alerts.sink]]
name = "slack"
type = "slack"
webhook_url_env = "E2E_SLACK_URL"

[[alerts.route]]
name = "page-runaways"
kinds = ["runaway_session", "runaway_rate"]
min_severity = "critical"
sinks = ["pd", "slack"]
group_by = ["kind", "api_key_id|session_id"]
"""
    )
    work = tmp_path / "work"
    procs: list[Proc] = []
    try:
        run = Proc(
            "run",
            ["run", "--config", str(cfg), "--workdir", str(work), "--http-port", str(port)],
            tmp_path / "run.log",
            {},
        )
        procs.append(run)
        wait_for(
            lambda: _assigned(port, prefix + "spendstream.usage"), "spendstream run ready", procs
        )
        alerts = Proc(
            "alerts",
            ["alerts", "--config", str(cfg), "--workdir", str(work)],
            tmp_path / "alerts.log",
            {"E2E_PD_KEY": PD_KEY, "E2E_SLACK_URL": slack.url},
        )
        procs.append(alerts)

        start = datetime.now(UTC) - timedelta(minutes=10)
        records: list[tuple[bytes | None, bytes | None]] = []
        for turn in range(40):  # an agent stuck in a loop: 40 turns, one every 5 s
            event = {
                "event_id": f"{prefix}{turn}",
                "ts": (start + timedelta(seconds=5 * turn)).isoformat(),
                "provider": "anthropic",
                "model": "claude-sonnet-4-5",
                "input_tokens": 1500,
                "output_tokens": 250,
                "session_id": LOOP,
                "turn": turn,
                "team": "platform",
            }
            key = partition_key(None, LOOP, event.get("request_id"), event["event_id"])
            records.append((key, json.dumps(event).encode()))
        produce(kafka_bootstrap, prefix + "spendstream.usage", records)

        wait_for(lambda: len(pd.accepted()) >= 1, "the PagerDuty trigger", procs)
        time.sleep(1.0)  # Slack stays down a little longer: the router is retrying it
        assert slack.received == []
        slack.start()
        wait_for(lambda: len(slack.accepted()) >= 1, "the Slack message after the outage", procs)

        publish_reset(load_config(cfg), work, f"session:{LOOP}", datetime.now(UTC))
        wait_for(
            lambda: len(pd.accepted()) >= 2 and len(slack.accepted()) >= 2,
            "the resolves",
            procs,
        )
        time.sleep(2.0)  # anything extra (a duplicate page) would arrive now
    finally:
        codes = {p.name: p.stop() for p in reversed(procs)}
    actions = [r.json()["event_action"] for r in pd.accepted()]
    assert actions == ["trigger", "resolve"], "\n".join(p.tail() for p in procs)
    trigger, resolve = (r.json() for r in pd.accepted())
    assert trigger["payload"]["component"] == f"session:{LOOP}"
    assert trigger["dedup_key"] == resolve["dedup_key"]
    messages = [r.json()["text"] for r in slack.accepted()]
    assert len(messages) == 2 and messages[1].startswith("Resolved: runaway_session")
    assert codes["alerts"] == 0
    assert PD_KEY not in (tmp_path / "alerts.log").read_text()
    assert slack.url not in (tmp_path / "alerts.log").read_text()
