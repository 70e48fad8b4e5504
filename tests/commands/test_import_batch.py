"""``spendstream import-batch``: OpenAI and Anthropic batch result files land as batch events."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from anthropic.types.messages import MessageBatchIndividualResponse
from openai.types.chat import ChatCompletion

from spendstream.cli import main
from spendstream.producers import UsageEvent
from spendstream.stream.pricing import Pricer


def _openai_line(i: int, prompt: int, completion: int) -> dict[str, Any]:
    body = ChatCompletion.model_validate(
        {
            "id": f"chatcmpl-{i}",
            "object": "chat.completion",
            "created": 1767614400 + i,
            "model": "gpt-4o-mini",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": "ok"},
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
        }
    ).model_dump(mode="json")
    return {
        "id": f"batch_req_{i}",
        "custom_id": f"request-{i}",
        "response": {"status_code": 200, "request_id": f"req_{i}", "body": body},
        "error": None,
    }


def _anthropic_line(i: int) -> dict[str, Any]:
    return MessageBatchIndividualResponse.model_validate(
        {
            "custom_id": f"request-{i}",  # custom ids repeat across providers' files
            "result": {
                "type": "succeeded",
                "message": {
                    "id": f"msg_{i}",
                    "type": "message",
                    "role": "assistant",
                    "model": "claude-sonnet-4-5",
                    "content": [{"type": "text", "text": "ok"}],
                    "stop_reason": "end_turn",
                    "stop_sequence": None,
                    "usage": {
                        "input_tokens": 100,
                        "output_tokens": 50,
                        "cache_creation_input_tokens": 1000,
                        "cache_read_input_tokens": 0,
                        "cache_creation": {
                            "ephemeral_5m_input_tokens": 0,
                            "ephemeral_1h_input_tokens": 1000,
                        },
                        "service_tier": "batch",
                    },
                },
            },
        }
    ).model_dump(mode="json")


def _facts(workdir: Path, capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    capsys.readouterr()
    sql = (
        "SELECT event_id, ts, provider, model, batch, request_id, input_tokens, output_tokens, "
        "cache_write_tokens, cache_write_1h_tokens, cost_usd, price_source "
        "FROM usage_facts ORDER BY request_id, provider"
    )
    assert main(["sql", "--workdir", str(workdir), "--format", "json", sql]) == 0
    rows: list[dict[str, Any]] = json.loads(capsys.readouterr().out)
    return rows


def test_batch_result_files_land_as_priced_batch_events_and_reimport_adds_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    openai_file = tmp_path / "openai-results.jsonl"
    openai_file.write_text(
        "".join(json.dumps(_openai_line(i, 1000 * i, 100)) + "\n" for i in (1, 2))
    )
    anthropic_file = tmp_path / "anthropic-results.jsonl"
    anthropic_file.write_text(json.dumps(_anthropic_line(1)) + "\n")
    wd = tmp_path / "wd"
    args = ["import-batch", str(openai_file), str(anthropic_file), "--workdir", str(wd)]
    assert main([*args, "--at", "2026-01-05T00:00:00Z"]) == 0
    assert "read 3 = landed 3 + duplicates 0 + dead-lettered 0" in capsys.readouterr().out

    rows = _facts(wd, capsys)
    assert [(r["provider"], r["request_id"], r["batch"]) for r in rows] == [
        ("anthropic", "request-1", True),
        ("openai", "request-1", True),
        ("openai", "request-2", True),
    ]
    claude = rows[0]
    assert (claude["input_tokens"], claude["cache_write_1h_tokens"]) == (1100, 1000)
    assert claude["ts"].startswith("2026-01-05")  # --at: Anthropic results carry no time
    assert rows[1]["ts"].startswith("2026-01-05 12:00:01") or rows[1]["ts"].startswith(
        "2026-01-05T12:00:01"
    )
    pricer = Pricer.from_config()
    for r in rows:
        event = UsageEvent.model_validate(
            {
                k: r[k]
                for k in (
                    "event_id",
                    "provider",
                    "model",
                    "batch",
                    "input_tokens",
                    "output_tokens",
                    "cache_write_tokens",
                    "cache_write_1h_tokens",
                )
            }
            | {"ts": datetime.fromisoformat(r["ts"]).replace(tzinfo=UTC)}
        )
        cost = pricer.price(event)
        assert cost is not None
        assert Decimal(str(r["cost_usd"])) == cost.cost_usd
        assert "+batch" in r["price_source"]

    assert main([*args, "--at", "2026-01-05T00:00:00Z"]) == 0  # the same import again
    assert "read 3 = landed 0 + duplicates 3 + dead-lettered 0" in capsys.readouterr().out
    # Without --at the ids are still the lines' (nothing lands twice), but the Anthropic line
    # now carries another ts (the file's time): other content under a landed id is reported
    # as a conflicting duplicate, not silently dropped.
    assert main(args) == 0
    assert "read 3 = landed 0 + duplicates 2 + dead-lettered 1" in capsys.readouterr().out
    assert main(["sql", "--workdir", str(wd), "SELECT error FROM dead_letters"]) == 0
    assert "conflicting_duplicate: event_id" in capsys.readouterr().out


def _imported(
    results: Path, wd: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[str, list[dict[str, Any]]]:
    """``import-batch`` of ``results``: its summary, and its dead letters by source."""
    assert main(["import-batch", str(results), "--workdir", str(wd)]) == 0
    out = capsys.readouterr().out
    sql = "SELECT source, error FROM dead_letters ORDER BY source"
    assert main(["sql", "--workdir", str(wd), "--format", "json", sql]) == 0
    return out, json.loads(capsys.readouterr().out)


def test_failed_and_broken_lines_are_dead_letters_with_their_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "results.jsonl"
    failed = {"custom_id": "r-9", "result": {"type": "expired"}}
    results.write_text(
        json.dumps(_anthropic_line(1)) + "\n" + json.dumps(failed) + "\n" + "{not json\n"
    )
    os.utime(results, (1767614400, 1767614400))  # the default event time: the file's mtime
    wd = tmp_path / "wd"
    out, letters = _imported(results, wd, capsys)
    assert "read 3 = landed 1 + duplicates 0 + dead-lettered 2" in out
    assert [row["source"] for row in letters] == [f"{results}:2", f"{results}:3"]
    assert "r-9" in letters[0]["error"] and "expired" in letters[0]["error"]
    assert "not a JSON batch result line" in letters[1]["error"]
    rows = _facts(wd, capsys)
    assert rows[0]["ts"].startswith("2026-01-05")


def test_a_usage_event_file_given_to_import_batch_says_to_ingest_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The summary said only "not a batch result line: no custom_id with response.body or
    # result" (as --format otlp on such a file says to ingest it without).
    event = {"event_id": "c-1", "ts": "2026-01-05T12:00:00Z", "provider": "openai",
             "model": "gpt-5-mini", "input_tokens": 1200, "output_tokens": 300}  # fmt: skip
    calls = tmp_path / "calls.jsonl"
    calls.write_text(json.dumps(event) + "\n")
    assert main(["import-batch", str(calls), "--workdir", str(tmp_path / "wd")]) == 0
    out = capsys.readouterr().out
    assert "read 1 = landed 0 + duplicates 0 + dead-lettered 1" in out
    assert "1 x not a batch result line: a usage event (ingest it with spendstream ingest)" in out


def test_a_line_created_past_what_a_time_holds_is_a_dead_letter_not_a_stop(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # It stopped the import with OverflowError (and NaN, which JSON readers take, with
    # ValueError); the lines after it never landed.
    far = _openai_line(1, 10, 5)
    far["response"]["body"]["created"] = 1e20
    results = tmp_path / "results.jsonl"
    results.write_text(json.dumps(far) + "\n" + json.dumps(_openai_line(2, 10, 5)) + "\n")
    wd = tmp_path / "wd"
    assert main(["import-batch", str(results), "--workdir", str(wd)]) == 0
    assert "read 2 = landed 1 + duplicates 0 + dead-lettered 1" in capsys.readouterr().out
    sql = "SELECT source, error FROM dead_letters"
    assert main(["sql", "--workdir", str(wd), "--format", "json", sql]) == 0
    [letter] = json.loads(capsys.readouterr().out)
    assert letter["source"] == f"{results}:1"
    assert "response.body.created 1e+20 is not a time" in letter["error"]


def test_lines_of_unexpected_shapes_are_dead_letters_or_land_and_the_file_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Each stopped the import with a traceback (RecursionError, AttributeError,
    # TypeError), the lines after it never read and nothing of the batch landed.
    output_int = _openai_line(1, 10, 5)
    output_int["response"]["body"]["output"] = 5
    response_str = {**_anthropic_line(2), "response": "x"}  # Anthropic's usage is in result
    result_str = {**_openai_line(3, 10, 5), "result": "x"}
    del result_str["id"]
    lines = ["[" * 100_000, *map(json.dumps, (output_int, response_str, result_str))]
    lines.append(json.dumps(_openai_line(4, 10, 5)))
    results = tmp_path / "results.jsonl"
    results.write_text("\n".join(lines) + "\n")
    out, letters = _imported(results, tmp_path / "wd", capsys)
    assert "read 5 = landed 3 + duplicates 0 + dead-lettered 2" in out
    assert [row["source"] for row in letters] == [f"{results}:1", f"{results}:2"]
    assert letters[0]["error"] == "not a JSON batch result line: JSON nested too deeply to read"
    assert letters[1]["error"].startswith("not a batch result line this reader understands: ")


def test_a_failed_line_s_dead_letter_carries_the_provider_s_error_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server_error = {
        "id": "batch_req_8",
        "custom_id": "r-8",
        "response": {
            "status_code": 500,
            "request_id": "req_8",
            "body": {
                "error": {
                    "message": "The server had an error while processing your request.",
                    "type": "server_error",
                    "param": None,
                    "code": None,
                }
            },
        },
        "error": None,
    }
    # A request that got no HTTP response: OpenAI sets the line's own error instead.
    no_response = {
        "id": "batch_req_9",
        "custom_id": "r-9",
        "response": None,
        "error": {"code": "batch_expired", "message": "This request could not be executed."},
    }
    errored = MessageBatchIndividualResponse.model_validate(
        {
            "custom_id": "r-10",
            "result": {
                "type": "errored",
                "error": {
                    "type": "error",
                    "error": {"type": "invalid_request_error", "message": "max_tokens: too big"},
                },
            },
        }
    ).model_dump(mode="json")
    results = tmp_path / "results.jsonl"
    results.write_text("".join(json.dumps(x) + "\n" for x in (server_error, no_response, errored)))
    wd = tmp_path / "wd"
    assert main(["import-batch", str(results), "--workdir", str(wd)]) == 0
    assert "read 3 = landed 0 + duplicates 0 + dead-lettered 3" in capsys.readouterr().out
    sql = "SELECT error FROM dead_letters ORDER BY source"
    assert main(["sql", "--workdir", str(wd), "--format", "json", sql]) == 0
    assert [row["error"] for row in json.loads(capsys.readouterr().out)] == [
        "batch line 'r-8' has no usage: status 500, error: The server had an error while "
        "processing your request. (server_error)",
        "batch line 'r-9' has no usage: error: This request could not be executed. (batch_expired)",
        "batch line 'r-10' has no usage: result type 'errored', error: max_tokens: too big "
        "(invalid_request_error)",
    ]


def test_an_unreadable_file_is_a_usage_error_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.jsonl"
    assert main(["import-batch", str(missing), "--workdir", str(tmp_path)]) == 2
    assert f"cannot read batch results file {missing}" in capsys.readouterr().err


def test_the_importer_attributes_the_batch_to_a_team_feature_and_tags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A result line names the request, never who made it: without these flags a nightly
    # batch's spend landed unattributed, outside every team's cost and budget.
    results = tmp_path / "results.jsonl"
    results.write_text("".join(json.dumps(_openai_line(i, 1000, 100)) + "\n" for i in (1, 2)))
    wd = tmp_path / "wd"
    argv = ["import-batch", str(results), "--workdir", str(wd), "--team", "search",
            "--feature", "nightly-summaries", "--project", "p1", "--environment", "prod",
            "--cost-center", "cc-7", "--user", "svc-batch", "--tag", "job=n1",
            "--tag", "owner=ana=b"]  # fmt: skip
    assert main(argv) == 0
    assert "read 2 = landed 2 + duplicates 0 + dead-lettered 0" in capsys.readouterr().out
    sql = (
        "SELECT request_id, team, feature, project, environment, cost_center, user_id, "
        "tags FROM usage_facts ORDER BY request_id"
    )
    assert main(["sql", "--workdir", str(wd), "--format", "json", sql]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [
        (r["request_id"], r["team"], r["feature"], r["project"], r["environment"],
         r["cost_center"], r["user_id"], json.loads(r["tags"]) if isinstance(r["tags"], str)
         else r["tags"])
        for r in rows
    ] == [
        (f"request-{i}", "search", "nightly-summaries", "p1", "prod", "cc-7", "svc-batch",
         {"job": "n1", "owner": "ana=b"})
        for i in (1, 2)
    ]  # fmt: skip
    assert main(["query", "cost_by_team", "--workdir", str(wd), "--format", "json"]) == 0
    assert [r["team"] for r in json.loads(capsys.readouterr().out)] == ["search"]
    # Imported again for another team: the lines' ids are landed; nothing moves silently.
    assert main(["import-batch", str(results), "--workdir", str(wd), "--team", "ads"]) == 0
    assert "read 2 = landed 0 + duplicates 0 + dead-lettered 2" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--team", "x" * 300], "--team"),
        (["--tag", "no-value"], "--tag 'no-value': write it KEY=VALUE"),
        (["--tag", "=v"], "--tag '=v': write it KEY=VALUE"),
    ],
)
def test_a_bad_attribution_flag_is_one_usage_error_not_a_dead_letter_per_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], said: str
) -> None:
    results = tmp_path / "results.jsonl"
    results.write_text(json.dumps(_openai_line(1, 1000, 100)) + "\n")
    wd = tmp_path / "wd"
    assert main(["import-batch", str(results), "--workdir", str(wd), *flags]) == 2
    assert said in capsys.readouterr().err
    assert not wd.exists()  # refused before anything landed
