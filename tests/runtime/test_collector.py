"""The collector's pace while batches run: raised inside, restored after, never lowered."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from spendstream.runtime.collector import BATCH_THRESHOLDS, batch_pace


@pytest.fixture(autouse=True)
def _thresholds() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


def test_batches_run_at_the_batch_pace_and_the_old_pace_comes_back() -> None:
    gc.set_threshold(700, 10, 10)
    with batch_pace():
        assert gc.get_threshold() == BATCH_THRESHOLDS
        assert gc.isenabled()  # collected less often, never switched off
    assert gc.get_threshold() == (700, 10, 10)


def test_a_caller_s_higher_thresholds_are_kept() -> None:
    gc.set_threshold(BATCH_THRESHOLDS[0] * 2, 5, 50)
    with batch_pace():
        assert gc.get_threshold() == (BATCH_THRESHOLDS[0] * 2, BATCH_THRESHOLDS[1], 50)
    assert gc.get_threshold() == (BATCH_THRESHOLDS[0] * 2, 5, 50)


def test_the_old_pace_comes_back_when_a_batch_fails() -> None:
    gc.set_threshold(700, 10, 10)
    with pytest.raises(RuntimeError), batch_pace():
        raise RuntimeError("a batch failed")
    assert gc.get_threshold() == (700, 10, 10)


def test_cycles_are_still_freed_inside_without_an_explicit_collect() -> None:
    import weakref

    class Node:
        ref: object = None

    with batch_pace():
        gc.collect()  # an empty young generation to start from
        a, b = Node(), Node()
        a.ref, b.ref = b, a
        gone = weakref.ref(a)
        del a, b
        assert gone() is not None  # a cycle: only the collector frees it
        # Containers that stay alive count towards the next young collection.
        kept = [[] for _ in range(2 * BATCH_THRESHOLDS[0])]
        assert gone() is None
        assert len(kept) == 2 * BATCH_THRESHOLDS[0]
