"""Compaction: many small per-commit files of a partition become one, safely while readers query.

The compacted file ``k<upto>-<token>.parquet`` holds every row of the partition's live
files (commit ids <= ``upto``). It is staged, recorded in the catalog (the inputs marked
superseded in the same transaction) and renamed into place; from that instant the views
read it instead of the inputs (they filter by file name, see views.py), so no reader
sees a row twice or misses one. Superseded files are deleted only after ``grace_s``, so
a query that listed them a moment earlier can still read them.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from spendstream.errors import SpendstreamError
from spendstream.warehouse.catalog import FileRow
from spendstream.warehouse.layout import TABLES

if TYPE_CHECKING:
    from spendstream.warehouse.landing import Warehouse

__all__ = ["CompactionSummary", "compact"]

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


def _merge(inputs: list[str], out: os.PathLike[str]) -> int:
    """Stream the input files into one, under their unified schema (older files lack new columns)."""
    schemas = [pq.read_schema(p) for p in inputs]
    schema = pa.unify_schemas(schemas)
    rows = 0
    with pq.ParquetWriter(out, schema, compression="zstd") as writer:
        for p in inputs:
            table = pq.read_table(p)
            for name in schema.names:
                if name not in table.column_names:
                    table = table.append_column(
                        schema.field(name), pa.nulls(len(table), schema.field(name).type)
                    )
            writer.write_table(table.select(schema.names).cast(schema))
            rows += len(table)
    fd = os.open(out, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return rows


def compact(
    wh: Warehouse,
    min_files: int = 2,
    grace_s: float = DEFAULT_GRACE_S,
    activate_after_s: float = DEFAULT_ACTIVATE_AFTER_S,
) -> CompactionSummary:
    """Merge each partition holding at least ``min_files`` live files; purge old superseded files."""
    layout, catalog = wh.layout, wh.catalog
    summary = CompactionSummary()
    with _exclusive(layout.compact_lock):
        stage = wh.stage_dir()
        try:
            for table in TABLES:
                by_dir: dict[str, list[tuple[str, int, int]]] = {}
                for path, commit_id, rows in catalog.live_files(table):
                    by_dir.setdefault(str(PurePosixPath(path).parent), []).append(
                        (path, commit_id, rows)
                    )
                for part, files in sorted(by_dir.items()):
                    if len(files) < min_files:
                        continue
                    abs_inputs = [str(layout.absolute(p)) for p, _, _ in files]
                    if not all(os.path.exists(p) for p in abs_inputs):
                        summary.skipped.append(f"{part}: a commit is still being published")
                        continue
                    upto = max(c for _, c, _ in files)
                    token = uuid.uuid4().hex[:12]
                    staged = stage / f"{token}.parquet"
                    nrows = _merge(abs_inputs, staged)
                    active_from = datetime.now(UTC) + timedelta(seconds=activate_after_s)
                    active_ms = int(active_from.timestamp() * 1000)
                    final = layout.absolute(part) / layout.compact_file_name(upto, active_ms, token)
                    # Inputs count as superseded from the instant the compacted file takes over.
                    superseded_at = active_from.isoformat()
                    with catalog.write() as con:
                        commit_id = catalog.add_commit(
                            con, "compaction", "compaction", (0, 0, 0, 0)
                        )
                        catalog.add_files(
                            con,
                            [
                                FileRow(
                                    layout.relative(final),
                                    layout.relative(staged),
                                    upto,
                                    table,
                                    nrows,
                                )
                            ],
                        )
                        con.executemany(
                            "UPDATE files SET superseded_at = ? WHERE path = ?",
                            [(superseded_at, p) for p, _, _ in files],
                        )
                        assert commit_id > 0
                    final.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(staged, final)
                    summary.partitions += 1
                    summary.files_in += len(files)
                    summary.files_out += 1
                    summary.rows += nrows
            summary.deleted = purge_superseded(wh, grace_s)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
    return summary


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
