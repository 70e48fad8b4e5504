"""Decode and validate a batch of raw JSON records into one Arrow table, record by record.

    raw lines -> decode_lines -> DecodedBatch(events: pa.Table, dead_letters)

Every line ends as one row of ``events`` or one dead letter naming its source position;
nothing raises. The fast path reads the batch with pyarrow's JSON reader (an explicit
schema) and checks it column by column (stream/validator.py, derived from ``UsageEvent``);
only the rows that path cannot vouch for -- bad ones, and unusual but possibly good ones
(escapes, tags, explicit nulls, odd timestamp forms) -- go through
``UsageEvent.model_validate_json``, which decides them and words every reason. So the
table holds exactly what the model accepts (plus the receipt bound on ``ts``), with the
model's values; tests/stream/test_batch.py proves it differentially.

The table has the event columns of ``spendstream.table_schemas.EVENT_FIELDS`` in input
order and two internal ones: ``_row`` (the line's index in the batch: its position) and
``_digest`` (stream/digest.py: tells a replay from a different event with the same id).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
from pydantic import ValidationError

from spendstream.config import DEFAULT_MAX_FUTURE_SKEW_S
from spendstream.producers.event import UsageEvent, describe_validation_error
from spendstream.records import DeadLetter
from spendstream.stream import validator
from spendstream.stream.digest import DIGEST_TYPE, digest_column
from spendstream.stream.json_read import MAX_RECORD_BYTES, KeyHint, read_json_lines
from spendstream.table_schemas import EVENT_FIELDS, event_columns

__all__ = [
    "CONFLICT",
    "DIGEST",
    "DUPLICATE",
    "EVENTS",
    "MAX_RECORD_BYTES",
    "MAX_STORED_RAW_CHARS",
    "NEW",
    "ROW",
    "Classify",
    "DecodedBatch",
    "JudgedBatch",
    "conflict_dead_letters",
    "conflict_error",
    "decode_lines",
    "events_from_table",
    "judge_lines",
    "stored_raw",
]

# Dead letters keep the input as received, truncated so one huge record can't bloat the warehouse.
MAX_STORED_RAW_CHARS = 16_384

ROW = "_row"
DIGEST = "_digest"
EVENTS = pa.schema(
    [pa.field(n, t) for n, t in EVENT_FIELDS]
    + [pa.field(ROW, pa.int64(), nullable=False), pa.field(DIGEST, DIGEST_TYPE, nullable=False)]
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_PLAIN_KINDS = validator.plain_json_kinds()
_DEFAULTS = {r.name: r.default for r in validator.RULES}
# Where the fast path cannot tell an absent key (its default) from an explicit null (an
# error) or would meet a map it does not read: such rows go to pydantic.
_NULL_DEFAULTED = re.compile(
    rb'"(' + "|".join(validator.defaulted_fields()).encode() + rb')"[ \t]*:[ \t]*null'
)
_MAP_KEYS = [f'"{name}"'.encode() for name in validator.map_fields()]


@dataclass(frozen=True, slots=True)
class DecodedBatch:
    """Accepted events (schema ``EVENTS``, input order) and one dead letter per other line."""

    events: pa.Table
    dead_letters: list[DeadLetter]
    dead_rows: list[int]  # the index in the batch of each dead letter's line, in order


def stored_raw(raw: bytes | str) -> str:
    """A dead letter's ``raw``: the input as received, truncated if huge."""
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    if len(text) > MAX_STORED_RAW_CHARS:
        return text[:MAX_STORED_RAW_CHARS] + f"... [truncated, {len(text)} chars in all]"
    return text


def _micros(ts: datetime) -> int:
    return (ts - _EPOCH) // timedelta(microseconds=1)


def _skew_error(ts: datetime, skew_s: int) -> str:
    return (
        f"ts: {ts.isoformat()} is more than [detection] max_future_skew_s ({skew_s} s) after "
        "the pipeline received the record; the producer's clock is ahead, or ts is not when "
        "the call finished"
    )


def _judge(raw: bytes, latest_us: int, skew_s: int) -> UsageEvent | str:
    """The reference: the model, then the receipt bound. An event, or why not."""
    try:
        event = UsageEvent.model_validate_json(raw)
    except ValidationError as err:
        return describe_validation_error(err)
    if _micros(event.ts) > latest_us:
        return _skew_error(event.ts, skew_s)
    return event


class _Lines:
    """The batch joined by newlines once, with each line's start: byte tests over the whole
    buffer (one C search per needle) instead of one per line."""

    def __init__(self, raws: Sequence[bytes]) -> None:
        self.raws = raws
        # (A list first: numpy's fromiter took twice as long, ~180 ns a line.)
        self.length = np.array(list(map(len, raws)), dtype=np.int64)
        # Where each line starts in ``joined`` (each is followed by one newline).
        self.start = np.cumsum(self.length + 1) - (self.length + 1)
        self.joined = b"\n".join(raws)

    def rows_with(self, needle: bytes) -> np.ndarray:
        """A mask of the lines that contain ``needle``.

        Vectorized over the whole buffer: bytes.find costs ~0.5 ns a byte for a word, and a
        loop from hit to hit ~1.5 us a line when most lines hold the word (``null`` in
        events a client wrote with every optional key)."""
        if not needle:
            raise ValueError("an empty needle")
        buf = np.frombuffer(self.joined, dtype=np.uint8)
        k = len(needle)
        # Anchored on a byte other than a quote where it can be (JSON is full of quotes).
        anchor = max((j for j in range(k) if needle[j] != ord('"')), default=k - 1)
        at = np.flatnonzero(buf[anchor : len(buf) - k + 1 + anchor] == needle[anchor])
        for j in range(k):
            if j != anchor:
                at = at[buf[at + j] == needle[j]]
        hit = np.zeros(len(self.raws), dtype=bool)
        # (No match spans two lines: no needle holds the newline between them.)
        hit[np.searchsorted(self.start, at, side="right") - 1] = True
        return hit

    def screen(self) -> tuple[np.ndarray, np.ndarray]:
        """(too big, fast-path candidate) per line."""
        n = len(self.raws)
        too_big = self.length > MAX_RECORD_BYTES
        buf = np.frombuffer(self.joined, dtype=np.uint8)
        nonempty = self.length > 0
        first = np.zeros(n, dtype=np.uint8)
        last = np.zeros(n, dtype=np.uint8)
        first[nonempty] = buf[self.start[nonempty]]
        last[nonempty] = buf[self.start[nonempty] + self.length[nonempty] - 1]
        fast = ~too_big & (first == ord("{")) & (last == ord("}"))
        # An escape can spell a key or a character the reader and pydantic might see apart.
        fast &= ~self.rows_with(b"\\")
        # A newline inside a record (a pretty-printed Kafka value) would split it in the
        # reader. (A line the reader splits some other way -- at a \r, or two objects on one
        # line -- changes the row count, and the batch takes the per-line path.)
        if np.count_nonzero(buf == ord("\n")) != n - 1:
            fast &= np.fromiter((b"\n" not in r for r in self.raws), dtype=bool, count=n)
        return too_big, fast

    def explicit_null_default(self, rows: np.ndarray) -> np.ndarray:
        """Of ``rows`` (indices), a mask of those that write null for a defaulted field."""
        with_null = self.rows_with(b"null")[rows]
        out = np.zeros(len(rows), dtype=bool)
        for k in np.flatnonzero(with_null):
            out[k] = _NULL_DEFAULTED.search(self.raws[rows[k]]) is not None
        return out


# The keys recent whole batches held (stream/json_read.py): a process's guess, shared by the
# batches of `ingest` and of a worker's usage partitions (events of the same producers).
SHARED_HINT = KeyHint()


def _plain(raw: bytes) -> bool:
    """Whether the reader should take this line: one object of known keys and JSON kinds."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False
    if type(value) is not dict:
        return False
    for key, item in value.items():
        kind = _PLAIN_KINDS.get(key)
        if kind is None or (item is not None and not kind(item)):
            return False
    return True


def _read_rows(
    lines: _Lines, rows: list[int], hint: KeyHint | None, threads: bool
) -> tuple[list[pa.Table], list[int], list[int]]:
    """(tables, the rows they hold in order, rows the reader refused)."""
    raws = lines.raws
    everything = len(rows) == len(raws)
    joined = lines.joined if everything else b"\n".join([raws[i] for i in rows])
    whole = read_json_lines(len(rows), joined, hint, threads)
    if whole is not None:
        return [whole], rows, []
    # The usual reason a read fails: lines with a map (the reader is not told of maps; the
    # model reads them). Found only now, since searching every batch's bytes for each map's
    # key took ~0.4 us/event; set aside, the rest is read again.
    mapped = np.zeros(len(raws), dtype=bool)
    for key in _MAP_KEYS:
        mapped |= lines.rows_with(key)
    maps = [i for i in rows if mapped[i]]
    if maps:
        rows = [i for i in rows if not mapped[i]]
        again = (
            read_json_lines(len(rows), b"\n".join([raws[i] for i in rows]), hint, threads)
            if rows
            else None
        )
        if again is not None or not rows:
            return ([again] if again is not None else []), rows, maps
    # One bad line fails a whole read: screen each line (~1 us), read the rest, and halve
    # whatever still fails (a duplicate key, say) down to the lines at fault.
    plain = [i for i in rows if _plain(raws[i])]
    refused = sorted(set(rows) - set(plain)) + maps
    tables: list[pa.Table] = []
    read: list[int] = []
    pending = [plain] if plain else []
    while pending:
        part = pending.pop()
        table = read_json_lines(len(part), b"\n".join([raws[i] for i in part]), threads=threads)
        if table is not None:
            tables.append(table)
            read.extend(part)
        elif len(part) == 1:
            refused.append(part[0])
        else:
            mid = len(part) // 2
            pending += [part[mid:], part[:mid]]
    return tables, read, refused


def decode_lines(
    raws: Sequence[bytes],
    received_at: datetime,
    position: Callable[[int], str],
    max_future_skew_s: int = DEFAULT_MAX_FUTURE_SKEW_S,
    hint: KeyHint | None = SHARED_HINT,
    threads: bool = False,
) -> DecodedBatch:
    """Decode and validate ``raws`` (one JSON event each) received at ``received_at``.

    ``position(i)`` is the source position of ``raws[i]`` (``file.jsonl:12``,
    ``kafka:topic/3@1042``, ``http:<request-id>#2``); it is asked only for dead letters.
    A ``ts`` later than ``received_at + max_future_skew_s`` is refused (docs/bounds.md).
    ``hint``: which keys to tell the JSON reader first (stream/json_read.py; None: every
    key); ``threads``: parse on Arrow's pool (sooner, for more CPU). Speed only.
    """
    latest_us = _micros(received_at) + max_future_skew_s * 1_000_000
    lines = _Lines(raws)
    too_big, fast = lines.screen()
    slow = set(np.flatnonzero(~fast & ~too_big).tolist())
    parts: list[dict[str, pa.Array]] = []
    if fast.any():
        tables, read, refused = _read_rows(lines, np.flatnonzero(fast).tolist(), hint, threads)
        slow.update(refused)
        if tables:
            ok, columns = validator.check_columns(pa.concat_tables(tables), latest_us)
            rows = np.asarray(read, dtype=np.int64)
            ok &= ~lines.explicit_null_default(rows)
            if not ok.all():  # (a batch of good lines skips the copy)
                keep = pa.array(ok)
                columns = {name: col.filter(keep) for name, col in columns.items()}
            columns[ROW] = pa.array(rows[ok], pa.int64())
            parts.append(columns)
            slow.update(rows[~ok].tolist())
    failures: dict[int, str] = {
        int(i): f"record is {lines.length[i]} bytes; a usage event may be at most "
        f"{MAX_RECORD_BYTES} bytes"
        for i in np.flatnonzero(too_big)
    }
    accepted: list[UsageEvent] = []
    accepted_rows: list[int] = []
    for i in sorted(slow):
        verdict = _judge(raws[i], latest_us, max_future_skew_s)
        if isinstance(verdict, str):
            failures[i] = verdict
        else:
            accepted.append(verdict)
            accepted_rows.append(i)
    if accepted:
        columns = event_columns(accepted)
        columns[ROW] = pa.array(accepted_rows, pa.int64())
        parts.append(columns)
    dead_rows = sorted(failures)
    dead = [
        DeadLetter(stored_raw(raws[i]), failures[i], position(i), received_at) for i in dead_rows
    ]
    return DecodedBatch(_assemble(parts), dead, dead_rows)


def _assemble(parts: list[dict[str, pa.Array]]) -> pa.Table:
    if not parts:
        return EVENTS.empty_table()
    names = [f.name for f in EVENTS if f.name != DIGEST]
    table = pa.concat_tables(
        pa.table([p[name] for name in names], names=names) for p in parts
    ).combine_chunks()
    if len(parts) > 1:
        table = table.sort_by(ROW)
    columns = {name: table.column(name) for name, _ in EVENT_FIELDS}
    digests = digest_column(columns, _DEFAULTS)
    return table.append_column(EVENTS.field(DIGEST), digests).cast(EVENTS)


_FIELDS = tuple(UsageEvent.model_fields)


def events_from_table(table: pa.Table) -> list[UsageEvent]:
    """``UsageEvent`` objects of accepted rows, for stages that still take objects.

    The seam until pricing and detection take Arrow batches: the values were validated
    by ``decode_lines``, so the objects are built without validating again (~1 us each
    instead of model_construct's ~10).
    """
    cols: dict[str, list[Any]] = {}
    for name in _FIELDS:
        col = table.column(name)
        if name == "ts":
            micros = col.cast(pa.int64()).to_pylist()
            cols[name] = [_EPOCH + timedelta(microseconds=v) for v in micros]
        elif pa.types.is_map(col.type):
            cols[name] = [dict(m) if m is not None else None for m in col.to_pylist()]
        else:
            cols[name] = col.to_pylist()
    out = []
    new = object.__new__
    setattr_ = object.__setattr__
    fields_set = set(_FIELDS)
    for values in zip(*(cols[name] for name in _FIELDS), strict=True):
        event = new(UsageEvent)
        setattr_(event, "__dict__", dict(zip(_FIELDS, values, strict=True)))
        setattr_(event, "__pydantic_fields_set__", fields_set)
        setattr_(event, "__pydantic_extra__", None)
        setattr_(event, "__pydantic_private__", None)
        out.append(event)
    return out


def conflict_error(event_id: str) -> str:
    """The reason of a conflicting duplicate (an id landed, or earlier in the batch, with
    other content). The same words either way, so re-ingesting a file adds no second dead
    letter for the same line."""
    return (
        f"conflicting_duplicate: event_id {event_id!r} already names an event with different "
        "content; this record was not landed (the event that holds the id is in usage_facts)"
    )


def conflict_dead_letters(
    events: pa.Table,
    conflict: np.ndarray,
    raws: Sequence[bytes],
    position: Callable[[int], str],
    received_at: datetime,
) -> list[DeadLetter]:
    """One dead letter per row of ``events`` flagged in ``conflict``, at its line's position."""
    rows = events.column(ROW).to_pylist()
    ids = events.column("event_id")
    return [
        DeadLetter(
            stored_raw(raws[rows[k]]),
            conflict_error(ids[k].as_py()),
            position(rows[k]),
            received_at,
        )
        for k in np.flatnonzero(conflict).tolist()
    ]


# The landed-key store's verdict per event (spendstream.warehouse.dedupe: NEW, DUPLICATE,
# CONFLICT; the stream never imports the warehouse, so the codes are restated here).
NEW, DUPLICATE, CONFLICT = 0, 1, 2
# (event_ids, ts, digests) -> one int8 verdict per row: ``Warehouse.classify``.
Classify = Callable[[pa.ChunkedArray, pa.ChunkedArray, pa.ChunkedArray], np.ndarray]


@dataclass(frozen=True, slots=True)
class JudgedBatch:
    """A batch after decoding and dedupe: the new events, and every other line accounted for."""

    new: pa.Table  # schema EVENTS; the events to price, detect and land
    dead_letters: list[DeadLetter]  # bad lines and conflicting duplicates, at their positions
    duplicates: int  # replays of landed (or earlier) events with the same content


def judge_lines(
    raws: Sequence[bytes],
    received_at: datetime,
    position: Callable[[int], str],
    classify: Classify,
    max_future_skew_s: int = DEFAULT_MAX_FUTURE_SKEW_S,
    threads: bool = False,
) -> JudgedBatch:
    """``decode_lines``, then each event judged by ``classify(event_ids, ts, digests)`` (the
    landed-key store, against what landed and the rows before it): what every runtime does
    with a batch before pricing it. A conflicting duplicate becomes a dead letter."""
    decoded = decode_lines(raws, received_at, position, max_future_skew_s, threads=threads)
    events = decoded.events
    verdict = np.asarray(classify(events["event_id"], events["ts"], events[DIGEST]))
    dead = decoded.dead_letters + conflict_dead_letters(
        events, verdict == CONFLICT, raws, position, received_at
    )
    fresh = verdict == NEW
    # Most batches are all new: filtering would copy every column for nothing.
    new = events if fresh.all() else events.filter(pa.array(fresh))
    return JudgedBatch(new, dead, int((verdict == DUPLICATE).sum()))
