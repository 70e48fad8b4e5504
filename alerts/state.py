"""Delivery state in ``<workdir>/alerts/state.sqlite``: what was paged, what is open, what died.

Written right after each delivery and before the Kafka offset is committed, so a router
that restarts and reads the same alerts again finds their incidents open and folds them
instead of paging twice. Times are stored as Unix seconds (REAL).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from spendstream.records import Alert, BreakerState

from .notification import Notification

__all__ = ["DeadLetterRow", "DeliveryState", "OpenIncident"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS incidents (
    sink TEXT NOT NULL, key TEXT NOT NULL, route TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('open', 'resolved')),
    notification TEXT NOT NULL, count INTEGER NOT NULL,
    opened_at REAL NOT NULL, last_alert_at REAL NOT NULL, resolved_at REAL,
    PRIMARY KEY (sink, key)
);
CREATE TABLE IF NOT EXISTS members (
    sink TEXT NOT NULL, key TEXT NOT NULL, scope TEXT NOT NULL, resolved INTEGER NOT NULL,
    PRIMARY KEY (sink, key, scope)
);
CREATE INDEX IF NOT EXISTS members_scope ON members (scope, resolved);
CREATE TABLE IF NOT EXISTS sends (sink TEXT NOT NULL, scope TEXT NOT NULL, sent_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS sends_scope ON sends (sink, scope, sent_at);
CREATE TABLE IF NOT EXISTS breakers (scope TEXT PRIMARY KEY, state TEXT NOT NULL, ts REAL NOT NULL);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY, sink TEXT NOT NULL, key TEXT NOT NULL, action TEXT NOT NULL,
    notification TEXT NOT NULL, error TEXT NOT NULL, attempts INTEGER NOT NULL, dead_at REAL NOT NULL,
    -- Set by a replay: 'delivered', or 'superseded' when a newer page or resolve made it moot.
    replay TEXT, replayed_at REAL
);
CREATE TABLE IF NOT EXISTS decisions (
    alert_id TEXT NOT NULL, route TEXT NOT NULL, sink TEXT NOT NULL, decision TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS bad_records (
    topic TEXT NOT NULL, partition INTEGER NOT NULL, "offset" INTEGER NOT NULL,
    raw TEXT NOT NULL, error TEXT NOT NULL, at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS decisions_alert ON decisions (alert_id, route, sink);
"""


def _ts(dt: datetime) -> float:
    return dt.timestamp()


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


@dataclass(slots=True, frozen=True)
class OpenIncident:
    sink: str
    key: str
    route: str
    trigger: Notification
    count: int
    opened_at: datetime
    last_alert_at: datetime

    def resolve(self) -> Notification:
        t = self.trigger
        return Notification(
            action="resolve",
            key=t.key,
            route=t.route,
            alert=t.alert,
            count=self.count,
            scopes=t.scopes,
            group=t.group,
            opened_at=self.opened_at,
        )


@dataclass(slots=True, frozen=True)
class DeadLetterRow:
    sink: str
    notification: Notification
    error: str
    attempts: int
    dead_at: datetime
    id: int = 0
    replay: str | None = None


# The columns _dead_letter reads, in its order.
_DEAD_LETTER_SELECT = (
    "SELECT id, sink, notification, error, attempts, dead_at, replay FROM dead_letters"
)


def _dead_letter(row: tuple[Any, ...]) -> DeadLetterRow:
    id_, sink, text, err, attempts, at, replay = row
    return DeadLetterRow(sink, Notification.from_json(text), err, attempts, _dt(at), id_, replay)


class DeliveryState:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.conn = sqlite3.connect(str(path), isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL survives a process crash (what restarts are about) without an fsync per
        # delivery; a power cut may lose the last deliveries, which PagerDuty's dedup_key and
        # the webhook delivery id absorb.
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(_SCHEMA)

    def close(self) -> None:
        self.conn.close()

    # -- incidents -------------------------------------------------------------------------
    def incident_open(self, sink: str, key: str) -> bool:
        row = self.conn.execute(
            "SELECT 1 FROM incidents WHERE sink = ? AND key = ? AND status = 'open'", (sink, key)
        ).fetchone()
        return row is not None

    def incident_trigger(self, sink: str, key: str) -> Notification | None:
        """The page that opened (sink, key)'s latest incident, open or resolved."""
        row = self.conn.execute(
            "SELECT notification FROM incidents WHERE sink = ? AND key = ?", (sink, key)
        ).fetchone()
        return None if row is None else Notification.from_json(row[0])

    def open_incident(self, sink: str, n: Notification, now: datetime) -> None:
        """Record a delivered trigger: the incident, its member scopes, one send for the limit."""
        with self.conn:
            self.conn.execute("BEGIN")
            self.conn.execute("INSERT INTO sends VALUES (?, ?, ?)", (sink, n.alert.scope, _ts(now)))
            self.conn.execute(
                "INSERT OR REPLACE INTO incidents VALUES (?, ?, ?, 'open', ?, ?, ?, ?, NULL)",
                (sink, n.key, n.route, n.to_json(), n.count, _ts(now), _ts(now)),
            )
            self.conn.execute("DELETE FROM members WHERE sink = ? AND key = ?", (sink, n.key))
            self.conn.executemany(
                "INSERT OR IGNORE INTO members VALUES (?, ?, ?, 0)",
                [(sink, n.key, s) for s in n.scopes],
            )

    def _open(self, where: str, params: tuple[object, ...]) -> Iterator[OpenIncident]:
        rows = self.conn.execute(
            "SELECT sink, key, route, notification, count, opened_at, last_alert_at "
            f"FROM incidents WHERE status = 'open' AND {where} ORDER BY opened_at",
            params,
        ).fetchall()
        for sink, key, route, text, count, opened, last in rows:
            yield OpenIncident(
                sink, key, route, Notification.from_json(text), count, _dt(opened), _dt(last)
            )

    def open_incidents(self, routes: Sequence[str] | None = None) -> list[OpenIncident]:
        if routes is None:
            return list(self._open("1 = 1", ()))
        marks = ", ".join("?" * len(routes))
        return list(self._open(f"route IN ({marks})", tuple(routes)))

    def close_scope(self, scope: str) -> list[OpenIncident]:
        """Mark ``scope`` over in every open incident; return those with nothing left open."""
        with self.conn:
            self.conn.execute("BEGIN")
            self.conn.execute(
                "UPDATE members SET resolved = 1 WHERE scope = ? AND resolved = 0", (scope,)
            )
        return list(
            self._open(
                "EXISTS (SELECT 1 FROM members m WHERE m.sink = incidents.sink "
                "AND m.key = incidents.key AND m.scope = ?) AND NOT EXISTS (SELECT 1 FROM members m "
                "WHERE m.sink = incidents.sink AND m.key = incidents.key AND m.resolved = 0)",
                (scope,),
            )
        )

    def mark_resolved(self, sink: str, key: str, now: datetime) -> None:
        self.conn.execute(
            "UPDATE incidents SET status = 'resolved', resolved_at = ? WHERE sink = ? AND key = ?",
            (_ts(now), sink, key),
        )

    # -- rate limiting -----------------------------------------------------------------------
    def recent_sends(self, sink: str, scope: str, since: datetime) -> list[datetime]:
        rows = self.conn.execute(
            "SELECT sent_at FROM sends WHERE sink = ? AND scope = ? AND sent_at > ?",
            (sink, scope, _ts(since)),
        ).fetchall()
        return [_dt(r[0]) for r in rows]

    def prune_sends(self, before: datetime) -> None:
        self.conn.execute("DELETE FROM sends WHERE sent_at < ?", (_ts(before),))

    # -- breakers ----------------------------------------------------------------------------
    def record_breaker(self, scope: str, state: BreakerState, ts: datetime) -> None:
        # Keep the newest transition by its own time: a replayed older event must not win.
        self.conn.execute(
            "INSERT INTO breakers VALUES (?, ?, ?) ON CONFLICT (scope) DO UPDATE "
            "SET state = excluded.state, ts = excluded.ts WHERE excluded.ts >= breakers.ts",
            (scope, state, _ts(ts)),
        )

    def breaker(self, scope: str) -> tuple[BreakerState, datetime] | None:
        row = self.conn.execute(
            "SELECT state, ts FROM breakers WHERE scope = ?", (scope,)
        ).fetchone()
        return (row[0], _dt(row[1])) if row else None

    # -- dead letters and the audit trail ----------------------------------------------------
    def dead_letter(
        self, sink: str, n: Notification, error: str, attempts: int, now: datetime
    ) -> None:
        self.conn.execute(
            "INSERT INTO dead_letters (sink, key, action, notification, error, attempts, dead_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (sink, n.key, n.action, n.to_json(), error, attempts, _ts(now)),
        )

    def dead_letters(self, *, pending_only: bool = False) -> list[DeadLetterRow]:
        where = "WHERE replay IS NULL " if pending_only else ""
        rows = self.conn.execute(f"{_DEAD_LETTER_SELECT} {where}ORDER BY id").fetchall()
        return [_dead_letter(row) for row in rows]

    def pending_dead_letter_count(self) -> int:
        """How many dead letters are still to replay, every sink's."""
        (n,) = self.conn.execute(
            "SELECT count(*) FROM dead_letters WHERE replay IS NULL"
        ).fetchone()
        return int(n)

    def pending_dead_letter_errors(self, sink: str) -> list[tuple[int, str]]:
        """(id, error) of ``sink``'s dead letters still to replay, oldest first.

        Without the notifications: a router checks this about once a second for a sink
        that is down, and parsing every payload of a long outage each time is waste."""
        return self.conn.execute(
            "SELECT id, error FROM dead_letters WHERE sink = ? AND replay IS NULL ORDER BY id",
            (sink,),
        ).fetchall()

    def dead_letter_row(self, dead_letter_id: int) -> DeadLetterRow | None:
        row = self.conn.execute(f"{_DEAD_LETTER_SELECT} WHERE id = ?", (dead_letter_id,)).fetchone()
        return None if row is None else _dead_letter(row)

    def mark_replayed(self, dead_letter_id: int, outcome: str, now: datetime) -> None:
        self.conn.execute(
            "UPDATE dead_letters SET replay = ?, replayed_at = ? WHERE id = ?",
            (outcome, _ts(now), dead_letter_id),
        )

    def retried_dead_letter(self, dead_letter_id: int, error: str, attempts: int) -> None:
        self.conn.execute(
            "UPDATE dead_letters SET error = ?, attempts = attempts + ? WHERE id = ?",
            (error, attempts, dead_letter_id),
        )

    def incident_since(self, sink: str, key: str, since: datetime) -> bool:
        """Whether (sink, key) was opened or resolved after ``since``: a newer notification."""
        row = self.conn.execute(
            "SELECT 1 FROM incidents WHERE sink = ? AND key = ? "
            "AND (opened_at > ? OR coalesce(resolved_at, 0) > ?)",
            (sink, key, _ts(since), _ts(since)),
        ).fetchone()
        return row is not None

    def record_batch(
        self,
        folds: Sequence[tuple[str, str, Alert]],
        decisions: Sequence[tuple[str, str, str, str]],
        now: datetime,
    ) -> None:
        """Alerts folded into open incidents, and every decision of the batch, in one commit."""
        with self.conn:
            self.conn.execute("BEGIN")
            for sink, key, alert in folds:
                self.conn.execute(
                    "UPDATE incidents SET count = count + 1, last_alert_at = ? "
                    "WHERE sink = ? AND key = ?",
                    (_ts(now), sink, key),
                )
                self.conn.execute(
                    "INSERT INTO members VALUES (?, ?, ?, 0) "
                    "ON CONFLICT (sink, key, scope) DO UPDATE SET resolved = 0",
                    (sink, key, alert.scope),
                )
            self.conn.executemany(
                "INSERT INTO decisions VALUES (?, ?, ?, ?, ?)",
                [(*d, _ts(now)) for d in decisions],
            )

    def bad_record(
        self, topic: str, partition: int, offset: int, raw: str, error: str, now: datetime
    ) -> None:
        """A record on the alert or breaker topic that is not one: kept, so it is not lost."""
        self.conn.execute(
            "INSERT INTO bad_records VALUES (?, ?, ?, ?, ?, ?)",
            (topic, partition, offset, raw[:16384], error, _ts(now)),
        )

    def bad_records(self) -> list[tuple[str, int, int, str, str]]:
        return self.conn.execute(
            'SELECT topic, partition, "offset", raw, error FROM bad_records ORDER BY rowid'
        ).fetchall()

    def decided(self, alert_id: str, route: str, sink: str) -> bool:
        """Whether this alert was already handled for (route, sink): a re-read after a restart."""
        row = self.conn.execute(
            "SELECT 1 FROM decisions WHERE alert_id = ? AND route = ? AND sink = ? LIMIT 1",
            (alert_id, route, sink),
        ).fetchone()
        return row is not None
