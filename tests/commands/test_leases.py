"""`spendstream leases serve` finds its broker as `run`, `alerts` and `breakers` do."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from tests.commands.conftest import LocalBroker

HARD_BUDGET = '[[budget]]\nscope = "team:a"\nperiod = "day"\namount_usd = 5\nhard_limit = 1.0\n'


def test_serve_without_a_configured_broker_uses_the_running_kafka_local_one(
    kafka_local_default: LocalBroker, tmp_path: Path
) -> None:
    # It went to localhost:9092 whatever ran: a kafka-local broker on another port, which
    # `run` beside it used, got no lease server.
    (tmp_path / "spendstream.toml").write_text(HARD_BUDGET)
    proc = subprocess.Popen(
        [sys.executable, "-m", "spendstream", "leases", "serve", "--instance", "t1"],
        cwd=tmp_path, env=kafka_local_default.env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    address = kafka_local_default.bootstrap
    assert first == f"spendstream leases: serving 1 hard budget as 't1' on {address}\n", err
    assert f"using the spendstream kafka-local broker at {address}" in err
    assert proc.returncode == 0, err
