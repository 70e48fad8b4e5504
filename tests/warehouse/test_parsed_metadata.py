"""Metadata files parsed once per process (warehouse/parsed_metadata.py): writers of one
process share what any of them parsed or wrote, and always see the catalog's current file."""

from __future__ import annotations

import threading
from pathlib import Path

from pyiceberg.serializers import FromInputFile

from spendstream.warehouse import Warehouse
from spendstream.warehouse.parsed_metadata import PARSED, ParsedMetadata
from tests.warehouse.factories import fact


def _parsed_from_file(wh: Warehouse, name: str) -> object:
    tbl = wh.tables.load(name)
    return FromInputFile.table_metadata(tbl.io.new_input(tbl.metadata_location))


def test_a_commit_of_one_writer_is_known_to_the_others_without_reading_it(
    workdir: Path,
) -> None:
    a = Warehouse(workdir, writer="usage/0")
    b = Warehouse(workdir, writer="usage/1")
    b.tables.load("usage_facts")
    a.commit(facts=[fact()], positions={"usage/0": 1})
    head = a.tables.load("usage_facts").metadata_location
    misses, hits = PARSED.misses, PARSED.hits
    seen = b.tables.load("usage_facts")
    assert seen.metadata_location == head
    assert PARSED.misses == misses  # the file a wrote was not read back by b
    assert PARSED.hits == hits + 1
    # What b holds is what the file says, and b commits on top of it.
    assert seen.metadata == _parsed_from_file(b, "usage_facts")
    b.commit(facts=[fact()], positions={"usage/1": 1})
    assert b.resume().positions == {"usage/1": 1}
    assert a.writers()["usage/1"].positions == {"usage/1": 1}
    a.close()
    b.close()


def test_a_writer_of_another_process_is_read_from_its_file(workdir: Path) -> None:
    a = Warehouse(workdir, writer="usage/0")
    a.commit(facts=[fact()], positions={"usage/0": 1})
    PARSED.clear()  # as if another process had written the head
    misses = PARSED.misses
    b = Warehouse(workdir, writer="usage/1")
    tbl = b.tables.load("usage_facts")
    assert PARSED.misses == misses + 1
    assert tbl.metadata == _parsed_from_file(b, "usage_facts")
    assert b.writers()["usage/0"].positions == {"usage/0": 1}
    a.close()
    b.close()


def test_the_cache_keeps_the_most_recently_used() -> None:
    cache = ParsedMetadata(size=2)
    one, two, three = object(), object(), object()
    cache.put("m1", one)  # type: ignore[arg-type]
    cache.put("m2", two)  # type: ignore[arg-type]
    assert cache.get("m1") is one  # m1 used last: m2 goes first
    cache.put("m3", three)  # type: ignore[arg-type]
    assert cache.get("m2") is None
    assert cache.get("m1") is one and cache.get("m3") is three


def test_each_thread_parses_for_itself(workdir: Path) -> None:
    # A parsed metadata object fills caches of its own on first use while commits
    # deep-copy it: it is never shared between threads.
    a = Warehouse(workdir, writer="usage/0")
    a.commit(facts=[fact()], positions={"usage/0": 1})
    location = a.tables.load("usage_facts").metadata_location
    mine = PARSED.get(location)
    assert mine is not None
    seen: list[object] = []
    thread = threading.Thread(target=lambda: seen.append(PARSED.get(location)))
    thread.start()
    thread.join()
    assert seen == [None]
    a.close()
