"""Data quality: landing judges no batch (records were judged one by one before it); the
great-expectations suite passes clean data and names each broken rule."""

from __future__ import annotations

import contextlib
from decimal import Decimal
from pathlib import Path

import pyarrow.parquet as pq

from spendstream.producers.event import UsageEvent
from spendstream.records import Cost, Fact
from spendstream.table_schemas import facts_table
from spendstream.warehouse import Warehouse
from spendstream.warehouse.quality import run_suite
from tests.warehouse.conftest import Query
from tests.warehouse.factories import T0, alert, fact


def _negative_cost_fact() -> Fact:
    good = fact(T0)
    neg = Decimal("-1")
    return Fact(good.event, Cost(neg, Decimal(0), Decimal(0), Decimal(0), neg, "x"), T0)


def test_a_batch_is_never_quarantined_whole_for_one_odd_fact(wh: Warehouse, q: Query) -> None:
    # Before: one fact failing the batch pre-check sent all 1000 to quarantine and recorded
    # their ids as landed. Records are judged before landing now; landing lands them all.
    good = [fact(T0) for _ in range(999)]
    result = wh.commit(facts=[*good, _negative_cost_fact()], alerts=[alert()], state={"n": 1})
    assert (result.facts, result.alerts, result.dead_letters) == (1000, 1, 0)
    assert q("SELECT count(*) FROM usage_facts") == [(1000,)]
    assert q("SELECT count(*) FROM dead_letters") == [(0,)]
    assert wh.catalog.quarantined() == []
    assert not (wh.layout.root / "quarantine").exists()


def test_an_id_counts_as_landed_only_once_its_fact_landed(wh: Warehouse, q: Query) -> None:
    from spendstream.warehouse import landing

    f = fact(T0)
    original = landing._fault

    def crash(step: str) -> None:
        if step == "before_commit":
            raise RuntimeError("crash")

    landing._fault = crash
    try:
        with contextlib.suppress(RuntimeError):
            wh.commit(facts=[f])
    finally:
        landing._fault = original
    assert wh.unseen([f.event]) == [f.event]
    assert wh.commit(facts=[f]).facts == 1
    assert wh.unseen([f.event]) == []
    assert q("SELECT count(*) FROM usage_facts") == [(1,)]


def test_ge_suite_passes_clean_facts_and_names_each_broken_rule(
    wh: Warehouse, workdir: Path
) -> None:
    wh.commit(facts=[fact(T0), fact(T0, cost=None)], alerts=[alert()])
    clean = run_suite(wh.layout.db_path)
    assert clean.success and all(ok for _, ok, _ in clean.results)

    # Land a broken file behind the pre-check's back, as a buggy writer would.
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
    target = workdir / "warehouse" / "usage_facts" / "date=2026-03-02" / "c999999999999-0.parquet"
    pq.write_table(table, target)
    failed = run_suite(wh.layout.db_path)
    assert not failed.success
    failing = {name.split(":")[0] for name, ok, _ in failed.results if not ok}
    assert failing == {
        "usage_facts.output_tokens",
        "usage_facts.uncached_tokens",
        "usage_facts.event_id",
    }
