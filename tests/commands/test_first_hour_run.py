"""`spendstream run` in a new user's first hour with Kafka: a typo in the broker's address
while their `spendstream kafka-local` broker runs."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spendstream.local.kafka import find_free_ports
from tests.commands.conftest import LocalBroker, cli

pytestmark = pytest.mark.kafka


def test_run_on_a_typoed_address_names_the_kafka_local_broker_that_is_running(
    kafka_local_default: LocalBroker, tmp_path: Path
) -> None:
    # `kafka-local start` printed 127.0.0.1:<port>; the user typed another port. run said
    # "cannot connect ...; is the broker up" and "a broker on this machine: spendstream
    # kafka-local start": start the broker that was running all along.
    [closed] = find_free_ports(1)
    typo = f"127.0.0.1:{closed}"
    (tmp_path / "spendstream.toml").write_text("")
    env = {**kafka_local_default.env, "SPENDSTREAM_INGEST_TOKEN": "t" * 32}
    ran = cli(
        "run",
        "--workdir",
        str(tmp_path / "wd"),
        "--config",
        str(tmp_path / "spendstream.toml"),
        "--bootstrap-servers",
        typo,
        "--http-port",
        "0",
        env=env,
        timeout=120,
    )
    assert ran.returncode == 1, ran.stderr
    assert (
        f"a spendstream kafka-local broker is running at {kafka_local_default.bootstrap}, "
        f"not at {typo} (--bootstrap-servers): a typo?"
    ) in ran.stderr, ran.stderr
    assert "spendstream kafka-local start" not in ran.stderr, ran.stderr


def test_breakers_and_alerts_on_a_typoed_address_name_the_running_kafka_local_broker(
    kafka_local_default: LocalBroker, tmp_path: Path
) -> None:
    [closed] = find_free_ports(1)
    typo = f"127.0.0.1:{closed}"
    told = (
        f"a spendstream kafka-local broker is running at {kafka_local_default.bootstrap}, "
        f"not at {typo} (--bootstrap-servers): a typo?"
    )
    env = kafka_local_default.env
    common = ["--workdir", str(tmp_path / "wd"), "--bootstrap-servers", typo]
    listed = cli("breakers", "list", "--from-kafka", *common, env=env, timeout=120)
    assert listed.returncode == 1 and told in listed.stderr, listed.stderr
    reset = cli("breakers", "reset", "api_key:key-agent", *common, env=env, timeout=120)
    assert reset.returncode == 1 and told in reset.stderr, reset.stderr
    # "For a local one: spendstream kafka-local start" is not said while one runs.
    assert "kafka-local start" not in reset.stderr, reset.stderr
    # alerts waits for a broker (a router may start before Kafka): it says so, and where
    # the running one is.
    router = subprocess.Popen(
        [sys.executable, "-m", "spendstream", "alerts", *common],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert router.stderr is not None
        seen = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = router.stderr.readline()
            seen.append(line)
            if told in line or not line:
                break
        assert any(told in line for line in seen), "".join(seen)
    finally:
        router.send_signal(signal.SIGINT)
        router.wait(60)
