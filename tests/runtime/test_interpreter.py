"""``spendstream run``'s interpreter settings (spendstream.runtime.interpreter)."""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator

import pytest

from spendstream.runtime.interpreter import GC_THRESHOLDS, SWITCH_INTERVAL_S, tune_for_worker


@pytest.fixture
def restored() -> Iterator[None]:
    interval, thresholds = sys.getswitchinterval(), gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
        sys.setswitchinterval(interval)


def test_the_worker_interpreter_switches_threads_often_and_collects_cycles_rarely(
    restored: None,
) -> None:
    tune_for_worker()
    assert sys.getswitchinterval() == pytest.approx(0.0005)
    assert SWITCH_INTERVAL_S == 0.0005
    assert gc.get_threshold() == GC_THRESHOLDS == (50_000, 20, 10)
    # Start-up's objects are out of every collection's scan...
    assert gc.get_freeze_count() > 1000
    # ...and cycles made afterwards are still collected.

    class Node:
        other: object

    a, b = Node(), Node()
    a.other, b.other = b, a
    del a, b
    assert gc.collect() >= 2
