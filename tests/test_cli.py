"""The one `spendstream` command: every contract command exists, has help, and misuse exits 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from spendstream.cli import COMMANDS, build_parser, main

CONTRACT_COMMANDS = [
    "demo", "ingest", "run", "alerts", "sql", "query", "breakers", "kafka-local", "local",
    "init", "serve",
]  # fmt: skip


def _subcommands() -> dict[str, object]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return dict(action.choices)  # type: ignore[arg-type]


def test_every_contract_command_is_available() -> None:
    available = _subcommands()
    missing = [c for c in CONTRACT_COMMANDS if c not in available]
    assert missing == []


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_available_command_has_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    if name not in _subcommands():
        pytest.fail(f"command {name} is listed in COMMANDS but has no module")
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert COMMANDS[name] in " ".join(out.split())


def test_unknown_subcommand_exits_2_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])
    assert exc.value.code == 2
    assert "frobnicate" in capsys.readouterr().err


def test_no_subcommand_exits_2() -> None:
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2


def test_bad_config_key_exits_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[runaway]\nmax_calls_per_minit = 5\n")
    events = tmp_path / "e.jsonl"
    events.write_text("")
    rc = main(["ingest", str(events), "--workdir", str(tmp_path / "w"), "--config", str(cfg)])
    assert rc == 2
    assert "runaway.max_calls_per_minit" in capsys.readouterr().err


def test_console_script_runs_as_module() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "spendstream", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0
    assert proc.stdout.startswith("spendstream ")


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_command_is_documented_for_users(name: str) -> None:
    root = Path(__file__).resolve().parents[1]
    text = (root / "README.md").read_text() + "".join(
        p.read_text() for p in sorted((root / "docs").glob("*.md"))
    )
    assert f"spendstream {name}" in text, f"no README/docs page shows `spendstream {name}`"
