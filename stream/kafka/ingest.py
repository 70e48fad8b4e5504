"""POST /v1/events: split a body into records, validate each, and say which were accepted.

Pure: the web view produces the accepted records to the usage topic (keyed by
``spendstream.topics.partition_key``) and dead-letters the rejected ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from spendstream.http_auth import token_ok
from spendstream.records import DeadLetter
from spendstream.stream.pipeline import parse_records
from spendstream.topics import partition_key

__all__ = ["MAX_BODY_BYTES", "IngestCheck", "check_body", "token_ok"]

MAX_BODY_BYTES = 32 << 20
SOURCE = "http:/v1/events"


@dataclass(slots=True)
class IngestCheck:
    accepted: list[tuple[bytes, bytes]] = field(default_factory=list)  # (key, raw record)
    rejected: list[dict[str, object]] = field(default_factory=list)  # {"line": n, "error": ...}
    dead_letters: list[DeadLetter] = field(default_factory=list)


def check_body(body: bytes, content_type: str, received_at: datetime) -> IngestCheck:
    """One JSON event (``application/json``) or JSON Lines (anything else).

    ``line`` in a rejection is the 1-based line of the body (1 for a single JSON event);
    blank lines are skipped but counted, so it matches what an editor shows.
    """
    if content_type.split(";", 1)[0].strip().lower() == "application/json":
        numbered = [(1, body.strip())]
    else:
        numbered = [
            (n, line.strip()) for n, line in enumerate(body.split(b"\n"), start=1) if line.strip()
        ]
    out = IngestCheck()
    for n, raw in numbered:
        parsed = parse_records([raw], SOURCE, received_at)
        if parsed.events:
            e = parsed.events[0]
            out.accepted.append(
                (partition_key(e.api_key_id, e.session_id, e.request_id, e.event_id), raw)
            )
        else:
            dead = parsed.dead_letters[0]
            out.dead_letters.append(dead)
            out.rejected.append({"line": n, "error": dead.error})
    return out
