"""Data quality: landing judges no batch (records were judged one by one before it); the
great-expectations suite passes clean data and names each broken rule."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

from spendstream.producers.event import UsageEvent
from spendstream.records import Cost, Fact
from spendstream.table_schemas import facts_table
from spendstream.warehouse import Warehouse
from spendstream.warehouse.quality import SuiteResult, run_suite
from spendstream.warehouse.quarantine import quarantined
from spendstream.warehouse.views import connect_snapshot
from tests.warehouse.conftest import Query
from tests.warehouse.factories import T0, alert, fact


def _negative_cost_fact() -> Fact:
    good = fact(T0)
    neg = Decimal("-1")
    return Fact(good.event, Cost(neg, Decimal(0), Decimal(0), Decimal(0), neg, "x"), T0)


def test_a_batch_is_never_quarantined_whole_for_one_odd_fact(
    wh: Warehouse, q: Query, workdir: Path
) -> None:
    # Before: one fact failing a batch pre-check sent all 1000 to quarantine. Records are
    # judged one by one before landing now (stream/batch.py); landing lands them all.
    good = [fact(T0) for _ in range(999)]
    result = wh.commit(facts=[*good, _negative_cost_fact()], alerts=[alert()], state=b"n1")
    assert (result.facts, result.alerts, result.dead_letters) == (1000, 1, 0)
    assert q("SELECT count(*) FROM usage_facts") == [(1000,)]
    assert q("SELECT count(*) FROM dead_letters") == [(0,)]
    assert wh.resume().state == b"n1"
    assert quarantined(wh) == []
    assert not (workdir / "warehouse" / "tables" / "quarantine").exists()


def test_batches_an_earlier_release_quarantined_are_listed_oldest_first(
    wh: Warehouse, workdir: Path
) -> None:
    # Written newest first: a directory listing's order is the file system's, not by name.
    root = workdir / "warehouse" / "tables" / "quarantine"
    ids = [f"202603{day:02d}T000000-{day:04x}" for day in range(9, 0, -1)]
    for n, batch_id in enumerate(ids):
        (root / batch_id).mkdir(parents=True)
        report = {"batch_id": batch_id, "writer": "usage/0", "failing": n}
        (root / batch_id / "report.json").write_text(json.dumps(report))
    listed = quarantined(wh)
    assert [b.batch_id for b in listed] == sorted(ids)
    assert [(b.created_at, b.failing) for b in listed[:2]] == [
        ("20260301T000000", 8),
        ("20260302T000000", 7),
    ]
    assert all(b.writer == "usage/0" and b.path.endswith(b.batch_id) for b in listed)


def test_ge_suite_passes_clean_facts_and_names_each_broken_rule(
    wh: Warehouse, workdir: Path
) -> None:
    wh.commit(facts=[fact(T0), fact(T0, cost=None)], alerts=[alert()])
    clean = _suite(wh)
    assert clean.success and all(ok for _, ok, _ in clean.results)

    # Land a broken file behind the pipeline's back, as a buggy writer would.
    broken = UsageEvent.model_construct(
        **{
            **fact(T0).event.model_dump(),
            "input_tokens": 5,
            "cache_read_tokens": 10,
            "event_id": "dup",
        }
    )
    also = UsageEvent.model_construct(**{**broken.model_dump(), "output_tokens": -3})
    table = facts_table([_negative_cost_fact().__class__(broken, None, T0), Fact(also, None, T0)])
    # Appended straight to the Iceberg table, bypassing the commit protocol.
    wh.tables.table("usage_facts").append(table)
    failed = _suite(wh)
    assert not failed.success
    failing = {name.split(":")[0] for name, ok, _ in failed.results if not ok}
    assert failing == {
        "usage_facts.output_tokens",
        "usage_facts.uncached_tokens",
        "usage_facts.event_id",
    }


def _suite(wh: Warehouse) -> SuiteResult:
    con = connect_snapshot(wh)
    try:
        return run_suite(con)
    finally:
        con.close()
