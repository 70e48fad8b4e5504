"""spendstream.duckdb: views only, over the Parquet files (contract section 3).

The pipeline never holds the DuckDB file: it writes Parquet and its SQLite catalog,
and the views' globs are evaluated at query time, so readers see new files as they
land and never block a writer. ``build_database`` writes a fresh database beside the
old one and renames it over it, so rebuilding is safe while analysts have it open.

Which files a view reads: in each partition, a compacted file ``k<upto>-<from>-*``
replaces every commit file ``c<id>-*`` with ``id <= upto`` from the instant ``<from>``
(epoch ms) on, as judged by the query's own ``now()``. Compaction renames the file in a
few seconds before ``<from>``: DuckDB lists read_parquet's files when it binds and the
visibility glob later, when it executes, so a query starting before ``<from>`` keeps the
commit files (which stay on disk) and one starting after it has certainly listed the
compacted file. Either way a row is read once: never twice, never missed. Replaced
files are deleted a grace period after ``<from>``.
"""

from __future__ import annotations

import os
import uuid
from typing import TYPE_CHECKING

from spendstream.warehouse.layout import TABLES, Layout
from spendstream.warehouse.queries import QUERIES, view_sql

if TYPE_CHECKING:
    import duckdb

__all__ = ["CORE_VIEWS", "build_database", "connect_readonly", "statements"]

CORE_VIEWS = (*TABLES, "revenue")

_VISIBLE_FILES = """
CREATE OR REPLACE VIEW {files_view} AS
WITH f AS (
    SELECT file, parse_dirpath(file) AS dir, parse_filename(file) AS base
    FROM glob({glob})
),
p AS (
    SELECT file, dir, left(base, 1) AS kind, CAST(substr(base, 2, 12) AS BIGINT) AS num,
           CASE WHEN left(base, 1) = 'k' THEN TRY_CAST(split_part(base, '-', 2) AS BIGINT) END
               AS active_from_ms
    FROM f WHERE regexp_matches(base, '^[ck][0-9]{{12}}-[A-Za-z0-9_%~-]+[.]parquet$')
),
a AS (
    SELECT *, kind = 'k' AND active_from_ms <= epoch_ms(now()) AS active_k FROM p
),
m AS (
    SELECT *, coalesce(max(num) FILTER (WHERE active_k) OVER (PARTITION BY dir), 0) AS upto
    FROM a
)
SELECT file FROM m WHERE (kind = 'c' AND num > upto) OR (active_k AND num = upto)
"""

_TABLE_VIEW = """
CREATE OR REPLACE VIEW {name} AS
SELECT * EXCLUDE (filename)
FROM read_parquet({glob}, hive_partitioning = true, union_by_name = true, filename = true,
                  hive_types = {{'date': DATE}})
WHERE filename IN (SELECT file FROM {files_view})
"""

_REVENUE_VIEW = """
CREATE OR REPLACE VIEW revenue AS
SELECT month, plan, user_id, revenue_usd FROM read_parquet({glob}, union_by_name = true)
"""

_DESCRIPTIONS = {
    "usage_facts": "One row per distinct event_id: the event, its exact cost (DECIMAL) and price source.",
    "alerts": "Alerts raised by the detectors and budgets.",
    "breaker_events": "Circuit breaker transitions per scope.",
    "dead_letters": "Inputs that could not become facts, with the reason.",
    "revenue": "Revenue per month (total, plan or user) loaded by spendstream warehouse load-revenue.",
}


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def statements(layout: Layout) -> list[str]:
    """Every DDL statement of the database, in order."""
    out = []
    for table in TABLES:
        files_view = f"_{table}_files"
        glob = _literal(layout.glob(table))
        out.append(_VISIBLE_FILES.format(files_view=files_view, glob=glob))
        out.append(_TABLE_VIEW.format(name=table, glob=glob, files_view=files_view))
    out.append(_REVENUE_VIEW.format(glob=_literal(str(layout.revenue_dir / "*.parquet"))))
    for name, text in _DESCRIPTIONS.items():
        out.append(f"COMMENT ON VIEW {name} IS {_literal(text)}")
    for q in QUERIES:
        out.append(view_sql(q))
        out.append(f"COMMENT ON VIEW {q.name} IS {_literal(q.description)}")
    return out


def build_database(layout: Layout) -> None:
    """Write spendstream.duckdb with every view, atomically replacing the previous one."""
    import duckdb

    from spendstream.warehouse.revenue import ensure_revenue_file

    ensure_revenue_file(layout)
    tmp = layout.db_path.with_name(f".{layout.db_path.name}.{uuid.uuid4().hex}.tmp")
    try:
        con = duckdb.connect(str(tmp))
        try:
            for stmt in statements(layout):
                con.execute(stmt)
            con.execute("CHECKPOINT")
        finally:
            con.close()
        os.replace(tmp, layout.db_path)
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
            if leftover.exists():
                leftover.unlink()


def connect_readonly(layout: Layout) -> duckdb.DuckDBPyConnection:
    """A read-only DuckDB connection to the views, in UTC (so dates and --since mean UTC)."""
    import duckdb

    if not layout.db_path.exists():
        build_database(layout)
    # A private in-memory instance per connection, the file attached read-only: DuckDB shares
    # one instance per database path inside a process, so a reader that locks its
    # configuration (the sandbox) would make every concurrent reader's own settings fail.
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute("ATTACH $path AS warehouse (READ_ONLY)", {"path": str(layout.db_path)})
        con.execute("USE warehouse")
    except BaseException:
        con.close()
        raise
    return con
