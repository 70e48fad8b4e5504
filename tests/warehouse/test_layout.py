"""The layout: partition values from data are encoded so they can never leave the warehouse."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spendstream.warehouse import Warehouse
from spendstream.warehouse.layout import MAX_SEGMENT_CHARS, Layout, parse_data_file, segment
from tests.warehouse.conftest import Query
from tests.warehouse.factories import fact

HOSTILE = [
    "../../../etc",
    "..",
    ".",
    "",
    "/",
    "/absolute/path",
    "a/../../b",
    "team\x00nul",
    "back\\slash",
    "%2e%2e%2f",
    "date=2026-01-01",
    "x" * 10_000,
    "équipe-données-日本語-🚀",
    "\ud800",  # a lone surrogate
]


@pytest.mark.parametrize("value", HOSTILE, ids=lambda v: repr(v)[:30])
def test_hostile_partition_value_stays_inside_its_table(tmp_path: Path, value: str) -> None:
    layout = Layout.for_workdir(tmp_path)
    path = layout.partition_dir("usage_facts", team=value)
    path.mkdir(parents=True)
    (path / "f.parquet").write_bytes(b"x")
    table = (tmp_path / "warehouse" / "usage_facts").resolve()
    assert path.resolve().parent == table
    assert len(path.name) <= MAX_SEGMENT_CHARS + len("team=")
    assert [p.resolve() for p in tmp_path.rglob("f.parquet")] == [(path / "f.parquet").resolve()]


@given(st.text(max_size=40), st.text(max_size=40))
def test_segment_keeps_distinct_values_distinct(a: str, b: str) -> None:
    if a != b:
        assert segment(a) != segment(b)


@given(st.text())
def test_segment_is_one_safe_path_component(value: str) -> None:
    s = segment(value)
    assert s and s not in (".", "..") and "/" not in s and "\x00" not in s and "." not in s


def test_hostile_writer_name_and_tag_values_land_inside_the_warehouse(
    tmp_path: Path, q: Query, workdir: Path
) -> None:
    for name in ("../../escape", "/tmp/evil", "a\x00b"):
        with Warehouse(workdir, writer=name) as wh:
            wh.ensure_views()
            wh.commit(
                facts=[fact(team="../../../x", feature="/etc/passwd", tags={"k": "../.."})],
                state={"w": name},
            )
            assert wh.last_commit() == ({"w": name}, None)
    outside = [p for p in tmp_path.rglob("*") if workdir not in p.parents and p != workdir]
    assert outside == []
    assert q("SELECT DISTINCT team, feature FROM usage_facts") == [("../../../x", "/etc/passwd")]


def test_data_file_names_encode_kind_and_number() -> None:
    c = parse_data_file(Layout.commit_file_name(42, 3))
    assert c is not None and (c.kind, c.number) == ("c", 42)
    k = parse_data_file(Layout.compact_file_name(7, 1_700_000_000_000, "abc"))
    assert k is not None and (k.kind, k.number) == ("k", 7)
    assert parse_data_file("s000000000000-schema.parquet") is None
