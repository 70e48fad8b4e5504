"""How ``spendstream sql`` writes values a person reads whole: the last column of a table
uncut, and bytes (``event_digest``) as hex in every format."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pyarrow as pa
import pytest

from spendstream.cli import main
from spendstream.warehouse import Warehouse
from spendstream.warehouse.output import render_chunks
from tests.warehouse.factories import T0, fact


def _table(columns: list[str], rows: list[tuple[object, ...]]) -> list[str]:
    out = io.StringIO()
    render_chunks(columns, [rows], "table", out)
    return out.getvalue().splitlines()


def test_the_last_column_of_a_table_is_shown_whole() -> None:
    # A dead letter's reason, last as the ingest summary's query puts it: its end (", did
    # you mean ...?") is what says what to fix, and it was cut at 100 characters.
    error = "x: unknown field (not in schema version 1); " * 4 + "did you mean user_id?"
    lines = _table(["source", "error"], [("events.jsonl:3", error)])
    assert lines[2] == f"events.jsonl:3  {error}"
    assert lines[-1] == "(1 row)"  # nothing was cut, so no note says so
    # Its rule stops at 100 characters: one long value draws no rule over several lines.
    assert lines[1] == "-" * len("events.jsonl:3") + "  " + "-" * 100


def test_columns_before_the_last_are_still_cut_and_stay_aligned() -> None:
    lines = _table(["raw", "n"], [("y" * 101, 1), ("short", 22)])
    assert lines[2] == "y" * 99 + "…" + "   1"
    assert lines[3] == "short" + " " * 95 + "  22"
    assert lines[-1] == (
        "(values longer than 100 characters end in … except in the last column: "
        "--format csv|json writes them whole)"
    )


def test_bytes_are_hex_in_table_csv_and_json() -> None:
    rows = [("a1", b"x\xab\x00\xff")]
    for fmt in ("csv", "json"):
        out = io.StringIO()
        render_chunks(["event_id", "event_digest"], [rows], fmt, out)
        if fmt == "csv":
            assert list(csv.reader(io.StringIO(out.getvalue()))) == [
                ["event_id", "event_digest"],
                ["a1", "78ab00ff"],  # was b'x\xab\x00\xff'
            ]
        else:  # json.dumps refused bytes: the command failed with a traceback
            assert json.loads(out.getvalue()) == [{"event_id": "a1", "event_digest": "78ab00ff"}]
    assert _table(["event_id", "event_digest"], rows)[2] == "a1        78ab00ff"


def test_select_star_of_facts_writes_the_digest_as_hex(
    wh: Warehouse, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wh.commit(facts=[fact(T0, "1.5", team="search")], digests=pa.array([b"x\xab" * 8]))
    stmt = "SELECT *, hex(event_digest) AS upper_hex FROM usage_facts"
    assert main(["sql", "--workdir", str(workdir), "--format", "json", stmt]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["event_digest"] == "78ab" * 8 == row["upper_hex"].lower()
    assert main(["sql", "--workdir", str(workdir), "--format", "csv", stmt]) == 0
    (csv_row,) = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert csv_row["event_digest"] == row["event_digest"]


def test_json_writes_other_duckdb_values_as_the_table_does() -> None:
    # TIME, INTERVAL and UUID come back as types json.dumps refuses: the command failed.
    import datetime as dt
    import uuid

    u = uuid.UUID(int=1)
    out = io.StringIO()
    render_chunks(["t", "d", "u"], [[(dt.time(10, 30), dt.timedelta(seconds=90), u)]], "json", out)
    assert json.loads(out.getvalue()) == [{"t": "10:30:00", "d": "0:01:30", "u": str(u)}]
