"""spendstream.duckdb: views only, rebuilt atomically, seeing new files without reconnecting."""

from __future__ import annotations

from pathlib import Path

import duckdb

from spendstream.warehouse import Warehouse
from spendstream.warehouse.views import CORE_VIEWS, connect_readonly
from tests.warehouse.factories import fact


def test_an_open_reader_sees_new_commits_without_reconnecting(wh: Warehouse) -> None:
    con = connect_readonly(wh.layout)
    try:
        assert con.execute("SELECT count(*) FROM usage_facts").fetchone() == (0,)
        wh.commit(facts=[fact(), fact()])
        assert con.execute("SELECT count(*) FROM usage_facts").fetchone() == (2,)
    finally:
        con.close()


def test_rebuilding_the_views_while_a_reader_holds_the_file_is_safe(wh: Warehouse) -> None:
    wh.commit(facts=[fact()])
    held = duckdb.connect(str(wh.layout.db_path), read_only=True)
    try:
        wh.ensure_views()
        wh.ensure_views()
        assert held.execute("SELECT count(*) FROM usage_facts").fetchone() == (1,)
        fresh = connect_readonly(wh.layout)
        assert fresh.execute("SELECT count(*) FROM usage_facts").fetchone() == (1,)
        fresh.close()
    finally:
        held.close()
    leftovers = [p.name for p in wh.layout.root.iterdir() if p.name.endswith((".tmp", ".wal"))]
    assert leftovers == []


def test_the_database_holds_views_only(wh: Warehouse) -> None:
    con = connect_readonly(wh.layout)
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
        con = connect_readonly(wh.layout)
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
