"""One Iceberg fast-append commit, built directly: a manifest of the new files, a manifest list
(new manifest + the parent's), one snapshot, and one compare-and-swap through the catalog.

Each commit adds a manifest, and every commit reads and rewrites the list of them: without
merging, a writer committing every batch made each commit slower than the last (in a
10M-event run, lists of 500+ manifests held Python's lock ~6% of a worker's time). So once a snapshot would list
``commit.manifest.min-count-to-merge`` manifests (100), small ones are merged into manifests
of up to ``commit.manifest.target-size-bytes`` (8 MB), as Iceberg's merge-append does: their
live entries carried over as existing, with their snapshot ids and sequence numbers.

pyiceberg's ``Transaction`` re-derives (deep-copies) the whole table metadata a dozen times
per append; with a history of snapshots that was most of a commit's time (bench/RESULTS.md).
This builds exactly what ``_FastAppendFiles`` builds, with the metadata read once: the same
requirements (table uuid, ``main`` still at the parent), so a concurrent commit still fails
with ``CommitFailedException`` and nothing is half-applied.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyiceberg.manifest import DataFile, ManifestFile, ManifestWriter
    from pyiceberg.table import Table

__all__ = ["fast_append", "merge_settings"]

# Iceberg's defaults for commit.manifest.min-count-to-merge and
# commit.manifest.target-size-bytes (table properties override them).
MIN_COUNT_TO_MERGE = 100
TARGET_MANIFEST_BYTES = 8 * 1024 * 1024


def fast_append(table: Table, files: Sequence[DataFile], properties: Mapping[str, str]) -> Table:
    """Append ``files`` in one snapshot whose summary carries ``properties``; returns the table
    as committed. Raises ``CommitFailedException`` if ``main`` moved since ``table`` was read."""
    from pyiceberg.manifest import (
        ManifestEntry,
        ManifestEntryStatus,
        write_manifest_list,
    )
    from pyiceberg.table import Table as IcebergTable
    from pyiceberg.table import TableProperties
    from pyiceberg.table.refs import MAIN_BRANCH, SnapshotRefType
    from pyiceberg.table.snapshots import (
        Operation,
        Snapshot,
        SnapshotSummaryCollector,
        Summary,
        update_snapshot_summaries,
    )
    from pyiceberg.table.update import (
        AddSnapshotUpdate,
        AssertRefSnapshotId,
        AssertTableUUID,
        SetSnapshotRefUpdate,
    )

    meta = table.metadata
    io = table.io
    locations = table.location_provider()
    compression = meta.properties.get(
        TableProperties.WRITE_AVRO_COMPRESSION, TableProperties.WRITE_AVRO_COMPRESSION_DEFAULT
    )
    snapshot_id = meta.new_snapshot_id()
    parent = meta.current_snapshot()
    sequence_number = meta.next_sequence_number()
    commit_uuid = uuid.uuid4()
    spec, schema = meta.spec(), meta.schema()

    manifests = []
    new_path = None  # this commit's manifest of the new files
    if files:
        new_path = locations.new_metadata_location(f"{commit_uuid}-m0.avro")
        with _manifest_writer(table, new_path, snapshot_id, compression) as writer:
            for f in files:
                writer.add(
                    ManifestEntry.from_args(
                        status=ManifestEntryStatus.ADDED,
                        snapshot_id=snapshot_id,
                        sequence_number=None,
                        file_sequence_number=None,
                        data_file=f,
                    )
                )
        manifests.append(writer.to_manifest_file())
    if parent is not None:
        manifests.extend(
            m for m in parent.manifests(io) if m.has_added_files() or m.has_existing_files()
        )
    manifests, merged = _merged(table, manifests, snapshot_id, compression)
    list_path = locations.new_metadata_location(f"snap-{snapshot_id}-0-{commit_uuid}.avro")
    with write_manifest_list(
        format_version=meta.format_version,
        output_file=io.new_output(list_path),
        snapshot_id=snapshot_id,
        parent_snapshot_id=parent.snapshot_id if parent else None,
        sequence_number=sequence_number,
        avro_compression=compression,  # type: ignore[arg-type]
    ) as list_writer:
        list_writer.add_manifests(manifests)

    collector = SnapshotSummaryCollector()
    for f in files:
        collector.add_file(f, partition_spec=spec, schema=schema)
    summary = update_snapshot_summaries(
        summary=Summary(operation=Operation.APPEND, **collector.build(), **properties),
        previous_summary=parent.summary if parent else None,
    )
    # pyiceberg's models take these field names (populate_by_name) as its own code does.
    snapshot = Snapshot(  # type: ignore[call-arg]
        snapshot_id=snapshot_id,
        parent_snapshot_id=parent.snapshot_id if parent else None,
        manifest_list=list_path,
        sequence_number=sequence_number,
        summary=summary,
        schema_id=meta.current_schema_id,
    )
    updates = (
        AddSnapshotUpdate(snapshot=snapshot),
        SetSnapshotRefUpdate(  # type: ignore[call-arg]
            snapshot_id=snapshot_id,
            parent_snapshot_id=parent.snapshot_id if parent else None,
            ref_name=MAIN_BRANCH,
            type=SnapshotRefType.BRANCH,
        ),
    )
    requirements = (
        AssertTableUUID(uuid=meta.table_uuid),
        AssertRefSnapshotId(  # type: ignore[call-arg]
            snapshot_id=parent.snapshot_id if parent else None, ref=MAIN_BRANCH
        ),
    )
    from pyiceberg.exceptions import CommitFailedException

    try:
        response = table.catalog.commit_table(table, requirements, updates)
    except CommitFailedException:
        # What this attempt wrote is referenced by nothing; a file left is an orphan that
        # `warehouse compact` removes.
        for path in (list_path, *merged, *([new_path] if new_path else [])):
            with contextlib.suppress(OSError):
                io.delete(path)
        raise
    if new_path is not None and all(m.manifest_path != new_path for m in manifests):
        with contextlib.suppress(OSError):  # merged into another: nothing refers to it
            io.delete(new_path)
    # Best effort, as pyiceberg does; compaction's orphan sweep catches the rest.
    with contextlib.suppress(Exception):
        table.catalog._delete_old_metadata(io, meta, response.metadata)
    return IcebergTable(
        identifier=table.name(),
        metadata=response.metadata,
        metadata_location=response.metadata_location,
        io=io,
        catalog=table.catalog,
    )


def _manifest_writer(table: Table, path: str, snapshot_id: int, compression: str) -> ManifestWriter:
    """A manifest of the table's current spec and schema, written by snapshot ``snapshot_id``."""
    from pyiceberg.manifest import write_manifest

    meta = table.metadata
    return write_manifest(
        format_version=meta.format_version,
        spec=meta.spec(),
        schema=meta.schema(),
        output_file=table.io.new_output(path),
        snapshot_id=snapshot_id,
        avro_compression=compression,  # type: ignore[arg-type]
    )


def merge_settings(properties: Mapping[str, str]) -> tuple[int, int]:
    """(minimum count of manifests to merge, target size of a merged manifest in bytes).
    A value that is not a positive integer counts as unset: a mistyped table property must
    not fail every commit of every writer."""
    from pyiceberg.table import TableProperties

    def positive(key: str, default: int) -> int:
        try:
            value = int(properties.get(key, default))
        except ValueError:
            return default
        return value if value > 0 else default

    return (
        positive(TableProperties.MANIFEST_MIN_MERGE_COUNT, MIN_COUNT_TO_MERGE),
        positive(TableProperties.MANIFEST_TARGET_SIZE_BYTES, TARGET_MANIFEST_BYTES),
    )


def _merged(
    table: Table, manifests: list[ManifestFile], snapshot_id: int, compression: str
) -> tuple[list[ManifestFile], list[str]]:
    """``manifests`` (this commit's first, if it has one) with bins of small ones merged, as
    pyiceberg's ``_ManifestMergeManager`` bins them; and the paths of the merged manifests
    written (deleted again if the commit fails)."""
    from pyiceberg.manifest import ManifestEntryStatus
    from pyiceberg.utils.bin_packing import ListPacker

    meta, io = table.metadata, table.io
    min_count, target = merge_settings(meta.properties)
    if len(manifests) < min_count:
        return manifests, []
    spec = meta.spec()
    first = manifests[0]
    # Only manifests of the current partition spec merge; others stay as they are.
    same = [m for m in manifests if m.partition_spec_id == spec.spec_id]
    out = [m for m in manifests if m.partition_spec_id != spec.spec_id]
    written: list[str] = []
    packer: ListPacker[ManifestFile] = ListPacker(target, lookback=1, largest_bin_first=False)
    for group in packer.pack_end(same, lambda m: m.manifest_length):
        if len(group) == 1 or (first in group and len(group) < min_count):
            out.extend(group)
            continue
        path = table.location_provider().new_metadata_location(f"{uuid.uuid4()}-m0.avro")
        with _manifest_writer(table, path, snapshot_id, compression) as writer:
            for manifest in group:
                for entry in manifest.fetch_manifest_entry(io, discard_deleted=True):
                    if entry.status == ManifestEntryStatus.ADDED and (
                        entry.snapshot_id == snapshot_id
                    ):
                        writer.add(entry)  # this commit's own files stay added
                    else:
                        writer.existing(entry)
        written.append(path)
        out.append(writer.to_manifest_file())
    # This commit's manifest first, as Iceberg lists it.
    out.sort(key=lambda m: m.added_snapshot_id != snapshot_id)
    return out, written
