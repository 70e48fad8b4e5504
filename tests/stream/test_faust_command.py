"""``spendstream run`` and ``spendstream breakers`` at their edges: exit codes and messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from spendstream.local.kafka import find_free_port


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spendstream", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        env=env,
    )


def test_run_without_a_reachable_broker_exits_1_naming_the_key(tmp_path: Path) -> None:
    dead = f"127.0.0.1:{find_free_port()}"
    proc = _cli("run", "--workdir", str(tmp_path), "--bootstrap-servers", dead)
    assert proc.returncode == 1
    assert "[kafka] bootstrap_servers" in proc.stderr and dead in proc.stderr


def test_unreadable_token_file_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'[http]\ntoken_file = "{tmp_path / "missing"}"\n')
    proc = _cli("run", "--workdir", str(tmp_path), "--config", str(config))
    assert proc.returncode == 2
    assert "http.token_file" in proc.stderr


def test_breakers_reset_refuses_a_malformed_scope(tmp_path: Path) -> None:
    proc = _cli("breakers", "reset", "sess-1", "--workdir", str(tmp_path))
    assert proc.returncode == 2
    assert "SCOPE: scope 'sess-1'" in proc.stderr


def test_breakers_list_on_an_empty_warehouse_shows_no_scope(tmp_path: Path) -> None:
    proc = _cli("breakers", "list", "--all", "--workdir", str(tmp_path), "--format", "csv")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["scope,state,reason,ts"]
