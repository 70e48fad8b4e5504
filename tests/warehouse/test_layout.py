"""Names from data (writer ids, tags, teams) can never name a path outside the warehouse."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from spendstream.warehouse import Warehouse
from spendstream.warehouse.layout import MAX_SEGMENT_CHARS, segment
from tests.warehouse.conftest import Query
from tests.warehouse.factories import fact


@given(st.text(max_size=40), st.text(max_size=40))
def test_segment_keeps_distinct_values_distinct(a: str, b: str) -> None:
    if a != b:
        assert segment(a) != segment(b)


@given(st.text())
def test_segment_is_one_safe_path_component(value: str) -> None:
    s = segment(value)
    assert s and s not in (".", "..") and "/" not in s and "\x00" not in s and "." not in s
    assert len(s) <= MAX_SEGMENT_CHARS


def test_hostile_writer_names_and_values_land_inside_the_warehouse(
    tmp_path: Path, q: Query, workdir: Path
) -> None:
    names = ("../../escape", "/tmp/evil", "a\x00b", "x" * 10_000, "équipe-🚀")
    for name in names:
        with Warehouse(workdir, writer=name) as wh:
            wh.ensure_views()
            wh.commit(
                facts=[fact(team="../../../x", feature="/etc/passwd", tags={"k": "../.."})],
                state=name.encode("utf-8", "surrogatepass"),
                positions={"p": 1},
            )
    for name in names:
        with Warehouse(workdir, writer=name) as wh:
            assert wh.resume().state == name.encode("utf-8", "surrogatepass")
            assert wh.resume().positions == {"p": 1}
    outside = [p for p in tmp_path.rglob("*") if workdir not in p.parents and p != workdir]
    assert outside == []
    assert q("SELECT DISTINCT team, feature FROM usage_facts") == [("../../../x", "/etc/passwd")]
