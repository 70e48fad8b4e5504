"""A batch of JSON lines read by pyarrow's reader, told only the keys recent batches used.

The reader is told every key a usage event may have (``validator.json_read_schema``,
35 fields) so that any other key fails the read. But it pays for each key it is told and a
line lacks: at the end of every object it appends a null per absent field, ~85 ns each.
Events carry ~22 of the 35 (most have no audio, image or 1-hour cache tokens): for 20k
events, 55 ms of CPU against 45 ms told only the keys present.

So a batch is read first with a narrower schema: the keys the last whole batch read had
(``KeyHint``). A line with any key outside it fails that read as an unknown key would, and
the batch is read again with every key: a result is always exactly what the full schema
gives (the absent fields' columns are all null), a wrong hint costs one failed read (which
stops at the first line outside it). The hint is a guess shared by a process's threads; it
never changes what a batch decodes to.
"""

from __future__ import annotations

import functools

import orjson
import pyarrow as pa
import pyarrow.json as pj

from spendstream.stream import validator

__all__ = ["MAX_RECORD_BYTES", "READ_SCHEMA", "KeyHint", "read_json_lines"]

# A usage event is a few hundred bytes; anything this large is not one, and must not
# be parsed into memory-hungry objects.
MAX_RECORD_BYTES = 1 << 20
# Blocks hold whole lines: at least two of the largest record. On Arrow's pool the blocks
# are parsed in parallel, sooner on an idle machine but for more CPU: 89 ms against 55 ms in
# the calling thread for 20k events, 10 ms sooner. A Kafka worker's cores are busy with its
# own threads (and the broker's): it reads on its thread; `ingest` alone has cores to spare.
_BLOCK = max(4 << 20, 2 * MAX_RECORD_BYTES + 2)
_READ = pj.ReadOptions(block_size=_BLOCK, use_threads=False)
_READ_THREADED = pj.ReadOptions(block_size=_BLOCK, use_threads=True)
READ_SCHEMA = validator.json_read_schema()
_NAMES = frozenset(READ_SCHEMA.names)
# A key the schema does not name (a map such as ``tags``, a misspelt field) fails the read,
# within milliseconds. (Inferring such keys as columns instead costs rows x distinct keys:
# 24 s for a batch of 20k lines with a key each of their own.)
_FULL = pj.ParseOptions(explicit_schema=READ_SCHEMA, unexpected_field_behavior="error")


@functools.lru_cache(maxsize=64)
def _narrow(keys: frozenset[str]) -> pj.ParseOptions:
    schema = pa.schema([f for f in READ_SCHEMA if f.name in keys])
    return pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="error")


class KeyHint:
    """Which keys to tell the reader first: those of the last batch read whole.

    Renewed from a batch read with every key (its columns holding a value, and the keys of
    its first line, which catches a client writing explicit nulls). A hint that failed
    without teaching anything (a key the batches hold only as null, beyond their first
    line) is dropped for ``REST`` batches; every ``RENEW`` batches the full schema is read
    anyway, so a key no longer sent leaves the hint.
    """

    REST = 64
    RENEW = 256

    def __init__(self) -> None:
        self.keys: frozenset[str] | None = None
        self._reads = 0
        self._rest = 0

    def narrow(self) -> pj.ParseOptions | None:
        """The options of a first, narrower read (None: read with every key)."""
        self._reads += 1
        if self._rest > 0:  # (threads racing here may take it below 0: harmless)
            self._rest -= 1
            return None
        keys = self.keys
        if keys is None or len(keys) == len(_NAMES) or self._reads % self.RENEW == 0:
            return None
        return _narrow(keys)

    def learn(self, table: pa.Table, first_line: bytes, failed: bool) -> None:
        """After ``table`` was read with every key (``failed``: the narrower read failed)."""
        keys = {name for name in table.column_names if table.column(name).null_count < len(table)}
        try:
            first = orjson.loads(first_line)
        except orjson.JSONDecodeError:
            first = None
        if isinstance(first, dict):
            keys.update(k for k in first if k in _NAMES)
        learnt = frozenset(keys)
        if failed and self.keys is not None and learnt <= self.keys:
            self._rest = self.REST
        self.keys = learnt


def _attempt(joined: bytes, options: pj.ParseOptions, threads: bool) -> pa.Table | None:
    try:
        return pj.read_json(pa.py_buffer(joined), _READ_THREADED if threads else _READ, options)
    except (pa.ArrowException, ValueError):  # ArrowInvalid, bad UTF-8, ...: a line is at fault
        return None


def _widened(table: pa.Table) -> pa.Table:
    """``table`` (read with a narrower schema) with every ``READ_SCHEMA`` column, in order;
    those it lacks all null, as a read with every key gives them."""
    have = set(table.column_names)
    n = table.num_rows
    return pa.Table.from_arrays(
        [table.column(f.name) if f.name in have else pa.nulls(n, f.type) for f in READ_SCHEMA],
        schema=READ_SCHEMA,
    )


def read_json_lines(
    count: int, joined: bytes, hint: KeyHint | None = None, threads: bool = False
) -> pa.Table | None:
    """``count`` lines joined by newlines as one table of ``READ_SCHEMA``, or None if the
    reader refuses any line (or splits one in two). ``hint``: try its keys first, and
    learn from a read of the whole. ``threads``: parse blocks on Arrow's pool."""
    narrow = hint.narrow() if hint is not None else None
    if narrow is not None:
        table = _attempt(joined, narrow, threads)
        if table is not None and table.num_rows == count:
            return _widened(table)
    table = _attempt(joined, _FULL, threads)
    if table is None or table.num_rows != count:
        return None
    if hint is not None:
        end = joined.find(b"\n")
        hint.learn(table, joined if end < 0 else joined[:end], failed=narrow is not None)
    return table
