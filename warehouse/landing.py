"""Exactly-once landing of facts, alerts, breaker events and dead letters as Parquet.

The commit protocol (one batch; several writer processes may run it at once):

1. drop items already landed (catalog probe) and repeats within the batch;
2. write each (table, date) group as a Parquet file under ``_tmp/<instance>/<token>/``,
   fsynced; views never read ``_tmp``;
3. in one SQLite transaction: re-check the keys (another writer may have landed some
   since step 1: then roll back, drop them, go to 2), insert the keys, the file rows
   (final name carries the new commit id), and this writer's state and source positions.
   This transaction is the commit point;
4. rename each staged file into its partition (atomic), then remove the staging dir.

Recovery (on open, for staging dirs whose owner process is gone, found by ``flock``):
staged files with a catalog row are renamed into place (roll forward); files without
one are deleted (roll back, their keys never landed so a replay lands them once).
A crash anywhere therefore leaves each key either landed with its file or not at all.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import sqlite3
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from spendstream.producers.event import UsageEvent
from spendstream.records import Alert, BreakerEvent, DeadLetter, Fact
from spendstream.table_schemas import (
    SCHEMAS,
    alerts_table,
    breaker_events_table,
    dead_letters_table,
    facts_table,
)
from spendstream.warehouse.catalog import Catalog, FileRow, key_of
from spendstream.warehouse.dedupe import Classification, classify
from spendstream.warehouse.layout import TABLES, Layout, segment

if TYPE_CHECKING:
    from spendstream.warehouse.compaction import CompactionSummary

__all__ = ["CommitBatch", "CommitResult", "Warehouse"]

DEFAULT_WRITER = "embedded"
# Each table's partition date: the UTC day of this column.
_DAY_COLUMN = {
    "usage_facts": "ts",
    "alerts": "ts",
    "breaker_events": "ts",
    "dead_letters": "received_at",
}
_MAX_CONFLICT_RETRIES = 5

# Tests replace this to simulate a crash at a named step of the protocol.
_fault: Callable[[str], None] = lambda step: None  # noqa: E731


_JSON_OPTIONS = (
    orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
)


def _to_json(value: Any) -> str:
    try:
        # Passthrough options: like json.dumps, refuse what json.loads would not give back.
        return orjson.dumps(value, option=_JSON_OPTIONS).decode()
    except orjson.JSONEncodeError as exc:
        raise TypeError(f"writer state is not JSON-serialisable: {exc}") from exc


@dataclass(slots=True)
class CommitBatch:
    """Everything one runtime batch produced, committed atomically with its state."""

    facts: Sequence[Fact] = ()
    alerts: Sequence[Alert] = ()
    breaker_events: Sequence[BreakerEvent] = ()
    dead_letters: Sequence[DeadLetter] = ()
    # JSON-serialisable. Both None: the writer's last committed state is left as it was.
    state: Any = None  # the detection engine's snapshot
    source_positions: Any = None  # e.g. {"spendstream.usage/3": 1042}
    # The content digest of each fact's event (stream/digest.py), kept with its landed key
    # so a later event reusing the id is told apart from a replay. Empty: none known.
    fact_digests: Sequence[bytes] = ()


@dataclass(slots=True)
class CommitResult:
    commit_id: int  # 0: nothing was committed (nothing new to land, no state given)
    facts: int = 0
    alerts: int = 0
    breaker_events: int = 0
    dead_letters: int = 0
    skipped: int = 0  # already landed (replays, or another writer won the race)


def _fact_key(f: tuple[Fact, bytes | None]) -> bytes:
    return _event_key(f[0].event.event_id)


def _event_key(event_id: str) -> bytes:
    return key_of("e", event_id)


def _alert_key(a: Alert) -> bytes:
    return key_of("a", a.alert_id)


def _breaker_key(b: BreakerEvent) -> bytes:
    return key_of("b", b.scope, b.state, b.reason, b.ts.isoformat())


def _dead_key(d: DeadLetter) -> bytes:
    # The same bad input from the same source is one dead letter, like a repeated event_id.
    return key_of("d", d.source, d.raw, d.error)


def _first_unique(items: Iterable[Any], key: Callable[[Any], bytes]) -> list[tuple[bytes, Any]]:
    seen: set[bytes] = set()
    out = []
    for item in items:
        k = key(item)
        if k not in seen:
            seen.add(k)
            out.append((k, item))
    return out


class Warehouse:
    """The warehouse under ``<workdir>/warehouse``: lands batches exactly once, owns the views.

    ``writer`` names whose state ``last_commit`` returns: one per independent runtime
    (e.g. a Faust worker's partition set); the embedded runner uses the default.
    """

    def __init__(self, workdir: Path, writer: str = DEFAULT_WRITER) -> None:
        self.layout = Layout.for_workdir(Path(workdir))
        self.writer = writer
        self.layout.root.mkdir(parents=True, exist_ok=True)
        self.layout.tmp_dir.mkdir(exist_ok=True)
        self._ensure_schema_files()
        self.catalog = Catalog(self.layout.catalog_path)
        self.recover()
        # This instance's staging dir, locked for its lifetime: recovery elsewhere skips it.
        # The lock (a sibling file) is taken before the dir exists, so no recovery can ever
        # see the dir unlocked while this instance lives.
        self._stage_root = self.layout.tmp_dir / f"{segment(writer)}-{uuid.uuid4().hex[:12]}"
        self._lock_fd: int | None = os.open(_lock_path(self._stage_root), os.O_CREAT | os.O_RDWR)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._stage_root.mkdir()

    def close(self) -> None:
        """Release the catalog and the staging lock (what a process exit does)."""
        self.catalog.close()
        if self._lock_fd is not None:
            # An empty staging area goes; one holding files is left for recovery to judge.
            try:
                self._stage_root.rmdir()
                _lock_path(self._stage_root).unlink(missing_ok=True)
            except OSError:
                pass
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Views.

    def ensure_views(self) -> None:
        """(Re)create the DuckDB views; idempotent, safe while readers hold the file open."""
        from spendstream.warehouse.views import build_database

        build_database(self.layout)

    def stage_dir(self) -> Path:
        """A fresh directory inside this instance's (locked) staging area."""
        path = self._stage_root / uuid.uuid4().hex
        path.mkdir()
        return path

    def compact(
        self,
        min_files: int = 2,
        grace_s: float | None = None,
        activate_after_s: float | None = None,
    ) -> CompactionSummary:
        """Merge small files per partition (see compaction.py); safe while readers query."""
        from spendstream.warehouse import compaction as c

        return c.compact(
            self,
            min_files,
            c.DEFAULT_GRACE_S if grace_s is None else grace_s,
            c.DEFAULT_ACTIVATE_AFTER_S if activate_after_s is None else activate_after_s,
        )

    def rewrite_facts(self, facts: Sequence[Fact], activate_after_s: float | None = None) -> int:
        """Replace stored facts by event_id (repricing); returns how many were replaced."""
        from spendstream.warehouse import compaction as c

        return c.rewrite_facts(
            self,
            facts,
            c.DEFAULT_ACTIVATE_AFTER_S if activate_after_s is None else activate_after_s,
        )

    # Dedup.

    def unseen(self, events: Sequence[UsageEvent]) -> list[UsageEvent]:
        """Events whose event_id has not landed, first occurrence only, in input order."""
        pairs = _first_unique(events, lambda e: _event_key(e.event_id))
        landed = self.catalog.landed_among([k for k, _ in pairs])
        return [e for k, e in pairs if k not in landed]

    def classify(self, event_ids: Sequence[str], digests: Sequence[bytes]) -> Classification:
        """Each row new, duplicate (same id, same content) or conflict (same id, other
        content), against what landed and the rows before it (warehouse/dedupe.py)."""

        def landed(ids: list[str]) -> dict[str, bytes | None]:
            keys = [_event_key(i) for i in ids]
            found = self.catalog.landed_digests(keys)
            return {i: found[k] for i, k in zip(ids, keys, strict=True) if k in found}

        return classify(event_ids, digests, landed)

    def last_commit(self) -> tuple[Any, Any] | None:
        """This writer's (state, source_positions) from its last commit, or None."""
        return self.catalog.writer_state(self.writer)

    def all_writers(self) -> dict[str, tuple[Any, Any]]:
        """Every writer's last (state, source_positions), e.g. after a rebalance."""
        return self.catalog.writers()

    # Commit.

    def commit(
        self,
        batch: CommitBatch | None = None,
        *,
        facts: Sequence[Fact] = (),
        alerts: Sequence[Alert] = (),
        breaker_events: Sequence[BreakerEvent] = (),
        dead_letters: Sequence[DeadLetter] = (),
        state: Any = None,
        source_positions: Any = None,
        fact_digests: Sequence[bytes] = (),
    ) -> CommitResult:
        """Land one batch with the writer's state, atomically; already-landed items are skipped."""
        if batch is None:
            batch = CommitBatch(
                facts, alerts, breaker_events, dead_letters, state, source_positions, fact_digests
            )
        if batch.fact_digests and len(batch.fact_digests) != len(batch.facts):
            raise ValueError("fact_digests must give one digest per fact")
        # Serialise first, once: a state that is not JSON must fail before anything is
        # written (orjson: the state is serialised every batch, json.dumps cost ~5 us/event).
        state_json: tuple[str, str] | None = None
        if batch.state is not None or batch.source_positions is not None:
            state_json = (_to_json(batch.state), _to_json(batch.source_positions))
        digests: Sequence[bytes | None] = batch.fact_digests or [None] * len(batch.facts)
        items = {
            "usage_facts": _first_unique(zip(batch.facts, digests, strict=True), _fact_key),
            "alerts": _first_unique(batch.alerts, _alert_key),
            "breaker_events": _first_unique(batch.breaker_events, _breaker_key),
            "dead_letters": _first_unique(batch.dead_letters, _dead_key),
        }
        total = sum(len(v) for v in items.values())
        skipped = len(batch.facts) + len(batch.alerts) + len(batch.breaker_events)
        skipped += len(batch.dead_letters) - total
        for _ in range(_MAX_CONFLICT_RETRIES):
            if state_json is None and not any(items.values()):
                # Nothing to land and no state to move: no commit, no fsync.
                return CommitResult(commit_id=0, skipped=skipped)
            outcome = self._try_commit(items, state_json)
            if isinstance(outcome, CommitResult):
                outcome.skipped = skipped
                return outcome
            # Some keys landed meanwhile (a replay, or another writer won): drop them, retry.
            skipped += len(outcome)
            items = {
                t: [(k, x) for k, x in pairs if k not in outcome] for t, pairs in items.items()
            }
        raise RuntimeError("warehouse commit kept conflicting with other writers")

    def _try_commit(
        self, items: dict[str, list[tuple[bytes, Any]]], state_json: tuple[str, str] | None
    ) -> CommitResult | set[bytes]:
        """Commit, or return the keys found already landed (nothing is then committed).

        Each record was judged on its own before it got here (stream/batch.py): nothing is
        quarantined by the batch, and a key is inserted in the same transaction as the file
        holding its row, so an id counts as landed only when its fact did.
        """
        facts = [f for _, (f, _d) in items["usage_facts"]]
        alerts = [a for _, a in items["alerts"]]
        breakers = [b for _, b in items["breaker_events"]]
        dead = [d for _, d in items["dead_letters"]]
        tables = {
            "usage_facts": facts_table(facts),
            "alerts": alerts_table(alerts),
            "breaker_events": breaker_events_table(breakers),
            "dead_letters": dead_letters_table(dead),
        }
        stage = self._stage_root / uuid.uuid4().hex
        staged = self._stage(stage, tables)
        _fault("after_write")
        keys: list[tuple[bytes, bytes | None]] = [(k, d) for k, (_f, d) in items["usage_facts"]]
        for table in ("alerts", "breaker_events", "dead_letters"):
            keys += [(k, None) for k, _ in items[table]]
        try:
            with self.catalog.write() as con:
                commit_id = self.catalog.add_commit(
                    con, self.writer, "landed", (len(facts), len(alerts), len(breakers), len(dead))
                )
                # The primary key is the exactly-once guard: a key landed by anyone since
                # ``unseen`` fails the insert and rolls the whole commit back.
                self.catalog.add_keys(con, keys, commit_id)
                rows = []
                for n, (table, day, path, nrows) in enumerate(staged):
                    final = self.layout.date_dir(table, day) / self.layout.commit_file_name(
                        commit_id, n
                    )
                    rows.append(
                        FileRow(
                            self.layout.relative(final),
                            self.layout.relative(path),
                            commit_id,
                            table,
                            nrows,
                        )
                    )
                self.catalog.add_files(con, rows)
                if state_json is not None:
                    self.catalog.set_writer_state(con, self.writer, commit_id, *state_json)
                _fault("before_commit")
        except sqlite3.IntegrityError:
            shutil.rmtree(stage, ignore_errors=True)
            landed = self.catalog.landed_among([k for k, _ in keys])
            if not landed:
                raise
            return landed
        _fault("after_commit")
        for row in rows:
            self._publish(self.layout.absolute(row.staged), self.layout.absolute(row.path))
        shutil.rmtree(stage, ignore_errors=True)
        return CommitResult(
            commit_id=commit_id,
            facts=len(facts),
            alerts=len(alerts),
            breaker_events=len(breakers),
            dead_letters=len(dead),
        )

    def _stage(
        self, stage: Path, tables: Mapping[str, pa.Table]
    ) -> list[tuple[str, Any, Path, int]]:
        """Write one Parquet file per (table, UTC date); return (table, date, path, rows)."""
        out = []
        for table, data in tables.items():
            if not data.num_rows:
                continue
            days = pc.cast(data[_DAY_COLUMN[table]], pa.date32())
            for day in sorted(pc.unique(days).to_pylist()):
                group = data.filter(pc.equal(days, pa.scalar(day, pa.date32())))
                path = stage / table / f"{day.isoformat()}.parquet"
                path.parent.mkdir(parents=True, exist_ok=True)
                _write_parquet(group, path)
                out.append((table, day, path, group.num_rows))
        return out

    def _publish(self, staged: Path, final: Path) -> None:
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, final)

    # Recovery.

    def recover(self) -> None:
        """Finish or undo the commits of writer instances that died mid-protocol."""
        if not self.layout.tmp_dir.exists():
            return
        for inst in sorted(self.layout.tmp_dir.iterdir()):
            if not inst.is_dir():
                if inst.suffix == ".lock" and not inst.with_suffix("").exists():
                    _unlink_if_unlocked(inst)
                continue
            lock = _lock_path(inst)
            fd = os.open(lock, os.O_CREAT | os.O_RDWR)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live writer owns it
                committed = self.catalog.files_staged_under(self.layout.relative(inst) + "/")
                for staged_rel, final_rel in committed.items():
                    staged = self.layout.absolute(staged_rel)
                    if staged.exists():
                        self._publish(staged, self.layout.absolute(final_rel))
                shutil.rmtree(inst, ignore_errors=True)
                lock.unlink(missing_ok=True)
            finally:
                os.close(fd)

    def _ensure_schema_files(self) -> None:
        for table in TABLES:
            path = self.layout.schema_file(table)
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{uuid.uuid4().hex}.tmp")
                _write_parquet(SCHEMAS[table].empty_table(), tmp)
                os.replace(tmp, path)


def _unlink_if_unlocked(lock: Path) -> None:
    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        lock.unlink(missing_ok=True)
    except BlockingIOError:
        pass
    finally:
        os.close(fd)


def _lock_path(stage_root: Path) -> Path:
    return stage_root.with_name(stage_root.name + ".lock")


def _write_parquet(table: pa.Table, path: Path) -> None:
    pq.write_table(table, path, compression="zstd")
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
