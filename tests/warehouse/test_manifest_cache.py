"""Live data files listed from manifests read once per process (``snapshots.MANIFESTS``)."""

from __future__ import annotations

from pathlib import Path

from spendstream.warehouse import Warehouse
from spendstream.warehouse import snapshots as sn
from tests.warehouse.factories import alert, fact


def test_listing_one_table_does_not_forget_another_tables_manifests(workdir: Path) -> None:
    wh = Warehouse(workdir, writer="usage/0")
    for i in range(4):
        wh.commit(facts=[fact()], alerts=[alert()], positions={"usage/0": i})
    cache = sn.ManifestCache()
    facts, alerts = wh.tables.load("usage_facts"), wh.tables.load("alerts")
    assert len(cache.live_files(facts)) == 4
    assert len(cache.live_files(alerts)) == 4
    reads = cache.reads
    # Each commit publishes the facts and the alerts file lists: nothing is read again.
    assert len(cache.live_files(facts)) == 4 and len(cache.live_files(alerts)) == 4
    assert cache.reads == reads
    wh.close()


def test_writers_of_a_process_share_what_was_read(workdir: Path) -> None:
    a = Warehouse(workdir, writer="usage/0")
    b = Warehouse(workdir, writer="usage/1")
    a.commit(facts=[fact()], positions={"usage/0": 1})
    b.commit(facts=[fact()], positions={"usage/1": 1})
    assert a.manifests is b.manifests is sn.MANIFESTS
    listed = {f.file_path for f in a.manifests.live_files(a.tables.load("usage_facts"))}
    reads = sn.MANIFESTS.reads
    assert {f.file_path for f in b.manifests.live_files(b.tables.load("usage_facts"))} == listed
    assert sn.MANIFESTS.reads == reads and len(listed) == 2
    a.close()
    b.close()


def test_a_manifest_compaction_replaced_is_forgotten(workdir: Path) -> None:
    wh = Warehouse(workdir, writer="usage/0")
    for i in range(3):
        wh.commit(facts=[fact()], positions={"usage/0": i})
    cache = sn.ManifestCache()
    before = {f.file_path for f in cache.live_files(wh.tables.load("usage_facts"))}
    wh.compact(min_files=2)
    after = {f.file_path for f in cache.live_files(wh.tables.load("usage_facts"))}
    assert len(before) == 3 and len(after) == 1 and not before & after
    key = str(wh.tables.load("usage_facts").metadata.table_uuid)
    assert sum(len(v) for v in cache._by_table[key].files.values()) == 1
    wh.close()


def test_tables_listed_least_recently_go_past_the_bound(workdir: Path) -> None:
    wh = Warehouse(workdir, writer="usage/0")
    wh.commit(facts=[fact()], alerts=[alert()], positions={"usage/0": 1})
    cache = sn.ManifestCache(tables=1)
    cache.live_files(wh.tables.load("usage_facts"))
    cache.live_files(wh.tables.load("alerts"))
    assert list(cache._by_table) == [str(wh.tables.load("alerts").metadata.table_uuid)]
    wh.close()


def test_a_writer_holding_an_older_head_does_not_make_the_others_read_again(
    workdir: Path,
) -> None:
    a = Warehouse(workdir, writer="usage/0")
    b = Warehouse(workdir, writer="usage/1")
    a.commit(facts=[fact()], positions={"usage/0": 1})
    older = b.tables.load("usage_facts")  # b holds this head while a commits on
    for i in range(2, 5):
        a.commit(facts=[fact()], positions={"usage/0": i})
    newer = a.tables.load("usage_facts")
    cache = sn.ManifestCache()
    assert len(cache.live_files(newer)) == 4
    reads = cache.reads
    assert len(cache.live_files(older)) == 1  # lists what that snapshot had
    assert len(cache.live_files(newer)) == 4
    assert cache.reads == reads  # nothing read again, either way
    a.close()
    b.close()


def test_listing_the_head_again_forgets_what_an_older_snapshot_added(workdir: Path) -> None:
    """A writer still at the head before a compaction adds the manifests it replaced; the
    next listing of the newest head forgets them again (the cache holds one head's worth)."""
    wh = Warehouse(workdir, writer="usage/0")
    for i in range(3):
        wh.commit(facts=[fact()], positions={"usage/0": i})
    other = Warehouse(workdir, writer="usage/1")
    older = other.tables.load("usage_facts")  # other holds this head while wh compacts
    wh.compact(min_files=2)
    newer = wh.tables.load("usage_facts")
    head = newer.current_snapshot()
    assert head is not None
    cache = sn.ManifestCache()
    cache.live_files(newer)
    assert len(cache.live_files(older)) == 3
    held = cache._by_table[str(newer.metadata.table_uuid)].files
    assert len(held) > len(head.manifests(newer.io))
    assert len(cache.live_files(newer)) == 1
    assert set(held) == {m.manifest_path for m in head.manifests(newer.io)}
    wh.close()
    other.close()
