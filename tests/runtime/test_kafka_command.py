"""``spendstream run`` and ``spendstream breakers`` at their edges: exit codes and messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from spendstream.local.kafka import find_free_port


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spendstream", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        env=env,
    )


def test_run_without_a_reachable_broker_exits_1_naming_the_key(tmp_path: Path) -> None:
    dead = f"127.0.0.1:{find_free_port()}"
    proc = _cli("run", "--workdir", str(tmp_path), "--bootstrap-servers", dead)
    assert proc.returncode == 1
    assert "[kafka] bootstrap_servers" in proc.stderr and dead in proc.stderr


def test_unreadable_token_file_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'[http]\ntoken_file = "{tmp_path / "missing"}"\n')
    proc = _cli("run", "--workdir", str(tmp_path), "--config", str(config))
    assert proc.returncode == 2
    assert "http.token_file" in proc.stderr


def test_breakers_reset_refuses_a_malformed_scope(tmp_path: Path) -> None:
    proc = _cli("breakers", "reset", "sess-1", "--workdir", str(tmp_path))
    assert proc.returncode == 2
    assert "SCOPE: scope 'sess-1'" in proc.stderr


def test_breakers_list_on_an_empty_warehouse_shows_no_scope(tmp_path: Path) -> None:
    proc = _cli("breakers", "list", "--all", "--workdir", str(tmp_path), "--format", "csv")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["scope,state,reason,ts"]


@pytest.mark.kafka
def _start_run(tmp_path: Path, config: Path, port: str, *extra: str) -> tuple[Any, Path]:
    """``spendstream run`` on ``config`` (token "t"), its output in run.log: (process, log)."""
    import os

    log = tmp_path / "run.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "spendstream", "run", "--workdir", str(tmp_path / "wd"),
             "--config", str(config), "--http-port", port, *extra],
            stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "SPENDSTREAM_INGEST_TOKEN": "t"},
        )  # fmt: skip
    return proc, log


def test_run_logging_to_a_file_writes_no_terminal_escape_codes(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    import time
    import urllib.request

    from tests.runtime.kafka_workers import write_config

    config, _ = write_config(tmp_path / "c.toml", kafka_bootstrap)
    port = find_free_port()
    # The default log level (warning) is the one that showed Faust's start-up spinner.
    proc, log = _start_run(tmp_path, config, str(port))
    try:
        deadline = time.monotonic() + 180  # a hang guard, not a speed limit
        while True:
            assert proc.poll() is None, log.read_text(errors="replace")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5):
                    break
            except OSError:
                assert time.monotonic() < deadline, log.read_text(errors="replace")
                time.sleep(0.5)
        time.sleep(2)  # past start-up, where the spinner finishes
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    text = log.read_bytes()
    assert b"spendstream run:" in text
    assert b"\x1b" not in text, text[-500:]


@pytest.mark.kafka
def test_run_on_a_taken_http_port_exits_2_naming_the_flag(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    # A second worker on one machine meets the first one's port: a message that says what
    # to change, not a traceback, and the process ends (its Kafka clients are closed).
    import os
    import socket

    from tests.runtime.kafka_workers import write_config

    config, _ = write_config(tmp_path / "c.toml", kafka_bootstrap)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "spendstream", "run", "--workdir", str(tmp_path / "wd"),
             "--config", str(config), "--http-port", str(port)],
            capture_output=True, text=True, check=False, timeout=300,
            env={**os.environ, "SPENDSTREAM_INGEST_TOKEN": "t"},
        )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert f"cannot listen for HTTP on 127.0.0.1:{port}" in proc.stderr
    assert "--http-port" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.kafka
def test_run_on_port_0_says_the_port_it_got_and_names_its_lease_server_by_it(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    # What the taken-port message suggests: the start line must say where to connect, and
    # two such workers on one host must not share a lease server name (the second would stop).
    import re
    import time
    import urllib.request

    from tests.runtime.kafka_workers import write_config

    config, _ = write_config(
        tmp_path / "c.toml",
        kafka_bootstrap,
        extra='[[budget]]\nscope = "team:search"\nperiod = "day"\namount_usd = "5"\n'
        'hard_limit = "1.0"\n',
    )
    proc, log = _start_run(tmp_path, config, "0")
    try:
        deadline = time.monotonic() + 180  # a hang guard, not a speed limit
        while (found := re.search(r"http://127\.0\.0\.1:(\d+)", log.read_text())) is None:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        port = int(found.group(1))
        assert port != 0
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as r:
            assert r.status == 200
        named = re.search(r"serving budget leases as '[^']*-run-(\d+)'", log.read_text())
        assert named is not None and int(named.group(1)) == port, log.read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=60)


@pytest.mark.kafka
def test_run_says_what_it_did_while_running_and_when_it_stops(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    # It was silent after its start line: an operator could not tell a worker taking events
    # from one waiting for them without /metrics.
    import json
    import re
    import time
    import urllib.request
    from datetime import UTC, datetime

    from tests.runtime.kafka_workers import write_config

    config, _ = write_config(tmp_path / "c.toml", kafka_bootstrap)
    port = find_free_port()
    proc, log = _start_run(tmp_path, config, str(port), "--status-every", "0.5")
    now = datetime.now(UTC).isoformat()
    lines = [
        {"event_id": f"s-{i}", "ts": now, "provider": "openai", "model": "gpt-4o",
         "input_tokens": 10, "output_tokens": 5}
        for i in range(3)
    ] + [{"event_id": "s-bad", "ts": now}]  # fmt: skip
    # The bad line is a dead letter at the HTTP door; the three others are the events in.
    body = "".join(json.dumps(x) + "\n" for x in lines).encode()
    try:
        deadline = time.monotonic() + 180  # a hang guard, not a speed limit
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/v1/events",
                data=body,
                headers={"Authorization": "Bearer t", "Content-Type": "application/x-ndjson"},
            )
            try:
                with urllib.request.urlopen(request, timeout=10):
                    break
            except OSError:
                time.sleep(0.5)
        status = re.compile(r"spendstream run: 3 events in, 3 facts landed, 0 duplicates, "
                            r"1 dead letter, 0 alerts, 0 breaker events; lag 0 records\n")  # fmt: skip
        while status.search(log.read_text()) is None:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        time.sleep(1.5)  # three more intervals with nothing new: no line repeated
        assert len(status.findall(log.read_text())) == 1, log.read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    assert (
        "spendstream run: stopped; 3 events in, 3 facts landed, 0 duplicates, 1 dead letter, "
        "0 alerts, 0 breaker events\n"
    ) in log.read_text()


def test_the_status_line_says_one_in_the_singular() -> None:
    # "1 dead letters", "lag 1 records" before.
    from spendstream.commands.run import status_line

    ones = {"events in": 1, "facts landed": 1, "duplicates": 1, "dead letters": 1,
            "alerts": 1, "breaker events": 1}  # fmt: skip
    assert status_line(ones, [("usage", 0, 1)]) == (
        "1 event in, 1 fact landed, 1 duplicate, 1 dead letter, 1 alert, 1 breaker event; "
        "lag 1 record"
    )
    many = dict.fromkeys(ones, 1200)
    assert status_line(many, [("usage", 0, 2), ("usage", 1, 0)]) == (
        "1,200 events in, 1,200 facts landed, 1,200 duplicates, 1,200 dead letters, "
        "1,200 alerts, 1,200 breaker events; lag 2 records"
    )
