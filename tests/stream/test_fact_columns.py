"""``FactColumns.slice``: a slice reads its batch's decoded columns, and is equal in every
accessor the detectors use to the same rows decoded as a batch of their own."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from spendstream.scopes import SCOPE_FIELDS
from spendstream.stream.columns import FactColumns, units_to_usd
from spendstream.stream.grouping import Groups
from tests.stream.detection_facts import T0, rows_table

_row = st.fixed_dictionaries(
    {
        "ts": st.integers(0, 7_200).map(lambda s: T0 + timedelta(seconds=s)),
        "team": st.sampled_from(["a", "b", "c", None]),
        "feature": st.sampled_from(["f", "g", None]),
        "user_id": st.sampled_from(["u1", "u2", "u3", None]),
        "api_key_id": st.sampled_from(["k1", "k2", None]),
        "session_id": st.sampled_from(["s1", None]),
        "cost": st.sampled_from(["0.05", "0.4", "0", "123456789.123456789123456789", None]),
        "input_tokens": st.integers(0, 10_000),
    }
)


def _same(part: FactColumns, alone: FactColumns) -> None:
    assert (part.n, part.partition, part.wm_start, part.wm_end) == (
        alone.n,
        alone.partition,
        alone.wm_start,
        alone.wm_end,
    )
    assert np.array_equal(part.ts_us, alone.ts_us)
    assert np.array_equal(part.wm_us, alone.wm_us)
    for name in [*sorted(set(SCOPE_FIELDS.values())), "provider", "model"]:
        mine, theirs = part.codes(name), alone.codes(name)
        assert mine.values == theirs.values, name  # the slice's own order of appearance
        assert np.array_equal(mine.index, theirs.index), name
    for kind in SCOPE_FIELDS:
        assert part.scope_codes(kind)[1] == alone.scope_codes(kind)[1]
    assert np.array_equal(part.ints("input_tokens"), alone.ints("input_tokens"))
    assert np.array_equal(part.priced, alone.priced)
    assert np.array_equal(part.cost_f, alone.cost_f)
    for mine_limb, their_limb in zip(part._limbs, alone._limbs, strict=True):
        assert np.array_equal(mine_limb, their_limb)
    if part.n:
        rows = np.arange(part.n, dtype=np.int64)
        groups = Groups.of(part.codes("team").index, rows)
        assert part.cost_sums(groups) == alone.cost_sums(groups)
        assert part.costs(rows) == alone.costs(rows)
        assert part.pos(part.n - 1) == alone.pos(alone.n - 1)


@settings(max_examples=150, deadline=None)
@given(
    rows=st.lists(_row, min_size=0, max_size=40),
    watermark=st.one_of(st.none(), st.integers(0, 3_600).map(lambda s: s * 1_000_000)),
    cut=st.tuples(st.integers(0, 40), st.integers(0, 40)),
)
def test_a_slice_equals_its_rows_decoded_alone(
    rows: list[dict[str, Any]], watermark: int | None, cut: tuple[int, int]
) -> None:
    table = rows_table(rows)
    base = None if watermark is None else int(T0.timestamp() * 1_000_000) + watermark
    whole = FactColumns(table, base, partition=4)
    start, stop = sorted(min(c, len(rows)) for c in cut)
    # Either order: a slice decoded before its batch decodes the batch's columns then.
    if start % 2:
        whole.codes("team")
    part = whole.slice(start, stop)
    before = whole.wm_start if start == 0 else int(whole.wm_us[start - 1])
    alone = FactColumns(table.slice(start, stop - start), before, partition=4)
    _same(part, alone)


def test_a_slice_recodes_its_batchs_codes_in_its_own_order() -> None:
    teams = ["a", "b", "c", None, "a", "b"]
    table = rows_table([{"ts": T0 + timedelta(seconds=i), "team": t} for i, t in enumerate(teams)])
    whole = FactColumns(table)
    part = whole.slice(1, 5)
    assert part.codes("team").values == ["b", "c", "a"]
    assert part.codes("team").index.tolist() == [0, 1, -1, 2]
    # Read from the batch's codes, which it now holds: nothing decoded twice.
    assert whole._codes["team"].values == ["a", "b", "c"]


@given(
    st.one_of(
        st.integers(-(10**30), 10**30),
        st.integers(),
        st.sampled_from([0, 1, -1, 10**60 - 1, 10**60, -(10**60) + 1, -(10**60), 10**80]),
    )
)
def test_units_become_the_exact_decimal_with_18_places(units: int) -> None:
    got = units_to_usd(units)
    want = Decimal(f"{units}E-18")  # the definition: the count's digits, exponent -18
    assert got.as_tuple() == want.as_tuple()


@given(st.lists(st.tuples(st.integers(0, 6), st.booleans()), max_size=60))
def test_a_group_holds_any_where_one_of_its_rows_does(rows: list[tuple[int, bool]]) -> None:
    keys = np.array([k for k, _ in rows], dtype=np.int64)
    groups = Groups.of(keys, np.arange(len(rows), dtype=np.int64))
    values = np.array([v for _, v in rows], dtype=np.bool_)[groups.rows]
    expected = [any(v for k, v in rows if k == key) for key in groups.keys.tolist()]
    assert groups.any(values).tolist() == expected


def _first_reaching(
    costs: list[str | None], start: Decimal, bar: Decimal, strict: bool
) -> tuple[int, Decimal] | None:
    """The oracle: add the costs one by one in exact decimals (unpriced: nothing)."""
    total = start
    for k, cost in enumerate(costs):
        total += Decimal(cost or 0)
        if total > bar or (not strict and total == bar):
            return k, total
    return None


@settings(max_examples=300, deadline=None)
@given(
    costs=st.lists(st.sampled_from(["0.1", "0.2", "0.7", "0.3", "0", "1E-18", None]), max_size=30),
    start=st.sampled_from(["0", "0.1", "0.7"]),
    reach=st.integers(0, 31),
    offset=st.sampled_from(["0", "1E-18", "-1E-18"]),
    strict=st.booleans(),
)
def test_a_crossing_is_the_first_row_whose_exact_running_total_reaches_the_bar(
    costs: list[str | None], start: str, reach: int, offset: str, strict: bool
) -> None:
    # Bars are exact running totals (give or take 1e-18), where float sums land a hair
    # either side: 0.7 + 0.1 is 0.7999999999999999 as a float, and must still reach 0.8.
    rows_ = [{"ts": T0 + timedelta(seconds=i), "cost": c} for i, c in enumerate(costs)]
    cols = FactColumns(rows_table(rows_))
    bar = Decimal(start) + sum((Decimal(c or 0) for c in costs[:reach]), Decimal(0))
    bar += Decimal(offset)
    rows = np.arange(len(costs), dtype=np.int64)
    want = _first_reaching(costs, Decimal(start), bar, strict)
    assert cols.crossing(rows, Decimal(start), bar, strict) == want


def test_an_unpriced_row_costs_nothing_whatever_lies_under_its_null_cost() -> None:
    # Arrow leaves the bytes under a null slot unspecified (another writer's, a reused
    # buffer's): exact sums must not read them. Row 1 is unpriced, with 2**64 + 2**40 + 7
    # units of 1e-18 USD under its null.
    table = rows_table([{"ts": T0, "cost": c} for c in ("0.05", None, "0.4")])
    i = table.schema.get_field_index("cost_usd")
    clean = table.column(i).combine_chunks()
    words = np.frombuffer(clean.buffers()[1], dtype="<u8").copy()
    words[2], words[3] = 2**40 + 7, 1  # row 1: low and high 64 bits
    dirty = pa.Array.from_buffers(
        clean.type, len(clean), [clean.buffers()[0], pa.py_buffer(words.tobytes())]
    )
    cols = FactColumns(table.set_column(i, table.schema.field(i), dirty))
    rows = np.arange(3, dtype=np.int64)
    costs = cols.costs(rows)
    assert costs[1] is None
    want = sum((c for c in costs if c is not None), Decimal(0))
    assert cols.cost_sum(rows) == want
    assert cols.cost_sums(Groups.of(rows * 0, rows)) == [want]
