"""The warehouse catalog: a SQLite database (WAL) of landed keys, files, commits and writer state.

The catalog transaction is the commit point of the landing protocol: a key is landed
once its row is here, and a Parquet file is part of the warehouse once its row is here.
Several writer processes share it; SQLite's write lock (``BEGIN IMMEDIATE``) orders their
commits. Keys are 16-byte BLAKE2b digests of a kind and an id (``e`` event_id, ``a``
alert_id, ...) in a ``WITHOUT ROWID`` primary key: lookups stay on disk, so memory does
not grow with the number of landed facts, and a collision needs ~2^64 keys.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["Catalog", "FileRow", "key_of"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS landed (
    key BLOB PRIMARY KEY,
    commit_id INTEGER NOT NULL,
    digest BLOB                      -- an event's content digest (warehouse/dedupe.py)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS commits (
    commit_id INTEGER PRIMARY KEY AUTOINCREMENT,
    writer TEXT NOT NULL,
    created_at TEXT NOT NULL,
    status TEXT NOT NULL,            -- landed | quarantined | compaction
    facts INTEGER NOT NULL,
    alerts INTEGER NOT NULL,
    breaker_events INTEGER NOT NULL,
    dead_letters INTEGER NOT NULL,
    report TEXT
);
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY,           -- final path, relative to the warehouse root
    staged TEXT NOT NULL,            -- where it waits until renamed into place
    commit_id INTEGER NOT NULL,
    table_name TEXT NOT NULL,
    rows INTEGER NOT NULL,
    superseded_at TEXT               -- set when a compacted file replaces it
);
CREATE INDEX IF NOT EXISTS files_by_table ON files (table_name, superseded_at);
CREATE TABLE IF NOT EXISTS writer_state (
    writer TEXT PRIMARY KEY,
    commit_id INTEGER NOT NULL,
    state TEXT,
    source_positions TEXT
);
"""

_CHUNK = 500


def key_of(kind: str, *parts: str) -> bytes:
    """The catalog key of one landed item (``kind``: e, a, b or d)."""
    h = hashlib.blake2b(kind.encode(), digest_size=16)
    for p in parts:
        h.update(b"\x1f")
        h.update(p.encode("utf-8", "surrogatepass"))
    return h.digest()


@dataclass(frozen=True, slots=True)
class FileRow:
    path: str
    staged: str
    commit_id: int
    table_name: str
    rows: int


class Catalog:
    """One connection to the catalog; not shared between threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._con = sqlite3.connect(path, timeout=60.0, isolation_level=None)
        self._con.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit that returned survives power loss, so renamed files always have a row.
        self._con.execute("PRAGMA synchronous=FULL")
        self._con.execute("PRAGMA busy_timeout=60000")
        self._con.executescript(_SCHEMA)
        columns = {row[1] for row in self._con.execute("PRAGMA table_info(landed)")}
        if "digest" not in columns:
            # A catalog from before content digests: its keys stay digest-less (NULL).
            self._con.execute("ALTER TABLE landed ADD COLUMN digest BLOB")

    def close(self) -> None:
        self._con.close()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """An exclusive write transaction (other writers wait; readers never do)."""
        self._con.execute("BEGIN IMMEDIATE")
        try:
            yield self._con
        except BaseException:
            self._con.execute("ROLLBACK")
            raise
        else:
            self._con.execute("COMMIT")

    def landed_among(self, keys: Sequence[bytes]) -> set[bytes]:
        """Which of ``keys`` are already landed (one indexed probe per chunk)."""
        found: set[bytes] = set()
        for i in range(0, len(keys), _CHUNK):
            chunk = keys[i : i + _CHUNK]
            marks = ",".join("?" * len(chunk))
            found.update(
                r[0]
                for r in self._con.execute(f"SELECT key FROM landed WHERE key IN ({marks})", chunk)
            )
        return found

    def landed_digests(self, keys: Sequence[bytes]) -> dict[bytes, bytes | None]:
        """key -> content digest (None: landed without one) of the keys already landed."""
        found: dict[bytes, bytes | None] = {}
        for i in range(0, len(keys), _CHUNK):
            chunk = keys[i : i + _CHUNK]
            marks = ",".join("?" * len(chunk))
            found.update(
                self._con.execute(
                    f"SELECT key, digest FROM landed WHERE key IN ({marks})", chunk
                ).fetchall()
            )
        return found

    # The helpers below run inside ``write()``.

    def add_commit(
        self,
        con: sqlite3.Connection,
        writer: str,
        status: str,
        counts: tuple[int, int, int, int],
        report: dict[str, Any] | None = None,
    ) -> int:
        cur = con.execute(
            "INSERT INTO commits (writer, created_at, status, facts, alerts, breaker_events,"
            " dead_letters, report) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                writer,
                datetime.now(UTC).isoformat(),
                status,
                *counts,
                json.dumps(report) if report is not None else None,
            ),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def add_keys(
        self,
        con: sqlite3.Connection,
        keys: Iterable[tuple[bytes, bytes | None]],
        commit_id: int,
    ) -> None:
        """Insert (key, digest or None) pairs."""
        con.executemany(
            "INSERT INTO landed (key, commit_id, digest) VALUES (?, ?, ?)",
            ((k, commit_id, d) for k, d in keys),
        )

    def add_files(self, con: sqlite3.Connection, files: Iterable[FileRow]) -> None:
        con.executemany(
            "INSERT INTO files (path, staged, commit_id, table_name, rows) VALUES (?, ?, ?, ?, ?)",
            ((f.path, f.staged, f.commit_id, f.table_name, f.rows) for f in files),
        )

    def set_writer_state(
        self,
        con: sqlite3.Connection,
        writer: str,
        commit_id: int,
        state_json: str,
        source_positions_json: str,
    ) -> None:
        con.execute(
            "INSERT INTO writer_state (writer, commit_id, state, source_positions)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (writer) DO UPDATE SET"
            " commit_id = excluded.commit_id, state = excluded.state,"
            " source_positions = excluded.source_positions",
            (writer, commit_id, state_json, source_positions_json),
        )

    # Readers.

    def writer_state(self, writer: str) -> tuple[Any, Any] | None:
        row = self._con.execute(
            "SELECT state, source_positions FROM writer_state WHERE writer = ?", (writer,)
        ).fetchone()
        if row is None:
            return None
        return json.loads(row[0]), json.loads(row[1])

    def writers(self) -> dict[str, tuple[Any, Any]]:
        rows = self._con.execute("SELECT writer, state, source_positions FROM writer_state")
        return {w: (json.loads(s), json.loads(p)) for w, s, p in rows}

    def files_staged_under(self, prefix: str) -> dict[str, str]:
        """staged path -> final path, for committed files staged under ``prefix``."""
        rows = self._con.execute(
            "SELECT staged, path FROM files WHERE staged >= ? AND staged < ?",
            (prefix, prefix + "\uffff"),
        )
        return dict(rows.fetchall())

    def live_files(self, table: str) -> list[tuple[str, int, int]]:
        """(path, commit_id, rows) of the table's files not superseded by compaction."""
        rows = self._con.execute(
            "SELECT path, commit_id, rows FROM files WHERE table_name = ? AND superseded_at IS NULL",
            (table,),
        )
        return rows.fetchall()

    def superseded_before(self, cutoff: str) -> list[str]:
        rows = self._con.execute(
            "SELECT path FROM files WHERE superseded_at IS NOT NULL AND superseded_at < ?",
            (cutoff,),
        )
        return [r[0] for r in rows]

    def replacement_published(self, path: str, root: Path) -> bool:
        """Whether a live compacted file covering ``path`` is in place under ``root``."""
        row = self._con.execute(
            "SELECT commit_id, table_name FROM files WHERE path = ?", (path,)
        ).fetchone()
        if row is None:
            return False
        parent = path.rsplit("/", 1)[0]
        rows = self._con.execute(
            "SELECT path FROM files WHERE table_name = ? AND superseded_at IS NULL"
            " AND commit_id >= ? AND path >= ? AND path < ?",
            (row[1], row[0], parent + "/k", parent + "/l"),
        )
        return any((root / r[0]).exists() for r in rows)

    def count_landed(self) -> int:
        return int(self._con.execute("SELECT count(*) FROM landed").fetchone()[0])

    def quarantined(self) -> list[tuple[int, str, str]]:
        rows = self._con.execute(
            "SELECT commit_id, created_at, report FROM commits WHERE status = 'quarantined'"
            " ORDER BY commit_id"
        )
        return rows.fetchall()
