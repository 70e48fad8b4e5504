"""The dedupe store: 128-bit keys that hash alike in any batch, exact classification; with
content digests each row is new, a duplicate (same id, same content) or a conflict (same
id, other content), against what landed and against the rows before it."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spendstream.stream.batch import conflict_error
from spendstream.table_schemas import facts_table
from spendstream.warehouse import Warehouse
from spendstream.warehouse.dedupe import CONFLICT, DUPLICATE, NEW, DedupeStore, epoch_days
from spendstream.warehouse.keyhash import hash128
from spendstream.warehouse.keyset import KeySet
from spendstream.warehouse.landing import SharedDedupe
from tests.warehouse.factories import T0, fact

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
    ks.insert(hi[:half], lo[:half], lo[:half] + np.uint64(7))
    ks.insert(hi[half:], lo[half:], lo[half:] + np.uint64(7))
    slots = ks.find(hi, lo)
    assert (slots >= 0).all()
    assert (ks.digests_at(slots) == lo + np.uint64(7)).all()  # each key keeps its digest
    assert (ks.find(hi, lo + np.uint64(2**40)) < 0).all()


def test_keys_that_all_want_the_last_slot_wrap_around_when_the_set_grows() -> None:
    # The low 20 bits set: every key's home is the last slot of any table up to 2**20.
    hi = (np.arange(1, 601, dtype=np.uint64) << np.uint64(20)) | np.uint64(2**20 - 1)
    lo = np.arange(600, dtype=np.uint64)
    ks = KeySet(1024)
    ks.insert(hi[:300], lo[:300], lo[:300])
    ks.insert(hi[300:], lo[300:], lo[300:])  # past half full: the set grows and rehashes
    assert ks.capacity == 2048 and ks.size == 600
    slots = ks.find(hi, lo)
    assert sorted(slots.tolist()) == [*range(599), 2047]
    assert (ks.digests_at(slots) == lo).all()


def test_a_key_set_takes_the_smallest_power_of_two_capacity_at_least_asked_for() -> None:
    assert [KeySet(c).capacity for c in (1, 1024, 1025, 4096)] == [1024, 1024, 2048, 4096]


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


def _store_of_old_days() -> tuple[DedupeStore, list[int]]:
    """A two-day store whose table holds ``old-<day>`` on every day; ``loaded``: days read."""
    loaded: list[int] = []

    def load(day: int) -> tuple[pa.Array, pa.Array | None]:
        loaded.append(day)
        return pa.array([f"old-{day}"]), None

    return DedupeStore(2, load), loaded


def test_days_before_the_window_are_probed_in_the_table_and_cached() -> None:
    store, loaded = _store_of_old_days()
    store.add(pa.array(["new"]), np.array([100]))
    assert store.window_start() == 98
    got = store.classify(pa.array(["old-90", "other", "old-97"]), np.array([90, 90, 97]))
    assert got.tolist() == [DUPLICATE, NEW, DUPLICATE]
    assert sorted(loaded) == [90, 97]
    store.classify(pa.array(["old-90"]), np.array([90]))
    assert sorted(loaded) == [90, 97]  # cached
    assert store.classify(pa.array(["new"]), np.array([99])).tolist() == [DUPLICATE]


def test_only_days_the_memory_cannot_answer_are_read_from_the_table() -> None:
    store, loaded = _store_of_old_days()
    store.add(pa.array(["new", "edge"]), np.array([100, 98]))
    assert store.window_start() == 98
    # The window's first day is in memory, so a new id on it reads nothing; an id found in
    # memory needs no read of its (older) ts day either.
    got = store.classify(pa.array(["edge", "fresh", "new"]), np.array([98, 98, 90]))
    assert got.tolist() == [DUPLICATE, NEW, DUPLICATE]
    assert loaded == []


def test_the_four_old_days_used_last_stay_cached() -> None:
    store, loaded = _store_of_old_days()
    store.add(pa.array(["new"]), np.array([100]))
    for day in (90, 91, 92, 93, 90, 94, 90, 92, 93):  # 90 used again before 94 comes in
        assert store.classify(pa.array([f"old-{day}"]), np.array([day])).tolist() == [DUPLICATE]
    assert loaded == [90, 91, 92, 93, 94]  # 91, the least recently used, was dropped
    store.classify(pa.array(["x"]), np.array([91]))
    assert loaded == [90, 91, 92, 93, 94, 91]


def test_a_fact_landed_on_a_cached_old_day_is_a_duplicate_afterwards() -> None:
    store = DedupeStore(2, lambda day: (pa.array([f"old-{day}"]), None))
    store.add(pa.array(["new"]), np.array([100]))
    assert store.classify(pa.array(["late"]), np.array([90])).tolist() == [NEW]  # 90 cached
    store.add(pa.array(["late"]), np.array([90]))  # a late fact lands on that old day
    assert store.classify(pa.array(["late"]), np.array([90])).tolist() == [DUPLICATE]


def test_keys_the_store_already_holds_are_not_added_again() -> None:
    store = _store()
    store.add(pa.array(["a", "b"]), np.array([10, 10]))
    store.add(pa.array(["a", "c", "c"]), np.array([10, 10, 10]))  # e.g. another writer's file
    assert store.keys == 3


def test_an_old_day_read_for_one_row_answers_for_no_row_of_another_day() -> None:
    # "x" landed on old day 90 and comes back with a ts in the window: that is a copy on
    # another day, not probed in the table, whatever else its batch made the store read.
    store = DedupeStore(2, lambda day: (pa.array(["x"] if day == 90 else []), None))
    store.add(pa.array(["new"]), np.array([100]))
    alone = store.classify(pa.array(["x"]), np.array([99])).tolist()
    assert alone == [NEW]
    assert store.classify(pa.array(["y", "x"]), np.array([90, 99])).tolist() == [NEW, *alone]


def test_the_window_moves_with_the_newest_day_and_forgets_older_days() -> None:
    store = _store()
    store.add(pa.array(["a"]), np.array([10]))
    store.add(pa.array(["b"]), np.array([11]))
    assert sorted(store.days) == [10, 11]
    store.add(pa.array(["c"]), np.array([13]))
    assert sorted(store.days) == [11, 13] and store.keys == 2


# Content digests (stream/digest.py): the batch branch's semantics on this store.

A, B = b"a" * 16, b"b" * 16
N, D, C = int(NEW), int(DUPLICATE), int(CONFLICT)


@pytest.mark.parametrize(
    ("ids", "digests", "landed", "expected"),
    [
        (["x", "y"], [A, B], {}, [N, N]),
        (["x", "x", "x"], [A, A, B], {}, [N, D, C]),
        (["x"], [A], {"x": A}, [D]),
        (["x"], [B], {"x": A}, [C]),
        # Against the landed content, not against a conflicting row before it.
        (["x", "x"], [B, B], {"x": A}, [C, C]),
        (["x", "x"], [A, B], {"x": A}, [D, C]),
        # Landed without a digest: nothing to compare, so a replay.
        (["x", "x"], [A, B], {"x": None}, [D, D]),
        # A row without a digest: nothing to compare either, against what landed or a row.
        (["x"], [None], {"x": A}, [D]),
        (["y", "y"], [A, None], {}, [N, D]),
        ([], [], {}, []),
    ],
)
def test_each_row_is_new_a_replay_or_a_conflict(
    ids: list[str],
    digests: list[bytes | None],
    landed: dict[str, bytes | None],
    expected: list[int],
) -> None:
    store = _store()
    for key, digest in landed.items():
        store.add(pa.array([key]), np.array([10]), pa.array([digest], pa.binary(16)))
    days = np.full(len(ids), 10)
    got = store.classify(pa.array(ids, pa.string()), days, pa.array(digests, pa.binary(16)))
    assert got.tolist() == expected


def test_the_warehouse_keeps_each_landed_facts_digest_across_a_restart(workdir: Path) -> None:
    f, g, h = fact(T0), fact(T0), fact(T0)
    with Warehouse(workdir) as wh:
        wh.commit(facts=[f, g], digests=pa.array([A, B], pa.binary(16)))
        wh.commit(facts=[h])  # a writer that knows no digest
    ids = pa.array([f.event.event_id, g.event.event_id, h.event.event_id, "new"])
    ts = pa.array([T0] * 4, pa.timestamp("us", tz="UTC"))
    digests = pa.array([A, A, B, A], pa.binary(16))
    with Warehouse(workdir) as wh:  # the store is rebuilt from the facts table
        assert wh.classify(ids, ts, digests).tolist() == [D, C, D, N]
        landed = wh.tables.load("usage_facts").scan().to_arrow()
        assert sorted(landed["event_digest"].to_pylist(), key=repr) == sorted(
            [A, B, None], key=repr
        )


def test_conflict_error_names_the_id_and_says_nothing_that_changes_on_replay() -> None:
    assert conflict_error("e-1") == conflict_error("e-1")
    assert conflict_error("e-1").startswith("conflicting_duplicate: event_id 'e-1' ")


# A commit reuses the keys its batch's classify hashed (landing._Classified) only while that
# classification still holds: each test fails if the reuse skips the check it names.


def _batch(facts: list) -> tuple[pa.Table, pa.Array]:  # type: ignore[type-arg]
    table = facts_table(facts)
    return table, pa.array([bytes([i]) * 16 for i in range(len(facts))], pa.binary(16))


def _landed_ids(wh: Warehouse) -> list[str]:
    table = wh.tables.load("usage_facts").scan().to_arrow()
    return sorted(table["event_id"].to_pylist())


def test_a_batch_a_writer_sharing_the_store_landed_after_the_classify_is_not_landed_again(
    workdir: Path,
) -> None:
    # A worker's usage partitions share one store: b's commit adds to a's store itself
    # (nothing to catch up with), so only the store's version tells a it changed.
    facts, digests = _batch([fact(T0), fact(T0)])
    shared = SharedDedupe(30)
    with (
        Warehouse(workdir, writer="usage/0", dedupe=shared) as a,
        Warehouse(workdir, writer="usage/1", dedupe=shared) as b,
    ):
        assert a.classify(facts["event_id"], facts["ts"], digests).tolist() == [N, N]
        b.commit(facts.slice(0, 1), digests=digests.slice(0, 1))
        result = a.commit(facts, digests=digests)
        assert (result.facts, result.duplicates) == (1, 1)
        assert _landed_ids(a) == sorted(facts["event_id"].to_pylist())


def test_a_store_rebuilt_after_the_classify_is_asked_again(workdir: Path) -> None:
    facts, digests = _batch([fact(T0), fact(T0)])
    shared = SharedDedupe(30)
    with Warehouse(workdir, writer="usage/0", dedupe=shared) as a:
        a.classify(facts["event_id"], facts["ts"], digests)
        with Warehouse(workdir, writer="usage/1") as other:  # another process
            other.commit(facts.slice(0, 1), digests=digests.slice(0, 1))
        # The store is rebuilt from the table: a new store, whose versions are new too.
        shared.reset()
        result = a.commit(facts, digests=digests)
        assert (result.facts, result.duplicates) == (1, 1)


def test_a_batch_another_process_landed_after_the_classify_is_not_landed_again(
    workdir: Path,
) -> None:
    facts, digests = _batch([fact(T0), fact(T0), fact(T0)])
    with Warehouse(workdir, writer="a") as a, Warehouse(workdir, writer="b") as b:
        a.commit(facts=[fact(T0)])  # both stores ready
        b.classify(pa.array(["x"]), facts["ts"].slice(0, 1))
        assert a.classify(facts["event_id"], facts["ts"], digests).tolist() == [N, N, N]
        b.commit(facts.slice(1, 1), digests=digests.slice(1, 1))  # b's own store
        result = a.commit(facts, digests=digests)  # a catches up with b's commit first
        assert (result.facts, result.duplicates) == (2, 1)
        assert _landed_ids(a).count(facts["event_id"][1].as_py()) == 1


def test_other_facts_than_the_classified_ones_are_classified_again(workdir: Path) -> None:
    landed = fact(T0)
    with Warehouse(workdir) as wh:
        wh.commit(facts=[landed])
        facts, digests = _batch([fact(T0), fact(T0)])
        wh.classify(facts["event_id"], facts["ts"], digests)
        other = facts_table([fact(T0), landed])  # as many rows, one already landed
        result = wh.commit(other, digests=digests)
        assert (result.facts, result.duplicates) == (1, 1)


def test_facts_committed_with_other_digests_keep_those_digests(workdir: Path) -> None:
    facts, digests = _batch([fact(T0), fact(T0)])
    later = pa.array([B, B], pa.binary(16))
    with Warehouse(workdir) as wh:
        wh.classify(facts["event_id"], facts["ts"], digests)
        wh.commit(facts, digests=later)
        # The store holds the digests that landed: the same content again is a replay.
        assert wh.classify(facts["event_id"], facts["ts"], later).tolist() == [D, D]


def test_facts_committed_on_another_day_are_kept_under_that_day(workdir: Path) -> None:
    facts, digests = _batch([fact(T0), fact(T0)])
    moved = facts.set_column(
        facts.schema.get_field_index("ts"),
        facts.schema.field("ts"),
        pa.array([T0 + timedelta(days=3)] * 2, facts.schema.field("ts").type),
    )
    with Warehouse(workdir) as wh:
        wh.classify(facts["event_id"], facts["ts"], digests)
        wh.commit(moved, digests=digests)
        assert sorted(wh.dedupe.days) == [int(epoch_days(moved["ts"])[0])]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        # Few distinct words, so that keys repeat, and high words repeat with other low words.
        st.tuples(st.integers(-3, 3), st.integers(-3, 3)),
        max_size=40,
    ),
    st.booleans(),
)
def test_first_occurrence_is_each_keys_first_index(
    keys: list[tuple[int, int]], spread: bool
) -> None:
    from spendstream.warehouse.dedupe import _first_occurrence

    # ``spread``: high words far apart, so no two equal unless the key repeats (the fast path).
    hi = np.array([h * (1 << 40) if spread else h for h, _ in keys], dtype=np.int64)
    lo = np.array([lo for _, lo in keys], dtype=np.int64)
    first: dict[tuple[int, int], int] = {}
    expected = [
        first.setdefault((int(h), int(lo_)), i)
        for i, (h, lo_) in enumerate(zip(hi, lo, strict=True))
    ]
    assert _first_occurrence(hi, lo).tolist() == expected
