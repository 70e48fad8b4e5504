"""``spendstream alerts`` as a user runs it: a process, a config file, secrets in the env."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from spendstream.cli import main
from spendstream.records import alert_to_wire
from tests.kafka_fixtures import produce

from .conftest import ScriptedServer, check_pagerduty
from .factories import PD_KEY, make_alert


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spendstream.toml"
    path.write_text(text)
    return path


def test_a_missing_secret_exits_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ONCALL_KEY", raising=False)
    cfg = _config(
        tmp_path,
        '[[alerts.sink]]\nname = "oncall"\ntype = "pagerduty"\nrouting_key_env = "ONCALL_KEY"\n',
    )
    rc = main(["alerts", "--workdir", str(tmp_path / "w"), "--config", str(cfg)])
    assert rc == 2
    assert "alerts.sink.oncall.routing_key_env" in capsys.readouterr().err


def test_an_inline_secret_is_refused_without_echoing_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _config(
        tmp_path,
        '[[alerts.sink]]\nname = "s"\ntype = "slack"\nwebhook_url = "https://hooks.slack.com/services/T0/B0/XYZ"\n',
    )
    rc = main(["alerts", "--workdir", str(tmp_path / "w"), "--config", str(cfg)])
    err = capsys.readouterr().err
    assert rc == 2
    assert "webhook_url must not be written inline; use webhook_url_env" in err
    assert "XYZ" not in err


@pytest.mark.kafka
def test_the_command_pages_from_kafka_and_stops_cleanly_on_sigterm(
    tmp_path: Path,
    kafka_bootstrap: str,
    topic_factory: Any,
    http_server: Callable[..., ScriptedServer],
) -> None:
    pd = http_server(check=check_pagerduty)
    alerts_topic = topic_factory(prefix="alerts")
    breakers_topic = topic_factory(prefix="breakers", configs={"cleanup.policy": "compact"})
    cfg = _config(
        tmp_path,
        f'[alerts]\ngroup_id = "cmd-{uuid.uuid4().hex[:8]}"\n'
        f'[[alerts.sink]]\nname = "pd"\ntype = "pagerduty"\nurl = "{pd.url}"\nrouting_key_env = "PD_KEY_FOR_TEST"\n'
        '[[alerts.sink]]\nname = "console"\ntype = "console"\n',
    )
    env = {**os.environ, "PD_KEY_FOR_TEST": PD_KEY}
    proc = subprocess.Popen(
        [sys.executable, "-m", "spendstream", "alerts", "--workdir", str(tmp_path / "w"), "--config", str(cfg),
         "--bootstrap-servers", kafka_bootstrap, "--alerts-topic", alerts_topic, "--breakers-topic", breakers_topic],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        produce(
            kafka_bootstrap,
            alerts_topic,
            [(None, json.dumps(alert_to_wire(make_alert())).encode())],
        )
        for _ in range(600):  # bounded wait for the page; each step is 0.2 s
            if pd.accepted() or proc.poll() is not None:
                break
            time.sleep(0.2)
        assert len(pd.accepted()) == 1, "the command did not page"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "[CRITICAL] runaway_session on session:s1" in err
    assert "1 alert," in err and "2 triggered" in err
    assert PD_KEY not in out + err


def test_replay_dead_letters_reports_and_exits_1_while_some_still_fail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], http_server: Callable[..., ScriptedServer]
) -> None:
    from spendstream.alerts.router import AlertRouter
    from spendstream.config import load_config

    hook = http_server(script=[422, 422])
    cfg = _config(
        tmp_path, f'[[alerts.sink]]\nname = "hook"\ntype = "webhook"\nurl = "{hook.url}"\n'
    )
    router = AlertRouter.from_config(load_config(cfg).alerts, tmp_path / "w")
    router.handle([make_alert()])  # refused: dead-lettered
    router.close()
    assert (
        main(
            [
                "alerts",
                "--replay-dead-letters",
                "--workdir",
                str(tmp_path / "w"),
                "--config",
                str(cfg),
            ]
        )
        == 1
    )
    assert (
        "0 delivered, 0 superseded by newer notifications, 1 still failing"
        in capsys.readouterr().err
    )
    assert (
        main(
            [
                "alerts",
                "--replay-dead-letters",
                "--workdir",
                str(tmp_path / "w"),
                "--config",
                str(cfg),
            ]
        )
        == 0
    )
    assert "1 delivered" in capsys.readouterr().err
    assert len(hook.accepted()) == 1
