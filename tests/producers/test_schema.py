"""The committed JSON Schema is what the model generates, and describes the contract."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from spendstream.producers.event import UsageEvent
from spendstream.producers.schema import SCHEMA_PATH, json_schema, main, render


def test_committed_schema_matches_the_model() -> None:
    assert SCHEMA_PATH.read_text(encoding="utf-8") == render(), (
        "producers/usage-event.schema.json drifted from UsageEvent: "
        "run python -m spendstream.producers.schema"
    )


def test_check_mode_reports_drift_with_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stale = tmp_path / "usage-event.schema.json"
    stale.write_text("{}\n")
    monkeypatch.setattr("spendstream.producers.schema.SCHEMA_PATH", stale)
    assert main(["--check"]) == 1
    assert main([]) == 0
    assert main(["--check"]) == 0
    assert json.loads(stale.read_text())["title"].startswith("spendstream usage event")


def test_schema_lists_every_model_field_and_the_required_ones() -> None:
    schema = json_schema()
    assert set(schema["properties"]) == set(UsageEvent.model_fields)
    assert set(schema["required"]) == {
        "event_id",
        "ts",
        "provider",
        "model",
        "input_tokens",
        "output_tokens",
    }
    assert schema["additionalProperties"] is False
    assert schema["properties"]["ts"]["format"] == "date-time"
    assert schema["properties"]["input_tokens"]["minimum"] == 0


def test_schema_module_runs_as_a_script_in_check_mode() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "spendstream.producers.schema", "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
