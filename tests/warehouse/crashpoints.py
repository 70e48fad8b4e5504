"""Kill a test subprocess with SIGKILL at a named step of the commit protocol.

Test code only: ``python -m tests.warehouse.crashpoints POINT N -- ARGS...`` wraps the
warehouse's methods in *this* process (nothing in the product knows about it), then runs
``spendstream ARGS...``, or with ``--writer`` the synthetic writer below; the N-th time
the process reaches POINT it kills itself, as kill -9 would.

The synthetic writer lands a JSON Lines file of usage events in batches, with one alert per
7th line, one breaker event per 11th and a dead letter per 13th, resuming from the positions
and state of its last commit: its tables after any crash and a restart must equal one
uninterrupted run.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

__all__ = ["POINTS", "install", "main", "run_writer", "synthetic_lines"]

POINTS = (
    "before_facts_commit",  # data files and the record written, nothing committed
    "facts_commit_unacknowledged",  # the catalog took the facts commit, the writer never heard
    "after_facts_commit",  # facts + positions committed, no outbox table yet
    "after_first_outbox",  # one of alerts / breaker_events / dead_letters committed
    "after_all_outboxes",  # everything committed, the caller not told yet
)


def _die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def install(point: str, nth: int) -> None:
    from pyiceberg.catalog.sql import SqlCatalog

    from spendstream.warehouse.landing import Warehouse

    if point not in POINTS:
        raise SystemExit(f"unknown crash point {point!r}; one of {POINTS}")
    seen = {"n": 0}

    def hit() -> None:
        seen["n"] += 1
        if seen["n"] == nth:
            _die()

    orig_append = Warehouse._append
    orig_outbox = Warehouse._land_outbox
    orig_commit_table = SqlCatalog.commit_table
    orig_commit = Warehouse.commit

    def append(self: Warehouse, name: str, *args: Any, **kw: Any) -> int:
        if name == "usage_facts" and point == "before_facts_commit":
            hit()
        out = orig_append(self, name, *args, **kw)
        if name == "usage_facts" and point == "after_facts_commit":
            hit()
        return out

    def outbox(self: Warehouse, *args: Any, **kw: Any) -> bool:
        landed = orig_outbox(self, *args, **kw)
        if landed and point == "after_first_outbox":
            hit()
        return landed

    def commit_table(self: SqlCatalog, table: Any, *args: Any, **kw: Any) -> Any:
        out = orig_commit_table(self, table, *args, **kw)
        if point == "facts_commit_unacknowledged" and table.name()[-1] == "usage_facts":
            hit()
        return out

    def commit(self: Warehouse, *args: Any, **kw: Any) -> Any:
        out = orig_commit(self, *args, **kw)
        if point == "after_all_outboxes" and out.committed:
            hit()
        return out

    Warehouse._append = append  # type: ignore[method-assign]
    Warehouse._land_outbox = outbox  # type: ignore[method-assign]
    SqlCatalog.commit_table = commit_table  # type: ignore[method-assign]
    Warehouse.commit = commit  # type: ignore[method-assign]


T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def synthetic_lines(n: int, duplicate_every: int = 5, start: int = 0) -> list[str]:
    """Usage events ``start``.. ``start + n``; every ``duplicate_every``-th line repeats an
    earlier event_id (so two files with overlapping ranges share events, as two partitions
    fed the same retried call would)."""
    lines = []
    for i in range(start, start + n):
        # A repeat is the same call sent again: same id, same content.
        k = i // 2 if i % duplicate_every == duplicate_every - 1 else i
        lines.append(
            json.dumps(
                {
                    "event_id": f"ev-{k}",
                    "ts": (T0 + timedelta(minutes=37 * k)).isoformat(),
                    "provider": "openai",
                    "model": "gpt-5-mini",
                    "input_tokens": 1000 + k,
                    "output_tokens": 10,
                    "team": f"t{k % 3}",
                }
            )
        )
    return lines


def run_writer(workdir: Path, events: Path, writer: str, batch: int, config: Any) -> None:
    """Land ``events`` from the writer's last positions on (the synthetic writer)."""
    from spendstream.producers.event import UsageEvent
    from spendstream.records import Alert, BreakerEvent, Cost, DeadLetter, Fact
    from spendstream.warehouse import Warehouse

    lines = events.read_text().splitlines()
    with Warehouse(workdir, writer=writer, config=config) as wh:
        resume = wh.resume()
        start = (resume.positions or {}).get(events.name, 0)
        count = json.loads(resume.state)["lines"] if resume.state else 0
        assert count == start, (count, start)  # state and positions always move together
        for lo in range(start, len(lines), batch):
            facts, alerts, breakers, dead = [], [], [], []
            for i in range(lo, min(lo + batch, len(lines))):
                if i % 13 == 12:
                    dead.append(DeadLetter(lines[i], "synthetic", f"{events.name}:{i}", T0))
                    continue
                event = UsageEvent.model_validate_json(lines[i])
                d = Decimal(event.input_tokens) / 1000
                facts.append(
                    Fact(event, Cost(d, Decimal(0), Decimal(0), Decimal(0), d, "t"), event.ts)
                )
                if i % 7 == 6:
                    alerts.append(
                        Alert(
                            alert_id=f"al-{events.stem}-{i}",
                            kind="runaway_rate",
                            scope="global",
                            severity="warning",
                            ts=event.ts,
                            value=Decimal(i),
                            threshold=Decimal(1),
                            message=f"line {i}",
                            dedup_key=f"dk-{i}",
                        )
                    )
                if i % 11 == 10:
                    breakers.append(BreakerEvent("global", "open", f"line {i}", event.ts))
            end = min(lo + batch, len(lines))
            wh.commit(
                facts,
                alerts,
                breakers,
                dead,
                positions={events.name: end},
                state=json.dumps({"lines": end}).encode(),
            )


def main(argv: list[str]) -> None:
    point, nth = argv[0], int(argv[1])
    rest = argv[argv.index("--") + 1 :]
    if point != "none":
        install(point, nth)
    if rest and rest[0] == "--writer":
        from spendstream.config import load_config

        workdir, events, writer, batch = rest[1], rest[2], rest[3], int(rest[4])
        config = load_config(rest[5]).warehouse if len(rest) > 5 else None
        run_writer(Path(workdir), Path(events), writer, batch, config)
        return
    from spendstream.cli import main as cli

    raise SystemExit(cli(rest))


if __name__ == "__main__":
    main(sys.argv[1:])
