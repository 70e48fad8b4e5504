"""Exactly-once landing into the Iceberg tables, with no shared disk between writers.

A *writer* (``Warehouse(workdir, writer="usage/3")``) is one stream of commits: the
embedded runner, or one Kafka worker's partition. Its commit ``n`` carries Arrow tables
for the four tables, its source positions and its state (bytes). Iceberg commits one
table at a time, so the order is what makes it exactly once:

1. **Classify** the facts by event_id (dedupe.py): only ``NEW`` ones land.
2. **Write** every table's Parquet data files, and a *record* file under the facts table's
   location holding the state and the paths of the alert / breaker / dead-letter files
   (the *outbox*). Nothing refers to these files yet: a crash here leaves orphans that
   ``warehouse compact`` deletes, and the replay lands the batch again.
3. **Commit the facts** (the commit point): one atomic catalog commit appends the fact
   files with ``spendstream.seq.<w> = n``, the positions and the record's path in the
   snapshot summary, every other writer's keys copied forward from the parent snapshot.
   It is a compare-and-swap on the table's metadata pointer: if another writer committed
   first (``CommitFailedException``) the writer refreshes, re-checks its facts against the
   event_ids the other writer just landed, rebuilds the summary from the new head and tries
   again. If the head shows a newer commit of *this* writer, a second instance of it is
   alive: ``WriterFenced``, and this one stops.
4. **Land the outbox**: for each other table whose head says ``spendstream.seq.<w> < n``,
   append the outbox files with ``spendstream.seq.<w> = n``, atomically, so a table gets a
   commit's rows at most once; a commit that found ``>= n`` already there does nothing.

Recovery: opening a writer reads the facts head: the writer's positions, its state and
its last commit ``n`` (step 3 is atomic, so they belong together), and finishes step 4 for
commit ``n`` of every writer (anyone may finish anyone's outbox: the check-and-append is
atomic per table). A kill -9 before step 3 replays the batch from the old positions; after
it, the positions have moved and the outbox is finished on open. Every fact, alert, breaker
event and dead letter therefore lands exactly once.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from spendstream.config import WarehouseConfig
from spendstream.errors import CommitConflict, LegacyWarehouse, WarehouseError, WriterFenced
from spendstream.table_schemas import (
    SCHEMAS,
    alerts_table,
    breaker_events_table,
    dead_letters_table,
    facts_table,
)
from spendstream.warehouse import snapshots as sn
from spendstream.warehouse.datafiles import data_files
from spendstream.warehouse.dedupe import NEW, DedupeStore, epoch_days
from spendstream.warehouse.prewrite import Prewrite
from spendstream.warehouse.rowkeys import RowKeys
from spendstream.warehouse.tables import (
    DIGEST_COLUMN,
    EVENT_TABLES,
    LEGACY_CATALOG,
    TABLE_SCHEMAS,
    Storage,
    Tables,
    resolve_storage,
)

if TYPE_CHECKING:
    from pyiceberg.manifest import DataFile
    from pyiceberg.table import Table
    from pyiceberg.table.metadata import TableMetadata

    from spendstream.producers.event import UsageEvent
    from spendstream.warehouse.maintenance import CompactionSummary

__all__ = ["DEFAULT_WRITER", "CommitResult", "Resume", "Warehouse"]

log = logging.getLogger(__name__)

DEFAULT_WRITER = "embedded"
SMALL_TABLES = ("alerts", "breaker_events", "dead_letters")
_RECORD_MAGIC = b"spendstream-record-1\n"

TableInput: TypeAlias = pa.Table | Sequence[Any] | None


@dataclass(frozen=True, slots=True)
class Resume:
    """Where a writer continues: its last commit's number, source positions and state."""

    seq: int = 0
    positions: dict[str, int] | None = None
    state: bytes | None = None


@dataclass(slots=True)
class CommitResult:
    seq: int  # this writer's commit number; unchanged when nothing was committed
    facts: int = 0
    alerts: int = 0
    breaker_events: int = 0
    dead_letters: int = 0
    duplicates: int = 0  # facts whose event_id had landed (or came earlier in the batch)
    conflicts: list[str] = field(default_factory=list)  # same id, different digest
    retries: int = 0  # commits lost to other writers and tried again

    @property
    def committed(self) -> bool:
        return self.seq > 0 and (
            self.facts + self.alerts + self.breaker_events + self.dead_letters > 0
        )

    @property
    def skipped(self) -> int:
        return self.duplicates + len(self.conflicts)


def _as_table(name: str, value: TableInput) -> pa.Table:
    if value is None:
        return SCHEMAS[name].empty_table()
    if isinstance(value, pa.Table):
        return value
    builder: dict[str, Callable[[list[Any]], pa.Table]] = {
        "usage_facts": facts_table,
        "alerts": alerts_table,
        "breaker_events": breaker_events_table,
        "dead_letters": dead_letters_table,
    }
    return builder[name](list(value))


def check_not_legacy(workdir: Path) -> None:
    """Refuse a workdir in the old layout, saying how to convert it."""
    root = Path(workdir).resolve() / "warehouse"
    if (root / LEGACY_CATALOG).exists():
        raise LegacyWarehouse(
            f"{root} holds the old warehouse layout (catalog.sqlite + Parquet files); "
            f"convert it once with `spendstream warehouse migrate --workdir {Path(workdir)}`"
        )


class SharedDedupe:
    """One dedupe store for the writers of one process (a Kafka worker's usage partitions).

    Each writer must classify against everything landed by any writer. With a store per
    writer, every writer of a worker would read back, and hold, the keys of all the others:
    N partitions, N copies. Writers sharing this store add their own keys as they land and
    catch up only with commits made elsewhere (``mine`` names the local ones, by writer and
    commit number, until the next catch-up has passed them). Used from one thread.
    """

    store: DedupeStore
    ready: bool  # the store reflects ``seen_snapshot`` (else it is rebuilt first)

    def __init__(self, window_days: int) -> None:
        self.window_days = window_days
        self.seen_snapshot: int | None = None  # facts snapshot the store reflects
        self.mine: set[tuple[str, int]] = set()
        self.readers: list[Warehouse] = []  # open writers, for the store's slow path
        self.reset()

    def reset(self) -> None:
        """An empty store, to be filled anew from the facts table (not ready until then)."""
        self.store = DedupeStore(self.window_days, self.load_day)
        self.ready = False
        self.mine.clear()

    def load_day(self, day: int) -> tuple[pa.Array, pa.Array | None]:
        """The store's slow path (``Warehouse.load_day``), through a writer still open."""
        if not self.readers:
            raise WarehouseError("no open writer to read landed keys through")
        return self.readers[-1].load_day(day)


class Warehouse:
    """The Iceberg warehouse as one writer sees it: classify, commit, resume; views; upkeep."""

    def __init__(
        self,
        workdir: Path,
        writer: str = DEFAULT_WRITER,
        config: WarehouseConfig | None = None,
        *,
        create: bool = True,
        check_layout: bool = True,
        dedupe: SharedDedupe | None = None,
    ) -> None:
        """``dedupe``: a store shared with other writers of this process (else its own)."""
        if check_layout:
            check_not_legacy(workdir)
        self.workdir = Path(workdir)
        self.config = config or WarehouseConfig()
        self.storage: Storage = resolve_storage(self.config, self.workdir)
        self.writer = writer
        self.tables = Tables(self.storage, create=create)
        self.fs = self.storage.filesystem()
        self.manifests = sn.MANIFESTS
        self.shared = dedupe or SharedDedupe(self.config.dedupe_window_days)
        self.shared.readers.append(self)
        self._resume: Resume | None = None
        self._state: bytes | None = None
        # The small tables' landed keys (rowkeys.py), loaded on first use.
        self._row_keys: dict[str, RowKeys] = {}
        self._classified: _Classified | None = None  # the last classify, for its commit

    @property
    def dedupe(self) -> DedupeStore:
        return self.shared.store

    def close(self) -> None:
        with contextlib.suppress(ValueError):
            self.shared.readers.remove(self)
        self.tables.close()

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def db_path(self) -> Path:
        """spendstream.duckdb (local storage): views for a plain DuckDB session."""
        return self.storage.local_root / "spendstream.duckdb"

    @property
    def seq(self) -> int:
        return self.resume().seq

    # Resume.

    def resume(self) -> Resume:
        """This writer's last commit (finishing every writer's pending outbox first)."""
        if self._resume is None:
            facts = self.tables.load("usage_facts")
            summary = sn.summary_of(facts.current_snapshot())
            self.finish_outboxes(summary)
            # A writer killed between a commit and publishing the views' file lists (or
            # its outbox, landed just now) left them behind: no later commit may touch the
            # table (breaker_events), so spendstream.duckdb's views would miss its rows.
            self.publish_stale()
            seq = sn.seq_of(summary, self.writer)
            positions = sn.positions_of(summary, self.writer)
            state = None
            record = summary.get(sn.key("record", self.writer))
            if record:
                state = self._read_record(record)[1]
            self._resume = Resume(seq, positions, state)
            self._state = state
        return self._resume

    def writers(self) -> dict[str, Resume]:
        """Every writer's last commit, positions and state (e.g. after a rebalance)."""
        summary = sn.summary_of(self.tables.load("usage_facts").current_snapshot())
        out = {}
        for w in sn.writers_in(summary):
            record = summary.get(sn.key("record", w))
            state = self._read_record(record)[1] if record else None
            out[w] = Resume(sn.seq_of(summary, w), sn.positions_of(summary, w), state)
        return out

    def finish_outboxes(self, facts_summary: Mapping[str, str] | None = None) -> int:
        """Land the outbox of each writer's last commit where it is missing; how many landed."""
        if facts_summary is None:
            facts_summary = sn.summary_of(self.tables.load("usage_facts").current_snapshot())
        heads = {t: sn.summary_of(self.tables.load(t).current_snapshot()) for t in SMALL_TABLES}
        landed = 0
        for w in sn.writers_in(facts_summary):
            seq = sn.seq_of(facts_summary, w)
            record = facts_summary.get(sn.key("record", w))
            if not record or all(sn.seq_of(heads[t], w) >= seq for t in SMALL_TABLES):
                continue
            outbox = self._read_record(record)[0].get("outbox", {})
            for table in SMALL_TABLES:
                paths = outbox.get(table, [])
                if paths and sn.seq_of(heads[table], w) < seq:
                    tbl = self.tables.table(table)
                    from pyiceberg.io.pyarrow import parquet_file_to_data_file

                    files = [parquet_file_to_data_file(tbl.io, tbl.metadata, p) for p in paths]
                    if self._land_outbox(table, w, seq, files):
                        landed += 1
        return landed

    # Dedupe.

    def classify(
        self,
        event_ids: pa.Array | pa.ChunkedArray,
        ts: pa.Array | pa.ChunkedArray,
        digests: pa.Array | pa.ChunkedArray | None = None,
    ) -> np.ndarray:
        """NEW / DUPLICATE / CONFLICT (dedupe.py) per event, against everything landed by any
        writer up to now and earlier in the batch. Nothing is recorded until ``commit``."""
        self._catch_up()
        store = self.dedupe
        hashed = _hashed(event_ids, ts, digests)
        codes = store.classify_hashed(*hashed)
        self._classified = _Classified(store.version, event_ids, digests, hashed, codes.copy())
        return codes

    def unseen(self, events: Sequence[UsageEvent]) -> list[UsageEvent]:
        """Events whose event_id has not landed, first occurrence only, in input order."""
        if not events:
            return []
        ids = pa.array([e.event_id for e in events], pa.string())
        ts = pa.array([e.ts for e in events], SCHEMAS["usage_facts"].field("ts").type)
        codes = self.classify(ids, ts)
        return [e for e, c in zip(events, codes.tolist(), strict=True) if c == NEW]

    def _catch_up(self) -> None:
        """Bring the dedupe store up to the facts head: other writers' new files."""
        shared = self.shared
        facts = self.tables.load("usage_facts")
        head = facts.current_snapshot()
        head_id = None if head is None else head.snapshot_id
        if shared.ready and head_id == shared.seen_snapshot:
            return
        paths = (
            # Not by writer name: a commit of this writer that failed after its catalog
            # commit (its keys never added) is read back like anyone else's.
            sn.appended_by_others(facts, shared.seen_snapshot, None, shared.mine)
            if shared.ready
            else None
        )
        if paths is None:
            self._rebuild(facts)
        else:
            self._add_files(paths)
        shared.seen_snapshot = head_id
        shared.ready = True
        shared.mine.clear()  # every local commit is at or below the head now

    def _rebuild(self, facts: Table) -> None:
        """Fill the store with the window's keys from the facts table (on open)."""
        self.shared.reset()
        files = self.manifests.live_files(facts)
        if not files:
            return
        days = [int(f.partition[0]) for f in files if f.partition[0] is not None]
        if not days:
            return
        start = max(days) - self.config.dedupe_window_days
        self._add_files(
            [f.file_path for f in files if f.partition[0] is not None and f.partition[0] >= start]
        )

    def _add_files(self, paths: list[str]) -> None:
        if not paths:
            return
        t = sn.read_columns(self.storage, paths, ["event_id", "ts", DIGEST_COLUMN])
        if not len(t):
            return
        digests = t[DIGEST_COLUMN] if t[DIGEST_COLUMN].null_count < len(t) else None
        self.dedupe.add(t["event_id"], epoch_days(t["ts"]), digests)

    def load_day(self, day: int) -> tuple[pa.Array, pa.Array | None]:
        """event_ids (and digests) landed with ts on ``day``: the dedupe store's slow path.

        Read at the catalog's head, not this writer's last copy of the table: the store is
        shared by the writers of a process, and the one it reads through may not have seen
        what another landed since (a re-sent old event then landed again)."""
        facts = self.tables.load("usage_facts")
        paths = [f.file_path for f in self.manifests.live_files(facts) if f.partition[0] == day]
        t = sn.read_columns(self.storage, paths, ["event_id", DIGEST_COLUMN])
        ids = t["event_id"].combine_chunks()
        digests = (
            t[DIGEST_COLUMN].combine_chunks() if t[DIGEST_COLUMN].null_count < len(t) else None
        )
        return ids, digests

    # Commit.

    def commit(
        self,
        facts: TableInput = None,
        alerts: TableInput = None,
        breaker_events: TableInput = None,
        dead_letters: TableInput = None,
        *,
        positions: Mapping[str, int] | None = None,
        state: bytes | None = None,
        digests: pa.Array | None = None,
        prewritten: Prewrite | None = None,
    ) -> CommitResult:
        """Land one batch with the writer's positions and state (bytes), exactly once.

        Tables are Arrow (``spendstream.table_schemas``) or sequences of records. Facts whose
        event_id already landed are skipped (``duplicates``/``conflicts``). ``digests``: each
        fact's content digest (stream/digest.py; or the facts' own ``event_digest`` column),
        landed with it so a later copy of the id with other content is a conflict, not a
        replay. ``positions`` and ``state`` None: the writer's last ones stay in force.
        ``prewritten``: this commit's facts and digests, their files already being written
        (``prewrite``); used if every fact is still new, else deleted (and in any case
        settled by the time this returns or raises).
        """
        try:
            return self._commit(
                facts, alerts, breaker_events, dead_letters, positions, state, digests, prewritten
            )
        finally:
            if prewritten is not None:
                prewritten.discard()  # unless the commit took its files

    def prewrite(self, facts: pa.Table, digests: pa.Array | None = None) -> Prewrite:
        """Start writing ``facts``' data files now, in the background, for a ``commit`` of
        these same ``facts`` and ``digests`` later (warehouse/prewrite.py): the write then
        overlaps whatever the caller does in between."""
        tbl = self.tables.table("usage_facts")
        table = _with_digests(facts, _digests_of(facts, digests))
        # The thread gets metadata of its own: parsed metadata is one thread's
        # (parsed_metadata.py), and the write fills caches on its schema.
        meta, io = _detached(tbl.metadata), self._file_io(tbl)
        return Prewrite(
            facts,
            digests,
            lambda: data_files(meta, "usage_facts", table, io),
            self._delete_files,
        )

    def _commit(
        self,
        facts: TableInput,
        alerts: TableInput,
        breaker_events: TableInput,
        dead_letters: TableInput,
        positions: Mapping[str, int] | None,
        state: bytes | None,
        digests: pa.Array | None,
        prewritten: Prewrite | None,
    ) -> CommitResult:
        given = (facts, digests)
        resume = self.resume()
        tables = {
            "usage_facts": _as_table("usage_facts", facts),
            "alerts": _as_table("alerts", alerts),
            "breaker_events": _as_table("breaker_events", breaker_events),
            "dead_letters": _as_table("dead_letters", dead_letters),
        }
        result = CommitResult(seq=resume.seq)
        digests = _digests_of(tables["usage_facts"], digests)
        fact_table, fact_digests, hashed = self._new_facts(tables["usage_facts"], digests, result)
        # The prewritten files hold exactly these rows only if none was a duplicate by now.
        prewritten_ok = (
            prewritten is not None
            and fact_table is tables["usage_facts"]
            and prewritten.matches(*given)
        )
        if prewritten is not None and not prewritten_ok:
            prewritten.discard()  # now: the same rows are not written twice at once
        tables["usage_facts"] = fact_table
        for name in SMALL_TABLES:
            if len(tables[name]):
                # Early, so a row already landed is not written at all; checked again (exactly)
                # when the outbox lands.
                keys = self._row_keys.setdefault(name, RowKeys(self, name))
                tables[name], _, dropped = keys.new_rows(tables[name])
                result.duplicates += dropped
        # Records were judged one by one before they got here (stream/batch.py, bounds in
        # the event model): no batch is set aside whole for one bad record.
        tables["usage_facts"] = fact_table = _with_digests(fact_table, fact_digests)
        if positions is None and state is None and not any(len(t) for t in tables.values()):
            return result
        seq = resume.seq + 1
        files = {
            name: prewritten.take()
            if name == "usage_facts" and prewritten is not None and prewritten_ok
            else self._write_files(name, t)
            for name, t in tables.items()
            if len(t)
        }
        outbox = {
            name: [f.file_path for f in files[name]] for name in SMALL_TABLES if name in files
        }
        state_bytes = state if state is not None else self._state
        new_positions = dict(positions) if positions is not None else resume.positions
        record = None
        if new_positions is not None or state_bytes is not None or outbox:
            record = self._write_record(seq, new_positions, state_bytes, outbox)
        props = {sn.key("seq", self.writer): str(seq)}
        if record is not None:
            props[sn.key("record", self.writer)] = record
        if new_positions is not None:
            props[sn.key("positions", self.writer)] = sn.to_json(new_positions)
        fact_files = files.get("usage_facts", [])
        while True:

            def still_new(h: _Hashed = hashed) -> bool:
                return bool((self.dedupe.classify_hashed(*h) == NEW).all())

            try:
                result.retries += self._append(
                    "usage_facts",
                    fact_files,
                    seq,
                    props,
                    fence=True,
                    still_new=still_new,
                )
                break
            except _FactsRaced as raced:
                # Another writer landed some of these event_ids first: drop them and rewrite.
                result.retries += raced.retries
                keep = self.dedupe.classify_hashed(*hashed) == NEW
                result.duplicates += int((~keep).sum())
                fact_table = fact_table.filter(pa.array(keep))
                hashed = _Hashed(*(part[keep] for part in hashed))
                if fact_digests is not None:
                    fact_digests = fact_digests.filter(pa.array(keep))
                self._delete_files(fact_files)
                fact_files = self._write_files("usage_facts", fact_table) if len(fact_table) else []
        self.shared.mine.add((self.writer, seq))
        if len(fact_table):
            self.dedupe.add_hashed(*hashed, known_new=True)
        self._expire_if_long(seq)
        self._resume = Resume(seq, new_positions, state_bytes)
        self._state = state_bytes
        result.seq = seq
        for name in SMALL_TABLES:
            if name in files:
                self._land_outbox(name, self.writer, seq, files[name], tables[name])
        result.facts = len(fact_table)
        result.alerts = len(tables["alerts"])
        result.breaker_events = len(tables["breaker_events"])
        result.dead_letters = len(tables["dead_letters"])
        self.publish_current([n for n in ("usage_facts", *SMALL_TABLES) if n in files])
        return result

    def _new_facts(
        self, facts: pa.Table, digests: pa.Array | None, result: CommitResult
    ) -> tuple[pa.Table, pa.Array | None, _Hashed]:
        """The facts not landed yet, their digests, and their dedupe keys (hashed once: the
        same keys serve the race check and the insert after the commit)."""
        classified, self._classified = self._classified, None
        if not len(facts):
            return facts, digests, _hashed(facts["event_id"], facts["ts"], digests)
        self._catch_up()
        known = None if classified is None else classified.new_rows(self.dedupe, facts, digests)
        if known is not None:
            return facts, digests, known
        hashed = _hashed(facts["event_id"], facts["ts"], digests)
        codes = self.dedupe.classify_hashed(*hashed)
        new = codes == NEW
        result.duplicates = int((codes == 1).sum())
        conflict = np.flatnonzero(codes == 2)
        if conflict.size:
            result.conflicts = facts["event_id"].take(pa.array(conflict)).to_pylist()
        if new.all():
            return facts, digests, hashed
        mask = pa.array(new)
        return (
            facts.filter(mask),
            None if digests is None else digests.filter(mask),
            _Hashed(*(part[new] for part in hashed)),
        )

    def _write_files(self, name: str, table: pa.Table) -> list[DataFile]:
        tbl = self.tables.table(name)
        return data_files(tbl.metadata, name, table, self._file_io(tbl))

    def _file_io(self, tbl: Table) -> Any:
        if self.storage.is_s3:
            return tbl.io
        from spendstream.warehouse.staging import StagedLocalFileIO

        return StagedLocalFileIO(tbl.io)  # a file matches the views' glob only whole

    def _delete_files(self, files: Sequence[DataFile]) -> None:
        for f in files:
            # A file left behind is an orphan; `warehouse compact` removes it later.
            with contextlib.suppress(OSError):
                self.fs.delete_file(self.storage.to_fs_path(f.file_path))

    def _record_dir(self) -> str:
        from spendstream.warehouse.layout import segment

        return f"{self.tables.table('usage_facts').location()}/spendstream/{segment(self.writer)}"

    def _write_record(
        self,
        seq: int,
        positions: Mapping[str, int] | None,
        state: bytes | None,
        outbox: Mapping[str, list[str]],
    ) -> str:
        header = sn.to_json(
            {
                "writer": self.writer,
                "seq": seq,
                "positions": positions,
                "outbox": outbox,
                "state": state is not None,
            }
        ).encode()
        path = f"{self._record_dir()}/{seq:012d}-{uuid.uuid4().hex[:12]}.record"
        fs_path = self.storage.to_fs_path(path)
        if not self.storage.is_s3:
            Path(fs_path).parent.mkdir(parents=True, exist_ok=True)
        with self.fs.open_output_stream(fs_path) as out:
            out.write(_RECORD_MAGIC + len(header).to_bytes(8, "big") + header + (state or b""))
        return path

    def _read_record(self, path: str) -> tuple[dict[str, Any], bytes | None]:
        import json

        try:
            with self.fs.open_input_stream(self.storage.to_fs_path(path)) as fh:
                data = fh.read()
        except OSError as exc:
            raise WarehouseError(f"writer record {path} is missing or unreadable: {exc}") from exc
        if not data.startswith(_RECORD_MAGIC):
            raise WarehouseError(f"{path} is not a spendstream writer record")
        at = len(_RECORD_MAGIC)
        size = int.from_bytes(data[at : at + 8], "big")
        header = json.loads(data[at + 8 : at + 8 + size])
        state = data[at + 8 + size :] if header.get("state") else None
        return header, state

    # The catalog commits.

    def _append(
        self,
        name: str,
        files: Sequence[DataFile],
        seq: int,
        props: Mapping[str, str],
        *,
        fence: bool,
        still_new: Callable[[], bool] | None = None,
    ) -> int:
        """Append ``files`` in one snapshot carrying ``props``; retried on a lost race.

        Returns the number of retries. On the facts table (``fence``) a retry first checks
        that no other instance of this writer committed; with ``still_new``, it catches the
        dedupe store up with what the winner landed and raises ``_FactsRaced`` when some of
        these facts are no longer new (the caller rewrites the files without them)."""
        from pyiceberg.exceptions import CommitFailedException

        tbl = self.tables.table(name)
        for attempt in range(self.config.commit_retries + 1):
            head = tbl.current_snapshot()
            if fence and sn.seq_of(sn.summary_of(head), self.writer) != seq - 1:
                raise WriterFenced(
                    f"writer {self.writer!r}: the warehouse holds commit "
                    f"{sn.seq_of(sn.summary_of(head), self.writer)}, this instance expected "
                    f"{seq - 1}: another instance of the writer is running; stop this one"
                )
            try:
                tbl = self._try_append(name, tbl, files, self.writer, seq, props)
                return attempt
            except CommitFailedException:
                self._backoff(attempt)
                tbl = self.tables.load(name)
                if still_new is not None and files:
                    self._catch_up()
                    if not still_new():
                        raise _FactsRaced(attempt + 1) from None
        raise CommitConflict(
            f"commit to {name} lost to other writers {self.config.commit_retries + 1} times "
            "([warehouse] commit_retries)"
        )

    def _expire_if_long(self, seq: int) -> None:
        """Keep the facts table's history short enough that every commit stays cheap: each
        commit rewrites the metadata file holding every snapshot. Positions and state live
        on in the current snapshot, so nothing a writer needs goes with the old ones."""
        limit = self.config.max_snapshots
        if not limit or seq % 16:
            return  # checked every 16 commits of this writer
        from spendstream.warehouse.maintenance import expire_oldest

        expire_oldest(self, "usage_facts", keep=limit // 2, above=limit)

    def _land_outbox(
        self,
        name: str,
        writer: str,
        seq: int,
        files: Sequence[DataFile],
        rows: pa.Table | None = None,
    ) -> bool:
        """Append a commit's rows to a small table unless they are there (by the writer's
        seq), leaving out rows whose key another writer landed first (rowkeys.py). The key
        check and the append are against the same head: a commit in between fails the
        append, and the check runs again."""
        from pyiceberg.exceptions import CommitFailedException

        keys = self._row_keys.setdefault(name, RowKeys(self, name))
        if rows is None:
            rows = sn.read_columns_full(self.storage, [f.file_path for f in files], name)
        tbl = self.tables.load(name)
        for attempt in range(self.config.commit_retries + 1):
            head = tbl.current_snapshot()
            if sn.seq_of(sn.summary_of(head), writer) >= seq:
                return False
            keys.catch_up(tbl)
            fresh, landed, dropped = keys.new_rows(rows, caught_up=True)
            to_add = files
            if dropped:
                to_add = self._write_files(name, fresh) if len(fresh) else []
            try:
                self._try_append(name, tbl, to_add, writer, seq, {sn.key("seq", writer): str(seq)})
                keys.landed(landed)
                return True
            except CommitFailedException:
                if to_add is not files:
                    self._delete_files(to_add)
                self._backoff(attempt)
                tbl = self.tables.load(name)
        raise CommitConflict(f"commit to {name} lost to other writers too often")

    def _try_append(
        self,
        name: str,
        tbl: Table,
        files: Sequence[DataFile],
        writer: str,
        seq: int,
        props: Mapping[str, str],
    ) -> Table:
        """One attempt: a fast-append snapshot on ``tbl``'s head, carrying every writer's keys
        forward plus ``props``; raises CommitFailedException if the head moved."""
        from spendstream.warehouse.appending import fast_append

        head = tbl.current_snapshot()
        summary = {**sn.carried(head), **props, sn.WRITER: writer, sn.SEQ: str(seq)}
        committed = fast_append(tbl, files, summary)
        self.tables.remember(name, committed)
        return committed

    def _backoff(self, attempt: int) -> None:
        wait = min(
            self.config.commit_backoff_min_ms * 2**attempt, self.config.commit_backoff_max_ms
        )
        time.sleep((wait + random.uniform(0, wait / 2)) / 1000)

    # Readers' view of the files.

    def publish_current(self, names: Sequence[str] = (*EVENT_TABLES, "revenue")) -> None:
        """Refresh the local file lists spendstream.duckdb's views read (local storage only)."""
        if self.storage.is_s3:
            return
        from spendstream.warehouse.views import publish_current_files

        publish_current_files(self, names)

    def publish_stale(self, names: Sequence[str] = (*EVENT_TABLES, "revenue")) -> None:
        """Publish the file lists of ``names`` that list another version of their table's
        data files than its head's (``views.stale_current_files``)."""
        if self.storage.is_s3:
            return
        from spendstream.warehouse.views import publish_current_files, stale_current_files

        stale = stale_current_files(self, names)
        if stale:
            publish_current_files(self, stale)

    def check_readable(self) -> None:
        """Read every table's metadata (``WarehouseError`` naming the settings if it cannot)."""
        for name in TABLE_SCHEMAS:
            self.tables.load(name)

    def ensure_views(self) -> None:
        """(Re)create spendstream.duckdb: idempotent, safe while readers hold it open."""
        if self.storage.is_s3:
            return
        from spendstream.warehouse.views import build_database

        self.publish_current()
        build_database(self.storage)

    # Maintenance.

    def compact(self, **options: Any) -> CompactionSummary:
        from spendstream.warehouse.maintenance import compact

        return compact(self, **options)

    def rewrite_facts(self, facts: TableInput) -> int:
        from spendstream.warehouse.maintenance import rewrite_facts

        return rewrite_facts(self, _as_table("usage_facts", facts))


def _detached(meta: TableMetadata) -> TableMetadata:
    """A copy of ``meta`` sharing no object with it, for another thread to write data files
    with; without the table's history, which writing a file does not read (and which is
    most of what a deep copy would cost)."""
    import copy

    slim = meta.model_copy(update={"snapshots": [], "snapshot_log": [], "metadata_log": []})
    return copy.deepcopy(slim)


def _digests_of(facts: pa.Table, digests: pa.Array | None) -> pa.Array | None:
    """The digests given, else the facts' own ``DIGEST_COLUMN`` (None: neither)."""
    if digests is None and DIGEST_COLUMN in facts.column_names:
        return facts[DIGEST_COLUMN].combine_chunks()
    return digests


def _with_digests(facts: pa.Table, digests: pa.Array | None) -> pa.Table:
    """The facts with their ``DIGEST_COLUMN`` (null where no digest was given)."""
    if DIGEST_COLUMN in facts.column_names:
        return facts
    none = pa.nulls(len(facts), pa.binary())
    column = none if digests is None else pc.cast(digests, pa.binary())
    return facts.append_column(pa.field(DIGEST_COLUMN, pa.binary()), column)


class _FactsRaced(Exception):
    def __init__(self, retries: int) -> None:
        self.retries = retries


class _Hashed(NamedTuple):
    """Facts' dedupe keys, as ``DedupeStore.classify_hashed``/``add_hashed`` take them."""

    hi: np.ndarray
    lo: np.ndarray
    days: np.ndarray
    digests: np.ndarray


def _hashed(
    event_ids: pa.Array | pa.ChunkedArray,
    ts: pa.Array | pa.ChunkedArray,
    digests: pa.Array | pa.ChunkedArray | None,
) -> _Hashed:
    from spendstream.warehouse.dedupe import _digest_hashes
    from spendstream.warehouse.keyhash import hash128

    hi, lo = hash128(event_ids)
    return _Hashed(hi, lo, epoch_days(ts), _digest_hashes(digests, len(hi)))


def _flat(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


@dataclass(frozen=True, slots=True)
class _Classified:
    """A batch ``classify`` judged, kept for the commit of its new events: while the store
    has had nothing added (nor been replaced), those events are still new, and their keys
    are hashed already (hashing and probing them again was ~5% of a Kafka worker's usage
    thread)."""

    version: int  # the store's (DedupeStore.version): no store, rebuilt or not, repeats one
    event_ids: pa.Array | pa.ChunkedArray
    digests: pa.Array | pa.ChunkedArray | None
    hashed: _Hashed
    codes: np.ndarray

    def new_rows(
        self, store: DedupeStore, facts: pa.Table, digests: pa.Array | None
    ) -> _Hashed | None:
        """The keys of ``facts`` if they are exactly this batch's new events, in order, with
        the same digests and days, and the store is as it was; else None."""
        if store.version != self.version:
            return None
        new = self.codes == NEW
        if int(new.sum()) != len(facts) or (digests is None) != (self.digests is None):
            return None
        keep = pa.array(new)
        if not _flat(self.event_ids).filter(keep).equals(_flat(facts["event_id"])):
            return None
        if digests is not None and self.digests is not None:
            theirs, ours = _flat(self.digests).filter(keep), _flat(digests)
            if theirs.type != ours.type or not theirs.equals(ours):
                return None
        hashed = _Hashed(*(part[new] for part in self.hashed))
        if not np.array_equal(hashed.days, epoch_days(facts["ts"])):
            return None
        return hashed
