"""``spendstream alerts`` and ``run`` started where no Kafka broker answers: what to do."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from spendstream.local.kafka import find_free_port


def test_the_router_says_at_once_that_no_broker_answers_and_that_ingest_pages_itself(
    tmp_path: Path,
) -> None:
    # It waited, saying nothing but the Kafka client's "Connection refused" once a minute:
    # an embedded user, told by the guide to run `spendstream alerts`, waited on it.
    dead = f"127.0.0.1:{find_free_port()}"
    config = tmp_path / "c.toml"
    config.write_text('[[alerts.sink]]\nname = "c"\ntype = "console"\n')
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "spendstream", "alerts", "--config", str(config)),
            *("--workdir", str(tmp_path / "w"), "--bootstrap-servers", dead),
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stderr is not None
    started = time.monotonic()
    said = ""
    # Without the line, the read below would wait for ever: the router stops after 30 s.
    watchdog = threading.Timer(30, proc.send_signal, [signal.SIGTERM])
    watchdog.start()
    try:
        for line in proc.stderr:
            said += line
            if "no Kafka broker answers" in line:
                break
        waited = time.monotonic() - started
    finally:
        watchdog.cancel()
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=60)[1]
    assert f"no Kafka broker answers at {dead} yet; waiting for one" in said, said + rest
    assert "`spendstream ingest` pages the [[alerts.sink]] entries itself" in said
    assert waited < 30  # the import, then the 3 s check: not the client's minute
    assert proc.returncode == 0, rest  # it still waits a broker out, and stops on SIGTERM


def test_run_with_no_broker_names_kafka_local_and_the_embedded_ingest(tmp_path: Path) -> None:
    # "cannot connect ...; is the broker up and [kafka] bootstrap_servers right?" and exit 1:
    # right, but a first user with no broker was not told how to get one, or that none is
    # needed to try the pipeline.
    dead = f"127.0.0.1:{find_free_port()}"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "spendstream", "run", "--bootstrap-servers", dead),
            *("--workdir", str(tmp_path / "w"), "--http-port", "0"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "SPENDSTREAM_CONFIG"},
    )
    assert done.returncode == 1, done.stderr
    assert "is the broker up" in done.stderr
    assert "spendstream kafka-local start" in done.stderr
    assert "spendstream ingest FILE runs the same pipeline embedded" in done.stderr
