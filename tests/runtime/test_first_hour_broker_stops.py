"""`spendstream run` when its broker stops mid-way and comes back (a new user's first hour:
`spendstream kafka-local stop` while the worker runs). A broker of the test's own, since it
is stopped and started again."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.kafka_fixtures import start_local_kafka
from tests.runtime.kafka_workers import write_config

pytestmark = pytest.mark.kafka

GONE = "spendstream run: no Kafka broker answers at {} any more; waiting for it"
BACK = "spendstream run: the broker at {} answers again (after "


def _wait_for(log: Path, text: str, proc: subprocess.Popen[bytes], within_s: float) -> None:
    deadline = time.monotonic() + within_s  # a hang guard, not a speed limit
    while text not in log.read_text():
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, f"no {text!r} in:\n{log.read_text()}"
        time.sleep(0.5)


def test_a_worker_says_when_its_broker_stops_answering_and_when_it_is_back(
    tmp_path: Path,
) -> None:
    # It said nothing of its own: the Kafka client's "Connect ... failed: Connection refused"
    # lines, once a minute per client, and /healthz went on answering "ok".
    broker = start_local_kafka(tmp_path / "kafka")
    proc: subprocess.Popen[bytes] | None = None
    try:
        bootstrap = broker.bootstrap
        config, prefix = write_config(tmp_path / "c.toml", bootstrap)
        log = tmp_path / "run.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "spendstream", "run", "--workdir", str(tmp_path / "wd"),
                 "--config", str(config), "--http-port", "0", "--status-every", "0"],
                stdout=out, stderr=subprocess.STDOUT,
                env={**os.environ, "SPENDSTREAM_INGEST_TOKEN": "t" * 32},
            )  # fmt: skip
        _wait_for(log, f"spendstream run: {prefix}spendstream.usage", proc, 300)
        assert GONE.format(bootstrap) not in log.read_text()
        broker.stop()
        _wait_for(log, GONE.format(bootstrap), proc, 120)
        assert BACK.format(bootstrap) not in log.read_text()
        broker.start()
        _wait_for(log, BACK.format(bootstrap), proc, 300)
        text = log.read_text()
        assert text.count(GONE.format(bootstrap)) == 1, text  # said once, not per probe
        assert text.count(BACK.format(bootstrap)) == 1, text
    finally:
        if proc is not None:
            proc.terminate()
            assert proc.wait(timeout=90) == 0
        broker.stop()
