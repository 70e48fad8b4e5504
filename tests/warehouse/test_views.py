"""spendstream.duckdb: views only, rebuilt atomically, reading exactly the current snapshot."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import duckdb

from spendstream.table_schemas import facts_table
from spendstream.warehouse import Warehouse
from spendstream.warehouse.views import CORE_VIEWS, connect_database, connect_snapshot
from tests.warehouse.factories import fact


def test_an_open_reader_sees_new_commits_without_reconnecting(wh: Warehouse) -> None:
    con = connect_database(wh.storage)
    try:
        assert con.execute("SELECT count(*) FROM usage_facts").fetchone() == (0,)
        wh.commit(facts=[fact(), fact()])
        assert con.execute("SELECT count(*) FROM usage_facts").fetchone() == (2,)
    finally:
        con.close()


def test_rebuilding_the_views_while_a_reader_holds_the_file_is_safe(wh: Warehouse) -> None:
    wh.commit(facts=[fact()])
    held = duckdb.connect(str(wh.db_path), read_only=True)
    try:
        wh.ensure_views()
        wh.ensure_views()
        assert held.execute("SELECT count(*) FROM usage_facts").fetchone() == (1,)
        fresh = connect_database(wh.storage)
        assert fresh.execute("SELECT count(*) FROM usage_facts").fetchone() == (1,)
        fresh.close()
    finally:
        held.close()
    leftovers = [p.name for p in wh.db_path.parent.iterdir() if p.name.endswith((".tmp", ".wal"))]
    assert leftovers == []


def test_the_database_holds_views_only(wh: Warehouse) -> None:
    con = connect_database(wh.storage)
    try:
        tables = con.execute("SELECT count(*) FROM duckdb_tables() WHERE NOT internal").fetchone()
        views = {
            r[0]
            for r in con.execute(
                "SELECT view_name FROM duckdb_views() WHERE NOT internal"
            ).fetchall()
        }
    finally:
        con.close()
    assert tables == (0,)
    assert set(CORE_VIEWS) <= views


def test_an_empty_warehouse_has_every_view_with_its_columns(workdir: Path) -> None:
    with Warehouse(workdir) as wh:
        wh.ensure_views()
        con = connect_database(wh.storage)
        try:
            for view, column in [
                ("usage_facts", "cost_usd"),
                ("alerts", "dedup_key"),
                ("breaker_events", "state"),
                ("dead_letters", "received_at"),
                ("revenue", "revenue_usd"),
            ]:
                assert con.execute(f"SELECT count({column}) FROM {view}").fetchone() == (0,)
        finally:
            con.close()


def test_files_outside_the_current_snapshot_are_never_read(wh: Warehouse) -> None:
    """An uncommitted data file (a writer killed before its commit) sits in the data
    directory: the DuckDB file and the catalog's snapshot both leave it out."""
    wh.commit(facts=[fact()])
    orphan = wh._write_files("usage_facts", facts_table([fact(), fact()]))
    assert all(Path(f.file_path.removeprefix("file://")).exists() for f in orphan)
    con = connect_database(wh.storage)
    snap = connect_snapshot(wh)
    try:
        assert con.execute("SELECT count(*) FROM usage_facts").fetchone() == (1,)
        assert snap.execute("SELECT count(*) FROM usage_facts").fetchone() == (1,)
    finally:
        con.close()
        snap.close()


def test_the_snapshot_connection_and_the_database_file_have_the_same_columns(
    wh: Warehouse,
) -> None:
    wh.commit(facts=[fact()])
    con = connect_database(wh.storage)
    snap = connect_snapshot(wh)
    try:
        for view in (*CORE_VIEWS, "cost_by_team", "focus_export"):
            a = con.execute(f"DESCRIBE {view}").fetchall()
            b = snap.execute(f"DESCRIBE {view}").fetchall()
            assert [r[:2] for r in a] == [r[:2] for r in b], view
    finally:
        con.close()
        snap.close()


def test_the_date_column_is_the_utc_day_whatever_the_sessions_time_zone(wh: Warehouse) -> None:
    # 23:30 UTC on 03-02 is already 03-03 in Tokyo and still 03-02 in Los Angeles.
    late = datetime(2026, 3, 2, 23, 30, tzinfo=UTC)
    wh.commit(facts=[fact(late)])
    for zone in ("Asia/Tokyo", "America/Los_Angeles"):
        con = duckdb.connect(str(wh.db_path), read_only=True)
        try:
            con.execute(f"SET TimeZone = '{zone}'")
            assert con.execute("SELECT date FROM usage_facts").fetchall() == [(late.date(),)]
        finally:
            con.close()
