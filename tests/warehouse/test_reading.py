"""``spendstream sql`` reads the warehouse and nothing else: a sandboxed, query-only session."""

from __future__ import annotations

from pathlib import Path

import pytest

from spendstream.cli import main
from spendstream.warehouse import Warehouse
from spendstream.warehouse.reading import QueryError, run_sql
from tests.warehouse.factories import T0, fact


@pytest.fixture
def landed(workdir: Path) -> Path:
    with Warehouse(workdir) as wh:
        wh.commit(facts=[fact(T0, "1.25", team="search"), fact(T0, "2.00", team="ads")])
        wh.ensure_views()
    return workdir


def _refused(workdir: Path, sql: str, capsys: pytest.CaptureFixture[str]) -> str:
    code = main(["sql", "--workdir", str(workdir), sql])
    err = capsys.readouterr().err
    assert code == 1, err
    return err


def test_queries_still_answer_inside_the_sandbox(landed: Path) -> None:
    _, rows = run_sql(landed, "SELECT team, sum(cost_usd) FROM usage_facts GROUP BY ALL ORDER BY 1")
    assert [(t, float(c)) for t, c in rows] == [("ads", 2.0), ("search", 1.25)]
    # The warehouse's own files stay readable directly, and DESCRIBE / SHOW are queries.
    data = landed / "warehouse" / "tables" / "spendstream" / "usage_facts" / "data"
    glob = str(data / "*" / "*.parquet")
    assert run_sql(landed, "SELECT count(*) FROM read_parquet(?)", [glob])[1] == [(2,)]
    assert run_sql(landed, "DESCRIBE usage_facts")[1]
    assert ("usage_facts",) in run_sql(landed, "SHOW TABLES")[1]


def test_copy_cannot_write_outside_or_inside_the_warehouse(
    landed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outside = tmp_path / "stolen.csv"
    inside = landed / "warehouse" / "tables" / "spendstream" / "usage_facts" / "planted.parquet"
    for target in (outside, inside):
        err = _refused(landed, f"COPY (SELECT * FROM usage_facts) TO '{target}'", capsys)
        assert "COPY is refused" in err and "--format csv" in err
        assert not target.exists()


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_text('/etc/hostname')",
        "SELECT * FROM glob('/etc/*')",
    ],
)
def test_files_outside_the_warehouse_cannot_be_read(
    landed: Path, sql: str, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _refused(landed, sql, capsys)
    assert "file system operations are disabled" in err
    assert "root:" not in err


@pytest.mark.parametrize(
    ("sql", "why"),
    [
        ("ATTACH '{tmp}/other.duckdb' AS other", "ATTACH is refused"),
        ("INSTALL httpfs", "LOAD is refused"),
        ("LOAD httpfs", "LOAD is refused"),
        ("EXPORT DATABASE '{tmp}/export'", "EXPORT is refused"),
    ],
)
def test_attach_install_load_and_export_are_refused(
    landed: Path, tmp_path: Path, sql: str, why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _refused(landed, sql.format(tmp=tmp_path), capsys)
    assert why in err
    assert not (tmp_path / "other.duckdb").exists() and not (tmp_path / "export").exists()


def test_a_statement_cannot_unlock_the_sandbox(landed: Path) -> None:
    # SET is a query-kind statement, but the configuration is locked before the user's SQL runs.
    with pytest.raises(QueryError, match="configuration has been locked"):
        run_sql(landed, "SET enable_external_access = true")
    with pytest.raises(QueryError, match="file system operations are disabled"):
        run_sql(landed, "SELECT * FROM read_csv('/etc/passwd')")


def test_a_refused_statement_hidden_after_a_query_is_still_refused(
    landed: Path, tmp_path: Path
) -> None:
    target = tmp_path / "x.csv"
    with pytest.raises(QueryError, match="COPY is refused"):
        run_sql(landed, f"SELECT 1; COPY (SELECT 1) TO '{target}'")
    assert not target.exists()


def test_several_statements_are_refused_rather_than_all_but_the_last_answer_lost(
    landed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `sql "A; B"` ran both and showed B alone: A's answer was lost without a word.
    err = _refused(landed, "SELECT 1 AS a; SELECT 2 AS b;", capsys)
    assert "runs one statement; this holds 2 (separated by ;)" in err
    assert "UNION ALL" in err
    assert run_sql(landed, "SELECT 2 AS b;") == (["b"], [(2,)])  # one, with its ;, is one


def test_an_empty_statement_is_a_query_error_not_a_crash(landed: Path) -> None:
    # run_sql("") ended in an AttributeError: DuckDB gives no cursor for it.
    for sql in ("", " ; ", "-- only a comment"):
        with pytest.raises(QueryError, match="no SQL statement given"):
            run_sql(landed, sql)


def test_readers_open_at_the_same_time_are_each_sandboxed_and_in_utc(landed: Path) -> None:
    """The live page serves concurrent requests: one reader's locked sandbox must not make
    the next reader's connection fail (DuckDB shares one instance per file in a process)."""
    from spendstream.warehouse.reading import connect

    first = connect(landed)
    try:
        second = connect(landed)
        try:
            for con in (first, second):
                assert con.execute("SELECT count(*) FROM usage_facts").fetchone() == (2,)
                assert con.execute("SELECT current_setting('TimeZone')").fetchone() == ("UTC",)
                with pytest.raises(Exception, match=r"locked|disabled|not allowed|Permission"):
                    con.execute("SET enable_external_access = true")
        finally:
            second.close()
    finally:
        first.close()


def test_load_facts_gives_back_the_landed_facts_of_a_half_open_range_oldest_first(
    workdir: Path,
) -> None:
    from datetime import timedelta
    from decimal import Decimal

    from spendstream.records import Cost, Fact
    from spendstream.warehouse.reading import load_facts

    hour = timedelta(hours=1)
    landed = [fact(T0 + h * hour, team="search") for h in (3, 2, 1, 0)]  # ids against ts
    unpriced = fact(T0 + hour, None, team="ads")  # ties on ts: event_id orders them
    parts = (Decimal("0.01"), Decimal(0), Decimal(0), Decimal(0))
    cost = Cost(*parts, Decimal("0.03"), "test-catalog", Decimal("0.02"))  # with a tool cost
    landed += [unpriced, Fact(event=fact(T0).event, cost=cost, ingested_at=T0)]
    with Warehouse(workdir) as wh:
        wh.commit(facts=landed)
        wh.ensure_views()
    since, until = T0, T0 + 2 * hour  # the fact at `until` is outside, the one at `since` in
    want = sorted(
        (f for f in landed if since <= f.event.ts < until),
        key=lambda f: (f.event.ts, f.event.event_id),
    )
    got = load_facts(workdir, since, until)
    assert [f.event.event_id for f in got] == [f.event.event_id for f in want]
    assert got == want
