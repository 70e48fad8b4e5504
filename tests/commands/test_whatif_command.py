"""``spendstream whatif`` as a user reads it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spendstream.cli import main


def _event(event_id: str, model: str) -> str:
    return json.dumps(
        {
            "event_id": event_id,
            "ts": "2026-11-01T12:00:00Z",
            "provider": "openai",
            "model": model,
            "input_tokens": 1000,
            "output_tokens": 100,
            "team": "search",
        }
    )


@pytest.mark.parametrize(
    ("unpriced", "said"), [(1, "1 unpriced call is"), (2, "2 unpriced calls are")]
)
def test_the_baseline_counts_unpriced_calls_in_english(
    unpriced: int, said: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # "1 unpriced calls are left out".
    events = tmp_path / "calls.jsonl"
    lines = [_event("priced", "gpt-5-mini")]
    lines += [_event(f"typo-{i}", "gpt-5-mni") for i in range(unpriced)]
    events.write_text("\n".join(lines) + "\n")
    work = str(tmp_path / "w")
    assert main(["ingest", str(events), "--workdir", work]) == 0
    capsys.readouterr()
    assert main(["whatif", "--workdir", work, "--max-output", "10"]) == 0
    out = capsys.readouterr().out
    assert f"by the same pricer; {said} left out\n" in out, out
