"""``spendstream ingest --format otlp``: OTLP/JSON trace files through the embedded pipeline."""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path
from typing import Any

import duckdb
import pytest

from spendstream.cli import main
from tests.producers.otel_spans import SpanMaker, json_export

CHAT = {
    "gen_ai.provider.name": "openai",
    "gen_ai.operation.name": "chat",
    "gen_ai.request.model": "gpt-4o-mini",
    "gen_ai.usage.input_tokens": 1_000_000,
    "gen_ai.usage.output_tokens": 100_000,
}
CLAUDE = {
    "gen_ai.provider.name": "anthropic",
    "gen_ai.request.model": "claude-sonnet-4-5",
    "gen_ai.usage.input_tokens": 20,
    "gen_ai.usage.output_tokens": 5,
    "gen_ai.usage.cache_read.input_tokens": 1000,
}


def _export(*spans: dict[str, Any], service: str = "checkout") -> dict[str, Any]:
    maker = SpanMaker({"service.name": service, "service.namespace": "payments"})
    for attrs in spans:
        maker.add("span", attrs)
    return json_export(maker.finished())


def _rows(workdir: Path, sql: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(workdir / "warehouse" / "spendstream.duckdb"), read_only=True)
    try:
        return [tuple(r) for r in con.execute(sql).fetchall()]
    finally:
        con.close()


def _ingest(files: list[Path], workdir: Path, *extra: str) -> int:
    return main(["ingest", "--format", "otlp", *map(str, files), "--workdir", str(workdir), *extra])


def test_collector_file_export_lands_priced_facts_and_a_rerun_adds_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The Collector's file exporter: one ExportTraceServiceRequest per line.
    lines = [_export(CHAT, {"http.request.method": "GET"}), _export(CHAT, CHAT)]
    path = tmp_path / "traces.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    wd = tmp_path / "wd"
    assert _ingest([path], wd) == 0
    out = capsys.readouterr().out
    assert "read 3 = landed 3 + duplicates 0 + dead-lettered 0" in out
    assert "spans: 4 read, 1 ignored" in out
    rows = _rows(
        wd,
        "SELECT provider, model, priced, cost_usd, team, feature FROM usage_facts ORDER BY event_id",
    )
    assert len(rows) == 3
    for provider, model, priced, cost, team, feature in rows:
        assert (provider, model, priced, team, feature) == (
            "openai",
            "gpt-4o-mini",
            True,
            "payments",
            "checkout",
        )
        assert cost > 0
    assert _ingest([path], wd) == 0
    assert "read 3 = landed 0 + duplicates 3 + dead-lettered 0" in capsys.readouterr().out


def test_one_pretty_printed_document_and_gzip_files_are_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pretty = tmp_path / "one.json"
    pretty.write_text("\n\n" + json.dumps(_export(CHAT), indent=2))
    packed = tmp_path / "more.jsonl.gz"
    packed.write_bytes(gzip.compress((json.dumps(_export(CHAT, CHAT)) + "\n").encode()))
    assert _ingest([pretty, packed], tmp_path / "wd") == 0
    assert "read 3 = landed 3 + duplicates 0 + dead-lettered 0" in capsys.readouterr().out


def test_stdin_takes_a_pretty_printed_document_as_a_file_does(tmp_path: Path) -> None:
    # `cat export.json | spendstream ingest --format otlp -` made a dead letter of each line.
    import subprocess
    import sys

    pretty = json.dumps(_export(CHAT, CHAT), indent=2)
    lines = "".join(json.dumps(_export(CHAT)) + "\n" for _ in range(2))
    for body, landed in ((pretty, 2), (lines, 2)):
        done = subprocess.run(
            [sys.executable, "-m", "spendstream", "ingest", "--format", "otlp", "-",
             "--workdir", str(tmp_path / f"wd{landed}{len(body)}")],
            input=body.encode(), capture_output=True, timeout=300, check=False,
        )  # fmt: skip
        out = done.stdout.decode()
        assert done.returncode == 0, done.stderr.decode()
        assert f"read {landed} = landed {landed} + duplicates 0 + dead-lettered 0" in out, out


def test_bad_lines_and_rejected_spans_are_dead_letters_naming_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "traces.jsonl"
    path.write_text(
        json.dumps(_export(CHAT))
        + "\n{broken\n"
        + json.dumps([1])
        + "\n\n"
        + json.dumps(_export(CHAT, CLAUDE))
        + "\n"
    )
    wd = tmp_path / "wd"
    assert _ingest([path], wd) == 0
    assert "read 5 = landed 2 + duplicates 0 + dead-lettered 3" in capsys.readouterr().out
    dead = _rows(wd, "SELECT source, error FROM dead_letters ORDER BY source")
    assert [s for s, _ in dead] == [f"{path}:2", f"{path}:3", f"{path}:5"]
    assert "line is not JSON" in dead[0][1]
    assert "resourceSpans" in dead[1][1]
    assert "input_excludes_cache" in dead[2][1] and dead[2][1].startswith("span 'span' (")


def test_input_excludes_cache_from_the_config_file_reaches_ingest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "traces.jsonl"
    path.write_text(json.dumps(_export(CLAUDE)) + "\n")
    cfg = tmp_path / "c.toml"
    cfg.write_text('[otel]\ninput_excludes_cache = ["anthropic"]\n')
    wd = tmp_path / "wd"
    assert _ingest([path], wd, "--config", str(cfg)) == 0
    assert "landed 1" in capsys.readouterr().out
    rows = _rows(wd, "SELECT input_tokens, cache_read_tokens, priced FROM usage_facts")
    assert rows == [(1020, 1000, True)]


def test_a_file_that_is_no_json_at_all_is_one_dead_letter(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "junk.txt"
    path.write_text("hello\nworld\n")
    after_blanks = tmp_path / "junk2.txt"  # named by its first line, as a document is
    after_blanks.write_text("\n\nhello\nworld\n")
    wd = tmp_path / "wd"
    assert _ingest([path, after_blanks], wd) == 0
    assert "read 2 = landed 0 + duplicates 0 + dead-lettered 2" in capsys.readouterr().out
    rows = _rows(wd, "SELECT source, error FROM dead_letters ORDER BY source")
    assert [r[0] for r in rows] == [f"{path}:1", f"{after_blanks}:3"]
    assert all("not OTLP/JSON" in r[1] for r in rows)


def test_usage_events_given_as_otlp_are_dead_letters_that_say_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A JSON Lines file of usage events ingested with --format otlp: every line ends
    # somewhere (none vanishes as an empty export), and the error says what to do instead.
    event = {"event_id": "e1", "ts": "2026-11-01T00:00:00Z", "provider": "openai"}
    event |= {"model": "gpt-5-mini", "input_tokens": 1, "output_tokens": 1}
    path = tmp_path / "calls.jsonl"
    snake = {"resource_spans": _export(CHAT)["resourceSpans"]}  # proto field names: an export
    lines = [event, {**event, "event_id": "e2"}, {"other": 1}, {}, _export(CHAT), snake]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    wd = tmp_path / "wd"
    assert _ingest([path], wd) == 0
    # {} is an empty export (it holds nothing, so it is no record); both exports land.
    assert "read 5 = landed 2 + duplicates 0 + dead-lettered 3" in capsys.readouterr().out
    dead = _rows(wd, "SELECT source, error FROM dead_letters ORDER BY source")
    assert dead == [
        (
            f"{path}:1",
            "not an OTLP/JSON traces export: a usage event (ingest it without --format otlp)",
        ),
        (
            f"{path}:2",
            "not an OTLP/JSON traces export: a usage event (ingest it without --format otlp)",
        ),
        (f"{path}:3", "not an OTLP/JSON traces export: no resourceSpans"),
    ]


def test_a_byte_order_mark_starting_an_export_file_is_not_part_of_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # One export per line, and one pretty-printed document: either saved with a BOM.
    lines = tmp_path / "lines.jsonl"
    lines.write_bytes(b"\xef\xbb\xbf" + json.dumps(_export(CHAT)).encode() + b"\n")
    pretty = tmp_path / "pretty.json"
    pretty.write_bytes(b"\xef\xbb\xbf" + json.dumps(_export(CHAT), indent=2).encode())
    assert _ingest([lines, pretty], tmp_path / "wd") == 0
    assert "read 2 = landed 2 + duplicates 0 + dead-lettered 0" in capsys.readouterr().out


def test_dead_letters_name_the_line_an_export_starts_on_after_blank_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = tmp_path / "lines.jsonl"
    lines.write_text("\n\n" + json.dumps(_export(CLAUDE)) + "\n")
    pretty = tmp_path / "pretty.json"
    pretty.write_text("\n\n\n" + json.dumps(_export(CLAUDE), indent=2))
    wd = tmp_path / "wd"
    assert _ingest([lines, pretty], wd) == 0
    assert "read 2 = landed 0 + duplicates 0 + dead-lettered 2" in capsys.readouterr().out
    dead = _rows(wd, "SELECT source FROM dead_letters ORDER BY source")
    assert dead == [(f"{lines}:3",), (f"{pretty}:4",)]


def test_hostile_exports_are_dead_letters_and_the_rest_lands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each of these stopped the run with a traceback (deep nesting: RecursionError; a
    400-digit double: OverflowError), or metered nothing without a word (a container
    of the wrong shape was skipped: no span, no dead letter)."""
    good = _export(CHAT)
    spans = good["resourceSpans"][0]["scopeSpans"][0]["spans"]
    huge = {"key": "team", "value": {"doubleValue": int("9" * 400)}}
    with_huge = _export(CHAT)  # spans of their own
    with_huge["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"].append(huge)
    shapes = [
        {"resourceSpans": good["resourceSpans"][0]},
        {"resourceSpans": [{"scopeSpans": {"spans": spans}}]},
        {"resourceSpans": [{"scopeSpans": [{"spans": spans[0]}]}]},
        {"resourceSpans": [{"scopeSpans": [{"spans": ["x"]}]}]},
    ]
    lines = [json.dumps(good), "[" * 100_000, *map(json.dumps, shapes), json.dumps(with_huge)]
    path = tmp_path / "traces.jsonl"
    path.write_text("\n".join(lines) + "\n")
    wd = tmp_path / "wd"
    assert _ingest([path], wd) == 0
    assert "read 7 = landed 2 + duplicates 0 + dead-lettered 5" in capsys.readouterr().out
    dead = dict(_rows(wd, "SELECT source, error FROM dead_letters"))
    assert dead[f"{path}:2"] == "line is not JSON: JSON nested too deeply to read"
    assert dead[f"{path}:3"] == "resourceSpans is an object, not a list"
    assert dead[f"{path}:4"] == "resourceSpans[0].scopeSpans is an object, not a list"
    assert dead[f"{path}:5"] == "resourceSpans[0].scopeSpans[0].spans is an object, not a list"
    assert dead[f"{path}:6"] == "resourceSpans[0].scopeSpans[0].spans[0] is a string, not an object"
    # A whole document nested too deeply is one dead letter too.
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    assert _ingest([deep], tmp_path / "wd-deep") == 0
    assert "dead-lettered 1" in capsys.readouterr().out


def test_a_truncated_gzip_file_lands_what_it_holds_before_the_cut(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A file still being written (or damaged): EOFError stopped the run, and nothing landed.
    whole = gzip.compress("".join(json.dumps(_export(CHAT)) + "\n" for _ in range(50)).encode())
    cut = tmp_path / "traces.jsonl.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    # The whole lines in what is left: those are what must land.
    held = zlib.decompressobj(32 + zlib.MAX_WBITS).decompress(whole[: len(whole) // 2])
    lines = held.count(b"\n")
    assert 0 < lines < 50
    wd = tmp_path / "wd"
    assert _ingest([cut], wd) == 0
    out = capsys.readouterr().out
    assert f"read {lines + 1} = landed {lines} + duplicates 0 + dead-lettered 1" in out, out
    ((source, error),) = _rows(wd, "SELECT source, error FROM dead_letters")
    assert source == str(cut)
    assert error.startswith("the gzip file is truncated or damaged (")
