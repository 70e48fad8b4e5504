"""Facts' data files written ahead of their commit (warehouse/prewrite.py): the commit lands
exactly those files when every fact is still new, and otherwise (or without a commit) they
are deleted: no file is landed twice, and none is left behind."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from spendstream.table_schemas import facts_table
from spendstream.warehouse import CONFLICT, DUPLICATE, NEW, Warehouse
from tests.warehouse.conftest import Query
from tests.warehouse.factories import T0, fact


def _on_disk(wh: Warehouse) -> set[str]:
    """The facts table's data files in its data directory (the views' schema file aside)."""
    root = Path(wh.tables.table("usage_facts").location().removeprefix("file://")) / "data"
    return {str(p) for p in root.rglob("*.parquet") if "_schema" not in p.parts}


def _landed(wh: Warehouse) -> set[str]:
    """The data files the facts table's current snapshot names."""
    tbl = wh.tables.load("usage_facts")
    return {t.file.file_path.removeprefix("file://") for t in tbl.scan().plan_files()}


def _paths(files: list) -> set[str]:  # type: ignore[type-arg]
    return {f.file_path.removeprefix("file://") for f in files}


def test_a_commit_lands_the_files_written_ahead_with_their_digests(
    wh: Warehouse, workdir: Path, q: Query
) -> None:
    before = wh.commit(facts=[fact()])  # a table with a history: the write gets none of it
    facts = facts_table([fact(), fact(), fact(ts=T0.replace(day=2))])
    digests = pa.array([b"a" * 16, b"b" * 16, b"c" * 16], pa.binary(16))
    ahead = wh.prewrite(facts, digests)
    result = wh.commit(facts, digests=digests, prewritten=ahead)
    assert (before.facts, result.facts) == (1, 3)
    written = _paths(ahead.take())
    assert written and _landed(wh) - written == _on_disk(wh) - written != set()
    assert written <= _landed(wh)
    assert q("SELECT count(*) FROM usage_facts") == [(4,)]
    # The digests are in the files written ahead: a writer reading them back (not this
    # one's memory) knows the same id with other content for a conflict.
    landed = dict(q("SELECT event_id, event_digest FROM usage_facts"))
    assert [landed[i] for i in facts["event_id"].to_pylist()] == digests.to_pylist()
    ids = facts["event_id"].take(pa.array([0, 0]))
    ts = facts["ts"].take(pa.array([0, 0]))
    with Warehouse(workdir, writer="another") as other:
        codes = other.classify(ids, ts, pa.array([b"a" * 16, b"x" * 16], pa.binary(16)))
    assert codes.tolist() == [DUPLICATE, CONFLICT]


def test_files_written_ahead_of_facts_landed_meanwhile_are_deleted(wh: Warehouse, q: Query) -> None:
    a, b = fact(), fact()
    facts = facts_table([a, b])
    ahead = wh.prewrite(facts)
    wh.commit(facts=[a])  # a lands first (a replay, or another writer)
    result = wh.commit(facts, prewritten=ahead)  # its write may still be running
    written = _paths(ahead._future.result())
    assert written
    assert (result.facts, result.duplicates) == (1, 1)
    assert not written & _on_disk(wh)
    assert _landed(wh) == _on_disk(wh)
    assert q("SELECT event_id, count(*) FROM usage_facts GROUP BY ALL ORDER BY ALL") == [
        (a.event.event_id, 1),
        (b.event.event_id, 1),
    ]


def test_files_written_ahead_of_other_objects_are_not_landed(wh: Warehouse, q: Query) -> None:
    rows = [fact(), fact()]
    ahead = wh.prewrite(facts_table(rows))
    written = _paths(ahead._future.result())
    # The same rows, but not the table the files were written from: the commit cannot know
    # they are the same, so it writes its own.
    result = wh.commit(facts_table(rows), prewritten=ahead)
    assert result.facts == 2
    assert not written & _on_disk(wh)
    assert _landed(wh) == _on_disk(wh) != set()
    assert q("SELECT count(*) FROM usage_facts") == [(2,)]


def test_a_discarded_write_ahead_leaves_no_file_and_classifies_nothing(wh: Warehouse) -> None:
    facts = facts_table([fact()])
    ahead = wh.prewrite(facts)
    ahead.discard()
    ahead.discard()  # idempotent
    assert _on_disk(wh) == set()
    assert wh.classify(facts["event_id"], facts["ts"]).tolist() == [NEW]
