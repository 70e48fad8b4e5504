"""Compaction: many small per-commit files of a partition become one, safely while readers query.

The compacted file ``k<upto>-<from>-<token>.parquet`` holds every row of the partition's
live files (commit ids <= ``upto``). It is staged, recorded in the catalog (the inputs
marked superseded in the same transaction) and renamed into place a few seconds before
``<from>``, the instant it takes over in the views (see views.py for why that makes a
racing query read each row exactly once). Superseded files are deleted ``grace_s`` after
that instant, so a query that listed them a moment earlier can still read them.
``rewrite_facts`` uses the same swap to replace stored facts (repricing).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from spendstream.errors import SpendstreamError
from spendstream.records import Fact
from spendstream.table_schemas import facts_table, utc_day
from spendstream.warehouse import landing
from spendstream.warehouse.catalog import FileRow
from spendstream.warehouse.layout import TABLES

if TYPE_CHECKING:
    from spendstream.warehouse.landing import Warehouse

__all__ = ["CompactionSummary", "compact", "purge_superseded", "rewrite_facts"]

DEFAULT_GRACE_S = 300.0
# The compacted file takes over this long after it is renamed in (see views.py): far longer
# than the gap between a query's bind (file listing) and execution (visibility glob).
DEFAULT_ACTIVATE_AFTER_S = 5.0


@dataclass(slots=True)
class CompactionSummary:
    partitions: int = 0
    files_in: int = 0
    files_out: int = 0
    rows: int = 0
    deleted: int = 0
    skipped: list[str] = field(default_factory=list)


@contextmanager
def _exclusive(path: os.PathLike[str]) -> Iterator[None]:
    fd = os.open(path, os.O_CREAT | os.O_RDWR)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SpendstreamError("another compaction is running on this warehouse") from None
        yield
    finally:
        os.close(fd)


def _aligned(table: pa.Table, schema: pa.Schema) -> pa.Table:
    for name in schema.names:
        if name not in table.column_names:
            f = schema.field(name)
            table = table.append_column(f, pa.nulls(len(table), f.type))
    return table.select(schema.names).cast(schema)


def _merge(
    inputs: list[str],
    out: os.PathLike[str],
    drop_ids: pa.Array | None = None,
    extra: pa.Table | None = None,
) -> int:
    """Stream the inputs into one file under their unified schema (older files lack new columns),
    leaving out rows whose event_id is in ``drop_ids`` and adding ``extra``."""
    schemas = [pq.read_schema(p) for p in inputs] + ([extra.schema] if extra is not None else [])
    schema = pa.unify_schemas(schemas)
    rows = 0
    with pq.ParquetWriter(out, schema, compression="zstd") as writer:
        for p in inputs:
            table = pq.read_table(p)
            if drop_ids is not None:
                table = table.filter(pc.invert(pc.is_in(table["event_id"], value_set=drop_ids)))
            writer.write_table(_aligned(table, schema))
            rows += len(table)
        if extra is not None:
            writer.write_table(_aligned(extra, schema))
            rows += len(extra)
    fd = os.open(out, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return rows


def _replace_partition(
    wh: Warehouse,
    stage: Path,
    table: str,
    part: str,
    files: list[tuple[str, int, int]],
    activate_after_s: float,
    drop_ids: pa.Array | None = None,
    extra: pa.Table | None = None,
) -> int | None:
    """Replace a partition's live files by one compacted file; None if a commit is mid-publish."""
    layout, catalog = wh.layout, wh.catalog
    abs_inputs = [str(layout.absolute(p)) for p, _, _ in files]
    if not all(os.path.exists(p) for p in abs_inputs):
        return None
    upto = max(c for _, c, _ in files)
    token = uuid.uuid4().hex[:12]
    staged = stage / f"{token}.parquet"
    nrows = _merge(abs_inputs, staged, drop_ids, extra)
    active_from = datetime.now(UTC) + timedelta(seconds=activate_after_s)
    final = layout.absolute(part) / layout.compact_file_name(
        upto, int(active_from.timestamp() * 1000), token
    )
    with catalog.write() as con:
        catalog.add_commit(con, "compaction", "compaction", (0, 0, 0, 0))
        catalog.add_files(
            con, [FileRow(layout.relative(final), layout.relative(staged), upto, table, nrows)]
        )
        # Inputs count as superseded from the instant the compacted file takes over.
        con.executemany(
            "UPDATE files SET superseded_at = ? WHERE path = ?",
            [(active_from.isoformat(), p) for p, _, _ in files],
        )
    landing._fault("compaction_after_commit")
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staged, final)
    return nrows


def _live_by_partition(wh: Warehouse, table: str) -> dict[str, list[tuple[str, int, int]]]:
    by_dir: dict[str, list[tuple[str, int, int]]] = {}
    for path, commit_id, rows in wh.catalog.live_files(table):
        by_dir.setdefault(str(PurePosixPath(path).parent), []).append((path, commit_id, rows))
    return by_dir


def compact(
    wh: Warehouse,
    min_files: int = 2,
    grace_s: float = DEFAULT_GRACE_S,
    activate_after_s: float = DEFAULT_ACTIVATE_AFTER_S,
) -> CompactionSummary:
    """Merge each partition holding at least ``min_files`` live files; purge old superseded files."""
    summary = CompactionSummary()
    with _exclusive(wh.layout.compact_lock):
        stage = wh.stage_dir()
        for table in TABLES:
            for part, files in sorted(_live_by_partition(wh, table).items()):
                if len(files) < min_files:
                    continue
                nrows = _replace_partition(wh, stage, table, part, files, activate_after_s)
                if nrows is None:
                    summary.skipped.append(f"{part}: a commit is still being published")
                    continue
                summary.partitions += 1
                summary.files_in += len(files)
                summary.files_out += 1
                summary.rows += nrows
        summary.deleted = purge_superseded(wh, grace_s)
        # Only on success: after a failure the stage is left for recovery, since a
        # staged file may already be committed in the catalog.
        shutil.rmtree(stage, ignore_errors=True)
    return summary


def rewrite_facts(
    wh: Warehouse, facts: Sequence[Fact], activate_after_s: float = DEFAULT_ACTIVATE_AFTER_S
) -> int:
    """Replace stored usage_facts rows by event_id (e.g. new costs after repricing).

    Each affected day is rewritten as one compacted file, so the swap is as safe for
    readers as compaction; facts whose event_id never landed are ignored. Returns how
    many stored rows were replaced.
    """
    latest = {f.event.event_id: f for f in facts}
    by_day: dict[str, list[Fact]] = {}
    for f in latest.values():
        day = utc_day(f.event.ts)
        by_day.setdefault(wh.layout.relative(wh.layout.date_dir("usage_facts", day)), []).append(f)
    replaced = 0
    with _exclusive(wh.layout.compact_lock):
        stage = wh.stage_dir()
        live = _live_by_partition(wh, "usage_facts")
        for part, group in sorted(by_day.items()):
            files = live.get(part, [])
            if not files:
                continue
            ids = pa.array([f.event.event_id for f in group], pa.string())
            stored = _stored_ids([str(wh.layout.absolute(p)) for p, _, _ in files], ids)
            new = [f for f in group if f.event.event_id in stored]
            if not new:
                continue
            drop = pa.array(sorted(stored), pa.string())
            nrows = _replace_partition(
                wh, stage, "usage_facts", part, files, activate_after_s, drop, facts_table(new)
            )
            if nrows is None:
                raise SpendstreamError(f"{part}: a commit is still being published; retry")
            replaced += len(new)
        # Only on success: after a failure the stage is left for recovery, since a
        # staged file may already be committed in the catalog.
        shutil.rmtree(stage, ignore_errors=True)
    return replaced


def _stored_ids(paths: list[str], ids: pa.Array) -> set[str]:
    found: set[str] = set()
    for p in paths:
        col = pq.read_table(p, columns=["event_id"])["event_id"]
        found.update(col.filter(pc.is_in(col, value_set=ids)).to_pylist())
    return found


def purge_superseded(wh: Warehouse, grace_s: float) -> int:
    """Delete files superseded more than ``grace_s`` ago whose replacement is in place."""
    layout, catalog = wh.layout, wh.catalog
    cutoff = (datetime.now(UTC) - timedelta(seconds=grace_s)).isoformat()
    deleted = 0
    for path in catalog.superseded_before(cutoff):
        if not catalog.replacement_published(path, layout.root):
            continue
        p = layout.absolute(path)
        if p.exists():
            p.unlink()
        with catalog.write() as con:
            con.execute("DELETE FROM files WHERE path = ?", (path,))
        deleted += 1
    return deleted
