"""Writers merge small manifests, as Iceberg's merge-append does (warehouse/appending.py):
a snapshot lists few manifests however many commits made it, and every file keeps its
snapshot id and sequence numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pyiceberg.manifest import ManifestEntryStatus

from spendstream.warehouse import Warehouse
from spendstream.warehouse import snapshots as sn
from spendstream.warehouse.appending import merge_settings
from tests.warehouse.conftest import Query
from tests.warehouse.factories import T0, days, fact


def _entries(wh: Warehouse) -> dict[str, tuple[Any, ...]]:
    """file path -> (status, snapshot id, data and file sequence numbers) in the head."""
    tbl = wh.tables.load("usage_facts")
    head = tbl.current_snapshot()
    assert head is not None
    return {
        e.data_file.file_path: (e.status, e.snapshot_id, e.sequence_number, e.file_sequence_number)
        for m in head.manifests(tbl.io)
        for e in m.fetch_manifest_entry(tbl.io, discard_deleted=True)
    }


def _unreferenced_manifests(wh: Warehouse) -> set[str]:
    """Manifest files under the table's metadata that no snapshot lists (the merge commit's
    own manifest, merged into another, must not be left behind)."""
    tbl = wh.tables.load("usage_facts")
    listed = {
        m.manifest_path.removeprefix("file://")
        for snap in tbl.metadata.snapshots
        for m in snap.manifests(tbl.io)
    }
    root = Path(tbl.location().removeprefix("file://")) / "metadata"
    return {str(p) for p in root.glob("*-m*.avro")} - listed


def _manifests(wh: Warehouse) -> int:
    tbl = wh.tables.load("usage_facts")
    head = tbl.current_snapshot()
    return 0 if head is None else len(head.manifests(tbl.io))


def test_iceberg_defaults_unless_the_table_says_otherwise() -> None:
    assert merge_settings({}) == (100, 8 * 1024 * 1024)
    assert merge_settings(
        {"commit.manifest.min-count-to-merge": "5", "commit.manifest.target-size-bytes": "1000"}
    ) == (5, 1000)
    # A mistyped property is ignored rather than failing every commit.
    bad = {"commit.manifest.min-count-to-merge": "lots", "commit.manifest.target-size-bytes": "0"}
    assert merge_settings(bad) == (100, 8 * 1024 * 1024)


def test_manifests_merge_at_the_minimum_count_keeping_each_files_history(
    wh: Warehouse, q: Query
) -> None:
    tbl = wh.tables.table("usage_facts")
    tbl.transaction().set_properties(
        {"commit.manifest.min-count-to-merge": "5"}
    ).commit_transaction()
    wh.tables.load("usage_facts")
    counts = []
    for _ in range(4):
        wh.commit(facts=[fact()])
        counts.append(_manifests(wh))
    before = _entries(wh)
    assert counts == [1, 2, 3, 4]  # one manifest per commit, below the minimum
    wh.commit(facts=[fact()])  # the fifth: all five merge into one
    after = _entries(wh)
    assert _manifests(wh) == 1
    head = wh.tables.load("usage_facts").current_snapshot()
    assert head is not None
    (new,) = set(after) - set(before)
    # The earlier files are carried as existing, with their own snapshot and sequence
    # numbers; this commit's file is added by it.
    assert {p: after[p][1:] for p in before} == {p: v[1:] for p, v in before.items()}
    assert {after[p][0] for p in before} == {ManifestEntryStatus.EXISTING}
    assert after[new] == (ManifestEntryStatus.ADDED, head.snapshot_id, *[head.sequence_number] * 2)
    # What other writers catch up with (the files a snapshot added) is this commit's alone.
    assert [f.file_path for f in sn.added_files(wh.tables.load("usage_facts"), head)] == [new]
    for _ in range(3):
        wh.commit(facts=[fact()])
    assert _manifests(wh) == 4  # the merged one and three new: below the minimum again
    assert q("SELECT count(*), count(DISTINCT event_id) FROM usage_facts") == [(8, 8)]
    assert _unreferenced_manifests(wh) == set()
    # Another writer resumes from the merged head and commits on top of it.
    with Warehouse(wh.workdir, writer="another") as other:
        assert other.commit(facts=[fact()]).facts == 1
    assert q("SELECT count(*) FROM usage_facts") == [(9,)]


def test_a_manifest_left_listing_only_existing_files_stays_in_later_commits(
    wh: Warehouse, q: Query
) -> None:
    # One commit lands a fact on each of two days: one manifest, two files. Compacting the
    # first day rewrites that manifest to list the second day's file as existing, no longer
    # as added; every later commit must still list it.
    wh.commit(facts=[fact(T0), fact(T0 + days(1))])
    wh.commit(facts=[fact(T0)])
    assert wh.compact(min_files=2).partitions == 1
    wh.commit(facts=[fact(T0 + days(2))])
    with Warehouse(wh.workdir, writer="another") as other:
        assert other.commit(facts=[fact(T0 + days(3))]).facts == 1
    wh.publish_current()
    assert q("SELECT count(*), count(DISTINCT event_id) FROM usage_facts") == [(5, 5)]


def test_manifests_merge_in_bins_of_the_target_size_keeping_the_list_short(
    wh: Warehouse, q: Query
) -> None:
    # A target size of about two manifests: bins of two or three merge even though each
    # holds fewer than the minimum count (only the bin with this commit's manifest waits
    # for that); the list never grows past the minimum.
    tbl = wh.tables.table("usage_facts")
    tbl.transaction().set_properties(
        {"commit.manifest.min-count-to-merge": "4", "commit.manifest.target-size-bytes": "20000"}
    ).commit_transaction()
    wh.tables.load("usage_facts")
    counts = []
    for _ in range(12):
        wh.commit(facts=[fact()])
        counts.append(_manifests(wh))
    assert max(counts) <= 4, counts
    assert q("SELECT count(*), count(DISTINCT event_id) FROM usage_facts") == [(12, 12)]
    assert _unreferenced_manifests(wh) == set()
