"""Upkeep of the Iceberg tables, safe while writers commit: compaction, expiry, orphan files.

* **Compaction** rewrites each day partition holding ``min_files`` or more files into files
  of about ``[warehouse] target_file_mb``, in one ``overwrite`` snapshot per partition that
  deletes exactly the files it read. Writers only ever add files, so a race with them is a
  plain retry (refresh, rebuild the summary, commit again); if a file it read is gone
  (another compaction, a reprice) that partition is skipped.
* **Expiry** removes snapshots older than ``snapshot_retention_s`` (never the current one).
  Writers' positions and states are copied forward into every snapshot (snapshots.py), so
  expiring history cannot lose them.
* **Orphans**: files under a table's location that no retained snapshot, metadata file or
  writer record refers to, older than ``orphan_grace_s`` (a killed writer's data files, the
  manifests of expired snapshots, superseded writer records) are deleted.
* ``rewrite_facts`` replaces stored facts by event_id (``prices reprice --yes``) the same way.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from spendstream.errors import CommitConflict
from spendstream.warehouse import snapshots as sn
from spendstream.warehouse.tables import (
    DIGEST_COLUMN,
    EVENT_TABLES,
    PARTITION_COLUMN,
    TABLE_SCHEMAS,
    walk_files,
)

if TYPE_CHECKING:
    from pyiceberg.manifest import DataFile
    from pyiceberg.table import Table

    from spendstream.warehouse.landing import Warehouse

__all__ = [
    "CompactionSummary",
    "compact",
    "expire_oldest",
    "expire_snapshots",
    "remove_orphans",
    "rewrite_facts",
]

MAINTENANCE_WRITER = "maintenance"


@dataclass(slots=True)
class CompactionSummary:
    partitions: int = 0
    files_in: int = 0
    files_out: int = 0
    rows: int = 0
    snapshots_expired: int = 0
    orphans_deleted: int = 0
    outboxes_finished: int = 0
    retries: int = 0
    skipped: list[str] = field(default_factory=list)


def _partition_key(f: DataFile) -> object:
    return f.partition[0] if len(f.partition) else None


def _read(wh: Warehouse, files: Sequence[DataFile], name: str) -> pa.Table:
    import pyarrow.parquet as pq

    schema = TABLE_SCHEMAS[name]
    parts = []
    for f in files:
        t = pq.read_table(wh.storage.to_fs_path(f.file_path), filesystem=wh.fs)
        cols = [
            t[c].cast(schema.field(c).type)
            if c in t.column_names
            else pa.nulls(len(t), schema.field(c).type)
            for c in schema.names
        ]
        parts.append(pa.table(cols, schema=schema))
    return pa.concat_tables(parts) if parts else schema.empty_table()


def _replace(
    wh: Warehouse, name: str, old: Sequence[DataFile], new: pa.Table, summary: CompactionSummary
) -> bool:
    """Swap ``old`` files for ``new`` rows in one snapshot; False if ``old`` changed meanwhile."""
    from pyiceberg.exceptions import CommitFailedException

    new_files = wh._write_files(name, new) if len(new) else []
    old_paths = {f.file_path for f in old}
    tbl = wh.tables.load(name)
    for attempt in range(wh.config.commit_retries + 1):
        live = {f.file_path for f in wh.manifests.live_files(tbl)}
        if not old_paths <= live:
            wh._delete_files(new_files)
            return False
        head = tbl.current_snapshot()
        props = {**sn.carried(head), sn.WRITER: MAINTENANCE_WRITER}
        tx = tbl.transaction()
        with tx.update_snapshot(snapshot_properties=props).overwrite() as rewrite:
            for f in old:
                rewrite.delete_data_file(f)
            for f in new_files:
                rewrite.append_data_file(f)
        try:
            wh.tables.remember(name, tx.commit_transaction())
            return True
        except CommitFailedException:
            summary.retries += 1
            wh._backoff(attempt)
            tbl = wh.tables.load(name)
    wh._delete_files(new_files)
    raise CommitConflict(f"compaction of {name} lost to other writers too often")


def compact(
    wh: Warehouse,
    min_files: int = 2,
    retention_s: float | None = None,
    orphan_grace_s: float | None = None,
) -> CompactionSummary:
    """Compact every table's small files, expire old snapshots, delete orphan files."""
    summary = CompactionSummary()
    summary.outboxes_finished = wh.finish_outboxes()
    for name in (*EVENT_TABLES, "revenue"):
        tbl = wh.tables.load(name)
        groups: dict[object, list[DataFile]] = defaultdict(list)
        for f in wh.manifests.live_files(tbl):
            groups[_partition_key(f)].append(f)
        for part, files in sorted(groups.items(), key=lambda kv: str(kv[0])):
            if len(files) < min_files:
                continue
            data = _read(wh, files, name)
            column = PARTITION_COLUMN.get(name)
            if column is not None:
                data = data.sort_by(column)
            try:
                replaced = _replace(wh, name, files, data, summary)
            except CommitConflict:
                # Writers kept winning the race: leave this partition for the next run (its
                # files stay live; the rewritten ones are orphans the sweep deletes).
                summary.skipped.append(f"{name} partition {part}: lost to writers, try again")
                continue
            if replaced:
                summary.partitions += 1
                summary.files_in += len(files)
                summary.files_out += 1
                summary.rows += len(data)
            else:
                summary.skipped.append(f"{name} partition {part}: rewritten meanwhile")
    retention = wh.config.snapshot_retention_s if retention_s is None else retention_s
    grace = wh.config.orphan_grace_s if orphan_grace_s is None else orphan_grace_s
    for name in (*EVENT_TABLES, "revenue"):
        summary.snapshots_expired += expire_snapshots(wh, name, retention)
        summary.orphans_deleted += remove_orphans(wh, name, grace)
    wh.publish_current()
    return summary


def expire_snapshots(wh: Warehouse, name: str, retention_s: float) -> int:
    """Remove snapshots older than ``retention_s`` (the current one always stays)."""
    for attempt in range(wh.config.commit_retries + 1):
        tbl = wh.tables.load(name)
        head = tbl.current_snapshot()
        cutoff_ms = (time.time() - retention_s) * 1000
        old = [
            s.snapshot_id
            for s in tbl.metadata.snapshots
            if s.timestamp_ms < cutoff_ms and (head is None or s.snapshot_id != head.snapshot_id)
        ]
        if not old:
            return 0
        expired = _expired(tbl, old)
        if expired is not None:
            return expired
        wh._backoff(attempt)
    raise CommitConflict(f"snapshot expiry of {name} lost to other writers too often")


def expire_oldest(wh: Warehouse, name: str, keep: int, above: int) -> int:
    """When the table holds more than ``above`` snapshots, expire all but the newest ``keep``."""

    for attempt in range(wh.config.commit_retries + 1):
        tbl = wh.tables.load(name)
        snaps = sorted(tbl.metadata.snapshots, key=lambda s: s.timestamp_ms)
        if len(snaps) <= above:
            return 0
        head = tbl.current_snapshot()
        old = [
            s.snapshot_id
            for s in snaps[:-keep]
            if head is None or s.snapshot_id != head.snapshot_id
        ]
        expired = _expired(tbl, old)
        if expired is not None:
            return expired
        wh._backoff(attempt)
    return 0  # others kept committing: the next check tries again


def _expired(tbl: Table, ids: list[int]) -> int | None:
    """Expire ``ids`` (but a branch's or tag's head) in one commit: how many; None when
    another commit got in first (try again).

    An expiry requires only the same table: the catalog applies it to the table's newest
    metadata, where another expirer (a writer past ``max_snapshots``, a ``compact``) may
    already have removed some of these snapshots; pyiceberg then raises ValueError, a lost
    race like any."""
    from pyiceberg.exceptions import CommitFailedException
    from pyiceberg.table.update import AssertTableUUID, RemoveSnapshotsUpdate

    # One update built here: pyiceberg's ExpireSnapshots deep-copies the whole metadata twice
    # per id it is given (~5% of a worker's CPU, a writer expiring 64 at a time).
    meta = tbl.metadata
    protected = {ref.snapshot_id for ref in meta.refs.values()}
    known = {s.snapshot_id for s in meta.snapshots}
    ids = [i for i in ids if i in known and i not in protected]
    if not ids:
        return 0
    try:
        response = tbl.catalog.commit_table(
            tbl,
            (AssertTableUUID(uuid=meta.table_uuid),),
            (RemoveSnapshotsUpdate(snapshot_ids=ids),),  # type: ignore[call-arg]
        )
    except CommitFailedException:
        return None
    except ValueError as exc:
        if "does not exist" not in str(exc):
            raise
        return None
    with contextlib.suppress(Exception):  # best effort, as pyiceberg does; compact sweeps
        tbl.catalog._delete_old_metadata(tbl.io, meta, response.metadata)
    return len(ids)


def _referenced(wh: Warehouse, tbl: Table) -> set[str]:
    """Every file the table's metadata, retained snapshots and writer records refer to."""
    refs = {tbl.metadata_location}
    refs.update(entry.metadata_file for entry in tbl.metadata.metadata_log)
    for snap in tbl.metadata.snapshots:
        refs.add(snap.manifest_list)
        for manifest in snap.manifests(tbl.io):
            refs.add(manifest.manifest_path)
            for entry in manifest.fetch_manifest_entry(tbl.io, discard_deleted=False):
                refs.add(entry.data_file.file_path)
        summary = sn.summary_of(snap)
        for key, value in summary.items():
            if key.startswith(sn.key("record", "")):
                refs.add(value)
                if tbl.name()[-1] == "usage_facts":
                    header, _ = wh._read_record(value)
                    for paths in header.get("outbox", {}).values():
                        refs.update(paths)
    return {sn_path(wh, r) for r in refs}


def sn_path(wh: Warehouse, uri: str) -> str:
    return wh.storage.to_fs_path(uri)


def remove_orphans(wh: Warehouse, name: str, grace_s: float) -> int:
    """Delete unreferenced files under the table's location older than ``grace_s``."""
    tbl = wh.tables.load(name)
    refs = _referenced(wh, tbl)
    if name == "usage_facts":
        # Outbox files are listed in the facts table's records, but live under the other
        # tables: keep every file a facts record names wherever it is.
        pass
    else:
        facts = wh.tables.load("usage_facts")
        refs |= _referenced(wh, facts)
    cutoff_ns = (time.time() - grace_s) * 1e9
    deleted = 0
    base = wh.storage.to_fs_path(tbl.location())
    for info in walk_files(wh.fs, base):
        if info.path in refs or "/data/_schema/" in info.path:
            continue
        if info.mtime_ns is not None and info.mtime_ns > cutoff_ns:
            continue
        try:
            wh.fs.delete_file(info.path)
            deleted += 1
        except OSError:
            pass
    return deleted


def rewrite_facts(wh: Warehouse, facts: pa.Table) -> int:
    """Replace stored usage_facts rows by event_id; returns how many were replaced.

    Each affected day is rewritten in one ``overwrite`` snapshot (like compaction); facts
    whose event_id never landed are ignored.
    """
    from spendstream.warehouse.dedupe import epoch_days

    if not len(facts):
        return 0
    summary = CompactionSummary()
    days = epoch_days(facts["ts"])
    replaced = 0
    tbl = wh.tables.load("usage_facts")
    by_day: dict[object, list[DataFile]] = defaultdict(list)
    for f in wh.manifests.live_files(tbl):
        by_day[_partition_key(f)].append(f)
    for day in sorted(set(days.tolist())):
        files = by_day.get(day, [])
        if not files:
            continue
        mine = facts.filter(pa.array(days == day))
        stored = _read(wh, files, "usage_facts")
        hit = pc.is_in(mine["event_id"], value_set=stored["event_id"])
        new = mine.filter(hit)
        if not len(new):
            continue
        if DIGEST_COLUMN not in new.column_names:  # a fact keeps its content digest
            where = pc.index_in(new["event_id"], value_set=stored["event_id"])
            new = new.append_column(DIGEST_COLUMN, stored[DIGEST_COLUMN].take(where))
        keep = stored.filter(pc.invert(pc.is_in(stored["event_id"], value_set=new["event_id"])))
        merged = pa.concat_tables([keep, new.select(keep.schema.names).cast(keep.schema)])
        if not _replace(wh, "usage_facts", files, merged.sort_by("ts"), summary):
            raise CommitConflict(f"day {day} of usage_facts was rewritten meanwhile; run again")
        replaced += len(new)
    wh.publish_current(["usage_facts"])
    return replaced
