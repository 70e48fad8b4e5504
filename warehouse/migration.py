"""``spendstream warehouse migrate``: the old layout (catalog.sqlite + Parquet files) to Iceberg.

Every command refuses a workdir in the old layout and names this command. Migration reads
each old day partition's live files (the old visibility rule: a compacted ``k<upto>-<from>``
file active since ``<from>`` replaces the commit files ``c<id>`` with ``id <= upto``) and
commits each partition into the Iceberg tables as the writer ``migration``, whose source
positions are the partitions copied per table: a migration killed half way resumes where it
stopped and copies nothing twice. Each old writer's state and positions become that
writer's first Iceberg commit, so the runtimes continue where they were. The old files are
then moved to ``warehouse/legacy-<time>/`` (delete it once satisfied).
"""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa

from spendstream.config import WarehouseConfig
from spendstream.warehouse.tables import EVENT_TABLES, LEGACY_CATALOG, TABLE_SCHEMAS

__all__ = ["MigrationReport", "migrate"]

WRITER = "migration"
_SCHEMA_PART = "date=0001-01-01"  # the old layout's zero-row schema files
_DATA_FILE = re.compile(r"^([ck])([0-9]{12})(?:-([0-9]{13}))?-[A-Za-z0-9_%~-]+[.]parquet$")
_OLD_ENTRIES = (
    LEGACY_CATALOG,
    LEGACY_CATALOG + "-wal",
    LEGACY_CATALOG + "-shm",
    *EVENT_TABLES,
    "revenue",
    "_tmp",
    "quarantine",
    "_compact.lock",
    "spendstream.duckdb",
)


@dataclass(slots=True)
class MigrationReport:
    rows: dict[str, int] = field(default_factory=dict)
    writers: list[str] = field(default_factory=list)
    legacy_dir: Path | None = None
    nothing_to_do: bool = False

    def describe(self) -> str:
        if self.nothing_to_do:
            return "nothing to migrate: the warehouse already uses Iceberg tables"
        counts = ", ".join(f"{n:,} {t}" for t, n in self.rows.items())
        return (
            f"migrated {counts}; writer state of {', '.join(self.writers) or 'no writer'}; "
            f"old files moved to {self.legacy_dir} (delete it when satisfied)"
        )


def _missing(batch: pa.Table, name: str, f: pa.Field) -> pa.Array:
    """A column the old release did not write, as a fact landed today would have it.

    Token counts it did not know were not reported (0, the event's default); nor was a tool
    cost, so a priced fact's is 0 (as ``reading.load_facts`` reads one); anything else null.
    """
    n = len(batch)
    if name == "usage_facts" and pa.types.is_integer(f.type) and f.name.endswith("_tokens"):
        return pa.array([0] * n, f.type)
    if name == "usage_facts" and f.name == "tool_cost_usd" and "priced" in batch.column_names:
        import pyarrow.compute as pc

        zero = pa.scalar(0, f.type)
        return pc.if_else(batch["priced"], zero, pa.scalar(None, f.type))
    return pa.nulls(n, f.type)


def _conform(batch: pa.Table, name: str) -> pa.Table:
    schema = TABLE_SCHEMAS[name]
    cols = []
    for f in schema:
        if f.name in batch.column_names:
            cols.append(batch[f.name].cast(f.type))
        else:
            cols.append(_missing(batch, name, f))
    return pa.table(cols, schema=schema)


def _live_files(directory: Path, now_ms: int) -> list[Path]:
    """The files the old views read in one partition directory."""
    parsed = []
    for f in directory.glob("*.parquet"):
        m = _DATA_FILE.match(f.name)
        if m:
            active_from = int(m.group(3)) if m.group(3) else None
            parsed.append((m.group(1), int(m.group(2)), active_from, f))
    upto = max(
        (
            n
            for kind, n, since, _ in parsed
            if kind == "k" and since is not None and since <= now_ms
        ),
        default=0,
    )
    return sorted(
        f
        for kind, n, since, f in parsed
        if (kind == "c" and n > upto)
        or (kind == "k" and n == upto and since is not None and since <= now_ms)
    )


def _read_partition(files: list[Path], name: str) -> pa.Table:
    import pyarrow.parquet as pq

    return (
        pa.concat_tables([_conform(pq.read_table(f), name) for f in files])
        if files
        else (TABLE_SCHEMAS[name].empty_table())
    )


def migrate(workdir: Path, config: WarehouseConfig | None = None) -> MigrationReport:
    import time

    import pyarrow.parquet as pq

    from spendstream.warehouse.landing import Warehouse

    root = Path(workdir).resolve() / "warehouse"
    report = MigrationReport()
    if not (root / LEGACY_CATALOG).exists():
        report.nothing_to_do = True
        return report
    now_ms = int(time.time() * 1000)
    wh = Warehouse(Path(workdir), writer=WRITER, config=config, check_layout=False)
    try:
        done = dict(wh.resume().positions or {})
        for name in EVENT_TABLES:
            parts = sorted(
                d for d in (root / name).glob("date=*") if d.is_dir() and d.name != _SCHEMA_PART
            )
            rows = 0
            for i, part in enumerate(parts):
                if i < done.get(name, 0):
                    continue
                table = _read_partition(_live_files(part, now_ms), name)
                done[name] = i + 1
                arg = "facts" if name == "usage_facts" else name
                wh.commit(**{arg: table}, positions=done)  # type: ignore[arg-type]
                rows += len(table)
            report.rows[name] = rows
        revenue = root / "revenue" / "revenue.parquet"
        if revenue.exists() and not done.get("revenue"):
            table = _conform(pq.read_table(revenue), "revenue")
            _append_revenue(wh, table)
            done["revenue"] = 1
            wh.commit(positions=done)
            report.rows["revenue"] = len(table)
        _migrate_writers(wh, root, config, report)
    finally:
        wh.close()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    legacy = root / f"legacy-{stamp}"
    legacy.mkdir()
    for entry in _OLD_ENTRIES:
        if (root / entry).exists():
            (root / entry).rename(legacy / entry)
    report.legacy_dir = legacy
    with Warehouse(Path(workdir), writer="maintenance", config=config) as fresh:
        fresh.ensure_views()
    return report


def _append_revenue(wh: object, table: pa.Table) -> None:
    from spendstream.warehouse.landing import Warehouse
    from spendstream.warehouse.maintenance import CompactionSummary, _read, _replace

    assert isinstance(wh, Warehouse)
    files = wh.manifests.live_files(wh.tables.load("revenue"))
    merged = pa.concat_tables([_read(wh, files, "revenue"), table])
    _replace(wh, "revenue", files, merged, CompactionSummary())


def _migrate_writers(
    wh: object, root: Path, config: WarehouseConfig | None, report: MigrationReport
) -> None:
    from spendstream.warehouse.landing import Warehouse

    assert isinstance(wh, Warehouse)
    con = sqlite3.connect(root / LEGACY_CATALOG)
    try:
        rows = con.execute("SELECT writer, state, source_positions FROM writer_state").fetchall()
    finally:
        con.close()
    for writer, state, positions in rows:
        with Warehouse(wh.workdir, writer=writer, config=config, check_layout=False) as w:
            if w.resume().seq:
                report.writers.append(writer)
                continue  # migrated by an earlier, interrupted run
            pos = json.loads(positions) if positions else None
            ints = (
                {str(k): int(v) for k, v in pos.items()}
                if isinstance(pos, dict) and all(isinstance(v, int) for v in pos.values())
                else None
            )
            w.commit(positions=ints, state=state.encode() if state and state != "null" else None)
            report.writers.append(writer)
