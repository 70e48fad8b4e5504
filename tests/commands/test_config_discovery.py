"""Which configuration a command reads: --config, else $SPENDSTREAM_CONFIG, else the
spendstream.toml `spendstream init` wrote in the working directory, else the defaults."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from spendstream.cli import main
from spendstream.commands import _options
from spendstream.commands._options import config_from_args

LIMIT_3 = "[runaway]\nmax_calls_per_minute = 3\n"


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SPENDSTREAM_CONFIG", raising=False)
    monkeypatch.setattr(_options, "_announced", set())
    monkeypatch.chdir(tmp_path)


def _args(config: Path | None = None) -> argparse.Namespace:
    return argparse.Namespace(config=str(config) if config else None)


def _limit(args: argparse.Namespace) -> int:
    return config_from_args(args).runaway.max_calls_per_minute


def test_the_working_directorys_spendstream_toml_is_read_and_said_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    default = _limit(_args())
    assert capsys.readouterr().err == ""  # no file: the defaults, silently
    (tmp_path / "spendstream.toml").write_text(LIMIT_3)
    assert _limit(_args()) == 3 != default
    assert _limit(_args()) == 3
    assert capsys.readouterr().err.count("using ./spendstream.toml") == 1


def test_a_named_configuration_wins_over_the_working_directorys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "spendstream.toml").write_text(LIMIT_3)
    other = tmp_path / "other.toml"
    other.write_text("[runaway]\nmax_calls_per_minute = 7\n")
    by_env = tmp_path / "env.toml"
    by_env.write_text("[runaway]\nmax_calls_per_minute = 9\n")
    assert _limit(_args(other)) == 7
    monkeypatch.setenv("SPENDSTREAM_CONFIG", str(by_env))
    assert _limit(_args()) == 9
    assert _limit(_args(other)) == 7
    assert "using ./spendstream.toml" not in capsys.readouterr().err


def test_ingest_in_a_directory_with_a_starter_file_detects_by_its_limits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The first hour: `spendstream init`, a limit edited, `spendstream ingest` without
    # --config. Ten calls of one key in ten seconds cross a limit of 3 a minute: the first
    # ten seconds of one UTC minute (minutes are tumbling windows; started at :51 or later,
    # the calls crossed the limit in two minutes, and 15% of runs saw two alerts).
    now = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=5)
    lines = [
        {
            "event_id": f"b{i}",
            "ts": (now + timedelta(seconds=i)).isoformat(),
            "provider": "openai",
            "model": "gpt-5-mini",
            "input_tokens": 10,
            "output_tokens": 1,
            "api_key_id": "k1",
        }
        for i in range(10)
    ]
    events = tmp_path / "burst.jsonl"
    events.write_text("".join(json.dumps(e) + "\n" for e in lines))
    assert main(["ingest", str(events), "--workdir", str(tmp_path / "without")]) == 0
    assert "alerts: none" in capsys.readouterr().out
    (tmp_path / "spendstream.toml").write_text(LIMIT_3)
    assert main(["ingest", str(events), "--workdir", str(tmp_path / "with")]) == 0
    out, err = capsys.readouterr()
    assert "runaway_rate 1" in out and "breakers opened: api_key:k1" in out
    assert "using ./spendstream.toml" in err


def test_the_demo_keeps_its_own_workload_configuration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A project's configuration (its sinks, its limits) must not change what the demo shows
    # or where it pages: the demo reads only --config.
    (tmp_path / "spendstream.toml").write_text("[runaway\n")  # would stop any reader
    assert main(["demo", "--workdir", str(tmp_path / "demo"), "--events", "1000"]) == 0
    assert "using ./spendstream.toml" not in capsys.readouterr().err


def test_the_demo_help_says_it_reads_only_config(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert (
        "the demo workload's own; $SPENDSTREAM_CONFIG and ./spendstream.toml are not read" in text
    )
    assert "default: $SPENDSTREAM_CONFIG, else" not in text


def test_a_bad_file_named_by_the_env_var_says_the_env_var_named_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # "cannot read configuration file old.toml" for a command given no --config: the
    # variable exported long ago was what to look at, and it was not said.
    monkeypatch.setenv("SPENDSTREAM_CONFIG", "old.toml")
    assert main(["sql", "--workdir", str(tmp_path), "SELECT 1"]) == 2
    assert capsys.readouterr().err == (
        "spendstream sql: cannot read configuration file old.toml: No such file or directory\n"
        "  ($SPENDSTREAM_CONFIG names old.toml; --config FILE names another)\n"
    )
    (tmp_path / "given.toml").write_text("[runawy]\n")
    assert main(["sql", "--workdir", str(tmp_path), "--config", "given.toml", "SELECT 1"]) == 2
    assert "SPENDSTREAM_CONFIG" not in capsys.readouterr().err  # given: no word of it
