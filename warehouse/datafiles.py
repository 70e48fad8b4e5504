"""Parquet data files for an Iceberg table, from an Arrow table of its schema.

pyiceberg's writer (``_dataframe_to_data_files``) converts the table's schema between Arrow
and Iceberg, plans its statistics and splits it by partition with Python visitors on every
call: for a 20k-row batch of facts that was ~18 ms of Python (holding the GIL) beside ~23 ms
of Parquet encoding. What depends only on the table's schema, spec and properties is
worked out once here (``FileLayout``) and kept per table; a batch then costs its split by
day (numpy), its Parquet write and its statistics.

The files are what pyiceberg writes (its Arrow schema with field ids, its writer options
and statistics, its file names and partition paths) with one difference: columns whose
values are nearly all distinct (``NO_DICTIONARY``: ids, digests, times, amounts) are not
dictionary-encoded, which pyarrow would otherwise do for every column (a dictionary as large
as the column, and ~25% of a batch's encoding time).
"""

from __future__ import annotations

import copy
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from spendstream.table_schemas import COST_FIELDS

if TYPE_CHECKING:
    from pyiceberg.manifest import DataFile
    from pyiceberg.partitioning import PartitionSpec
    from pyiceberg.schema import Schema
    from pyiceberg.table.metadata import TableMetadata

__all__ = ["NO_DICTIONARY", "FileLayout", "data_files"]

# Columns nearly unique per row, by table: a dictionary page for them is the column again.
NO_DICTIONARY: dict[str, frozenset[str]] = {
    "usage_facts": frozenset(
        [
            *("event_id", "request_id", "event_digest", "ts", "latency_ms"),
            *("reported_cost_usd", *COST_FIELDS),
        ]
    ),
}

_US_PER_DAY = 86_400_000_000


@dataclass(frozen=True, slots=True)
class FileLayout:
    """What writing any batch of one table's current schema, spec and properties needs."""

    schema: Schema
    spec: PartitionSpec
    spec_id: int
    arrow_schema: pa.Schema  # with the field ids Iceberg readers map columns by
    writer_options: dict[str, Any]
    row_group_size: int | None
    target_file_size: int
    stats_plan: dict[int, Any]
    column_ids: dict[str, int]
    location_provider: Any
    day_column: str | None  # the time column whose UTC day partitions the table

    @classmethod
    def of(cls, meta: TableMetadata, table_name: str) -> FileLayout:
        # pyiceberg 0.12's own pieces (pinned in constraints.txt; the writer options' reader
        # is private), so the files follow the table's properties as its writer's do.
        from pyiceberg.io.pyarrow import (
            _get_parquet_writer_kwargs,
            compute_statistics_plan,
            parquet_path_to_id_mapping,
            schema_to_pyarrow,
        )
        from pyiceberg.table import TableProperties
        from pyiceberg.table.locations import load_location_provider
        from pyiceberg.transforms import DayTransform
        from pyiceberg.types import TimestampType, TimestamptzType
        from pyiceberg.utils.properties import property_as_int

        # Copies of its own: a layout is shared by threads, and pyiceberg's schemas and specs
        # fill caches on first use (parsed_metadata.py); those it uses are filled below,
        # before any other thread sees it.
        schema, spec = copy.deepcopy(meta.schema()), copy.deepcopy(meta.spec())
        props = dict(meta.properties)
        file_format = props.get(TableProperties.WRITE_FILE_FORMAT, "parquet")
        if str(file_format).lower() != "parquet":
            raise ValueError(f"{table_name}: writes {file_format} files; only Parquet here")
        day_column = None
        if not spec.is_unpartitioned():
            (field,) = spec.fields  # every table here: the day of one time column
            if not isinstance(field.transform, DayTransform):
                raise ValueError(f"{table_name}: partitioned by {field.transform}, not a day")
            if not isinstance(schema.find_type(field.source_id), TimestampType | TimestamptzType):
                raise ValueError(f"{table_name}: its partition column is not a timestamp")
            day_column = schema.find_column_name(field.source_id)
        arrow_schema = _narrowed(schema_to_pyarrow(schema, include_field_ids=True))
        column_ids = parquet_path_to_id_mapping(schema)
        plain = NO_DICTIONARY.get(table_name, frozenset())
        options = _get_parquet_writer_kwargs(props)
        # By leaf path (a map's key and value are columns of their own in Parquet).
        options["use_dictionary"] = [p for p in column_ids if p.split(".")[0] not in plain]
        location_provider = load_location_provider(meta.location, props)
        if day_column is not None:
            _partition_key(spec, schema, 0).to_path()  # fills the caches a write reads
        return cls(
            schema=schema,
            spec=spec,
            spec_id=meta.default_spec_id,
            arrow_schema=arrow_schema,
            writer_options=options,
            row_group_size=property_as_int(
                props,
                TableProperties.PARQUET_ROW_GROUP_LIMIT,
                TableProperties.PARQUET_ROW_GROUP_LIMIT_DEFAULT,
            ),
            target_file_size=property_as_int(  # type: ignore[arg-type]
                props,
                TableProperties.WRITE_TARGET_FILE_SIZE_BYTES,
                TableProperties.WRITE_TARGET_FILE_SIZE_BYTES_DEFAULT,
            ),
            stats_plan=compute_statistics_plan(schema, props),
            column_ids=column_ids,
            location_provider=location_provider,
            day_column=day_column,
        )

    def split(self, table: pa.Table) -> Iterator[tuple[int | None, pa.Table]]:
        """(day since the epoch, its rows) per partition, days in order; (None, table) for
        an unpartitioned table. A null time is its own partition (None), as pyiceberg's."""
        if self.day_column is None:
            yield None, table
            return
        column = table.column(self.day_column)
        nulls = column.null_count
        # Integers throughout (numpy would read a column with nulls as floats).
        us = pc.fill_null(pc.cast(column, pa.int64()), 0).to_numpy(zero_copy_only=False)
        if nulls:
            valid = pc.is_valid(column).to_numpy(zero_copy_only=False)
        days = us // _US_PER_DAY  # floor: a time before 1970 is in the day before
        lo, hi = (int(days.min()), int(days.max())) if len(days) else (0, 0)
        if not nulls and lo == hi:
            yield lo, table
            return
        for day in np.unique(days[valid] if nulls else days):
            mask = (days == day) & valid if nulls else days == day
            yield int(day), table.filter(pa.array(mask))
        if nulls:
            yield None, table.filter(pa.array(~valid))


_LAYOUTS_KEPT = 64  # a process writes five tables; tests make many
_layouts: OrderedDict[tuple[Any, ...], FileLayout] = OrderedDict()
_lock = threading.Lock()


def _layout(meta: TableMetadata, table_name: str) -> FileLayout:
    key = (
        meta.table_uuid,
        meta.location,
        meta.current_schema_id,
        meta.default_spec_id,
        tuple(sorted(meta.properties.items())),
        table_name,
    )
    with _lock:
        found = _layouts.get(key)
        if found is not None:
            _layouts.move_to_end(key)
            return found
    found = FileLayout.of(meta, table_name)
    with _lock:
        _layouts[key] = found
        while len(_layouts) > _LAYOUTS_KEPT:
            _layouts.popitem(last=False)
    return found


def data_files(
    meta: TableMetadata, table_name: str, table: pa.Table, file_io: Any
) -> list[DataFile]:
    """Write ``table`` (the columns of ``table_name``'s schema) as data files of the table
    ``meta`` describes, one or more per partition; returns them for a commit to list. The
    files of several partitions are written in parallel, on pyiceberg's pool, as its writer
    does (to object storage, each is an upload)."""
    from pyiceberg.io.pyarrow import bin_pack_arrow_table
    from pyiceberg.utils.concurrent import ExecutorFactory

    if not table.num_rows:
        return []
    layout = _layout(meta, table_name)
    table = _conformed(table, layout.arrow_schema)
    write_uuid = uuid.uuid4()
    tasks = [
        (day, batches)
        for day, rows in layout.split(table)
        for batches in bin_pack_arrow_table(rows, layout.target_file_size)
    ]
    names = [f"00000-{i}-{write_uuid}.parquet" for i in range(len(tasks))]
    if len(tasks) == 1:
        ((day, batches),) = tasks
        return [_write(layout, day, batches, names[0], file_io)]
    return list(
        ExecutorFactory.get_or_create().map(
            lambda i: _write(layout, tasks[i][0], tasks[i][1], names[i], file_io),
            range(len(tasks)),
        )
    )


def _narrowed(schema: pa.Schema) -> pa.Schema:
    """``schema`` with 32-bit offsets where pyiceberg's conversion gives 64-bit ones
    (``large_string`` ...): what the tables here hold, and what pyiceberg's writer writes
    them as (it keeps a batch's own types), so a batch is not copied to widen them."""
    return pa.schema([_narrowed_field(f) for f in schema], metadata=schema.metadata)


def _narrowed_field(field: pa.Field) -> pa.Field:
    return field.with_type(_narrowed_type(field.type))


def _narrowed_type(t: pa.DataType) -> pa.DataType:
    if pa.types.is_large_string(t):
        return pa.string()
    if pa.types.is_large_binary(t):
        return pa.binary()
    if pa.types.is_map(t):
        return pa.map_(_narrowed_field(t.key_field), _narrowed_field(t.item_field))
    if pa.types.is_large_list(t) or pa.types.is_list(t):
        return pa.list_(_narrowed_field(t.value_field))
    if pa.types.is_struct(t):
        return pa.struct([_narrowed_field(t.field(i)) for i in range(t.num_fields)])
    return t


def _conformed(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table``'s columns in ``schema``'s order and types (field ids included); an optional
    column it lacks is null, as pyiceberg's writer fills it. A column of another type is
    refused, not converted (a timestamp's zone may be spelled either way of UTC)."""
    if table.schema.names != schema.names:
        have = set(table.schema.names)
        extra = have - set(schema.names)
        if extra:
            raise ValueError(f"columns not in the table's schema: {sorted(extra)}")
        columns = []
        for field in schema:
            if field.name in have:
                columns.append(table.column(field.name))
            elif field.nullable:
                columns.append(pa.nulls(table.num_rows, field.type))
            else:
                raise ValueError(f"required column {field.name!r} is missing")
        table = pa.Table.from_arrays(columns, names=schema.names)
    if table.schema.equals(schema, check_metadata=True):
        return table
    for have, want in zip(table.schema, schema, strict=True):
        if not _same_type(have.type, want.type):
            raise ValueError(f"column {have.name!r} is {have.type}, the table's is {want.type}")
    return table.cast(schema)


_UTC = frozenset({"UTC", "+00:00", "Etc/UTC", "Z"})


def _same_type(have: pa.DataType, want: pa.DataType) -> bool:
    """The same type but for nested fields' metadata (field ids) and UTC's spelling."""
    if pa.types.is_timestamp(have) and pa.types.is_timestamp(want):
        return bool(
            have.unit == want.unit and (have.tz == want.tz or (have.tz in _UTC and want.tz in _UTC))
        )
    return bool(have.equals(want))


def _partition_key(spec: PartitionSpec, schema: Schema, day: int | None) -> Any:
    from pyiceberg.partitioning import PartitionFieldValue, PartitionKey

    (field,) = spec.fields
    return PartitionKey(
        field_values=[PartitionFieldValue(field=field, value=day)],
        partition_spec=spec,
        schema=schema,
    )


def _write(
    layout: FileLayout,
    day: int | None,
    batches: Sequence[pa.RecordBatch],
    name: str,
    file_io: Any,
) -> DataFile:
    from pyiceberg.io.pyarrow import data_file_statistics_from_parquet_metadata
    from pyiceberg.manifest import DataFile, DataFileContent, FileFormat
    from pyiceberg.typedef import Record

    key = None
    if layout.day_column is not None:
        key = _partition_key(layout.spec, layout.schema, day)
    path = layout.location_provider.new_data_location(data_file_name=name, partition_key=key)
    out = file_io.new_output(path)
    with out.create(overwrite=True) as stream:
        writer = pq.ParquetWriter(
            stream,
            schema=layout.arrow_schema,
            store_decimal_as_integer=True,
            **layout.writer_options,
        )
        with writer:
            writer.write_table(
                pa.Table.from_batches(batches, schema=layout.arrow_schema),
                row_group_size=layout.row_group_size,
            )
        stats = data_file_statistics_from_parquet_metadata(
            parquet_metadata=writer.writer.metadata,
            stats_columns=layout.stats_plan,
            parquet_column_mapping=layout.column_ids,
        )
    return DataFile.from_args(
        content=DataFileContent.DATA,
        file_path=path,
        file_format=FileFormat.PARQUET,
        partition=key.partition if key is not None else Record(),
        file_size_in_bytes=len(out),
        sort_order_id=None,
        spec_id=layout.spec_id,
        equality_ids=None,
        key_metadata=None,
        **stats.to_serialized_dict(),
    )
