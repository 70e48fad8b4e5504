"""retry_storm's columnar memory of requests (stream/detectors/request_table.py)."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from spendstream.stream.detectors.request_table import RequestState, RequestTable


def _i(*xs: int) -> np.ndarray:
    return np.array(xs, dtype=np.int64)


def _put(t: RequestTable, rid: str, state: RequestState) -> None:
    att, calls, last, fired = state
    t.write([rid], t.find([rid]), _i(att), _i(calls), _i(last), np.array([fired], bool))


def test_a_batch_updates_held_requests_in_place_and_appends_new_ones() -> None:
    t = RequestTable()
    t.write(
        ["a", "b"], t.find(["a", "b"]), _i(1, 2), _i(1, 1), _i(100, 101), np.array([0, 1], bool)
    )
    slots = t.find(["b", "c", "zz"])
    assert slots.tolist() == [1, -1, -1]
    t.write(["b", "c"], slots[:2], _i(3, 1), _i(2, 1), _i(150, 160), np.array([1, 0], bool))
    assert len(t) == 3
    assert t.get("a") == (1, 1, 100, False)
    assert t.get("b") == (3, 2, 150, True)
    assert t.get("c") == (1, 1, 160, False)
    assert t.get("zz") is None
    _put(t, "a", (5, 4, 170, True))
    _put(t, "d", (1, 1, 171, False))
    assert t.get("a") == (5, 4, 170, True) and t.get("d") == (1, 1, 171, False)
    assert t.find(["d", "a"]).tolist() == [3, 0]


def test_forgetting_old_requests_keeps_the_rest_findable() -> None:
    t = RequestTable()
    for i, last in enumerate([10, 50, 20, 60]):
        _put(t, f"r{i}", (1, 1, last, i == 3))
    t.keep_since(20)  # the boundary is kept
    assert t.ids == ["r1", "r2", "r3"]
    assert t.find(["r0", "r1", "r2", "r3"]).tolist() == [-1, 0, 1, 2]
    assert t.get("r3") == (1, 1, 60, True)
    t.keep_since(21)
    assert t.ids == ["r1", "r3"] and t.get("r2") is None


def test_the_snapshot_round_trips_and_the_earlier_form_still_restores() -> None:
    t = RequestTable()
    _put(t, "x", (2, 3, 1_700_000_000, True))
    _put(t, "y", (1, 1, 1_700_000_100, False))
    again = RequestTable.from_wire(orjson.loads(orjson.dumps(t.wire())))
    assert again.wire() == t.wire()
    assert again.get("x") == (2, 3, 1_700_000_000, True)
    # The form written before columns: [[id, attempts, calls, last_s, fired]].
    old = RequestTable.from_wire([["x", 2, 3, 1_700_000_000, 1], ["y", 1, 1, 1_700_000_100, 0]])
    assert old.wire() == t.wire()
    assert old.find(["y"]).tolist() == [1]


def test_a_state_whose_ids_repeat_is_refused() -> None:
    with pytest.raises(ValueError, match="repeat"):
        RequestTable.from_wire([["x", 1, 1, 5, 0], ["x", 2, 2, 6, 0]])
    with pytest.raises(ValueError, match="length"):
        RequestTable.from_wire(
            {"ids": ["x"], "attempts": [], "calls": [1], "last": [1], "fired": [0]}
        )
