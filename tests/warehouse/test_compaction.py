"""Compaction: fewer files, the same rows, never a row seen twice, even while it runs."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from spendstream.errors import SpendstreamError
from spendstream.records import Cost, Fact
from spendstream.warehouse import Warehouse, compaction
from tests.warehouse.conftest import Query
from tests.warehouse.factories import T0, alert, days, fact


def _files(workdir: Path, table: str = "usage_facts") -> list[str]:
    root = workdir / "warehouse" / table
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*.parquet")
        if "0001-01-01" not in str(p)
    )


def test_compaction_merges_each_partition_and_keeps_every_row_once(
    wh: Warehouse, q: Query, workdir: Path
) -> None:
    for _ in range(5):
        wh.commit(facts=[fact(T0, "0.25"), fact(T0 + days(1), "1")], alerts=[alert(T0)])
    before = q("SELECT date, count(*), sum(cost_usd) FROM usage_facts GROUP BY ALL ORDER BY 1")
    assert len(_files(workdir)) == 10
    summary = wh.compact(grace_s=0, activate_after_s=0)
    assert (summary.partitions, summary.files_in, summary.files_out) == (3, 15, 3)
    assert (
        _files(workdir)
        == [
            "date=2026-03-02/k000000000005-" + _files(workdir)[0].split("-", 3)[3],
            _files(workdir)[1],
        ]
        or len(_files(workdir)) == 2
    )
    assert [f.split("/")[1][0] for f in _files(workdir)] == ["k", "k"]
    assert (
        q("SELECT date, count(*), sum(cost_usd) FROM usage_facts GROUP BY ALL ORDER BY 1") == before
    )
    assert before == [(T0.date(), 5, Decimal("1.25")), ((T0 + days(1)).date(), 5, Decimal("5"))]
    assert q("SELECT count(*) FROM alerts") == [(5,)]


def test_readers_never_see_a_row_twice_while_replaced_files_await_deletion(
    wh: Warehouse, q: Query, workdir: Path
) -> None:
    for _ in range(3):
        wh.commit(facts=[fact(T0) for _ in range(4)])
    wh.compact(grace_s=3600, activate_after_s=0)
    # The inputs are still on disk (a running query may read them) next to the compacted file.
    assert len(_files(workdir)) == 4
    assert q("SELECT count(*), count(DISTINCT event_id) FROM usage_facts") == [(12, 12)]
    # Later commits stay visible next to the compacted file, and compact again cleanly.
    wh.commit(facts=[fact(T0) for _ in range(2)])
    assert q("SELECT count(*), count(DISTINCT event_id) FROM usage_facts") == [(14, 14)]
    wh.compact(grace_s=3600, activate_after_s=0)
    assert q("SELECT count(*), count(DISTINCT event_id) FROM usage_facts") == [(14, 14)]
    assert wh.compact(grace_s=0, activate_after_s=0).deleted == 5
    assert len(_files(workdir)) == 1
    assert q("SELECT count(*), count(DISTINCT event_id) FROM usage_facts") == [(14, 14)]


def test_a_compacted_file_not_yet_in_force_leaves_the_commit_files_in_view(
    wh: Warehouse, q: Query, workdir: Path
) -> None:
    for _ in range(3):
        wh.commit(facts=[fact(T0, "0.1") for _ in range(2)])
    wh.compact(grace_s=0, activate_after_s=3600)
    names = _files(workdir)
    assert len(names) == 4 and sum(n.split("/")[1].startswith("k") for n in names) == 1
    # Queries that began before the take-over instant read the commit files, once.
    assert q("SELECT count(*), count(DISTINCT event_id), sum(cost_usd) FROM usage_facts") == [
        (6, 6, Decimal("0.6"))
    ]
    assert compaction.purge_superseded(wh, 0) == 0  # not replaced yet, so not deletable


def test_dedup_survives_compaction(wh: Warehouse, q: Query) -> None:
    facts = [fact(T0) for _ in range(3)]
    wh.commit(facts=facts)
    wh.commit(facts=[fact(T0)])
    wh.compact(grace_s=0, activate_after_s=0)
    assert wh.commit(facts=facts).facts == 0
    assert q("SELECT count(*) FROM usage_facts") == [(4,)]


def test_partitions_with_one_file_are_left_alone(wh: Warehouse, workdir: Path) -> None:
    wh.commit(facts=[fact(T0)])
    before = _files(workdir)
    assert wh.compact(grace_s=0, activate_after_s=0).partitions == 0
    assert _files(workdir) == before


def test_only_one_compaction_runs_at_a_time(wh: Warehouse) -> None:
    with compaction._exclusive(wh.layout.compact_lock), pytest.raises(SpendstreamError):
        wh.compact()


def test_purge_waits_for_the_grace_period(wh: Warehouse, workdir: Path) -> None:
    wh.commit(facts=[fact(T0)])
    wh.commit(facts=[fact(T0)])
    assert wh.compact(grace_s=3600, activate_after_s=0).deleted == 0
    assert len(_files(workdir)) == 3
    assert compaction.purge_superseded(wh, 0) == 2
    assert len(_files(workdir)) == 1


def test_rewrite_facts_replaces_stored_rows_by_event_id(wh: Warehouse, q: Query) -> None:
    old = [fact(T0, "1"), fact(T0, "2"), fact(T0 + days(1), "3")]
    wh.commit(facts=old[:2])
    wh.commit(facts=old[2:])
    repriced = [
        Fact(f.event, Cost(*(Decimal("0.5"),) * 5, price_source="override:x"), f.ingested_at)
        for f in (old[0], old[2])
    ]
    never_landed = fact(T0, "9")
    assert wh.rewrite_facts([*repriced, never_landed], activate_after_s=0) == 2
    got = q("SELECT event_id, cost_usd, price_source FROM usage_facts")
    assert sorted(got) == sorted(
        [
            (old[0].event.event_id, Decimal("0.5"), "override:x"),
            (old[1].event.event_id, Decimal("2"), "test-catalog"),
            (old[2].event.event_id, Decimal("0.5"), "override:x"),
        ]
    )
    # Still landed once: a replay adds nothing.
    assert wh.commit(facts=old).facts == 0


def test_a_compaction_that_dies_after_its_commit_is_finished_by_recovery(
    workdir: Path, q: Query
) -> None:
    from spendstream.warehouse import landing

    w = Warehouse(workdir)
    w.ensure_views()
    for _ in range(3):
        w.commit(facts=[fact(T0), fact(T0)])

    def die(step: str) -> None:
        if step == "compaction_after_commit":
            raise RuntimeError(step)

    landing._fault = die
    try:
        with pytest.raises(RuntimeError):
            w.compact(grace_s=0, activate_after_s=0)
    finally:
        landing._fault = lambda step: None
    assert compaction.purge_superseded(w, 0) == 0  # the inputs' replacement is not in place
    assert q("SELECT count(*), count(DISTINCT event_id) FROM usage_facts") == [(6, 6)]
    w.close()
    with Warehouse(workdir) as again:
        assert q("SELECT count(*), count(DISTINCT event_id) FROM usage_facts") == [(6, 6)]
        assert compaction.purge_superseded(again, 0) == 3
    assert [n.split("/")[1][0] for n in _files(workdir)] == ["k"]
    assert q("SELECT count(*), count(DISTINCT event_id) FROM usage_facts") == [(6, 6)]
