"""The sql, query and warehouse commands: tables for people, CSV/JSON for programs, exit codes."""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal
from pathlib import Path

import pytest

from spendstream.cli import main
from spendstream.warehouse import Warehouse
from spendstream.warehouse.output import TABLE_ROWS, render_chunks
from spendstream.warehouse.queries import QUERIES
from tests.warehouse.factories import T0, days, fact


@pytest.fixture
def filled(wh: Warehouse, workdir: Path) -> Path:
    wh.commit(
        facts=[
            fact(T0, "1.5", team="search"),
            fact(T0, "0.000000000000000001", team="search"),
            fact(T0 + days(1), "2", team="support"),
        ]
    )
    return workdir


def test_sql_prints_an_aligned_table(filled: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(
        [
            "sql",
            "--workdir",
            str(filled),
            "SELECT team, sum(cost_usd) AS usd FROM usage_facts GROUP BY ALL ORDER BY team",
        ]
    )
    out = capsys.readouterr().out.splitlines()
    assert rc == 0
    assert out[0].split() == ["team", "usd"]
    assert out[2].split() == ["search", "1.500000000000000001"]
    assert out[3].split() == ["support", "2"]
    assert out[-1] == "(2 rows)"


def test_sql_csv_and_json_keep_money_exact(
    filled: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stmt = "SELECT team, sum(cost_usd) AS usd FROM usage_facts WHERE team = ? GROUP BY ALL"
    assert main(["sql", "--workdir", str(filled), "--format", "csv", "-p", "search", stmt]) == 0
    assert list(csv.reader(io.StringIO(capsys.readouterr().out))) == [
        ["team", "usd"],
        ["search", "1.500000000000000001"],
    ]
    assert main(["sql", "--workdir", str(filled), "--format", "json", "-p", "search", stmt]) == 0
    assert json.loads(capsys.readouterr().out) == [
        {"team": "search", "usd": "1.500000000000000001"}
    ]
    # Zero and one attodollar at DECIMAL(38, 18): fixed point, never "0E-18" or "1E-18".
    tiny = "SELECT min(cost_usd) AS least, min(cost_usd) - min(cost_usd) AS zero FROM usage_facts"
    assert main(["sql", "--workdir", str(filled), "--format", "json", tiny]) == 0
    assert json.loads(capsys.readouterr().out) == [
        {"least": "0.000000000000000001", "zero": "0.000000000000000000"}
    ]


@pytest.mark.parametrize("n", [0, 1, 25_001])
def test_sql_streams_every_row_in_chunks_as_one_document(
    filled: Path, n: int, capsys: pytest.CaptureFixture[str]
) -> None:
    # `SELECT * FROM usage_facts --format csv > all.csv` (what the read-only refusal suggests)
    # held every row as Python objects first: 100M rows ran out of memory and printed nothing.
    # Rows now come 10,000 at a time; the documents are the ones a single write made.
    stmt = (
        "SELECT range AS i, 'line ' || range || chr(10) || 'é' AS text, "
        "{'k': [range, 2]} AS nested, CAST(range AS DECIMAL(38, 18)) AS usd "
        f"FROM range({n}) ORDER BY i"
    )
    expected = [
        {"i": i, "text": f"line {i}\né", "nested": {"k": [i, 2]}, "usd": f"{Decimal(i):.18f}"}
        for i in range(n)
    ]
    assert main(["sql", "--workdir", str(filled), "--format", "json", stmt]) == 0
    out = capsys.readouterr().out
    assert out == json.dumps(expected, indent=2, ensure_ascii=False) + "\n"
    assert main(["sql", "--workdir", str(filled), "--format", "csv", stmt]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0] == ["i", "text", "nested", "usd"]
    # CSV writes money without its trailing zeros (as a table does): 10, not 10.000...
    assert [(int(r[0]), r[1], json.loads(r[2]), r[3]) for r in rows[1:]] == [
        (e["i"], e["text"], e["nested"], str(e["i"])) for e in expected
    ]


def test_a_table_shows_its_first_10000_rows_and_says_more_follow(
    filled: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Aligning columns holds every row: a table is for a person; csv/json write them all.
    for n, last in (
        (10_000, "(10000 rows)"),
        (10_001, "(the first 10,000 rows; more follow: add a LIMIT, or --format csv|json "
                 "writes every row)"),
        (20_000, "(the first 10,000 rows; more follow: add a LIMIT, or --format csv|json "
                 "writes every row)"),
    ):  # fmt: skip
        assert main(["sql", "--workdir", str(filled), f"SELECT range FROM range({n})"]) == 0
        out = capsys.readouterr().out.splitlines()
        assert out[-1] == last
        assert out[-2].strip() == "9999" and len(out) == 10_003


def test_sql_is_read_only_and_errors_exit_1(
    filled: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sql", "--workdir", str(filled), "DROP VIEW usage_facts"]) == 1
    assert "read-only" in capsys.readouterr().err.lower()
    assert main(["sql", "--workdir", str(filled), "SELECT nope FROM usage_facts"]) == 1
    assert "nope" in capsys.readouterr().err
    # An error DuckDB raises only as it makes a later chunk's rows (the first were written).
    stmt = "SELECT CASE WHEN range = 25000 THEN error('boom') END AS x FROM range(30000)"
    assert main(["sql", "--workdir", str(filled), "--format", "csv", stmt]) == 1
    assert "boom" in capsys.readouterr().err


def test_sql_without_a_warehouse_exits_2_naming_the_workdir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sql", "--workdir", str(tmp_path / "none"), "SELECT 1"]) == 2
    assert "--workdir" in capsys.readouterr().err


def test_query_list_describes_every_named_query(
    filled: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["query", "--list", "--format", "json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed == [{"name": q.name, "description": q.description} for q in QUERIES]


def test_query_binds_its_filters(filled: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["query", "cost_by_team", "--workdir", str(filled), "--format", "json"]
    assert main([*args, "--since", "2026-03-03"]) == 0
    assert [r["team"] for r in json.loads(capsys.readouterr().out)] == ["support"]
    assert main([*args, "--team", "search' OR 'x'='x"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_a_filter_value_no_fact_has_is_named_with_values_that_occur(
    filled: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `query --team serch` answered nothing and said nothing (report already said why).
    args = ["query", "cost_by_team", "--workdir", str(filled), "--format", "json"]
    assert main([*args, "--team", "serch"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == []
    assert err == (
        "spendstream query: no facts have team = serch: the answer is empty "
        "(team values seen: search, support)\n"
    )
    assert main([*args, "--user", "nobody"]) == 0  # --user is the user_id field
    assert "no facts have user_id = nobody: the answer is empty" in capsys.readouterr().err
    # A value that occurs, outside the period: empty, and nothing to say of the value.
    assert main([*args, "--team", "search", "--since", "2030-01-01"]) == 0
    assert capsys.readouterr().err == ""
    # One fact has it (support's), before the period's end: a bound is no field to check.
    assert main([*args, "--team", "support", "--until", "2000-01-01"]) == 0
    assert capsys.readouterr() == ("[]\n", "")


def test_query_limit_past_what_sql_holds_is_refused_naming_the_flag(
    filled: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # It reached DuckDB: "Conversion Error: Type INT128 with value ... can't be cast".
    args = ["query", "cost_by_team", "--workdir", str(filled), "--limit"]
    assert main([*args, str(2**63)]) == 2
    assert "--limit must be >= 0 and at most 9,223,372,036,854,775,807" in capsys.readouterr().err
    assert main([*args, str(2**63 - 1), "--format", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) >= 1


def test_unknown_query_exits_2_listing_the_names(
    filled: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["query", "cost_by_planet", "--workdir", str(filled)]) == 2
    err = capsys.readouterr().err
    assert "cost_by_planet" in err and "cost_by_team" in err


def test_warehouse_compact_and_load_revenue(
    filled: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Warehouse(filled).close()
    assert main(["warehouse", "compact", "--workdir", str(filled), "--orphan-grace-s", "0"]) == 0
    assert "compacted" in capsys.readouterr().out
    rev = tmp_path / "rev.csv"
    rev.write_text("month,revenue_usd\n2026-03,35\n")
    assert main(["warehouse", "load-revenue", str(rev), "--workdir", str(filled)]) == 0
    capsys.readouterr()
    assert main(["query", "unit_economics", "--workdir", str(filled), "--format", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["revenue_usd"], row["ai_cost_usd"], row["band"]) == (
        "35.000000000000000000",
        "3.500000000000000001",
        "good",
    )
    bad = tmp_path / "bad.csv"
    bad.write_text("month\n2026-03\n")
    assert main(["warehouse", "load-revenue", str(bad), "--workdir", str(filled)]) == 2
    assert "revenue_usd" in capsys.readouterr().err


def test_warehouse_writers_lists_each_writers_commits_and_positions(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Warehouse(workdir, writer="usage/0") as w0:
        w0.commit(facts=[fact(T0)], positions={"spendstream.usage/0": 41})
        w0.commit(facts=[fact(T0)], positions={"spendstream.usage/0": 99})
    with Warehouse(workdir, writer="scopes/1") as w1:
        w1.commit(positions={"spendstream.partials/1": 7}, state=b"{}")
    assert main(["warehouse", "writers", "--workdir", str(workdir), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["writer"], r["commits"], r["source"], r["position"]) for r in rows] == [
        ("scopes/1", 1, "spendstream.partials/1", 7),
        ("usage/0", 2, "spendstream.usage/0", 99),
    ]


def test_warehouse_check_passes_clean_data_and_reports_quarantined_batches(
    wh: Warehouse, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wh.commit(facts=[fact(T0, "1")])
    # Releases before per-record judgement quarantined whole batches: the check still lists
    # what they set aside (a report.json under <location>/quarantine/<batch>/).
    batch = workdir / "warehouse" / "tables" / "quarantine" / "20260301T000000-abcd1234"
    batch.mkdir(parents=True)
    report = {"batch_id": batch.name, "writer": "embedded", "failing": 1, "problems": ["x"]}
    (batch / "report.json").write_text(json.dumps(report))
    assert main(["warehouse", "check", "--workdir", str(workdir), "--format", "json"]) == 0
    captured = capsys.readouterr()
    results = json.loads(captured.out)
    assert results and all(r["passed"] for r in results)
    assert f"quarantined batch: {batch.name} from writer embedded (1 failing" in captured.err
    assert "report.json" in captured.err


def test_a_table_of_chunks_that_straddle_its_cap_shows_exactly_the_cap() -> None:
    # Chunks need not align with TABLE_ROWS (render_chunks takes any iterable of chunks):
    # the chunk that crosses the cap adds only what room is left.
    out = io.StringIO()
    half = TABLE_ROWS * 3 // 5
    chunks = [[(i,) for i in range(k * half, (k + 1) * half)] for k in range(2)]
    render_chunks(["n"], chunks, "table", out)
    lines = out.getvalue().splitlines()
    assert lines[-2].strip() == str(TABLE_ROWS - 1)
    assert lines[-1].startswith(f"(the first {TABLE_ROWS:,} rows; more follow")
    assert len(lines) == TABLE_ROWS + 3
    # Exactly the cap, then only empty chunks: nothing more follows.
    out = io.StringIO()
    render_chunks(["n"], [[(i,) for i in range(TABLE_ROWS)], [], []], "table", out)
    assert out.getvalue().splitlines()[-1] == f"({TABLE_ROWS} rows)"


def test_a_filter_value_on_an_empty_warehouse_is_named_with_no_values_seen(
    wh: Warehouse, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["query", "cost_by_team", "--workdir", str(workdir), "--format", "json"]
    assert main([*args, "--team", "search"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == []
    assert err == "spendstream query: no facts have team = search: the answer is empty\n"


def test_a_table_says_where_long_values_are_cut_and_how_to_read_them_whole() -> None:
    # A column before the last is cut past 100 characters (the last is shown whole:
    # tests/warehouse/test_output.py).
    out = io.StringIO()
    render_chunks(["raw", "n"], [[("x" * 100, 1), ("y" * 101, 2)]], "table", out)
    lines = out.getvalue().splitlines()
    assert lines[2] == "x" * 100 + "  1"  # exactly the width: whole
    assert lines[3] == "y" * 99 + "…  2"
    assert lines[-1] == (
        "(values longer than 100 characters end in … except in the last column: "
        "--format csv|json writes them whole)"
    )
    out = io.StringIO()
    render_chunks(["raw", "n"], [[("x" * 100, 1)]], "table", out)
    assert "end in …" not in out.getvalue()
