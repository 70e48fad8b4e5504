"""The radix stable sort gives numpy's stable permutation, whatever the keys' width and span."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from spendstream.sorting import _RADIX_FROM, stable_order, unique_first

INT_TYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]


def _same_as_numpy(keys: np.ndarray) -> None:
    want = np.argsort(keys, kind="stable")
    got = stable_order(keys)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, want)
    values, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    got_values, got_first, got_inverse = unique_first(keys)
    np.testing.assert_array_equal(got_values, values)
    assert got_values.dtype == keys.dtype
    np.testing.assert_array_equal(got_first, first)
    np.testing.assert_array_equal(got_inverse, inverse.reshape(-1))


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(INT_TYPES).flatmap(
        lambda t: hnp.arrays(
            t, st.integers(0, 3 * _RADIX_FROM), elements=hnp.from_dtype(np.dtype(t))
        )
    )
)
def test_any_integer_keys_sort_as_numpy_sorts_them(keys: np.ndarray) -> None:
    _same_as_numpy(keys)


@pytest.mark.parametrize("dtype", [np.int64, np.uint64])
@pytest.mark.parametrize(
    "span",
    # A pass per 16 bits the keys span: the boundaries of one, two, three and four passes.
    [1, 2**16 - 1, 2**16, 2**32 - 1, 2**32, 2**48 - 1, 2**48, 2**63 - 1],
)
def test_spans_at_each_pass_boundary(dtype: type, span: int) -> None:
    rng = np.random.default_rng(span % 1000)
    n = 4 * _RADIX_FROM
    base = -(2**62) if dtype is np.int64 else 2**63
    rel = rng.integers(0, span, n, endpoint=True, dtype=np.uint64)
    # Many equal keys (stability decides their order), both ends of the span present.
    rel[: n // 4] = rel[n // 4]
    rel[-2], rel[-1] = 0, span
    keys = (np.uint64(base % 2**64) + rel).astype(dtype)
    _same_as_numpy(keys)
    _same_as_numpy(keys[::-1].copy())


def test_keys_across_the_whole_signed_range() -> None:
    info = np.iinfo(np.int64)
    keys = np.array([info.max, info.min, 0, -1, 1, info.min, info.max] * _RADIX_FROM, np.int64)
    _same_as_numpy(keys)


@pytest.mark.parametrize("n", [0, 1, _RADIX_FROM - 1, _RADIX_FROM, _RADIX_FROM + 1])
def test_around_the_size_where_radix_begins(n: int) -> None:
    rng = np.random.default_rng(n)
    _same_as_numpy(rng.integers(-(2**40), 2**40, n, dtype=np.int64))
    _same_as_numpy(np.sort(rng.integers(0, 5, n, dtype=np.int64)))  # in order already
    _same_as_numpy(np.full(n, 7, dtype=np.int64))


def test_keys_already_in_order_with_ties() -> None:
    keys = np.repeat(np.arange(100, dtype=np.int64), 2 * _RADIX_FROM // 50)
    np.testing.assert_array_equal(stable_order(keys), np.arange(len(keys)))
    _same_as_numpy(keys)
