"""Shared options: the broker is --bootstrap-servers, else the config's key, else a running
`spendstream kafka-local`, else localhost:9092; `kafka-local start` says how to use and stop it."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from spendstream.commands._options import kafka_config_from_args
from tests.commands.conftest import LocalBroker


def _args(config: Path | None = None, bootstrap: str | None = None) -> argparse.Namespace:
    return argparse.Namespace(config=str(config) if config else None, bootstrap_servers=bootstrap)


def test_start_prints_the_address_the_config_line_and_how_to_stop(
    kafka_local_default: LocalBroker,
) -> None:
    address = kafka_local_default.bootstrap
    assert kafka_local_default.start_out == address + "\n"  # stdout: the address alone
    notes = kafka_local_default.start_err
    assert f'bootstrap_servers = "{address}"' in notes and "[kafka]" in notes
    assert "spendstream kafka-local stop" in notes
    assert "use it by themselves" in notes
    assert "earlier runs" not in notes  # a new data dir: nothing kept to mention


def test_start_on_a_used_data_dir_says_its_topics_keep_earlier_records(tmp_path: Path) -> None:
    # A trial in a new workdir read ~300 records of an earlier one from the default dir's
    # broker, with nothing to say where they came from.
    from spendstream.local.kafka import LocalKafka, _start_notes

    broker = LocalKafka.from_dir(tmp_path / "kafka-local")
    notes = _start_notes(broker, explicit_dir=False, reused=True)
    assert "its topics keep what earlier runs produced there" in notes
    assert f"stop it and remove {broker.data_dir}, or start one with --dir elsewhere" in notes
    assert "earlier runs" not in _start_notes(broker, explicit_dir=False, reused=False)


def test_no_configured_broker_means_the_running_kafka_local_one(
    kafka_local_default: LocalBroker,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(kafka_local_default.data_home))
    monkeypatch.delenv("SPENDSTREAM_CONFIG", raising=False)
    address = kafka_local_default.bootstrap
    assert kafka_config_from_args(_args()).kafka.bootstrap_servers == address
    assert f"using the spendstream kafka-local broker at {address}" in capsys.readouterr().err
    # A file without the key still finds it...
    other = tmp_path / "other.toml"
    other.write_text("[runaway]\nmax_attempts = 9\n")
    found = kafka_config_from_args(_args(other))
    assert (found.kafka.bootstrap_servers, found.runaway.max_attempts) == (address, 9)
    # ...a file that names a broker wins, and the flag wins over both.
    named = tmp_path / "named.toml"
    named.write_text('[kafka]\nbootstrap_servers = "elsewhere:9092"\n')
    assert kafka_config_from_args(_args(named)).kafka.bootstrap_servers == "elsewhere:9092"
    assert kafka_config_from_args(_args(named, "flag:1")).kafka.bootstrap_servers == "flag:1"


def test_without_a_running_kafka_local_the_default_stands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))  # nothing was ever started here
    monkeypatch.delenv("SPENDSTREAM_CONFIG", raising=False)
    assert kafka_config_from_args(_args()).kafka.bootstrap_servers == "localhost:9092"
