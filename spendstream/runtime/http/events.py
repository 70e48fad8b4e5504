"""POST /v1/events: split a body into records, validate each, and say which were accepted.

Pure: the server (``spendstream.runtime.http.server``) produces the accepted records to the
usage topic (keyed by ``spendstream.topics.partition_key``) and dead-letters the rejected ones. Each rejected
line's dead letter names ``http:<request-id>#<line>``; the request id is the client's
``X-Request-Id`` when it is a plain token, else a fresh one, and is sent back in the answer.

Like the Python client, the endpoint fills in what a caller cannot be expected to invent:
an object without ``event_id`` gets a random UUID, one without ``ts`` the time the request
was received (UTC). The rest of the record is kept byte for byte (the two keys are written
in front), so no number is re-rounded. A caller that may retry a request should send its
own ``event_id``: a filled-in one is new on every attempt.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from spendstream.config import DEFAULT_MAX_FUTURE_SKEW_S
from spendstream.producers import wire_json
from spendstream.records import DeadLetter
from spendstream.stream.batch import MAX_RECORD_BYTES, ROW, decode_lines, stored_raw
from spendstream.topics import partition_key

__all__ = [
    "MAX_BODY_BYTES",
    "IngestCheck",
    "check_body",
    "request_id",
    "with_defaults",
]

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
    # A body saved by a Windows editor starts with a byte-order mark (as ingest's files may).
    body = body.removeprefix(b"\xef\xbb\xbf")
    one_event = content_type.split(";", 1)[0].strip().lower() == "application/json"
    if one_event:
        numbered = [(1, body.strip())]
    else:
        numbered = [
            (n, line.strip()) for n, line in enumerate(body.split(b"\n"), start=1) if line.strip()
        ]
    out = IngestCheck(rid)
    raws = [with_defaults(given, received_at) for _, given in numbered]
    decoded = decode_lines(
        raws,
        received_at,
        lambda i: f"http:{rid}#{numbered[i][0]}",
        max_future_skew_s,
        # A request's few lines, of clients other than the worker's usage batches: read
        # with every key, not teaching the process's hint their keys.
        hint=None,
    )
    table = decoded.events
    for row, api_key, session, request, event_id in zip(
        table.column(ROW).to_pylist(),
        table.column("api_key_id").to_pylist(),
        table.column("session_id").to_pylist(),
        table.column("request_id").to_pylist(),
        table.column("event_id").to_pylist(),
        strict=True,
    ):
        out.accepted.append((partition_key(api_key, session, request, event_id), raws[row]))
    for row, dead in zip(decoded.dead_rows, decoded.dead_letters, strict=True):
        given = numbered[row][1]
        if raws[row] is not given:  # the dead letter keeps the record as the caller sent it
            dead = replace(dead, raw=stored_raw(given))
        if one_event and b"\n" in given and "trailing characters" in dead.error:
            dead = replace(dead, error=dead.error + _SEVERAL_AS_ONE)
        out.dead_letters.append(dead)
        out.rejected.append({"line": numbered[row][0], "error": dead.error})
    return out


# A JSON Lines batch sent with the Content-Type of one event fails as "trailing characters".
_SEVERAL_AS_ONE = (
    " (Content-Type: application/json is one event; for several, one JSON object per line"
    " with Content-Type: application/x-ndjson)"
)


def with_defaults(raw: bytes, received_at: datetime) -> bytes:
    """``raw`` with ``event_id`` (a new UUID) and ``ts`` (``received_at``) written in front
    when the JSON object lacks them; anything else (not an object, not JSON) is left as it
    is, for validation to reject with its reason."""
    if len(raw) > MAX_RECORD_BYTES:
        return raw  # refused for its size anyway; not worth parsing twice
    try:
        data = wire_json.loads(raw)
    except ValueError:
        return raw
    if not isinstance(data, dict) or ("event_id" in data and "ts" in data):
        return raw
    added = []
    if "event_id" not in data:
        added.append(f'"event_id": "{uuid.uuid4()}"')
    if "ts" not in data:
        ts = received_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
        added.append(f'"ts": "{ts}"')
    body = raw.strip()[1:]  # after the opening brace
    sep = "" if body.lstrip().startswith(b"}") else ", "
    return ("{" + ", ".join(added) + sep).encode() + body
