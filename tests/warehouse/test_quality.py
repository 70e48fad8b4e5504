"""Data quality: the pre-check quarantines a failing batch (reported, never silently landed);
the great-expectations suite passes clean data and names each broken rule."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pyarrow.parquet as pq

from spendstream.producers.event import UsageEvent
from spendstream.records import Cost, Fact
from spendstream.table_schemas import alerts_table, breaker_events_table, facts_table
from spendstream.warehouse import Warehouse
from spendstream.warehouse.quality import SuiteResult, precheck, run_suite
from spendstream.warehouse.quarantine import quarantined
from spendstream.warehouse.views import connect_snapshot
from tests.warehouse.conftest import Query
from tests.warehouse.factories import T0, alert, breaker, days, fact


def _negative_cost_fact() -> Fact:
    good = fact(T0)
    neg = Decimal("-1")
    return Fact(good.event, Cost(neg, Decimal(0), Decimal(0), Decimal(0), neg, "x"), T0)


def test_precheck_passes_clean_batches() -> None:
    assert precheck(
        facts_table([fact(), fact(cost=None)]),
        alerts_table([alert(scope="global")]),
        breaker_events_table([breaker()]),
    ).ok


def test_precheck_flags_each_rule() -> None:
    no_source = fact()
    assert no_source.cost is not None
    no_source = Fact(
        no_source.event,
        Cost(*(Decimal(1),) * 5, price_source=""),  # type: ignore[misc]
        T0,
    )
    dup = fact()
    report = precheck(
        facts_table(
            [
                _negative_cost_fact(),
                no_source,
                fact(T0 + days(3), ingested_at=T0),  # event time days after ingestion
                dup,
                dup,
            ]
        ),
        alerts_table([alert(scope="tenant:x"), alert(kind="made_up")]),
        breaker_events_table([breaker(scope="nobody")]),
    )
    text = "\n".join(report.problems)
    for needle in (
        "negative cost",
        "without a price_source",
        "outside",
        "repeated in the batch",
        "unknown scope 'tenant:x'",
        "unknown kind 'made_up'",
        "unknown scope 'nobody'",
    ):
        assert needle in text
    assert report.failing == 7


def test_precheck_counts_every_failure_but_lists_a_few() -> None:
    report = precheck(facts_table([_negative_cost_fact() for _ in range(50)]))
    assert report.failing == 50 and len(report.problems) == 20


def test_failing_batch_is_quarantined_reported_and_dead_lettered(
    wh: Warehouse, q: Query, workdir: Path
) -> None:
    good, bad = fact(T0), _negative_cost_fact()
    result = wh.commit(facts=[good, bad], alerts=[alert()], state=b"n1")
    assert (result.facts, result.quarantined, result.dead_letters) == (0, 3, 2)
    assert q("SELECT count(*) FROM usage_facts") == [(0,)]
    assert q("SELECT count(*) FROM alerts") == [(0,)]
    errors = q("SELECT source, error FROM dead_letters")
    assert len(errors) == 2 and all(s == "quality" and "negative cost" in e for s, e in errors)
    (batch,) = quarantined(wh)
    qdir = Path(batch.path)
    report = json.loads((qdir / "report.json").read_text())
    assert report["failing"] == 1 and "negative cost" in report["problems"][0]
    assert pq.read_table(qdir / "usage_facts.parquet").num_rows == 2
    assert qdir.is_relative_to(workdir / "warehouse" / "tables" / "quarantine")
    # The state moved on, and a replay neither lands nor re-quarantines the batch.
    assert wh.resume().state == b"n1"
    assert wh.unseen([good.event, bad.event]) == []
    assert wh.commit(facts=[good, bad]).quarantined == 0


def test_ge_suite_passes_clean_facts_and_names_each_broken_rule(
    wh: Warehouse, workdir: Path
) -> None:
    wh.commit(facts=[fact(T0), fact(T0, cost=None)], alerts=[alert()])
    clean = _suite(wh)
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
