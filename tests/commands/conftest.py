"""A `spendstream kafka-local` broker started the way a user starts one: by the CLI, in the
default data directory (under a throwaway ``$XDG_DATA_HOME``), for commands that must find it
with no configuration."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from spendstream.local.kafka import find_free_ports


@dataclass(frozen=True)
class LocalBroker:
    bootstrap: str
    data_home: Path
    env: dict[str, str]
    start_out: str
    start_err: str


def cli(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spendstream", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        env=env,
    )


@pytest.fixture(scope="package")
def kafka_local_default(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    home = tmp_path_factory.mktemp("xdg-data")
    env = {**os.environ, "XDG_DATA_HOME": str(home)}
    port, controller = find_free_ports(2)
    started = cli(
        "kafka-local", "start", "--port", str(port), "--controller-port", str(controller), env=env
    )
    try:
        assert started.returncode == 0, started.stderr
        yield LocalBroker(started.stdout.strip(), home, env, started.stdout, started.stderr)
    finally:
        stopped = cli("kafka-local", "stop", env=env)
        assert stopped.returncode == 0, stopped.stderr
