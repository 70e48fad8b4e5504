"""Query results for people (an aligned table) and for programs (CSV, JSON).

Money stays exact: Decimals are written as decimal strings in CSV and JSON, never floats.
Bytes (a BLOB such as ``event_digest``) are written as lowercase hex in all three formats.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any, TextIO

__all__ = ["FORMATS", "TABLE_ROWS", "render", "render_chunks"]

FORMATS = ("table", "csv", "json")
_MAX_CELL = 100
# The most rows a table shows: it is read by a person, and aligning columns holds every row
# in memory (100M rows of `spendstream sql` ran out of it). CSV and JSON stream every row.
TABLE_ROWS = 10_000


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray | memoryview):
        # str() wrote Python's repr (b'x\\xab...'); hex is what every format writes.
        return bytes(value).hex()
    if isinstance(value, Decimal):
        # Trailing zeros of DECIMAL(38, 18) are noise to a person; the value is unchanged.
        text = f"{value.normalize():f}" if value else "0"
        return text
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _json_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        # Fixed point, at the column's scale: str() writes DECIMAL(38, 18)'s zero as "0E-18"
        # and one attodollar as "1E-18", which some JSON consumers' decimal parsers refuse.
        return f"{value:f}"
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()  # json.dumps refused bytes: `SELECT *` failed
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    return value


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def render(columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str, out: TextIO) -> None:
    """Write ``rows`` as ``fmt`` (table, csv or json: a list of objects)."""
    if fmt == "table":
        _table(columns, rows, out)
    else:
        render_chunks(columns, [rows], fmt, out)


def render_chunks(
    columns: Sequence[str], chunks: Iterable[Sequence[Sequence[Any]]], fmt: str, out: TextIO
) -> None:
    """``render`` of rows that come in chunks: CSV and JSON are written as they come (any
    number of rows in bounded memory); a table shows the first ``TABLE_ROWS``."""
    if fmt == "json":
        # As json.dump(rows, indent=2) writes the whole list, one object at a time.
        first = True
        for chunk in chunks:
            for r in chunk:
                obj = {c: _json_value(v) for c, v in zip(columns, r, strict=True)}
                text = json.dumps(obj, indent=2, ensure_ascii=False, default=_text).replace(
                    "\n", "\n  "
                )
                out.write(("[\n  " if first else ",\n  ") + text)
                first = False
        out.write("[]\n" if first else "\n]\n")
        return
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        for chunk in chunks:
            for r in chunk:
                writer.writerow(
                    [
                        json.dumps(_json_value(v)) if isinstance(v, dict | list) else _text(v)
                        for v in r
                    ]
                )
        return
    if fmt != "table":
        raise ValueError(f"unknown format {fmt!r}")
    shown: list[Sequence[Any]] = []
    more = False
    rest = iter(chunks)
    for chunk in rest:
        room = TABLE_ROWS - len(shown)
        shown.extend(chunk[:room])
        if len(chunk) > room:
            more = True
            break
        if len(shown) == TABLE_ROWS:
            more = any(len(c) for c in rest)  # the next non-empty chunk tells
            break
    _table(columns, shown, out, more)


def _table(
    columns: Sequence[str], rows: Sequence[Sequence[Any]], out: TextIO, more: bool = False
) -> None:
    texts = [list(map(_text, r)) for r in rows]
    # Every column but the last is cut at _MAX_CELL so the columns after it stay aligned. The
    # last is shown whole: nothing follows it to misalign, and it is where a long value is
    # read (a dead letter's error, whose end says what to fix, was cut at 100 characters).
    last = len(columns) - 1
    cut = any(len(t) > _MAX_CELL for r in texts for t in r[:last])
    cells = [
        [
            t if len(t) <= _MAX_CELL or i == last else t[: _MAX_CELL - 1] + "…"
            for i, t in enumerate(r)
        ]
        for r in texts
    ]
    widths = [len(c) for c in columns]
    for r in cells:
        widths = [max(w, len(t)) for w, t in zip(widths, r, strict=True)]
    right = [
        bool(rows) and all(_numeric(r[i]) or r[i] is None for r in rows)
        for i in range(len(columns))
    ]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if rj else v.ljust(w) for v, w, rj in zip(values, widths, right, strict=True)
        ]
        return "  ".join(parts).rstrip()

    out.write(line(list(columns)) + "\n")
    # The rule under a whole last column stops at _MAX_CELL (or its name): one long value must
    # not draw a rule that wraps over several lines of the terminal.
    rule = [
        w if i < last else max(min(w, _MAX_CELL), len(columns[i])) for i, w in enumerate(widths)
    ]
    out.write("  ".join("-" * w for w in rule) + "\n")
    for r in cells:
        out.write(line(r) + "\n")
    if more:
        out.write(
            f"(the first {len(rows):,} rows; more follow: add a LIMIT, or --format csv|json "
            "writes every row)\n"
        )
    else:
        out.write(f"({len(rows)} row{'s' if len(rows) != 1 else ''})\n")
    if cut:
        out.write(
            f"(values longer than {_MAX_CELL} characters end in … except in the last column: "
            "--format csv|json writes them whole)\n"
        )
