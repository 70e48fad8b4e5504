"""Warehouse fixtures: a real warehouse in tmp_path and a reader on its DuckDB views."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from spendstream.warehouse import Warehouse

Query = Callable[..., list[tuple[Any, ...]]]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path / "work"


@pytest.fixture
def wh(workdir: Path) -> Iterator[Warehouse]:
    w = Warehouse(workdir)
    w.ensure_views()
    yield w
    w.close()


@pytest.fixture
def q(workdir: Path) -> Query:
    """Run SQL on the views the way an analyst does: a separate read-only connection."""

    def run(sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        con = duckdb.connect(str(workdir / "warehouse" / "spendstream.duckdb"), read_only=True)
        try:
            con.execute("SET TimeZone = 'UTC'")
            return con.execute(sql, params).fetchall()
        finally:
            con.close()

    return run
