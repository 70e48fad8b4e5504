"""The lease server hosted by another process: ``host_leases`` and ``spendstream run``."""

from __future__ import annotations

import logging
import time
from decimal import Decimal
from pathlib import Path

import pytest

from spendstream.config import load_config
from spendstream.errors import BudgetExhausted
from spendstream.producers import LeaseClient
from spendstream.runtime.lease_server import HostedLeaseServer, host_leases
from tests.runtime.kafka_workers import Worker, write_config
from tests.test_budget_leases_kafka import wait_granted

D = Decimal
HARD = '[[budget]]\nscope = "team:search"\nperiod = "day"\namount_usd = 10\nhard_limit = 1.0\n'
LEASES = "[leases]\npartitions = 2\nreply_partitions = 2\n"


def test_nothing_is_hosted_without_a_hard_budget_or_with_serve_in_run_off(tmp_path: Path) -> None:
    # No broker is needed to decide: nothing is started, so nothing connects.
    soft, _ = write_config(tmp_path / "soft.toml", "127.0.0.1:1",
                           extra='[[budget]]\nscope = "team:a"\namount_usd = 5\n')  # fmt: skip
    off, _ = write_config(tmp_path / "off.toml", "127.0.0.1:1",
                          extra=HARD + "[leases]\nserve_in_run = false\n")  # fmt: skip
    assert host_leases(load_config(soft), "x") is None
    assert host_leases(load_config(off), "x") is None


@pytest.mark.kafka
def test_a_hosted_server_serves_until_stopped(kafka_bootstrap: str, tmp_path: Path) -> None:
    path, _ = write_config(tmp_path / "c.toml", kafka_bootstrap, extra=HARD + LEASES)
    config = load_config(path)
    hosted = host_leases(config, "hosted-0")
    assert hosted is not None
    try:
        assert hosted.wait_ready(120), hosted.error
        with LeaseClient.kafka(kafka_bootstrap, config, request_timeout_s=5) as client:
            wait_granted(client, "0.01", timeout_s=120)
            held = client.reserve("9", team="search")
            with pytest.raises(BudgetExhausted):
                client.reserve("2", team="search")
            held.cancel()
    finally:
        hosted.stop()
    assert not hosted.alive and hosted.error is None


@pytest.mark.kafka
def test_spendstream_run_serves_budget_leases(kafka_bootstrap: str, tmp_path: Path) -> None:
    path, _ = write_config(tmp_path / "c.toml", kafka_bootstrap, extra=HARD + LEASES)
    config = load_config(path)
    worker = Worker(tmp_path / "wd", path, tmp_path).start()
    try:
        with LeaseClient.kafka(kafka_bootstrap, config, request_timeout_s=5) as client:
            wait_granted(client, "0.01", timeout_s=120)
            r = client.reserve("4", team="search")
            assert r.lease_id
            with pytest.raises(BudgetExhausted) as caught:
                client.reserve("7", team="search")
            assert caught.value.budget == "team:search/day"
            r.cancel()
    finally:
        code = worker.stop()
    assert code == 0, worker.log_tail()
    assert "serving budget leases as" in worker.log_path.read_text(errors="replace")


def test_a_hosted_server_keeps_trying_an_unreachable_broker_until_stopped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from spendstream.local.kafka import find_free_port

    dead = f"127.0.0.1:{find_free_port()}"
    path, _ = write_config(tmp_path / "c.toml", dead, extra=HARD + LEASES)
    hosted = HostedLeaseServer(load_config(path), "h-dead", retry_s=0.1, connect_timeout_s=0.5)
    with caplog.at_level(logging.WARNING, logger="spendstream.leases"):
        hosted.start()
        deadline = time.monotonic() + 60  # a hang guard
        while caplog.text.count("trying again") < 2:
            assert time.monotonic() < deadline, caplog.text
            time.sleep(0.1)
    assert hosted.alive and hosted.error is None and not hosted.wait_ready(0.1)
    hosted.stop()
    assert not hosted.alive
