"""`ingest` of a file that is not JSON Lines says what it most likely is, and what to run:
each of these became a pile of dead letters whose reason did not say what to do."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from spendstream.cli import main

EVENT = {
    "event_id": "e1",
    "ts": "2026-11-01T12:00:00Z",
    "provider": "openai",
    "model": "gpt-5-mini",
    "input_tokens": 5,
    "output_tokens": 1,
}
OTLP = {"resourceSpans": [{"resource": {}, "scopeSpans": []}]}


@pytest.mark.parametrize(
    ("name", "body", "hint"),
    [
        (
            "calls.jsonl.gz",
            gzip.compress(json.dumps(EVENT).encode() + b"\n"),
            "calls.jsonl.gz is gzip-compressed: `gunzip -c {path} | spendstream ingest -`",
        ),
        (
            "pretty.json",
            json.dumps(EVENT, indent=2).encode(),
            "pretty.json spreads a JSON object over lines: ingest reads one object per line "
            "(`jq -c . {path} | spendstream ingest -`)",
        ),
        (
            "array.json",
            json.dumps([EVENT, {**EVENT, "event_id": "e2"}]).encode(),
            "array.json holds a JSON array: ingest reads one JSON object per line "
            "(`jq -c '.[]' {path} | spendstream ingest -`)",
        ),
        (
            "calls.csv",
            b"event_id,ts,provider,model,input_tokens,output_tokens\n"
            b"e1,2026-11-01T12:00:00Z,openai,gpt-5-mini,5,1\n",
            "calls.csv is CSV (its first line names columns): ingest reads one JSON object "
            "per line, as producers/usage-event.schema.json has it",
        ),
        (
            "traces.json",
            json.dumps(OTLP).encode() + b"\n",
            "traces.json is an OTLP trace export: pass --format otlp",
        ),
    ],
)
def test_a_file_that_is_not_json_lines_gets_a_hint_naming_what_to_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, body: bytes, hint: str
) -> None:
    path = tmp_path / name
    path.write_bytes(body)
    assert main(["ingest", str(path), "--workdir", str(tmp_path / "wd")]) == 0
    captured = capsys.readouterr()
    assert "landed 0" in captured.out
    hint = hint.replace("{path}", str(path)).replace(name, str(path), 1)
    assert f"hint: {hint}" in captured.err


def test_json_lines_with_a_bad_line_get_no_shape_hint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "calls.jsonl"
    path.write_text(json.dumps(EVENT) + "\n" + '{"event_id": "e2"}\n')
    assert main(["ingest", str(path), "--workdir", str(tmp_path / "wd")]) == 0
    captured = capsys.readouterr()
    assert "landed 1" in captured.out and "dead-lettered 1" in captured.out
    assert "hint:" not in captured.err
