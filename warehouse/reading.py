"""Reading the warehouse: read-only DuckDB connections, user SQL and named queries.

Readers open spendstream.duckdb read-only (they never block the writers, which only
touch Parquet and the catalog), in UTC, with every value bound as a parameter.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from spendstream.errors import ConfigError, SpendstreamError
from spendstream.warehouse.layout import Layout
from spendstream.warehouse.queries import BY_NAME, filtered_sql
from spendstream.warehouse.views import connect_readonly

if TYPE_CHECKING:
    import duckdb

__all__ = ["QueryError", "connect", "run_named", "run_sql"]


class QueryError(SpendstreamError):
    """DuckDB refused or failed the statement."""


def connect(workdir: Path) -> duckdb.DuckDBPyConnection:
    """A read-only connection to the views (built first if the warehouse has none yet)."""

    layout = Layout.for_workdir(workdir)
    if not layout.root.exists():
        raise ConfigError(
            f"no warehouse at {layout.root} (--workdir / $SPENDSTREAM_HOME); "
            "run `spendstream ingest` or `spendstream demo` first"
        )
    return connect_readonly(layout)


def _fetch(
    con: duckdb.DuckDBPyConnection, sql: str, params: Any
) -> tuple[list[str], list[tuple[Any, ...]]]:
    import duckdb

    try:
        cur = con.execute(sql, params)
        if cur.description is None:
            return [], []
        columns = [d[0] for d in cur.description]
        return columns, cur.fetchall()
    except duckdb.Error as exc:
        raise QueryError(str(exc).strip()) from None


def run_sql(
    workdir: Path, statement: str, params: list[Any] | None = None
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run one statement read-only; ``?`` placeholders take ``params`` in order."""
    con = connect(workdir)
    try:
        return _fetch(con, statement, params or None)
    finally:
        con.close()


def run_named(
    workdir: Path, name: str, filters: dict[str, Any], limit: int | None = None
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """A named query over usage_facts narrowed by ``filters`` (bound, never formatted)."""
    query = BY_NAME.get(name)
    if query is None:
        raise ConfigError(f"unknown query {name!r}; one of: {', '.join(BY_NAME)}")
    sql, params = filtered_sql(query, filters, limit)
    con = connect(workdir)
    try:
        return _fetch(con, sql, params)
    finally:
        con.close()
