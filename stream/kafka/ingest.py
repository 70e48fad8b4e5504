"""POST /v1/events: split a body into records, validate each, and say which were accepted.

Pure: the web view produces the accepted records to the usage topic (keyed by
``spendstream.topics.partition_key``) and dead-letters the rejected ones. Each rejected
line's dead letter names ``http:<request-id>#<line>``; the request id is the client's
``X-Request-Id`` when it is a plain token, else a fresh one, and is sent back in the answer.
"""

from __future__ import annotations

import hmac
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from spendstream.config import DEFAULT_MAX_FUTURE_SKEW_S
from spendstream.records import DeadLetter
from spendstream.stream.batch import ROW, decode_lines
from spendstream.topics import partition_key

__all__ = ["MAX_BODY_BYTES", "IngestCheck", "check_body", "request_id", "token_ok"]

MAX_BODY_BYTES = 32 << 20
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


@dataclass(slots=True)
class IngestCheck:
    request_id: str
    accepted: list[tuple[bytes, bytes]] = field(default_factory=list)  # (key, raw record)
    rejected: list[dict[str, object]] = field(default_factory=list)  # {"line": n, "error": ...}
    dead_letters: list[DeadLetter] = field(default_factory=list)


def request_id(header: str | None) -> str:
    """The client's ``X-Request-Id`` if it is a plain token (it lands in dead letters), else new."""
    if header and _REQUEST_ID.fullmatch(header):
        return header
    return uuid.uuid4().hex


def check_body(
    body: bytes,
    content_type: str,
    received_at: datetime,
    request: str | None = None,
    max_future_skew_s: int = DEFAULT_MAX_FUTURE_SKEW_S,
) -> IngestCheck:
    """One JSON event (``application/json``) or JSON Lines (anything else).

    ``line`` in a rejection is the 1-based line of the body (1 for a single JSON event);
    blank lines are skipped but counted, so it matches what an editor shows.
    """
    rid = request or request_id(None)
    if content_type.split(";", 1)[0].strip().lower() == "application/json":
        numbered = [(1, body.strip())]
    else:
        numbered = [
            (n, line.strip()) for n, line in enumerate(body.split(b"\n"), start=1) if line.strip()
        ]
    out = IngestCheck(rid)
    decoded = decode_lines(
        [raw for _, raw in numbered],
        received_at,
        lambda i: f"http:{rid}#{numbered[i][0]}",
        max_future_skew_s,
    )
    table = decoded.events
    for row, api_key, session, event_id in zip(
        table.column(ROW).to_pylist(),
        table.column("api_key_id").to_pylist(),
        table.column("session_id").to_pylist(),
        table.column("event_id").to_pylist(),
        strict=True,
    ):
        out.accepted.append((partition_key(api_key, session, event_id), numbered[row][1]))
    for row, dead in zip(decoded.dead_rows, decoded.dead_letters, strict=True):
        out.dead_letters.append(dead)
        out.rejected.append({"line": numbered[row][0], "error": dead.error})
    return out


def token_ok(header: str | None, token: str) -> bool:
    """A ``Bearer <token>`` Authorization header, compared in constant time."""
    if not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[len("Bearer ") :].strip().encode(), token.encode())
