"""DuckDB views over the Iceberg tables' current snapshot (contract section 3).

Two ways in, one set of view names, columns and named queries (``statements``):

* ``connect_snapshot(wh)``: what ``spendstream sql|query|report|whatif`` use. It asks the
  catalog for each table's current data files and reads them with ``read_parquet([...])``
  (local storage) or as a pyarrow dataset on ``S3FileSystem`` (S3): no DuckDB extension,
  local or S3 alike.
* ``spendstream.duckdb`` (local storage only), for a plain ``duckdb`` session while the
  pipeline runs: each view reads its table's ``data/**/*.parquet`` glob, filtered by
  ``current/<table>.parquet``, the list of the current snapshot's files that every commit
  replaces atomically (rename). A file in the glob but not in the list (a commit in flight,
  an orphan, a file compaction replaced) is never read; a query sees one snapshot's files.

A zero-row ``data/_schema/<table>.parquet`` per table keeps the glob non-empty and the
view's columns defined before anything landed.
"""

from __future__ import annotations

import fcntl
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from spendstream.warehouse.queries import QUERIES, view_sql
from spendstream.warehouse.tables import EVENT_TABLES, PARTITION_COLUMN, TABLE_SCHEMAS, Storage

if TYPE_CHECKING:
    import duckdb
    from pyiceberg.table import Table

    from spendstream.warehouse.landing import Warehouse

__all__ = [
    "CORE_VIEWS",
    "DB_NAME",
    "build_database",
    "connect_database",
    "connect_snapshot",
    "publish_current_files",
    "stale_current_files",
    "statements",
]

DB_NAME = "spendstream.duckdb"
CORE_VIEWS = (*EVENT_TABLES, "revenue")
_SCHEMA_DIR = "_schema"

_DESCRIPTIONS = {
    "usage_facts": "One row per distinct event_id: the event, its exact cost (DECIMAL) and price source.",
    "alerts": "Alerts raised by the detectors and budgets.",
    "breaker_events": "Circuit breaker transitions per scope.",
    "dead_letters": "Inputs that could not become facts, with the reason.",
    "revenue": "Revenue per month (total, plan or user) loaded by spendstream warehouse load-revenue.",
}


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _select(name: str, source: str) -> str:
    """A view's SELECT over ``source``; event tables gain ``date`` (UTC day of their time column)."""
    column = PARTITION_COLUMN.get(name)
    if column is None:
        return f"SELECT * FROM {source}"
    return f"SELECT *, CAST(timezone('UTC', {column}) AS DATE) AS date FROM {source}"


def statements(sources: dict[str, str]) -> list[str]:
    """Every DDL statement, given each table's FROM clause."""
    out = [
        f"CREATE OR REPLACE VIEW {name} AS {_select(name, sources[name])}" for name in CORE_VIEWS
    ]
    for name, text in _DESCRIPTIONS.items():
        out.append(f"COMMENT ON VIEW {name} IS {_literal(text)}")
    for q in QUERIES:
        out.append(view_sql(q))
        out.append(f"COMMENT ON VIEW {q.name} IS {_literal(q.description)}")
    return out


# The local DuckDB file.


def _current_dir(storage: Storage) -> Path:
    return storage.local_root / "current"


def _data_dir(wh: Warehouse, name: str) -> Path:
    return Path(Storage.to_fs_path(wh.tables.table(name).location())) / "data"


def _schema_file(wh: Warehouse, name: str) -> Path:
    path = _data_dir(wh, name) / _SCHEMA_DIR / f"{name}.parquet"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{uuid.uuid4().hex}.tmp")
        pq.write_table(TABLE_SCHEMAS[name].empty_table(), tmp)
        os.replace(tmp, path)
    return path


# In a list's Parquet metadata: the last snapshot that changed the table's data files when
# the list was written (``_data_version``).
_VERSION_KEY = b"spendstream.data-snapshot-id"


def _data_version(tbl: Table) -> str:
    """The id of the newest snapshot that added or removed data files, walking back from the
    head ("": the table holds none). Commits that only move a writer's position or state
    (a scope owner's, an alerts-only batch's) leave the usage_facts list as it was. Where
    that snapshot was expired (the oldest kept one has no parent then), the head's id: the
    version is not known, so any later commit makes the list stale ("" would match a list
    written in the same state, whatever was committed and expired in between)."""
    from spendstream.warehouse import snapshots as sn

    head = snap = tbl.current_snapshot()
    if head is None or not int(sn.summary_of(head).get("total-data-files", "0")):
        return ""
    while snap is not None:
        summary = sn.summary_of(snap)
        if any(int(summary.get(k, "0")) for k in ("added-data-files", "deleted-data-files")):
            return str(snap.snapshot_id)
        parent = snap.parent_snapshot_id
        snap = tbl.snapshot_by_id(parent) if parent is not None else None
    return f"head {head.snapshot_id}"


def publish_current_files(wh: Warehouse, names: Sequence[str]) -> None:
    """Write ``current/<table>.parquet`` from the catalog's head, atomically (local storage).

    Under a lock, and from a fresh load of the table, so two writers publishing at once can
    never leave an older list in place of a newer one. Each list records the last snapshot
    that changed the files it lists (``stale_current_files``).
    """
    current = _current_dir(wh.storage)
    current.mkdir(parents=True, exist_ok=True)
    fd = os.open(current / ".lock", os.O_CREAT | os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        for name in names:
            tbl = wh.tables.load(name)
            files = [Storage.to_fs_path(f.file_path) for f in wh.manifests.live_files(tbl)]
            files.append(str(_schema_file(wh, name)))
            listing = pa.table({"file": pa.array(files, pa.string())}).replace_schema_metadata(
                {_VERSION_KEY: _data_version(tbl)}
            )
            tmp = current / f".{name}.{uuid.uuid4().hex}.tmp"
            pq.write_table(listing, tmp)
            os.replace(tmp, current / f"{name}.parquet")
    finally:
        os.close(fd)


def stale_current_files(wh: Warehouse, names: Sequence[str]) -> list[str]:
    """Of ``names``, the tables whose ``current/<table>.parquet`` is missing or lists
    another version of their data files than the catalog's head: a writer that committed
    and was killed before it published left it behind, and no later commit may touch the
    table."""
    current = _current_dir(wh.storage)
    out = []
    for name in names:
        try:
            meta = pq.read_schema(current / f"{name}.parquet").metadata or {}
        except (OSError, pa.ArrowInvalid):  # missing, or not a Parquet file (any more)
            out.append(name)
            continue
        if meta.get(_VERSION_KEY, b"-").decode() != _data_version(wh.tables.load(name)):
            out.append(name)
    return out


def build_database(storage: Storage) -> None:
    """Write spendstream.duckdb with every view, atomically replacing the previous one."""
    import duckdb

    root = storage.local_root
    sources = {}
    for name in CORE_VIEWS:
        data = Path(Storage.to_fs_path(storage.location)) / storage.namespace / name / "data"
        listing = _current_dir(storage) / f"{name}.parquet"
        sources[name] = (
            f"(SELECT * EXCLUDE (filename) FROM read_parquet({_literal(str(data / '**' / '*.parquet'))}, "
            "union_by_name = true, filename = true, hive_partitioning = false) "
            f"WHERE filename IN (SELECT file FROM read_parquet({_literal(str(listing))})))"
        )
    db = root / DB_NAME
    tmp = db.with_name(f".{db.name}.{uuid.uuid4().hex}.tmp")
    try:
        con = duckdb.connect(str(tmp))
        try:
            for stmt in statements(sources):
                con.execute(stmt)
            con.execute("CHECKPOINT")
        finally:
            con.close()
        os.replace(tmp, db)
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
            if leftover.exists():
                leftover.unlink()


def connect_database(storage: Storage) -> duckdb.DuckDBPyConnection:
    """A read-only connection to spendstream.duckdb (local storage), in UTC."""
    import duckdb

    # A private in-memory instance per connection, the file attached read-only: DuckDB shares
    # one instance per database path inside a process, so a reader that locks its
    # configuration (the sandbox) would make every concurrent reader's own settings fail.
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute(
            "ATTACH $path AS warehouse (READ_ONLY)", {"path": str(storage.local_root / DB_NAME)}
        )
        con.execute("USE warehouse")
    except BaseException:
        con.close()
        raise
    return con


# The catalog's snapshot, for commands.


def connect_snapshot(wh: Warehouse) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection whose views read each table's current snapshot."""
    import duckdb
    import pyarrow.dataset as ds

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    sources = {}
    for name in CORE_VIEWS:
        tbl = wh.tables.load(name)
        paths = [f.file_path for f in wh.manifests.live_files(tbl)]
        schema = TABLE_SCHEMAS[name]
        relation = f"_{name}_snapshot"
        if paths and not wh.storage.is_s3:
            local = ", ".join(_literal(Storage.to_fs_path(p)) for p in paths)
            sources[name] = (
                f"read_parquet([{local}], union_by_name = true, hive_partitioning = false)"
            )
            continue
        if paths:
            dataset = ds.dataset(
                [Storage.to_fs_path(p) for p in paths],
                schema=schema,
                format="parquet",
                filesystem=wh.fs,
            )
            con.register(relation, dataset)
        else:
            con.register(relation, schema.empty_table())
        sources[name] = relation
    for stmt in statements(sources):
        con.execute(stmt)
    return con
