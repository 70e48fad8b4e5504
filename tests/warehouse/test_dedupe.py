"""The dedupe store: 128-bit keys that hash alike in any batch, exact classification."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from spendstream.warehouse.dedupe import CONFLICT, DUPLICATE, NEW, DedupeStore
from spendstream.warehouse.keyhash import hash128
from spendstream.warehouse.keyset import KeySet

ids = st.text(min_size=1, max_size=60)


@settings(deadline=None)
@given(st.lists(ids, min_size=1, max_size=30), st.lists(ids, max_size=30))
def test_a_value_hashes_the_same_whatever_else_is_in_its_batch(
    batch: list[str], other: list[str]
) -> None:
    alone = [hash128(pa.array([v])) for v in batch]
    together = hash128(pa.array(other + batch))
    for k, (hi, lo) in enumerate(alone):
        assert (together[0][len(other) + k], together[1][len(other) + k]) == (hi[0], lo[0])


@settings(deadline=None)
@given(st.lists(ids, min_size=2, max_size=50, unique=True))
def test_distinct_values_get_distinct_keys(values: list[str]) -> None:
    hi, lo = hash128(pa.array(values))
    assert len({(a, b) for a, b in zip(hi.tolist(), lo.tolist(), strict=True)}) == len(values)
    assert (hi != 0).all()  # 0 marks an empty slot


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 2**16), min_size=1, max_size=400), st.integers(1, 64))
def test_the_key_set_finds_every_key_it_holds_and_nothing_else(keys: list[int], cap: int) -> None:
    uniq = sorted(set(keys))
    # Low-entropy keys collide in the table's low bits: probing must walk past them.
    hi = np.array([k | 1 for k in uniq], np.uint64) << np.uint64(1)
    lo = np.array(uniq, np.uint64)
    ks = KeySet(cap)
    half = len(uniq) // 2
    ks.insert(hi[:half], lo[:half], np.zeros(half, np.uint64))
    ks.insert(hi[half:], lo[half:], np.zeros(len(uniq) - half, np.uint64))
    assert (ks.find(hi, lo) >= 0).all()
    assert (ks.find(hi, lo + np.uint64(2**40)) < 0).all()


def _store() -> DedupeStore:
    return DedupeStore(2, lambda day: (pa.array([], pa.string()), None))


def test_a_landed_id_is_a_duplicate_in_a_batch_of_longer_and_shorter_ids() -> None:
    store = _store()
    store.add(pa.array(["demo-8-20261126-00000002"]), np.array([20783]))
    batch = pa.array(["x", "demo-8-20261126-00000002", "0b6f3c1e-4d2a-4f7e-9a51-000000000001"])
    assert store.classify(batch, np.array([20785, 20783, 20785])).tolist() == [NEW, DUPLICATE, NEW]


def test_digests_tell_a_replay_from_a_conflicting_copy() -> None:
    store = _store()
    store.add(pa.array(["a", "b"]), np.array([10, 10]), pa.array(["d1", "d2"]))
    got = store.classify(
        pa.array(["a", "b", "c", "c"]), np.array([10, 10, 10, 10]), pa.array(["d1", "zz", "q", "r"])
    )
    assert got.tolist() == [DUPLICATE, CONFLICT, NEW, CONFLICT]


def test_days_before_the_window_are_probed_in_the_table_and_cached() -> None:
    loaded: list[int] = []

    def load(day: int) -> tuple[pa.Array, pa.Array | None]:
        loaded.append(day)
        return pa.array([f"old-{day}"]), None

    store = DedupeStore(2, load)
    store.add(pa.array(["new"]), np.array([100]))
    assert store.window_start() == 98
    got = store.classify(pa.array(["old-90", "other", "old-97"]), np.array([90, 90, 97]))
    assert got.tolist() == [DUPLICATE, NEW, DUPLICATE]
    assert sorted(loaded) == [90, 97]
    store.classify(pa.array(["old-90"]), np.array([90]))
    assert sorted(loaded) == [90, 97]  # cached
    assert store.classify(pa.array(["new"]), np.array([99])).tolist() == [DUPLICATE]


def test_the_window_moves_with_the_newest_day_and_forgets_older_days() -> None:
    store = _store()
    store.add(pa.array(["a"]), np.array([10]))
    store.add(pa.array(["b"]), np.array([11]))
    assert sorted(store.days) == [10, 11]
    store.add(pa.array(["c"]), np.array([13]))
    assert sorted(store.days) == [11, 13] and store.keys == 2
