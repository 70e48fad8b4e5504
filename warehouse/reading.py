"""Reading the warehouse: DuckDB connections over the current snapshot, user SQL, named queries.

Readers never block writers: a connection reads the data files of the snapshot that was
current when it opened (views.connect_snapshot), in UTC, with every value bound as a
parameter. Works the same for local tables and tables on S3.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from spendstream.config import WarehouseConfig
from spendstream.errors import ConfigError, SpendstreamError
from spendstream.warehouse.queries import BY_NAME, filtered_sql

if TYPE_CHECKING:
    import duckdb

    from spendstream.warehouse.landing import Warehouse

__all__ = ["QueryError", "connect", "open_reader", "run_named", "run_sql"]


class QueryError(SpendstreamError):
    """DuckDB refused or failed the statement."""


def open_reader(workdir: Path, config: WarehouseConfig | None = None) -> Warehouse:
    """The warehouse opened for reading (nothing is created)."""
    from spendstream.warehouse.landing import Warehouse, check_not_legacy
    from spendstream.warehouse.tables import resolve_storage

    config = config or WarehouseConfig()
    check_not_legacy(workdir)
    storage = resolve_storage(config, Path(workdir))
    if (
        storage.catalog_uri.startswith("sqlite:///")
        and not Path(storage.catalog_uri.removeprefix("sqlite:///")).exists()
    ):
        raise ConfigError(
            f"no warehouse at {storage.local_root} (--workdir / $SPENDSTREAM_HOME); "
            "run `spendstream ingest` or `spendstream demo` first"
        )
    wh = Warehouse(Path(workdir), writer="reader", config=config, create=False)
    if not wh.tables.exists():
        wh.close()
        raise ConfigError(
            f"no spendstream tables in the warehouse catalog ({storage.describe}); "
            "run `spendstream ingest` or `spendstream run` first"
        )
    return wh


def connect(workdir: Path, config: WarehouseConfig | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection whose views read the current snapshot of every table."""
    from spendstream.warehouse.views import connect_snapshot

    wh = open_reader(workdir, config)
    try:
        return connect_snapshot(wh)
    finally:
        wh.close()


_READ_ONLY = ("SELECT", "EXPLAIN", "PRAGMA")


def _fetch(
    con: duckdb.DuckDBPyConnection, sql: str, params: Any
) -> tuple[list[str], list[tuple[Any, ...]]]:
    import duckdb

    try:
        for stmt in con.extract_statements(sql):
            kind = str(stmt.type).rsplit(".", 1)[-1]
            if kind not in _READ_ONLY:
                raise QueryError(
                    f"the warehouse is read-only here: {kind} is not allowed "
                    "(SELECT, EXPLAIN and PRAGMA are)"
                )
        cur = con.execute(sql, params)
        if cur.description is None:
            return [], []
        columns = [d[0] for d in cur.description]
        return columns, cur.fetchall()
    except duckdb.Error as exc:
        raise QueryError(str(exc).strip()) from None


def run_sql(
    workdir: Path,
    statement: str,
    params: list[Any] | None = None,
    config: WarehouseConfig | None = None,
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run one statement; ``?`` placeholders take ``params`` in order."""
    con = connect(workdir, config)
    try:
        return _fetch(con, statement, params or None)
    finally:
        con.close()


def run_named(
    workdir: Path,
    name: str,
    filters: dict[str, Any],
    limit: int | None = None,
    config: WarehouseConfig | None = None,
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """A named query over usage_facts narrowed by ``filters`` (bound, never formatted)."""
    query = BY_NAME.get(name)
    if query is None:
        raise ConfigError(f"unknown query {name!r}; one of: {', '.join(BY_NAME)}")
    sql, params = filtered_sql(query, filters, limit)
    con = connect(workdir, config)
    try:
        return _fetch(con, sql, params)
    finally:
        con.close()
