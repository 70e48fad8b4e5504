"""``spendstream init``: a commented starter spendstream.toml that loads, local or cluster."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from spendstream.cli import main
from spendstream.config import Config, load_config
from spendstream.config_starter import CLUSTER, LOCAL

# A commented key line or table header, as a user would uncomment it.
_COMMENTED = re.compile(r"^# ((?:[a-z_]+ = .*)|(?:\[\[?[a-z_.]+\]\]?))$")


def _uncomment_all(text: str) -> str:
    return "\n".join(
        m.group(1) if (m := _COMMENTED.match(line)) else line for line in text.splitlines()
    )


def test_init_writes_a_local_starter_that_loads_and_leaves_the_broker_to_discovery(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["init"]) == 0
    written = tmp_path / "spendstream.toml"
    assert written.read_text() == LOCAL
    config = load_config(written)
    # Unset on purpose: run/alerts/breakers then find a running kafka-local broker.
    assert "bootstrap_servers" not in config.kafka.model_fields_set
    err = capsys.readouterr().err
    assert "spendstream kafka-local start" in err
    # The embedded way is named too: it needs no broker, and the file applies to it.
    assert "next, without Kafka: spendstream ingest calls.jsonl --config spendstream.toml" in err


def test_init_cluster_names_brokers_an_open_endpoint_and_a_token_file(tmp_path: Path) -> None:
    target = tmp_path / "conf" / "prod.toml"
    assert main(["init", "--cluster", str(target)]) == 0
    config = load_config(target)
    assert config.kafka.bootstrap_servers.count(",") == 2
    assert config.http.host == "0.0.0.0" and config.http.token_file
    # Several hosts: one shared warehouse (not each host's workdir), signed breaker records.
    assert config.warehouse.catalog_uri.startswith("postgresql")
    assert config.warehouse.location.startswith("s3://")
    assert config.breaker.hmac_key_file


@pytest.mark.parametrize("text", [LOCAL, CLUSTER], ids=["local", "cluster"])
def test_every_commented_key_is_real_and_uncommenting_them_all_still_loads(
    text: str, tmp_path: Path
) -> None:
    commented = [m.group(1) for line in text.splitlines() if (m := _COMMENTED.match(line))]
    assert len(commented) > 20  # the starter shows the keys people change first
    target = tmp_path / "all.toml"
    target.write_text(_uncomment_all(text))
    config = load_config(target)
    assert config.budget and config.prices.model and config.alerts.sink and config.alerts.route
    assert config != Config()


def test_init_keeps_an_existing_file_unless_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "spendstream.toml"
    target.write_text("[runaway]\nmax_attempts = 9\n")
    assert main(["init", str(target)]) == 2
    assert "exists" in capsys.readouterr().err
    assert load_config(target).runaway.max_attempts == 9
    assert main(["init", str(target), "--force"]) == 0
    assert target.read_text() == LOCAL


def test_the_starter_says_what_ingest_does_with_alerts_with_and_without_a_sink() -> None:
    # It spoke of `spendstream alerts` only, a Kafka command: an embedded user was left to
    # guess where ingest's alerts went.
    for text in (LOCAL, CLUSTER):
        assert "`spendstream ingest`\n# lands them only" in text
        assert "ingest pages it itself" in text


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_init_given_a_directory_asks_for_the_file(
    force: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `spendstream init myproject`: "exists; keep it, or overwrite it with --force", and
    # with --force a traceback (IsADirectoryError) and a stray temporary file beside it.
    assert main(["init", str(tmp_path), *force]) == 2
    assert capsys.readouterr().err == (
        f"spendstream init: {tmp_path} is a directory: name the file, e.g. "
        f"{tmp_path / 'spendstream.toml'}\n"
    )
    assert not list(tmp_path.parent.glob(f".{tmp_path.name}*"))


def test_a_starter_that_cannot_be_put_in_place_leaves_no_temporary_file(tmp_path: Path) -> None:
    # The rename onto a directory fails (the CLI refuses a directory first; Python callers
    # of write_starter do not): the hidden .tmp file it wrote stayed behind.
    from spendstream.config_starter import write_starter

    target = tmp_path / "spendstream.toml"
    target.mkdir()
    with pytest.raises(OSError):
        write_starter(target, force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spendstream.toml"]
