"""The warehouse's own data-file writer (warehouse/datafiles.py) against pyiceberg's, its
oracle: the same partitions, rows, column statistics and Arrow schema (field ids included)
for any mix of days; only the dictionary choices differ (``NO_DICTIONARY``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from spendstream.table_schemas import alerts_table, facts_table
from spendstream.warehouse import Warehouse
from spendstream.warehouse.datafiles import NO_DICTIONARY, data_files
from spendstream.warehouse.landing import _with_digests
from tests.warehouse.factories import T0, alert, fact

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_STATS = ("record_count", "value_counts", "null_value_counts", "nan_value_counts")


def _oracle(meta: Any, table: pa.Table, io: Any) -> list[Any]:
    from pyiceberg.io.pyarrow import _dataframe_to_data_files

    return list(_dataframe_to_data_files(meta, table, io))


def _by_partition(files: list[Any]) -> dict[Any, list[Any]]:
    out: dict[Any, list[Any]] = {}
    for f in files:
        out.setdefault(tuple(f.partition), []).append(f)
    return out


def _read(f: Any) -> pa.Table:
    return pq.read_table(f.file_path.removeprefix("file://"))


def _dictionary_leaves(f: Any) -> dict[str, bool]:
    """Whether each leaf column (a map's key and value apart) has a dictionary page."""
    group = pq.ParquetFile(f.file_path.removeprefix("file://")).metadata.row_group(0)
    return {
        group.column(i).path_in_schema: group.column(i).has_dictionary_page
        for i in range(group.num_columns)
    }


def _assert_same_files(ours: list[Any], theirs: list[Any], table: str = "usage_facts") -> None:
    mine, oracle = _by_partition(ours), _by_partition(theirs)
    assert mine.keys() == oracle.keys()
    for key, (a,) in mine.items():
        (b,) = oracle[key]
        for attr in _STATS:
            assert getattr(a, attr) == getattr(b, attr), (key, attr)
        # Bounds decoded: the same min and max of every column the plan keeps.
        assert a.lower_bounds == b.lower_bounds, key
        assert a.upper_bounds == b.upper_bounds, key
        assert a.file_path.rsplit("/", 2)[-2] == b.file_path.rsplit("/", 2)[-2]  # ts_day=...
        ta, tb = _read(a), _read(b)
        assert ta.schema.equals(tb.schema, check_metadata=True)
        assert ta.equals(tb)
        # Encoded alike but for the columns that skip a dictionary by design.
        plain = NO_DICTIONARY.get(table, frozenset())
        mine_pages, oracle_pages = _dictionary_leaves(a), _dictionary_leaves(b)
        assert {p: d for p, d in mine_pages.items() if p.split(".")[0] not in plain} == {
            p: d for p, d in oracle_pages.items() if p.split(".")[0] not in plain
        }


def _facts(stamps: list[datetime | None]) -> pa.Table:
    # Any time, as a table may hold (a fact of an event refuses one before 2015).
    rows = [fact(tags={"team": f"t{i % 3}"}) for i in range(len(stamps))]
    table = _with_digests(facts_table(rows), None)
    ts = pa.array(stamps, table.schema.field("ts").type)
    return table.set_column(table.schema.get_field_index("ts"), table.schema.field("ts"), ts)


_stamps = st.lists(
    st.one_of(
        st.none(),
        # Around the epoch (a time before it is in the day before: floor, not truncation)
        # and around a day of the tests.
        st.integers(-3 * 86_400, 3 * 86_400).map(lambda s: EPOCH + timedelta(seconds=s)),
        st.integers(-2 * 86_400, 2 * 86_400).map(lambda s: T0 + timedelta(seconds=s)),
    ),
    min_size=1,
    max_size=30,
)


@given(stamps=_stamps)
@example(stamps=[EPOCH - timedelta(microseconds=1), EPOCH])  # the two days either side
@example(stamps=[None, T0])
# Past 2**53 us (year 2255) a float is not exact: one microsecond before a midnight, beside a
# null, stays in its day.
@example(stamps=[None, datetime(9000, 1, 1, tzinfo=UTC) - timedelta(microseconds=1)])
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_the_files_are_pyicebergs_for_any_days(
    wh: Warehouse, stamps: list[datetime | None]
) -> None:
    tbl = wh.tables.table("usage_facts")
    table = _facts(stamps)
    io = wh._file_io(tbl)
    _assert_same_files(
        data_files(tbl.metadata, "usage_facts", table, io), _oracle(tbl.metadata, table, io)
    )


def test_a_small_table_is_written_as_pyiceberg_writes_it(wh: Warehouse) -> None:
    tbl = wh.tables.table("alerts")
    table = alerts_table([alert(), alert(ts=T0 + timedelta(days=1))])
    assert table["details"].null_count == 0  # the map's leaves are written
    io = wh._file_io(tbl)
    _assert_same_files(
        data_files(tbl.metadata, "alerts", table, io), _oracle(tbl.metadata, table, io), "alerts"
    )


def test_unique_columns_have_no_dictionary_and_the_rest_do(wh: Warehouse) -> None:
    tbl = wh.tables.table("usage_facts")
    (f,) = data_files(tbl.metadata, "usage_facts", _facts([T0, T0, T0]), wh._file_io(tbl))
    meta = pq.ParquetFile(f.file_path.removeprefix("file://")).metadata
    pages = _dictionary_leaves(f)
    schema = meta.schema.to_arrow_schema()
    # pyarrow never dictionary-encodes booleans.
    encodable = {p for p in pages if not pa.types.is_boolean(schema.field(p.split(".")[0]).type)}
    assert NO_DICTIONARY["usage_facts"] <= set(schema.names)  # every name is a real column
    assert {p for p in encodable if pages[p]} == {
        p for p in encodable if p.split(".")[0] not in NO_DICTIONARY["usage_facts"]
    }
    assert pages["tags.key_value.key"] and pages["tags.key_value.value"]


def test_a_missing_optional_column_is_null_and_a_stranger_is_refused(wh: Warehouse) -> None:
    tbl = wh.tables.table("usage_facts")
    io = wh._file_io(tbl)
    without = facts_table([fact(), fact()])  # no event_digest column
    (f,) = data_files(tbl.metadata, "usage_facts", without, io)
    assert _read(f).column("event_digest").null_count == 2
    with pytest.raises(ValueError, match="not in the table's schema"):
        data_files(tbl.metadata, "usage_facts", without.append_column("x", pa.array([1, 2])), io)
    # A column of another type is refused, not converted (as pyiceberg refused it).
    i = without.schema.get_field_index("input_tokens")
    as_text = without.set_column(i, "input_tokens", pa.array(["1000", "1000"]))
    with pytest.raises(ValueError, match="'input_tokens' is string"):
        data_files(tbl.metadata, "usage_facts", as_text, io)
    assert data_files(tbl.metadata, "usage_facts", without.slice(0, 0), io) == []


def test_a_changed_table_property_is_written_with(wh: Warehouse) -> None:
    """What a table's properties say is read again when they change (the layout is kept per
    table and properties, not once)."""
    tbl = wh.tables.table("usage_facts")
    io = wh._file_io(tbl)
    table = _facts([T0])
    (before,) = data_files(tbl.metadata, "usage_facts", table, io)
    with tbl.transaction() as tx:
        tx.set_properties({"write.parquet.compression-codec": "snappy"})
    tbl = wh.tables.load("usage_facts")
    (after,) = data_files(tbl.metadata, "usage_facts", table, io)

    def codec(f: Any) -> str:
        path = f.file_path.removeprefix("file://")
        return str(pq.ParquetFile(path).metadata.row_group(0).column(0).compression)

    assert (codec(before), codec(after)) == ("ZSTD", "SNAPPY")


def test_a_partition_larger_than_the_target_size_is_cut_into_files(wh: Warehouse) -> None:
    tbl = wh.tables.table("usage_facts")
    with tbl.transaction() as tx:
        tx.set_properties({"write.target-file-size-bytes": "1"})
    tbl = wh.tables.load("usage_facts")
    table = _facts([T0] * 5 + [T0 + timedelta(days=1)] * 3)
    ours = data_files(tbl.metadata, "usage_facts", table, wh._file_io(tbl))
    oracle = _oracle(tbl.metadata, table, wh._file_io(tbl))
    assert len(ours) == len(oracle) > 2
    assert sorted(f.record_count for f in ours) == sorted(f.record_count for f in oracle)
    assert len({f.file_path for f in ours}) == len(ours)
    assert sum(f.record_count for f in ours) == table.num_rows


def test_a_local_data_file_appears_only_whole(wh: Warehouse, tmp_path: Path) -> None:
    """The views glob ``*.parquet``: a file is written under a hidden temporary name and
    renamed into place when closed; a write that fails leaves neither name behind."""
    from spendstream.warehouse.staging import StagedLocalFileIO

    io = StagedLocalFileIO(wh.tables.table("alerts").io)
    final = tmp_path / "data" / "part.parquet"
    with io.new_output(f"file://{final}").create() as out:
        out.write(b"whole")
        assert not final.exists()
    assert final.read_bytes() == b"whole"
    broken = tmp_path / "data" / "broken.parquet"
    with pytest.raises(RuntimeError), io.new_output(f"file://{broken}").create() as out:
        out.write(b"half")
        raise RuntimeError("the writer failed mid-file")
    assert sorted(p.name for p in final.parent.iterdir()) == ["part.parquet"]
