"""The landed-key store with content digests: each row of a batch is new, a duplicate
(same id, same content) or a conflict (same id, other content), against what landed and
against the rows before it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from spendstream.stream.batch import conflict_error
from spendstream.warehouse import Warehouse
from spendstream.warehouse.dedupe import Verdict, classify
from tests.warehouse.factories import T0, fact

A, B = b"a" * 16, b"b" * 16


def _verdicts(ids: list[str], digests: list[bytes], landed: dict[str, bytes | None]) -> list[int]:
    asked: list[list[str]] = []

    def probe(wanted: list[str]) -> dict[str, bytes | None]:
        asked.append(wanted)
        return {i: landed[i] for i in wanted if i in landed}

    out = classify(ids, digests, probe).verdicts.tolist()
    assert asked == [list(dict.fromkeys(ids))]  # one probe, each id once, in order
    return out


N, D, C = Verdict.NEW, Verdict.DUPLICATE, Verdict.CONFLICT


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
        # Landed before digests were kept: nothing to compare, so a replay.
        (["x", "x"], [A, B], {"x": None}, [D, D]),
        ([], [], {}, []),
    ],
)
def test_classify(
    ids: list[str], digests: list[bytes], landed: dict[str, bytes | None], expected: list[int]
) -> None:
    assert _verdicts(ids, digests, landed) == expected


def test_masks_partition_the_batch() -> None:
    out = classify(["x", "x", "y", "x"], [A, A, A, B], lambda ids: {"y": A})
    assert out.new.tolist() == [True, False, False, False]
    assert out.duplicate.tolist() == [False, True, True, False]
    assert out.conflict.tolist() == [False, False, False, True]


def test_the_warehouse_keeps_each_landed_facts_digest(wh: Warehouse) -> None:
    f, g, h = fact(T0), fact(T0), fact(T0)
    wh.commit(facts=[f, g], fact_digests=[A, B])
    wh.commit(facts=[h])  # a writer that knows no digest
    ids = [f.event.event_id, g.event.event_id, h.event.event_id, "new"]
    out = wh.classify(ids, [A, A, B, A])
    assert out.verdicts.tolist() == [
        Verdict.DUPLICATE,
        Verdict.CONFLICT,
        Verdict.DUPLICATE,
        Verdict.NEW,
    ]
    with pytest.raises(ValueError, match="one digest per fact"):
        wh.commit(facts=[fact(T0)], fact_digests=[A, B])


def test_a_catalog_from_before_digests_gains_the_column_and_keeps_its_keys(workdir: Path) -> None:
    old = fact(T0)
    with Warehouse(workdir) as wh:
        wh.commit(facts=[old])
        db = wh.layout.catalog_path
    con = sqlite3.connect(db)
    con.executescript(
        "CREATE TABLE landed_old (key BLOB PRIMARY KEY, commit_id INTEGER NOT NULL) WITHOUT ROWID;"
        "INSERT INTO landed_old SELECT key, commit_id FROM landed;"
        "DROP TABLE landed; ALTER TABLE landed_old RENAME TO landed;"
    )
    con.close()
    with Warehouse(workdir) as wh:
        assert wh.classify([old.event.event_id], [A]).verdicts.tolist() == [Verdict.DUPLICATE]
        new = fact(T0)
        wh.commit(facts=[new], fact_digests=[B])
        assert wh.classify([new.event.event_id], [A]).verdicts.tolist() == [Verdict.CONFLICT]


def test_conflict_error_names_the_id_and_says_nothing_that_changes_on_replay() -> None:
    assert conflict_error("e-1") == conflict_error("e-1")
    assert conflict_error("e-1").startswith("conflicting_duplicate: event_id 'e-1' ")
