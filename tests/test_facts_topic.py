"""The ``spendstream.facts`` record: priced facts of one usage batch round-trip exactly."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pyarrow as pa
import pytest

from spendstream.config import Config
from spendstream.facts_topic import FACTS_RECORD, decode, encode, ipc_record
from spendstream.producers.event import UsageEvent
from spendstream.stream.pipeline import Pipeline
from spendstream.table_schemas import FACTS, events_table


def _facts() -> pa.Table:
    events = [
        UsageEvent(
            provider="openai",
            model="gpt-4o-mini",
            input_tokens=1000 + i,
            output_tokens=7,
            ts=datetime(2026, 11, 1, 12, i, tzinfo=UTC),
            team="search",
            event_id=f"e{i}",
        )
        for i in range(5)
    ]
    return Pipeline(Config()).price_table(
        events_table(events), datetime(2026, 11, 1, 13, tzinfo=UTC)
    )


def test_a_batch_round_trips_with_its_partition_and_offsets() -> None:
    facts = _facts()
    offsets = pa.array([10, 11, 13, 14, 20], pa.int64())
    batch = decode(encode(4, facts, offsets))
    assert batch.usage_partition == 4
    assert batch.facts.schema.equals(FACTS_RECORD)
    assert batch.facts.select(FACTS.names).equals(facts.select(FACTS.names).cast(FACTS))
    assert (batch.first_offset, batch.last_offset) == (10, 20)
    costs = batch.facts.column("cost_usd").to_pylist()
    assert all(isinstance(c, Decimal) for c in costs)
    # a replay cut at other offsets: a reader that applied up to 13 keeps 14 and 20 only
    assert batch.after(13).column("source_offset").to_pylist() == [14, 20]
    assert batch.after(20).num_rows == 0


def test_a_facts_record_written_with_zstd_before_reads_alike() -> None:
    # Workers wrote facts records with zstd before LZ4 became the default: a takeover
    # after an upgrade replays and reads back what they published.
    facts = _facts()
    offsets = pa.array([1, 2, 3, 4, 5], pa.int64())
    record = encode(0, facts, offsets, batch_offsets=(1, 9))
    old = decode(record).facts.replace_schema_metadata(
        {"usage_partition": "0", "usage_offsets": "1 9"}
    )
    batch = decode(ipc_record(old, compression="zstd"))
    assert batch.facts.equals(decode(record).facts)
    assert batch.batch_offsets == (1, 9)


def test_an_empty_batch_has_no_offsets() -> None:
    batch = decode(encode(0, FACTS.empty_table(), pa.array([], pa.int64())))
    assert batch.facts.num_rows == 0
    assert batch.first_offset is None and batch.last_offset is None


def test_offsets_must_match_the_rows() -> None:
    with pytest.raises(ValueError, match="one per fact"):
        encode(0, _facts(), pa.array([1], pa.int64()))


@pytest.mark.parametrize("value", [b"", b"{}", b"\xff" * 40])
def test_anything_else_is_refused(value: bytes) -> None:
    with pytest.raises(ValueError, match=r"not a spendstream\.facts record"):
        decode(value)


def test_another_arrow_table_is_refused() -> None:
    table = pa.table({"x": [1]}).replace_schema_metadata({"usage_partition": "1"})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    with pytest.raises(ValueError, match="schema is not FACTS_RECORD"):
        decode(sink.getvalue().to_pybytes())


def test_a_partials_record_decodes_compressed_or_not() -> None:
    # Small partials records go uncompressed (zstd's cost is per buffer), large ones
    # compressed; a record a worker wrote before, always zstd, must still be read after an
    # upgrade.
    from spendstream.facts_topic import ipc_record
    from spendstream.runtime.kafka.wire import (
        COMPRESS_FROM_BYTES,
        decode_partials,
        encode_partials,
    )
    from spendstream.stream.engine import LocalEngine
    from spendstream.stream.partials import PARTIALS

    small = LocalEngine(Config(), 3).process(_facts(), "3@9").partials
    assert small.num_rows and small.schema == PARTIALS
    copies = COMPRESS_FROM_BYTES // small.nbytes + 1
    large = pa.concat_tables([small] * copies).combine_chunks()
    assert large.nbytes >= COMPRESS_FROM_BYTES > small.nbytes
    meta = {"usage_partition": "3", "usage_offsets": "40 44"}
    for partials in (small, large):
        new = encode_partials(3, 40, 44, partials)
        old = ipc_record(partials.replace_schema_metadata(meta), compression="zstd")
        if partials is small:
            assert len(new) > len(old)  # not compressed
        else:
            assert len(new) == len(old) < partials.nbytes // 2  # compressed
        for value in (new, old):
            batch = decode_partials(value)
            assert (batch.usage_partition, batch.first_offset, batch.last_offset) == (3, 40, 44)
            assert batch.partials.equals(partials)


def test_an_arrow_record_of_another_schema_is_not_partials() -> None:
    # A stray Arrow record with a partials record's metadata (another tool, another
    # version) is refused here, so a scope owner dead-letters it instead of failing on
    # it in every merge and replaying for ever.
    from spendstream.runtime.kafka.wire import decode_partials

    meta = {"usage_partition": "0", "usage_offsets": "0 4"}
    other = pa.table({"scope": ["team:t"], "cost": [1.0]}).replace_schema_metadata(meta)
    with pytest.raises(ValueError, match="schema is not PARTIALS"):
        decode_partials(ipc_record(other, compression=None))


def test_partials_rows_no_worker_writes_are_refused() -> None:
    # The schema alone let these through, and the scope owner's merge failed on them at
    # every retry (int(None); a time past year 9999; an alert row without its fields).
    from spendstream.runtime.kafka.wire import decode_partials, encode_partials
    from spendstream.stream.engine import LocalEngine
    from spendstream.stream.partials import ALERT

    good = LocalEngine(Config(), 3).process(_facts(), "3@9").partials
    decode_partials(encode_partials(3, 40, 44, good))  # as a worker writes it

    def with_column(name: str, values: list[object]) -> pa.Table:
        i = good.schema.get_field_index(name)
        return good.set_column(i, good.field(i), pa.array(values, good.field(i).type))

    n = good.num_rows
    year_10000 = pa.array([253_402_300_800_000_000], pa.int64()).cast(good.field("wm_end").type)
    forged = {
        "variant is null": with_column("variant", [None] * n),
        "rows is null": with_column("rows", [1] * (n - 1) + [None]),
        "wm_end holds a time outside": good.set_column(
            good.schema.get_field_index("wm_end"),
            good.field("wm_end"),
            pa.concat_arrays([year_10000] * n),
        ),
        "an alert row's message": with_column("detector", [ALERT] * n),
        # A replay reads its rows back by this reference: one that names no facts record
        # failed the merge at every retry.
        "batch 'abc' is not": with_column("batch", ["abc"] * n),
        "batch '3@9#5:2' is not": with_column("batch", ["3@9#5:2"] * n),
        # Read as 3@9 but spelt otherwise: set aside by the one name, asked for by the other,
        # a merge failed for ever.
        "batch '03@9' is not": with_column("batch", ["03@9"] * n),
        "batch '3@٩' is not": with_column("batch", ["3@٩"] * n),
    }
    for reason, table in forged.items():
        with pytest.raises(ValueError, match=reason):
            decode_partials(encode_partials(3, 40, 44, table))
    # The last microsecond of year 9999 is a time; one more is not.
    last = pa.array([253_402_300_799_999_999] * n, pa.int64()).cast(good.field("wm_end").type)
    at_last = good.set_column(good.schema.get_field_index("wm_end"), good.field("wm_end"), last)
    decode_partials(encode_partials(3, 40, 44, at_last))


def test_the_kind_header_is_found_among_others() -> None:
    from spendstream.runtime.kafka.wire import KIND_HEADER, RESET, kind_of

    assert kind_of([("traceparent", b"00-1"), (KIND_HEADER, RESET)]) == RESET
    assert kind_of([("traceparent", b"00-1")]) is None
    assert kind_of(None) is None
