"""Event-time slices of usage batches and the rounds a scope owner merges (stream/rounds.py)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from hypothesis import given
from hypothesis import strategies as st

from spendstream.config import Config
from spendstream.stream.engine import LocalEngine
from spendstream.stream.rounds import (
    MAX_SLICES,
    MIN_GRID_US,
    grid_us,
    round_of,
    slice_bounds,
    slices_of,
)
from tests.stream.detection_facts import rows_table


def test_the_grid_is_the_least_power_of_two_that_keeps_a_batch_within_max_slices() -> None:
    assert grid_us(0) == MIN_GRID_US
    assert grid_us(MIN_GRID_US * MAX_SLICES) == MIN_GRID_US
    assert grid_us(MIN_GRID_US * MAX_SLICES + 1) == MIN_GRID_US * 2
    day = 86_400_000_000
    g = grid_us(day)
    assert g & (g - 1) == 0 and g * MAX_SLICES >= day > g // 2 * MAX_SLICES


@given(st.lists(st.integers(0, 5_000_000_000), min_size=1, max_size=200))
def test_slices_cut_a_batch_at_its_grid_lines_and_nowhere_else(steps: list[int]) -> None:
    wm = np.maximum.accumulate(np.array(steps, dtype=np.int64))
    bounds = slice_bounds(wm)
    g = grid_us(int(wm[-1] - wm[0]))
    assert bounds[0][0] == 0 and bounds[-1][1] == len(wm)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
    assert len(bounds) <= MAX_SLICES + 1
    for start, stop in bounds:
        assert len({int(w) // g for w in wm[start:stop]}) == 1  # one cell per slice
    for a, b in itertools.pairwise(bounds):
        assert wm[a[1] - 1] // g < wm[b[0]] // g  # a cut only where a grid line passes


def test_a_round_stops_only_where_the_next_slice_starts_after_everything_taken() -> None:
    # (lo, hi) of held slices: two overlap, one meets the next at 20 (one microsecond).
    spans: list[tuple[int | None, int | None]] = [(0, 10), (5, 20), (20, 30), (31, 40)]
    assert round_of(spans, None) == [0, 1, 2, 3]
    assert round_of(spans, 41) == [0, 1, 2, 3]
    assert round_of(spans, 40) == [0, 1, 2]  # a slice ending at the limit waits
    assert round_of(spans, 35) == [0, 1, 2]
    # 20 is shared by slices 1 and 2: rows at one microsecond are merged together.
    assert round_of(spans, 30) == []
    assert round_of(spans, 25) == []
    assert round_of([(0, 10), (11, 12)], 12) == [0]


def test_slices_without_facts_are_always_released_and_order_is_kept() -> None:
    spans: list[tuple[int | None, int | None]] = [(50, 60), (None, None), (0, 10)]
    assert round_of(spans, 20) == [1, 2]
    assert round_of(spans, 5) == [1]
    assert round_of([], None) == []


def test_slices_of_gives_each_slice_its_own_rows_in_order() -> None:
    partials = _day_of_partials()
    pieces = slices_of(partials)
    assert len(pieces) > 2 and [p.index for p in pieces] == list(range(len(pieces)))
    assert sum(p.partials.num_rows for p in pieces) == partials.num_rows
    his = [p.hi for p in pieces]
    assert his == sorted(his)
    for p in pieces:
        (ref,) = set(p.partials.column("batch").to_pylist())
        assert p.partials.equals(partials.filter(pc.equal(partials.column("batch"), ref)))
    # Rows of two slices interleaved (not how they travel): grouped all the same.
    a, b = pieces[0].partials, pieces[1].partials
    mixed = pa.concat_tables(
        [
            t.slice(i, 1)
            for i in range(max(a.num_rows, b.num_rows))
            for t in (a, b)
            if i < t.num_rows
        ]
    )
    again = slices_of(mixed)
    assert [s.partials.num_rows for s in again] == [a.num_rows, b.num_rows]
    assert (again[0].lo, again[0].hi, again[1].lo, again[1].hi) == (
        pieces[0].lo,
        pieces[0].hi,
        pieces[1].lo,
        pieces[1].hi,
    )


def _day_of_partials() -> pa.Table:
    """Partials of one batch of 200 calls 7 minutes apart (about a day: several slices)."""
    t0 = datetime(2026, 3, 31, tzinfo=UTC)
    rows = [{"ts": t0 + timedelta(minutes=7 * i), "team": "ab"[i % 2]} for i in range(200)]
    return LocalEngine(Config(), 0).process(rows_table(rows), "0@5").partials


def test_a_slice_without_a_clock_row_has_no_clock_and_its_neighbours_keep_theirs() -> None:
    partials = _day_of_partials()
    pieces = slices_of(partials)
    assert len(pieces) > 3
    # Slice 1's clock row dropped (rows stay contiguous): the one-pass path must not lend
    # it slice 2's clock.
    second = pieces[1].partials.column("batch")[0].as_py()
    keep = pc.invert(
        pc.and_(
            pc.equal(partials.column("batch"), second),
            pc.equal(partials.column("detector"), "clock"),
        )
    )
    again = slices_of(partials.filter(keep))
    assert [(s.lo, s.hi) for s in again] == [
        (None, None) if i == 1 else (p.lo, p.hi) for i, p in enumerate(pieces)
    ]


def test_a_round_cannot_stop_inside_a_slice_taken_earlier() -> None:
    # A long slice (0..100) taken first: a later, shorter one (5..20) ending before the next
    # start (30) is no place to stop, since 30 is still inside the first. The third slice
    # reaches the limit, so nothing may go: releasing the first two would merge rows up to
    # 100 before the third's rows from 30 on.
    assert round_of([(0, 100), (5, 20), (30, 200)], 150) == []
    assert round_of([(0, 100), (5, 20), (101, 200)], 150) == [0, 1]


def test_a_round_lists_its_slices_in_the_order_they_are_held() -> None:
    # The owner releases a lane's slices in this order (the last one marks the batch done):
    # slices without rows are not listed before the timed ones held ahead of them.
    spans: list[tuple[int | None, int | None]] = [(50, 60), (None, None), (0, 10)]
    assert round_of(spans, None) == [0, 1, 2]


def test_only_the_last_slice_of_a_batch_is_marked_last() -> None:
    # The owner counts a batch as merged (its offset done) only at its last slice.
    partials = _day_of_partials()
    pieces = slices_of(partials)
    assert [p.last for p in pieces] == [False] * (len(pieces) - 1) + [True]
    assert [p.last for p in slices_of(partials.slice(0, 0))] == [True]


def test_a_slice_without_a_clock_row_does_not_borrow_one_at_the_next_slices_first_row() -> None:
    # As in the test of a slice without a clock row, but each slice's clock row moved to its
    # front: slice 1, without its own clock, ends right where slice 2's clock row sits, and
    # must still have no clock (the engine writes clock rows last, so this is the boundary).
    partials = _day_of_partials()
    pieces = slices_of(partials)
    assert len(pieces) > 3
    fronted = []
    for i, p in enumerate(pieces):
        is_clock = pc.equal(p.partials.column("detector"), "clock")
        clock, rest = p.partials.filter(is_clock), p.partials.filter(pc.invert(is_clock))
        fronted += [rest] if i == 1 else [clock, rest]
    again = slices_of(pa.concat_tables(fronted))
    assert [(s.lo, s.hi) for s in again] == [
        (None, None) if i == 1 else (p.lo, p.hi) for i, p in enumerate(pieces)
    ]


def test_a_slice_inside_an_earlier_starting_one_waits_for_it() -> None:
    # Slices are taken in order of their first rows: the short slice (10..20) lies inside the
    # long one (0..50), whose rows from 0 on come first. The long one reaches the limit, so
    # nothing may go: releasing the short one alone would merge its rows before those.
    assert round_of([(0, 50), (10, 20), (30, 40)], 45) == []
    assert round_of([(0, 50), (10, 20), (30, 40)], 51) == [0, 1, 2]


def test_grid_constants() -> None:
    # docs/kafka.md: a grid of 2^k us, at least ~131 ms, at most 8 cells per batch. Tests
    # above use the names, so a change of either value passed them all.
    assert MIN_GRID_US == 1 << 17
    assert MAX_SLICES == 8
