"""What an input file that is not JSON Lines most likely is, from its first bytes.

``ingest`` reads one JSON object per line. A gzipped file, a CSV export, an object pretty-printed over
many lines, a JSON array or an OTLP export each became a pile of dead letters whose reason
("Invalid JSON: trailing characters at line 1 column 13") did not say what to do.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["shape_hint"]

_LOOK_BYTES = 64 * 1024


def shape_hint(path: str) -> str | None:
    """What to do with ``path`` when its first bytes say it is not JSON Lines of events;
    None when they look like JSON Lines (or it cannot be read: the read itself says so)."""
    try:
        with Path(path).open("rb") as f:
            head = f.read(_LOOK_BYTES)
    except OSError:
        return None
    name = path
    if head.startswith(b"\x1f\x8b"):
        return (
            f"{name} is gzip-compressed: `gunzip -c {name} | spendstream ingest -` "
            "(only --format otlp reads .gz files itself)"
        )
    first = next((line.strip() for line in head.splitlines() if line.strip()), b"")
    if b'"resourceSpans"' in first or b'"resourceSpans"' in head[:4096]:
        return f"{name} is an OTLP trace export: pass --format otlp"
    if first.startswith(b"["):
        return (
            f"{name} holds a JSON array: ingest reads one JSON object per line "
            f"(`jq -c '.[]' {name} | spendstream ingest -`)"
        )
    if first == b"{":
        return (
            f"{name} spreads a JSON object over lines: ingest reads one object per line "
            f"(`jq -c . {name} | spendstream ingest -`)"
        )
    header = {c.strip(b' "').lower() for c in first.replace(b"\t", b",").split(b",")}
    if not first.startswith(b"{") and len(header & _EVENT_FIELDS) >= 2:
        # A spreadsheet's export: a header line naming the event's fields.
        return (
            f"{name} is CSV (its first line names columns): ingest reads one JSON object per "
            "line, as producers/usage-event.schema.json has it (token counts as numbers, ts "
            "with its offset)"
        )
    return None


_EVENT_FIELDS = frozenset(
    {
        b"event_id",
        b"ts",
        b"provider",
        b"model",
        b"input_tokens",
        b"output_tokens",
        b"team",
        b"feature",
    }
)
