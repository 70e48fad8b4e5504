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


def _schema_accepts(event: dict[str, object]) -> bool:
    import jsonschema

    return jsonschema.Draft202012Validator(json_schema()).is_valid(event)


def _pipeline_accepts(event: dict[str, object]) -> bool:
    from datetime import UTC, datetime

    from spendstream.stream.batch import decode_lines

    line = json.dumps(event).encode()
    return decode_lines([line], datetime.now(UTC), lambda i: f"t:{i}").dead_letters == []


@pytest.mark.parametrize(
    "change",
    [
        {"tool_requests": {"Web_Search": 1}},  # tool names are lower-case
        {"reported_cost_usd": "abc"},
        {"reported_cost_usd": "NaN"},
        {"ts": "2014-12-31T23:59:59Z"},  # before any metered LLM API
        {"ts": "2026-11-01T12:00:00"},  # no offset
        {"ts": "yesterday"},
    ],
    ids=["tool-name", "cost-text", "cost-nan", "ts-2014", "ts-naive", "ts-word"],
)
def test_what_the_pipeline_refuses_a_schema_validator_refuses_too(
    change: dict[str, object],
) -> None:
    # Found by validating hand-written events with jsonschema: each passed the schema (the
    # date-time format is not checked without an extra package) and became a dead letter.
    event = {**_good_event(), **change}
    assert not _pipeline_accepts(event)
    assert not _schema_accepts(event)


def test_events_the_pipeline_takes_pass_the_schema() -> None:
    from spendstream.synthetic import generate

    events = [_good_event(), *generate(300, seed=5)]
    events.append({**_good_event(), "ts": "2026-11-01T12:00:00.123456+05:30"})
    events.append({**_good_event(), "reported_cost_usd": "0.000000000000000001"})
    events.append({**_good_event(), "tool_requests": {"web_search": 2, "file.search:v2": 1}})
    for event in events:
        assert _pipeline_accepts(event), event
        assert _schema_accepts(event), event


@pytest.mark.parametrize(
    ("cost", "taken"),
    [("-0", True), ("-0.000", True), ("-.0", True), ("-0e5", True), ("+1.5", True),
     ("-1", False), ("-0.01", False), ("-.5", False), ("--0", False), ("-", False)],
)  # fmt: skip
def test_a_cost_string_is_judged_alike_by_the_schema_and_the_pipeline(
    cost: str, taken: bool
) -> None:
    # "-0" is 0: the pipeline took it while the schema's pattern refused any minus sign.
    event = {**_good_event(), "reported_cost_usd": cost}
    assert (_pipeline_accepts(event), _schema_accepts(event)) == (taken, taken)


def _good_event() -> dict[str, object]:
    return {
        "event_id": "e-1",
        "ts": "2026-11-01T12:00:00Z",
        "provider": "openai",
        "model": "gpt-5-mini",
        "input_tokens": 10,
        "output_tokens": 2,
    }
