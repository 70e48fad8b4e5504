"""The docs' examples do something on the demo's data: copied from the docs, run as written."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from spendstream.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("docs") / "spendstream-data"
    assert main(["demo", "--workdir", str(work), "--events", "20000"]) == 0
    return work


def _example(doc: str, starts: str) -> str:
    """The indented command in ``doc`` that starts with ``starts``, continuation lines joined."""
    lines = (ROOT / "docs" / doc).read_text().splitlines()
    i = next(n for n, li in enumerate(lines) if li.strip().startswith(starts))
    command = lines[i].strip()
    while command.endswith("\\"):
        i += 1
        command = command[:-1] + " " + lines[i].strip()
    return command


def _bash(command: str, home: Path) -> str:
    done = subprocess.run(
        ["bash", "-c", f"set -euo pipefail\n{command}"],
        cwd=home.parent,
        env={
            **os.environ,
            "SPENDSTREAM_HOME": str(home),
            "PATH": f"{Path(sys.prefix) / 'bin'}:{os.environ['PATH']}",
        },
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_whatif_example_saves_something_with_every_lever(demo_home: Path) -> None:
    command = _example("report.md", "spendstream whatif --route")
    out = json.loads(_bash(command + " --format json", demo_home))
    levers = out["assumptions"]["levers"]
    assert len(levers) == 4
    for n in range(1, len(levers) + 1):
        # A lever that saves nothing on the demo (a feature already all batch, say) teaches
        # nothing: each must move money.
        assert Decimal(out["total"][f"lever{n}_savings_usd"]) > 0, levers[n - 1]


def test_the_revenue_example_loads_the_demos_month(demo_home: Path) -> None:
    lines = (ROOT / "docs" / "warehouse.md").read_text().splitlines()
    start = next(i for i, li in enumerate(lines) if "load-revenue rev.csv" in li) - 1
    commands = "\n".join(li.strip().split("   #")[0] for li in lines[start : start + 2])
    assert commands.startswith("printf") and "load-revenue" in commands
    _bash(commands, demo_home)
    rows = _bash(
        'spendstream sql --format json "SELECT month, revenue_usd, ai_cost_usd FROM unit_economics '
        "WHERE level = 'total'\"",
        demo_home,
    )
    loaded = [r for r in json.loads(rows) if r["revenue_usd"] is not None]
    assert loaded, rows
    # The revenue landed on a month the demo has costs in: unit economics has both sides.
    assert any(Decimal(str(r["ai_cost_usd"])) > 0 for r in loaded), loaded
    assert re.fullmatch(r"\d{4}-\d{2}-01", str(loaded[0]["month"])[:10])


def test_the_dead_letter_replay_example_gets_the_lines_back_to_fix_and_land(
    tmp_path: Path,
) -> None:
    home = tmp_path / "spendstream-data"
    good = {"provider": "openai", "model": "gpt-5-mini", "output_tokens": 1}
    lines = [
        json.dumps({"event_id": "ok-1", "ts": "2026-11-01T12:00:00Z", "input_tokens": 5, **good}),
        json.dumps({"event_id": "b-1", "ts": "2026-11-01T12:00:01Z", "input_tokens": -5, **good}),
        '{"event_id": "b-2", "note": "a \\"quoted\\" value, a comma"}',
    ]
    (tmp_path / "events.jsonl").write_text("\n".join(lines) + "\n")
    _bash("spendstream ingest events.jsonl", home)

    _bash(_example("bounds.md", 'spendstream sql "SELECT raw FROM dead_letters'), home)
    retry = tmp_path / "retry.jsonl"
    # The lines exactly as they came, one per line: what the user edits.
    assert sorted(retry.read_text().splitlines()) == sorted(lines[1:])
    retry.write_text(retry.read_text().replace('"input_tokens": -5', '"input_tokens": 5'))
    out = _bash("spendstream ingest retry.jsonl", home)
    assert "landed 1 + duplicates 0 + dead-lettered 1" in out
    landed = _bash(
        'spendstream sql "SELECT event_id FROM usage_facts ORDER BY 1" --format csv', home
    )
    assert landed.split() == ["event_id", "b-1", "ok-1"]


def _readme_block(after: str) -> str:
    """The first ``sh`` block of README.md after the line starting with ``after``."""
    text = (ROOT / "README.md").read_text()
    start = text.index(after)
    found = re.search(r"^```sh\n(.*?)^```$", text[start:], re.MULTILINE | re.DOTALL)
    assert found, after
    return found.group(1)


def test_the_readme_no_kafka_example_lands_two_lines_and_names_the_typo(tmp_path: Path) -> None:
    # The first thing a new user does after the demo: their own events, by hand. The README
    # had the line format at its very end only, under "Run on Kafka".
    block = _readme_block("**Your own events, no Kafka")
    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "PATH": f"{Path(sys.prefix) / 'bin'}:{os.environ['PATH']}",
    }
    env.pop("SPENDSTREAM_HOME", None)
    env.pop("SPENDSTREAM_CONFIG", None)
    done = subprocess.run(
        ["bash", "-c", f"set -euo pipefail\n{block}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "read 3 = landed 2 + duplicates 0 + dead-lettered 1" in out
    assert "ouput_tokens: unknown field (" in out and "did you mean output_tokens?)" in out
    assert "genai-prices:openai/gpt-5-mini" in out
    assert "genai-prices:anthropic/claude-sonnet-4-5" in out
    trial = tmp_path / "spend-trial"
    assert (trial / "report.html").is_file()
    # What the README says next: fix the typo, ingest again, only that line lands.
    calls = trial / "calls.jsonl"
    calls.write_text(calls.read_text().replace('"ouput_tokens"', '"output_tokens"'))
    again = subprocess.run(
        ["spendstream", "ingest", "calls.jsonl"],
        cwd=trial,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert again.returncode == 0, again.stderr
    assert "read 3 = landed 1 + duplicates 2 + dead-lettered 0" in again.stdout
