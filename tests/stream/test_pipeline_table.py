"""``Pipeline.price_table`` (no object per event) against the object path it replaces.

The object path -- ``events_from_table`` -> ``Pricer.price_batch`` -> ``facts_table`` -- is what
the embedded runtime landed before; the facts table must be the same, cell for cell
(decimals, maps, nulls), on varied batches of decoded lines.
"""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spendstream.config import config_from_dict
from spendstream.records import Fact
from spendstream.stream.batch import NEW, JudgedBatch, events_from_table, judge_lines
from spendstream.stream.pipeline import Pipeline
from spendstream.table_schemas import FACTS, facts_table, money_sum
from tests.stream.event_strategies import NOW, SKEW_S, near_valid_lines, valid_lines

# Priced by the bundled catalog, by a configured override, or by nothing at all.
MODELS = [
    ("openai", "gpt-4o"),
    ("openai", "gpt-4o-mini"),
    ("anthropic", "claude-sonnet-4-5"),
    ("anthropic", "claude-3-5-haiku-latest"),
    ("acme", "m1"),
    ("acme", "unknown-model"),
]
CONFIG = config_from_dict(
    {
        "prices": {
            "model": [
                {
                    "provider": "acme",
                    "model": "m1",
                    "input_per_mtok": "0.333333333333333333",
                    "output_per_mtok": "7",
                    "cache_read_per_mtok": "0.01",
                }
            ]
        }
    }
)
INGESTED = NOW + timedelta(seconds=1)


@st.composite
def _lines(draw: st.DrawFn) -> bytes:
    """A decoded-valid or near-valid line, often on a priced model, with the billable
    dimensions beyond the contract's four now and then."""
    raw = draw(st.one_of(valid_lines(), valid_lines(), near_valid_lines()))
    if not draw(st.booleans()):
        return raw
    try:
        event: Any = json.loads(raw)
    except ValueError:
        return raw
    if not isinstance(event, dict):
        return raw
    event["provider"], event["model"] = draw(st.sampled_from(MODELS))
    if draw(st.booleans()):
        event["ts"] = (NOW - timedelta(minutes=draw(st.integers(0, 10**6)))).isoformat()
    extra: dict[str, st.SearchStrategy[Any]] = {
        "tool_requests": st.one_of(
            st.none(),
            st.just({}),
            st.dictionaries(st.sampled_from(["web_search", "file_search"]), st.integers(0, 99)),
        ),
        "service_tier": st.sampled_from(["flex", "priority", None]),
        "lease_id": st.sampled_from(["l-1", "l-1 l-2", None]),
        "input_audio_tokens": st.integers(0, 50),
    }
    for name in draw(st.sets(st.sampled_from(sorted(extra)))):
        event[name] = draw(extra[name])
    return json.dumps(event).encode()


def _object_facts(pipeline: Pipeline, new: pa.Table) -> pa.Table:
    """The object path, as the oracle: a ``UsageEvent`` per row priced one by one
    (``Pricer.price_batch``), a ``Fact`` per event, then their table."""
    events = events_from_table(new)
    costs = pipeline.pricer.price_batch(events)
    return facts_table(
        [Fact(event=e, cost=c, ingested_at=INGESTED) for e, c in zip(events, costs, strict=True)]
    )


def _judged(lines: list[bytes]) -> JudgedBatch:
    def classify(ids: pa.ChunkedArray, ts: pa.ChunkedArray, digests: pa.ChunkedArray) -> Any:
        return np.full(len(ids), NEW, dtype=np.int8)

    return judge_lines(lines, NOW, lambda i: f"t:{i}", classify, SKEW_S)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_lines(), max_size=30))
def test_price_table_equals_the_facts_of_the_object_path(lines: list[bytes]) -> None:
    new = _judged(lines).new
    pipeline = Pipeline(CONFIG)
    table = pipeline.price_table(new, INGESTED)
    objects = _object_facts(pipeline, new)
    assert table.schema == FACTS
    assert table.equals(objects), (table.to_pylist(), objects.to_pylist())
    assert table.to_pylist() == objects.to_pylist()


def test_a_varied_batch_prices_some_rows_and_not_others() -> None:
    """The property above sees priced, unpriced, null and map cells: this batch has each."""
    base = {"ts": NOW.isoformat(), "input_tokens": 1000, "output_tokens": 10}
    rows = [
        {**base, "event_id": "a", "provider": "acme", "model": "m1", "tags": {"k": "v"}},
        {**base, "event_id": "b", "provider": "acme", "model": "unknown-model"},
        {**base, "event_id": "c", "provider": "openai", "model": "gpt-4o", "tags": None},
        {**base, "event_id": "d", "provider": "openai", "model": "gpt-4o", "tags": {}},
        {
            **base,
            "event_id": "e",
            "provider": "openai",
            "model": "gpt-4o",
            "tool_requests": {"web_search": 2},
            "reported_cost_usd": "0.000000000000000001",
        },
    ]
    new = _judged([json.dumps(r).encode() for r in rows]).new
    pipeline = Pipeline(CONFIG)
    table = pipeline.price_table(new, INGESTED)
    assert table.equals(_object_facts(pipeline, new))
    assert table.column("priced").to_pylist() == [True, False, True, True, True]
    assert table.column("price_source").to_pylist()[:2] == ["override:acme/m1", None]
    # 1000 input tokens at 0.333333333333333333 USD/Mtok + 10 output at 7 USD/Mtok.
    assert table.column("cost_usd")[0].as_py() == Decimal("0.000403333333333333")
    assert table.column("tags").to_pylist()[0] == [("k", "v")]
    assert table.column("tags").to_pylist()[2:4] == [None, None]
    assert table.column("tool_cost_usd")[4].as_py() > 0
    assert table.column("reported_cost_usd")[4].as_py() == Decimal("1E-18")
    assert set(table.column("ingested_at").to_pylist()) == {INGESTED}
    costs = [c for c in table.column("cost_usd").to_pylist() if c is not None]
    assert money_sum(table.column("cost_usd")) == sum(costs)
    assert pc.sum(table.column("priced")).as_py() == 4


def test_money_sum_is_exact_past_what_decimal128_holds() -> None:
    big = Decimal("99999999999999999999.999999999999999999")  # DECIMAL(38, 18)'s largest
    column = pa.chunked_array([pa.array([big, None, big], FACTS.field("cost_usd").type)])
    assert money_sum(column) == Decimal("199999999999999999999.999999999999999998")  # 2 * big
    assert money_sum(column.slice(1, 1)) == 0
    assert money_sum(column.slice(0, 0)) == 0
