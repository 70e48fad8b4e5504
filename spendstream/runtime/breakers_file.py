"""``<workdir>/breakers.json``: the open breakers of the workdir's embedded writer, for
clients without Kafka (``producers.guard.WorkdirBreakerView``).

The warehouse's breaker events are the record; this file is only what a client's
``guard()`` reads, kept as small as the set of open breakers and replaced whole (a rename),
so a reader never sees half of it. It is written after each commit that moved a breaker
and when the writer starts, or ``breakers reset`` runs with the workdir free (a writer
killed between its commit and this file left it stale until then).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import orjson

from spendstream.producers.guard import BREAKERS_FILE
from spendstream.stream.breakers import BreakerStatus
from spendstream.workdir import write_atomically

__all__ = ["write_breakers_file"]


def write_breakers_file(workdir: Path, breakers: Mapping[str, BreakerStatus]) -> None:
    """Replace the file with ``breakers`` (every breaker that is not closed). No file and
    nothing open: none is written (a missing file reads as nothing open), so a workdir where
    no breaker ever moved holds no file for it."""
    path = workdir / BREAKERS_FILE
    if not breakers and not path.exists():
        return
    rows = [
        {"scope": scope, "state": b.state, "reason": b.reason, "ts": b.since.isoformat()}
        for scope, b in sorted(breakers.items())
    ]
    write_atomically(path, orjson.dumps({"breakers": rows}))
