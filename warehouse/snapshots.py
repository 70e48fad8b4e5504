"""What spendstream keeps in Iceberg snapshot summaries, and reading a snapshot's files.

Summary keys (strings, like every Iceberg summary property):

* ``spendstream.writer`` / ``spendstream.seq``: who made this snapshot, and its commit number.
* ``spendstream.seq.<writer>``: the last commit number of each writer this table has seen;
  on the facts table it says which commit holds the writer's positions and state, on the
  other tables which commit's rows (the writer's *outbox*) are in.
* ``spendstream.positions.<writer>`` (facts only): the writer's source positions, JSON.
* ``spendstream.record.<writer>`` (facts only): the file holding the writer's state and outbox.

Every snapshot copies the ``.<writer>`` keys of its parent forward (``carried``), so the
current snapshot alone answers "where is each writer" — a restart reads one summary, and
expiring old snapshots can never lose a position.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

if TYPE_CHECKING:
    from pyiceberg.manifest import DataFile
    from pyiceberg.table import Table
    from pyiceberg.table.snapshots import Snapshot

    from spendstream.warehouse.tables import Storage

__all__ = [
    "MANIFESTS",
    "SEQ",
    "WRITER",
    "ManifestCache",
    "added_files",
    "ancestors_until",
    "appended_by_others",
    "carried",
    "key",
    "positions_of",
    "read_columns",
    "read_columns_full",
    "seq_of",
    "summary_of",
    "to_json",
    "writers_in",
]

PREFIX = "spendstream."
WRITER = PREFIX + "writer"
SEQ = PREFIX + "seq"
_CARRIED = (PREFIX + "seq.", PREFIX + "positions.", PREFIX + "record.")


def key(kind: str, writer: str) -> str:
    """``spendstream.<kind>.<writer>`` (kind: seq, positions or record)."""
    return f"{PREFIX}{kind}.{writer}"


def summary_of(snapshot: Snapshot | None) -> dict[str, str]:
    if snapshot is None or snapshot.summary is None:
        return {}
    return {k: str(v) for k, v in snapshot.summary.additional_properties.items()}


def carried(snapshot: Snapshot | None) -> dict[str, str]:
    """The per-writer keys a new snapshot copies forward from its parent."""
    return {k: v for k, v in summary_of(snapshot).items() if k.startswith(_CARRIED)}


def seq_of(summary: Mapping[str, str], writer: str) -> int:
    return int(summary.get(key("seq", writer), 0))


def positions_of(summary: Mapping[str, str], writer: str) -> dict[str, int] | None:
    raw = summary.get(key("positions", writer))
    return None if raw is None else {str(k): int(v) for k, v in json.loads(raw).items()}


def writers_in(summary: Mapping[str, str]) -> list[str]:
    prefix = key("seq", "")
    return sorted(k[len(prefix) :] for k in summary if k.startswith(prefix))


@dataclass
class _TableManifests:
    files: dict[str, list[DataFile]] = field(default_factory=dict)  # by manifest path
    newest: int = -1  # sequence number of the newest snapshot listed


class ManifestCache:
    """Live data files per manifest: manifests never change, so each is read once per
    process, whichever of its writers asks (``MANIFESTS``; thread-safe).

    Kept per table: listing a table's newest snapshot so far forgets its manifests that
    snapshot no longer has (compaction rewrote them); an older snapshot (a writer that has
    not reloaded the head) only adds. (One pool for every table forgot the facts table's
    manifests each time a small table was listed, and read them all again at the next
    commit.) Manifests are read outside the lock, so one slow read (S3, a large manifest)
    holds up no other listing. Tables not listed for the longest go beyond ``tables``.
    """

    def __init__(self, tables: int = 32) -> None:
        self.tables = tables
        self._by_table: OrderedDict[str, _TableManifests] = OrderedDict()
        self._lock = threading.Lock()
        self.reads = 0  # manifests read (for tests and profiling)

    def live_files(self, table: Table) -> list[DataFile]:
        snapshot = table.current_snapshot()
        if snapshot is None:
            return []
        manifests = snapshot.manifests(table.io)
        key = str(table.metadata.table_uuid)
        with self._lock:
            entry = self._by_table.pop(key, None) or _TableManifests()
            self._by_table[key] = entry  # most recently listed last
            while len(self._by_table) > self.tables:
                self._by_table.popitem(last=False)
            known = {m.manifest_path: entry.files.get(m.manifest_path) for m in manifests}
        read = {
            m.manifest_path: [
                e.data_file for e in m.fetch_manifest_entry(table.io, discard_deleted=True)
            ]
            for m in manifests
            if known[m.manifest_path] is None
        }
        seq = snapshot.sequence_number or 0
        with self._lock:
            self.reads += len(read)
            entry.files.update(read)
            if seq >= entry.newest:
                entry.newest = seq
                for path in [p for p in entry.files if p not in known]:
                    del entry.files[path]
        out: list[DataFile] = []
        for m in manifests:
            files = known[m.manifest_path]
            out.extend(files if files is not None else read[m.manifest_path])
        return out


MANIFESTS = ManifestCache()


def added_files(table: Table, snapshot: Snapshot) -> list[DataFile]:
    """The data files ``snapshot`` added (not those it carried from its parent)."""
    from pyiceberg.manifest import ManifestEntryStatus

    out = []
    for manifest in snapshot.manifests(table.io):
        if manifest.added_snapshot_id != snapshot.snapshot_id:
            continue
        for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
            if (
                entry.status == ManifestEntryStatus.ADDED
                and entry.snapshot_id == snapshot.snapshot_id
            ):
                out.append(entry.data_file)
    return out


def ancestors_until(table: Table, stop: int | None) -> Iterator[Snapshot]:
    """Snapshots from the head back to (not including) ``stop``; all of them if ``stop`` is None."""
    snapshot = table.current_snapshot()
    while snapshot is not None and snapshot.snapshot_id != stop:
        yield snapshot
        if snapshot.parent_snapshot_id is None:
            return
        snapshot = table.metadata.snapshot_by_id(snapshot.parent_snapshot_id)


def appended_by_others(
    table: Table, since: int | None, writer: str | None, mine: Collection[tuple[str, int]] = ()
) -> list[str] | None:
    """Data files other writers appended after snapshot ``since``, oldest first; None when
    ``since`` is no longer in the table's history (expired: the caller reads the table anew).

    Only ``append`` snapshots count: compaction and repricing rewrite rows, adding no key;
    ``writer``'s own commits are skipped (it records its keys as they land), and so are the
    commits ``mine`` names by (writer, commit number) (None: only those)."""
    chain = list(ancestors_until(table, since))
    if chain and chain[-1].parent_snapshot_id != since:
        return None
    paths: list[str] = []
    for snap in reversed(chain):
        if snap.summary is None or snap.summary.operation.value != "append":
            continue
        summary = summary_of(snap)
        who = summary.get(WRITER)
        if who is not None and (who == writer or (who, seq_of(summary, who)) in mine):
            continue
        paths.extend(f.file_path for f in added_files(table, snap))
    return paths


def read_columns(storage: Storage, paths: Iterable[str], columns: list[str]) -> pa.Table:
    """The given columns of these data files, concatenated (columns a file lacks are null)."""
    fs = storage.filesystem()
    parts = []
    for path in paths:
        with fs.open_input_file(storage.to_fs_path(path)) as fh:
            pf = pq.ParquetFile(fh)
            present = [c for c in columns if c in pf.schema_arrow.names]
            t = pf.read(columns=present)
        cols = {}
        for c in columns:
            cols[c] = t[c] if c in t.column_names else pa.nulls(len(t), pa.string())
        parts.append(pa.table(cols))
    if not parts:
        return pa.table({c: pa.array([], pa.string()) for c in columns})
    return pa.concat_tables(parts, promote_options="permissive")


def read_columns_full(storage: Storage, paths: Iterable[str], table: str) -> pa.Table:
    """Every column of these data files, in the table's Arrow schema."""
    from spendstream.warehouse.tables import TABLE_SCHEMAS

    schema = TABLE_SCHEMAS[table]
    t = read_columns(storage, paths, schema.names)
    return pa.table(
        [t[n].cast(f.type) if n in t.column_names else pa.nulls(len(t), f.type)
         for n, f in zip(schema.names, schema, strict=True)],
        schema=schema,
    )  # fmt: skip


def to_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)
