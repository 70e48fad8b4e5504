"""Reading the warehouse: DuckDB connections over the current snapshot, user SQL, named queries.

Readers never block writers: a connection reads the data files of the snapshot that was
current when it opened (views.connect_snapshot), in UTC, with every value bound as a
parameter. Works the same for local tables and tables on S3.

Every connection from ``connect`` is a sandbox: DuckDB may read only the tables' own
directory (``allowed_directories``; none for tables on S3, which it reads through Arrow
datasets registered before the lock), reaches no other file, URL or extension
(``enable_external_access = false``), and its configuration is locked so a statement
cannot undo that. ``run_sql`` also runs queries only: COPY, EXPORT, ATTACH, INSTALL/LOAD
and the like are refused before DuckDB sees them, since COPY could otherwise write inside
the warehouse directory itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spendstream.config import WarehouseConfig
from spendstream.errors import ConfigError, SpendstreamError
from spendstream.warehouse.queries import BY_NAME, filtered_sql

if TYPE_CHECKING:
    import duckdb

    from spendstream.records import Fact
    from spendstream.warehouse.landing import Warehouse

__all__ = [
    "QUERY_STATEMENTS",
    "QueryError",
    "connect",
    "load_facts",
    "open_reader",
    "run_named",
    "run_sql",
]

# Statement kinds `spendstream sql` runs (DESCRIBE, SHOW and SUMMARIZE parse as SELECT).
QUERY_STATEMENTS = frozenset({"SELECT", "EXPLAIN", "PRAGMA", "CALL", "SET", "VARIABLE_SET"})


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
            "run `spendstream ingest`, `spendstream demo` or `spendstream run` first"
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
    """A sandboxed DuckDB connection whose views read the current snapshot of every table."""
    from spendstream.warehouse.tables import Storage
    from spendstream.warehouse.views import connect_snapshot

    wh = open_reader(workdir, config)
    try:
        con = connect_snapshot(wh)
        readable = [] if wh.storage.is_s3 else [Path(Storage.to_fs_path(wh.storage.location))]
    finally:
        wh.close()
    try:
        _sandbox(con, readable)
    except BaseException:
        con.close()
        raise
    return con


def _sandbox(con: duckdb.DuckDBPyConnection, readable: list[Path]) -> None:
    """Confine ``con`` to reading ``readable`` directories, then lock its configuration.

    A separate step after the views exist: whatever builds the views decides which
    directories they read, and passes them here.
    """
    con.execute("SET enable_progress_bar = false")
    con.execute("SET allowed_directories = $dirs", {"dirs": [f"{d.resolve()}/" for d in readable]})
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def _check_statements(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    import duckdb

    try:
        kinds = [st.type.name for st in con.extract_statements(sql)]
    except duckdb.Error as exc:
        raise QueryError(str(exc).strip()) from None
    refused = sorted({k for k in kinds if k not in QUERY_STATEMENTS})
    if not refused and len(kinds) > 1:
        # Each would run and only the last be shown: the others' answers lost unsaid.
        raise QueryError(
            f"spendstream sql runs one statement; this holds {len(kinds)} (separated by ;): "
            "run each on its own, or join their rows with UNION ALL"
        )
    if refused:
        raise QueryError(
            f"spendstream sql runs queries only (SELECT, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN, PRAGMA); "
            f"{', '.join(refused)} is refused: the warehouse is read-only here and nothing "
            "outside it can be read or written. To export, use --format csv|json > FILE."
        )


# Rows a query hands over at a time.
_CHUNK_ROWS = 10_000


def _rows(
    con: duckdb.DuckDBPyConnection, sql: str, params: Any
) -> tuple[list[str], Iterator[list[tuple[Any, ...]]]]:
    """The columns of ``sql`` and its rows in chunks; DuckDB's errors, at execution or only
    as rows are made, as QueryError."""
    import duckdb

    try:
        cur = con.execute(sql, params)
    except duckdb.Error as exc:
        raise QueryError(str(exc).strip()) from None
    if cur is None:  # DuckDB's answer to "", " ; " or a comment alone: no cursor at all
        raise QueryError("no SQL statement given (e.g. SELECT * FROM cost_by_team)")
    columns = [] if cur.description is None else [d[0] for d in cur.description]

    def chunks() -> Iterator[list[tuple[Any, ...]]]:
        while columns:
            try:
                rows = cur.fetchmany(_CHUNK_ROWS)
            except duckdb.Error as exc:
                raise QueryError(str(exc).strip()) from None
            if not rows:
                return
            yield rows

    return columns, chunks()


def _fetch(
    con: duckdb.DuckDBPyConnection, sql: str, params: Any
) -> tuple[list[str], list[tuple[Any, ...]]]:
    return _flattened(_rows(con, sql, params))


def _flattened(
    answer: tuple[list[str], Iterator[list[tuple[Any, ...]]]],
) -> tuple[list[str], list[tuple[Any, ...]]]:
    columns, chunks = answer
    return columns, [row for chunk in chunks for row in chunk]


def run_sql(
    workdir: Path,
    statement: str,
    params: list[Any] | None = None,
    config: WarehouseConfig | None = None,
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run one query (refusing anything else); ``?`` placeholders take ``params`` in order."""
    with streamed_sql(workdir, statement, params, config) as answer:
        return _flattened(answer)


@contextlib.contextmanager
def streamed_sql(
    workdir: Path,
    statement: str,
    params: list[Any] | None = None,
    config: WarehouseConfig | None = None,
) -> Iterator[tuple[list[str], Iterator[list[tuple[Any, ...]]]]]:
    """``run_sql`` whose rows come in chunks while the connection is open: an export of
    every fact is written in bounded memory (the rows of 100M facts as Python objects are
    not)."""
    con = connect(workdir, config)
    try:
        _check_statements(con, statement)
        yield _rows(con, statement, params or None)
    finally:
        con.close()


def run_named(
    workdir: Path,
    name: str,
    filters: dict[str, Any],
    limit: int | None = None,
    config: WarehouseConfig | None = None,
    note: Callable[[str], None] | None = None,
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """A named query over usage_facts narrowed by ``filters`` (bound, never formatted).
    ``note`` hears, when nothing matched, of a filter value no fact has at all."""
    query = BY_NAME.get(name)
    if query is None:
        raise ConfigError(f"unknown query {name!r}; one of: {', '.join(BY_NAME)}")
    sql, params = filtered_sql(query, filters, limit)
    con = connect(workdir, config)
    try:
        columns, rows = _fetch(con, sql, params)
        if not rows and note is not None:
            fields = {
                FILTER_COLUMNS.get(k, k): str(v)
                for k, v in filters.items()
                if v is not None and k not in ("since", "until")
            }
            problem = unmatched_value(con, fields, "the answer is empty")
            if problem is not None:
                note(problem)
        return columns, rows
    finally:
        con.close()


# A query filter whose event field has another name.
FILTER_COLUMNS = {"user": "user_id"}


def unmatched_value(
    con: duckdb.DuckDBPyConnection, fields: Mapping[str, str], effect: str
) -> str | None:
    """When no fact at all has one of ``fields``' values (event field -> value): which, what
    that did (``effect``), and some values that do occur. A typo in a filter otherwise reads
    as an empty answer with nothing said."""
    for column, value in fields.items():
        found = con.execute(
            f'SELECT count(*) FROM usage_facts WHERE "{column}" = $v', {"v": value}
        ).fetchone()
        if found is not None and found[0] == 0:
            seen = [
                str(v)
                for (v,) in con.execute(
                    f'SELECT DISTINCT "{column}" FROM usage_facts WHERE "{column}" IS NOT NULL '
                    f'ORDER BY "{column}" LIMIT 10'
                ).fetchall()
            ]
            known = f" ({column} values seen: {', '.join(seen)})" if seen else ""
            return f"no facts have {column} = {value}: {effect}{known}"
    return None


def load_facts(
    workdir: Path,
    since: datetime | None,
    until: datetime | None,
    provider: str | None = None,
    model: str | None = None,
    config: WarehouseConfig | None = None,
) -> list[Fact]:
    """The stored facts of [since, until) (optionally one provider/model), oldest first."""
    from spendstream.producers.event import UsageEvent
    from spendstream.records import Cost, Fact
    from spendstream.table_schemas import COST_FIELDS

    fields = list(UsageEvent.model_fields)
    conditions, params = ["TRUE"], {}
    for key, value, sql in (
        ("since", since, "ts >= $since"),
        ("until", until, "ts < $until"),
        ("provider", provider, "provider = $provider"),
        ("model", model, "model = $model"),
    ):
        if value is not None:
            conditions.append(sql)
            params[key] = value
    costs = [*COST_FIELDS, "price_source", "ingested_at"]
    con = connect(workdir, config)
    try:
        # Files landed before a column was added lack it: read it as NULL (its default).
        present = {d[0] for d in con.execute("SELECT * FROM usage_facts LIMIT 0").description}
        select = ", ".join(
            f'"{c}"' if c in present else f'NULL AS "{c}"' for c in (*fields, *costs)
        )
        where = " AND ".join(conditions)
        sql = f"SELECT {select} FROM usage_facts WHERE {where} ORDER BY ts, event_id"
        rows = con.execute(sql, params).fetchall()
    finally:
        con.close()
    facts = []
    n = len(fields)
    for row in rows:
        data = {k: v for k, v in zip(fields, row[:n], strict=True) if v is not None}
        for name in ("tags", "tool_requests"):  # DuckDB MAPs come back as key/value lists
            value = data.get(name)
            if isinstance(value, dict) and set(value) == {"key", "value"}:
                data[name] = dict(zip(value["key"], value["value"], strict=True))
        event = UsageEvent.model_validate(data)
        got = dict(zip(costs, row[n:], strict=True))
        cost = None
        if got["cost_usd"] is not None:
            cost = Cost(
                got["input_cost_usd"],
                got["cache_read_cost_usd"],
                got["cache_write_cost_usd"],
                got["output_cost_usd"],
                got["cost_usd"],
                got["price_source"],
                # Facts landed before the tool component existed have none: zero.
                got["tool_cost_usd"] if got["tool_cost_usd"] is not None else Decimal(0),
            )
        facts.append(Fact(event=event, cost=cost, ingested_at=got["ingested_at"]))
    return facts
