"""Event-time slices of usage batches and the rounds a scope owner merges (stream/rounds.py)."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from spendstream.stream.rounds import MAX_SLICES, MIN_GRID_US, grid_us, round_of, slice_bounds


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
