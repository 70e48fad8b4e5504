"""One record of the ``spendstream.facts`` topic: the priced facts of one usage batch.

The Kafka runtime's usage loop publishes, per batch of usage partition *p*, one record to
partition *p* of ``topics.FACTS``: the batch's new facts (``table_schemas.FACTS``) plus a
``source_offset`` column, the usage-topic offset each fact came from, as one Arrow IPC stream.
The record is published before the warehouse commit that makes the batch durable, so a worker
killed in between publishes the batch again after a restart, possibly cut at other offsets.
A reader that must count each fact once (the lease ledger) keeps, per usage partition, the
highest ``source_offset`` it applied and drops rows at or below it; ``source_offset`` makes
that exact whatever the cut.

The record also names the usage offsets its batch spanned (``batch_offsets``: first and last
record read, dead letters and duplicates included), so a worker that takes the partition
over after a crash can replay an unlanded batch cut exactly as it was published.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from spendstream.table_schemas import FACTS

__all__ = ["FACTS_RECORD", "FactsBatch", "decode", "encode", "ipc_record", "ipc_table"]

FACTS_RECORD = FACTS.append(pa.field("source_offset", pa.int64(), nullable=False))
_PARTITION = "usage_partition"
_SPAN = "usage_offsets"  # "<first> <last>": the usage offsets the batch spanned


@dataclass(frozen=True)
class FactsBatch:
    """A decoded facts record: the usage partition it came from and its rows."""

    usage_partition: int
    facts: pa.Table  # FACTS_RECORD
    # (first, last) usage offset the batch spanned; None in a record written without it.
    batch_offsets: tuple[int, int] | None = None

    @property
    def first_offset(self) -> int | None:
        col = self.facts.column("source_offset")
        return None if len(col) == 0 else int(pc.min(col).as_py())

    @property
    def last_offset(self) -> int | None:
        col = self.facts.column("source_offset")
        return None if len(col) == 0 else int(pc.max(col).as_py())

    def after(self, offset: int) -> pa.Table:
        """The rows whose usage offset is past ``offset`` (what a reader has not applied)."""
        col = self.facts.column("source_offset")
        return self.facts.filter(pc.greater(col, offset))


def encode(
    usage_partition: int,
    facts: pa.Table,
    source_offsets: pa.Array,
    batch_offsets: tuple[int, int] | None = None,
) -> bytes:
    """One facts record: ``facts`` (``table_schemas.FACTS``) with the usage offset of each
    row. The usage partition (and ``batch_offsets``, the first and last usage offset of the
    batch, when given) travel in the schema metadata, so the record is self-describing
    wherever it is read."""
    if len(source_offsets) != facts.num_rows:
        raise ValueError(
            f"{len(source_offsets)} source offsets for {facts.num_rows} facts: one per fact"
        )
    table = (
        facts.select(FACTS.names)
        .cast(FACTS)
        .append_column(
            FACTS_RECORD.field("source_offset"), pa.chunked_array([source_offsets], pa.int64())
        )
    )
    meta = {_PARTITION: str(usage_partition)}
    if batch_offsets is not None:
        meta[_SPAN] = f"{batch_offsets[0]} {batch_offsets[1]}"
    return ipc_record(table.replace_schema_metadata(meta))


def ipc_record(table: pa.Table, compression: str | None = "lz4") -> bytes:
    """A table as one Kafka record: an Arrow IPC stream, LZ4-compressed by default. For a
    batch of 20k facts: 2.8 MB in 7.8 ms of CPU (3.3 ms to read back), against zstd's
    1.7 MB in 13.9 ms (6.6) and 10.2 MB uncompressed; LZ4 for the CPU, as Kafka producers
    commonly choose. Readers need nothing to decode a record, whatever its compression
    (records written with zstd before are read alike)."""
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression=compression, use_threads=False)
    with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


# Arrow compresses and decompresses a record's buffers on its thread pool by default: for a
# batch's facts record that took 18 ms of CPU against 14 in the calling thread (and 10
# against 8.4 to read it back); a worker's cores are busy with its own threads already.
_READ_OPTIONS = pa.ipc.IpcReadOptions(use_threads=False)


def ipc_table(value: bytes) -> pa.Table:
    """The table an ``ipc_record`` holds (``pa.ArrowInvalid`` if ``value`` is not one)."""
    return pa.ipc.open_stream(pa.BufferReader(value), options=_READ_OPTIONS).read_all()


def decode(value: bytes) -> FactsBatch:
    """The facts record ``encode`` wrote; ``ValueError`` if it is not one."""
    try:
        table = ipc_table(value)
        meta = table.schema.metadata or {}
        partition = int(meta[_PARTITION.encode()])
        span = meta.get(_SPAN.encode())
        first, last = (int(x) for x in span.split()) if span else (None, None)
    except (pa.ArrowInvalid, OSError, KeyError, ValueError) as exc:
        raise ValueError(f"not a spendstream.facts record: {exc}") from exc
    if not table.schema.remove_metadata().equals(FACTS_RECORD):
        raise ValueError("not a spendstream.facts record: its schema is not FACTS_RECORD")
    offsets = None if first is None or last is None else (first, last)
    return FactsBatch(partition, table.replace_schema_metadata(None), offsets)
