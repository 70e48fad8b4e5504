"""Records of ``spendstream run``'s internal topics, and its control records.

A header ``spendstream-kind`` says what a record is; records without it on the usage topic
are usage events (any client may produce those).

- ``partials`` (partials topic, partition q): what one usage batch adds to the wide scopes
  scope owner q merges, ``stream.partials.PARTIALS`` as one Arrow IPC stream; the schema
  metadata names the usage partition and the first and last usage offset the batch spanned
  (a scope owner drops a batch it merged already by those offsets: a replay after a crash).
- ``reset`` (usage topic keyed like the scope's events, or partials topic at the scope's
  owner): ``spendstream breakers reset SCOPE``; signed (``spendstream.signing``) when
  ``[breaker]`` has an HMAC key, and then ignored by the owner unless the signature verifies.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from spendstream.facts_topic import ipc_record, ipc_table
from spendstream.instants import in_utc
from spendstream.producers.event import EARLIEST_TS
from spendstream.records import ALERT_KINDS
from spendstream.scopes import scope_error
from spendstream.signing import RecordSigner
from spendstream.stream.partials import ALERT, PARTIALS, split_ref

__all__ = [
    "COMPRESS_FROM_BYTES",
    "KIND_HEADER",
    "PARTIALS_KIND",
    "RESET",
    "PartialsBatch",
    "ResetCommand",
    "decode_partials",
    "decode_reset",
    "encode_partials",
    "encode_reset",
    "kind_of",
]

KIND_HEADER = "spendstream-kind"
PARTIALS_KIND = b"partials"
RESET = b"reset"

Headers = Iterable[tuple[str, bytes | None]] | None


def kind_of(headers: Headers) -> bytes | None:
    for name, value in headers or ():
        if name == KIND_HEADER:
            return value
    return None


@dataclass(frozen=True, slots=True)
class PartialsBatch:
    usage_partition: int
    first_offset: int  # usage offsets the batch spanned
    last_offset: int
    partials: pa.Table  # PARTIALS


COMPRESS_FROM_BYTES = 1 << 20  # partials records of this many bytes of Arrow, or more


def encode_partials(partition: int, first: int, last: int, partials: pa.Table) -> bytes:
    table = partials.replace_schema_metadata(
        {"usage_partition": str(partition), "usage_offsets": f"{first} {last}"}
    )
    # A batch's partials are mostly tens of rows per owner, where zstd's cost is per buffer
    # (2.1 ms to encode a batch's six records, 1.7 ms to decode them, against 0.08 and 0.14
    # uncompressed) for half the bytes of a few-KB record. Scopes by the thousand (a user
    # per event) make records of megabytes: those are compressed, to stay well within a
    # record's limit (topology.MAX_RECORD_BYTES).
    small = partials.nbytes < COMPRESS_FROM_BYTES
    return ipc_record(table, compression=None if small else "zstd")


def decode_partials(value: bytes) -> PartialsBatch:
    """``ValueError`` if ``value`` is not a partials record."""
    try:
        table = ipc_table(value)
        meta = table.schema.metadata or {}
        partition = int(meta[b"usage_partition"])
        first, last = (int(x) for x in meta[b"usage_offsets"].split())
    except (pa.ArrowInvalid, OSError, KeyError, ValueError) as exc:
        raise ValueError(f"not a partials record: {exc}") from exc
    if not table.schema.remove_metadata().equals(PARTIALS):
        raise ValueError("not a partials record: its schema is not PARTIALS")
    problem = _row_problem(table)
    if problem is not None:
        raise ValueError(f"not a partials record: {problem}")
    return PartialsBatch(partition, first, last, table.replace_schema_metadata(None))


def _is_batch_ref(ref: str) -> bool:
    """Whether ``ref`` names a facts record (``facts_reader.batch_ref``), or rows of one
    (``partials.slice_ref``): one that does not failed a scope owner's replay of it."""
    batch, rows = _split_ref(ref)
    if batch is None:
        return False
    partition, at, offset = batch.partition("@")
    if not (at and batch.isascii() and partition.isdigit() and offset.isdigit()):
        return False
    if batch != f"{int(partition)}@{int(offset)}":  # "02@5" names what "2@5" names
        return False
    return rows is None or 0 <= rows[0] <= rows[1]


def _split_ref(ref: str) -> tuple[str | None, tuple[int, int] | None]:
    """``partials.split_ref``, with (None, None) for a reference it cannot read."""
    try:
        return split_ref(ref)
    except ValueError:
        return None, None


# Columns a worker leaves null: an alert row's message is its only use, a batch reference
# and a source's watermarks may be unknown yet. Every other one is read as a number.
_NULLABLE = frozenset({"message", "batch", "wm_start", "wm_end"})
# The microseconds a datetime holds (years 1-9999): merging turns these columns into times.
_US_RANGE = (-62_135_596_800_000_000, 253_402_300_799_999_999)


def _row_problem(table: pa.Table) -> str | None:
    """What in the rows no worker writes (None: nothing): the schema alone let a record
    with a null count or a time past year 9999 through, and merging it failed every retry."""
    for f in PARTIALS:
        column = table.column(f.name)
        if f.name not in _NULLABLE and column.null_count:
            return f"{f.name} is null in {column.null_count} row(s)"
        if pa.types.is_timestamp(f.type) and column.null_count < len(column):
            bounds = pc.min_max(column.cast(pa.int64()))
            low, high = bounds["min"].as_py(), bounds["max"].as_py()
            if low < _US_RANGE[0] or high > _US_RANGE[1]:
                return f"{f.name} holds a time outside years 1-9999"
    for ref in pc.unique(table.column("batch").drop_null()).to_pylist():
        if not _is_batch_ref(ref):
            return f"batch {ref[:80]!r} is not <facts partition>@<offset>[#<start>:<stop>]"
    alerts = table.filter(pc.equal(table.column("detector"), ALERT))
    for message in alerts.column("message").to_pylist():
        parts = (message or "").split("\x1f")  # the message between may hold more
        if len(parts) < 3 or parts[0] not in ALERT_KINDS:
            shown = (message or "")[:80]
            return f"an alert row's message {shown!r} is not <kind>\\x1f<message>\\x1f<end>"
    return None


@dataclass(frozen=True, slots=True)
class ResetCommand:
    scope: str
    ts: datetime


def encode_reset(
    scope: str, ts: datetime, key: bytes | None, signer: RecordSigner | None
) -> tuple[bytes, list[tuple[str, bytes]]]:
    """The command's value and headers (its kind, and its signature with a key)."""
    value = orjson.dumps({"scope": scope, "ts": ts.isoformat()})
    headers = [(KIND_HEADER, RESET)]
    if signer is not None:
        headers += signer.headers("reset", key, value)
    return value, headers


def decode_reset(
    key: bytes | None,
    value: bytes,
    headers: Headers,
    signer: RecordSigner | None,
    received_at: datetime,
    max_future_skew_s: int,
) -> ResetCommand:
    """The command; ``ValueError`` saying why it is not one to apply: malformed, not signed
    with the key (with a signer), not a scope, or dated after its receipt by more than
    ``max_future_skew_s`` (``breakers reset`` dates it when it runs: one dated ahead would
    stand as the scope's latest breaker event past every later one)."""
    if signer is not None and not signer.verify_headers("reset", key, value, headers):
        raise ValueError("not signed with the [breaker] HMAC key")
    try:
        data = orjson.loads(value)
        scope, ts = str(data["scope"]), datetime.fromisoformat(data["ts"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"malformed ({type(exc).__name__}: {exc})") from None
    problem = scope_error(scope)
    if problem is not None:
        raise ValueError(problem)
    if ts.tzinfo is None:
        raise ValueError(f"ts {data['ts']!r} has no UTC offset")
    try:
        ts = in_utc(ts)
    except ValueError as exc:
        raise ValueError(f"ts {exc}") from None
    if ts < EARLIEST_TS:
        # As an event's ts: a breaker event's day must be one the warehouse can hold.
        raise ValueError(f"ts {ts.isoformat()} is before {EARLIEST_TS.date().year}")
    if ts - received_at > timedelta(seconds=max_future_skew_s):
        raise ValueError(
            f"ts {ts.isoformat()} is more than [detection] max_future_skew_s "
            f"({max_future_skew_s} s) after its receipt"
        )
    return ResetCommand(scope, ts)
