"""``spendstream warehouse compact`` and the writers' own expiry (issue 13, item 4).

Expiry goes by the configured keys — ``[warehouse] snapshot_retention_s`` for the command,
``max_snapshots`` for the writers — and every writer's positions and state survive it;
compaction run while writers keep committing loses and doubles no event. The expiry tests run
on the local default and on the cluster shape (PostgreSQL catalog, data on S3); the
concurrent one on the local default.
"""

from __future__ import annotations

import re
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pytest

from spendstream.cli import main
from spendstream.config import WarehouseConfig
from spendstream.table_schemas import facts_table
from spendstream.warehouse import Warehouse
from spendstream.warehouse import maintenance as maintenance_module
from spendstream.warehouse.reading import run_sql
from tests.service_fixtures import cluster_toml
from tests.warehouse.factories import T0, alert, days, fact


@dataclass(frozen=True)
class Shape:
    """Where a test's warehouse lives, and how each machine (writer, CLI) addresses it."""

    base: WarehouseConfig
    machine: Callable[[str], Path]  # one workdir per machine on a cluster; one shared locally
    tmp: Path

    def config(self, **keys: object) -> WarehouseConfig:
        return self.base.model_copy(update=keys)

    def toml(self, **keys: object) -> Path:
        """A config file with these [warehouse] keys, for the CLI."""
        lines = "".join(f"{k} = {v}\n" for k, v in keys.items())
        text = cluster_toml(self.base) if self.base.catalog_uri else "[warehouse]\n"
        path = self.tmp / f"config-{len(list(self.tmp.glob('config-*')))}.toml"
        path.write_text(text.replace("[warehouse]\n", "[warehouse]\n" + lines, 1))
        return path


@pytest.fixture(params=["local", "cluster"])
def shape(request: pytest.FixtureRequest, tmp_path: Path) -> Shape:
    if request.param == "local":
        return Shape(WarehouseConfig(), lambda _: tmp_path / "work", tmp_path)
    cluster: WarehouseConfig = request.getfixturevalue("cluster_config")
    return Shape(cluster, lambda name: tmp_path / f"machine-{name}", tmp_path)


def _compact(capsys: pytest.CaptureFixture[str], workdir: Path, toml: Path, *extra: str) -> str:
    capsys.readouterr()
    rc = main(["warehouse", "compact", "--workdir", str(workdir), "--config", str(toml), *extra])
    out, err = capsys.readouterr()
    assert rc == 0, err
    return out


def _snapshots(shape: Shape, name: str = "usage_facts") -> list[tuple[int, int]]:
    """(timestamp_ms, snapshot_id) of the table's retained snapshots, oldest first."""
    with Warehouse(shape.machine("inspect"), writer="inspect", config=shape.base) as wh:
        return sorted(
            (s.timestamp_ms, s.snapshot_id) for s in wh.tables.load(name).metadata.snapshots
        )


def test_compact_expires_snapshots_older_than_the_configured_retention_keeping_positions(
    shape: Shape, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = shape.config(max_snapshots=0)  # only the command expires here
    a = Warehouse(shape.machine("a"), writer="a", config=cfg)
    b = Warehouse(shape.machine("b"), writer="b", config=cfg)
    n = 0
    for i in range(1, 4):
        for wh in (a, b):
            batch = [fact(T0 + days(k % 2), event_id=f"e-{n}-{k}") for k in range(4)]
            wh.commit(facts=batch, positions={wh.writer: i}, state=f"{wh.writer}{i}".encode())
            n += 1
    a.close()
    b.close()
    before = _snapshots(shape)
    assert len(before) == 6
    stamps = [ts for ts, _ in before]
    assert stamps == sorted(set(stamps)), "each commit its own millisecond"

    # The clock (the one thing mocked) stands 600 s after the 3rd commit (+ half a
    # millisecond): the retention configured below makes the first three old, the rest new.
    retention = 600
    now = (stamps[2] + 0.5) / 1000 + retention
    monkeypatch.setattr(maintenance_module, "time", SimpleNamespace(time=lambda: now))
    toml = shape.toml(snapshot_retention_s=retention)
    out = _compact(capsys, shape.machine("ops"), toml)
    assert "compacted 2 partitions: 12 files -> 2" in out

    after = _snapshots(shape)
    old, kept = {s for _, s in before[:3]}, {s for _, s in before[3:]}
    ids = {s for _, s in after}
    assert not ids & old
    assert kept <= ids
    assert len(after) == 3 + 2  # the kept three and one rewrite per day partition

    with Warehouse(shape.machine("c"), writer="a", config=cfg) as again:
        writers = again.writers()
        assert {w: (r.positions, r.state) for w, r in writers.items()} == {
            "a": ({"a": 3}, b"a3"),
            "b": ({"b": 3}, b"b3"),
        }
        assert again.resume().positions == {"a": 3}
        # Dedupe still knows every landed id after its snapshot went.
        assert again.commit(facts=[fact(T0, event_id="e-0-0")]).facts == 0
    sql = "SELECT count(*), count(DISTINCT event_id) FROM usage_facts"
    assert run_sql(shape.machine("r"), sql, config=shape.base)[1] == [(24, 24)]

    # Retention 0 (the --retention-s flag over the key): everything but the head goes.
    out = _compact(capsys, shape.machine("ops"), toml, "--retention-s", "0")
    assert len(_snapshots(shape)) == 1
    with Warehouse(shape.machine("d"), writer="d", config=cfg) as wh:
        assert {w: r.positions for w, r in wh.writers().items()} == {"a": {"a": 3}, "b": {"b": 3}}
    assert run_sql(shape.machine("r"), sql, config=shape.base)[1] == [(24, 24)]


@pytest.mark.parametrize(
    ("limit", "left"),
    [(0, 32), (32, 32), (31, 15)],
    ids=["off", "at-the-limit", "over-the-limit"],
)
def test_writers_expire_past_max_snapshots_keeping_the_newest_half_and_every_position(
    tmp_path: Path, limit: int, left: int
) -> None:
    """Two writers alternate; the first checks at its 16th commit (32 snapshots then): past
    ``max_snapshots`` the newest half stays; at it, or with 0, nothing goes."""
    cfg = WarehouseConfig(max_snapshots=limit)
    work = tmp_path / "work"
    a = Warehouse(work, writer="a", config=cfg)
    b = Warehouse(work, writer="b", config=WarehouseConfig(max_snapshots=0))
    for i in range(1, 17):
        b.commit(facts=[fact(T0, event_id=f"b-{i}")], positions={"b": i})
        a.commit(facts=[fact(T0, event_id=f"a-{i}")], positions={"a": i})
    snaps = a.tables.load("usage_facts").metadata.snapshots
    assert len(snaps) == left
    assert a.tables.load("usage_facts").current_snapshot() in snaps
    a.close()
    b.close()
    with Warehouse(work, writer="b") as again:
        assert again.resume().positions == {"b": 16}
        assert again.writers()["a"].positions == {"a": 16}
        assert again.tables.load("usage_facts").scan().to_arrow().num_rows == 32


def test_compaction_rewrites_a_partition_holding_exactly_min_files(tmp_path: Path) -> None:
    """``--min-files 2`` (the least allowed): a day of two files is rewritten into one, with
    every row, even when those two are all the table's files."""
    with Warehouse(tmp_path / "work") as wh:
        wh.commit(facts=[fact(T0, event_id="a")], positions={"p": 1})
        wh.commit(facts=[fact(T0, event_id="b")], positions={"p": 2})
        summary = wh.compact(min_files=2)
        assert (summary.partitions, summary.files_in, summary.files_out, summary.rows) == (
            1,
            2,
            1,
            2,
        )
        assert summary.skipped == []
        tbl = wh.tables.load("usage_facts")
        assert len(wh.manifests.live_files(tbl)) == 1
        assert sorted(tbl.scan().to_arrow()["event_id"].to_pylist()) == ["a", "b"]
        assert wh.compact(min_files=3).partitions == 0  # one file left: nothing to do


def test_rewrite_facts_replaces_landed_facts_by_event_id_and_ignores_the_rest(
    tmp_path: Path,
) -> None:
    """``prices reprice --yes``: each landed fact named is replaced once, keeping its content
    digest; a fact that never landed is not added; other facts of the day stay as they were."""
    with Warehouse(tmp_path / "work") as wh:
        wh.commit(
            facts=[fact(T0, event_id="a"), fact(T0, event_id="b")],
            digests=pa.array([b"da", b"db"], pa.binary()),
        )
        repriced = fact(T0, "0.25", event_id="a")
        stray = fact(T0, "1", event_id="never-landed")
        assert wh.rewrite_facts([repriced, stray]) == 1
        t = wh.tables.load("usage_facts").scan().to_arrow().sort_by("event_id")
        assert t["event_id"].to_pylist() == ["a", "b"]
        assert t["cost_usd"].to_pylist() == [Decimal("0.25"), Decimal("0.01")]
        assert t["event_digest"].to_pylist() == [b"da", b"db"]


def test_the_orphan_sweep_deletes_a_killed_writers_files_but_no_pending_outbox(
    tmp_path: Path,
) -> None:
    """A writer killed before its facts commit leaves data files nothing refers to: the sweep
    deletes them once past the grace. One killed after its facts commit leaves its outbox
    (here an alert) named only by its writer record: a sweep running before anyone finished
    that outbox keeps it, and the next open lands it."""
    work = tmp_path / "work"

    class KilledAfterFactsCommit(Warehouse):
        def _land_outbox(self, *args: object, **kw: object) -> bool:
            return False

    with KilledAfterFactsCommit(work, writer="w") as wh:
        wh.commit(facts=[fact(T0, event_id="a")], alerts=[alert()], positions={"p": 1})
        (orphan,) = wh._write_files("usage_facts", facts_table([fact(T0, event_id="b")]))
        path = Path(wh.storage.to_fs_path(orphan.file_path))
        assert maintenance_module.remove_orphans(wh, "usage_facts", 3600) == 0
        assert path.exists()  # within the grace: maybe a writer about to commit it
        for name in ("usage_facts", "alerts", "breaker_events", "dead_letters"):
            maintenance_module.remove_orphans(wh, name, 0)
        assert not path.exists()
    with Warehouse(work, writer="w") as again:
        assert again.resume().seq == 1
        assert again.tables.load("alerts").scan().to_arrow().num_rows == 1
        assert again.tables.load("usage_facts").scan().to_arrow()["event_id"].to_pylist() == ["a"]


_SUMMARY = re.compile(r"compacted [\d,]+ partitions?: (\d+) files .* ([\d,]+) snapshots? expired")


def test_compaction_while_writers_commit_loses_and_doubles_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Three writer threads commit overlapping batches (each batch shares four events with
    the same batch of the other writers) until two compactions or more, expiring every old
    snapshot, have run beside them, a commit landing during at least one; the writers also
    expire their own history (max_snapshots)."""
    # The local default only: on PostgreSQL + S3 a writer paced like this one has lost
    # commit_retries races in a row to the others and compaction (CommitConflict).
    shape = Shape(WarehouseConfig(), lambda _: tmp_path / "work", tmp_path)
    # Retries enough that a writer slowed by a loaded machine keeps its turn: the test is
    # about what lands, not about how often a writer may lose the race to compaction.
    cfg = shape.config(max_snapshots=12, commit_retries=200)
    stop = threading.Event()
    attempted: dict[str, set[str]] = {}
    last: dict[str, int] = {}
    commits = [0]
    errors: list[BaseException] = []

    def write(name: str) -> None:
        ids: set[str] = set()
        attempted[name] = ids
        try:
            with Warehouse(shape.machine(name), writer=name, config=cfg) as wh:
                for i in range(1, 300):  # a cap, should stop never come
                    batch = [
                        fact(T0 + days(k % 2), event_id=f"shared-{i}-{k}") for k in range(4)
                    ] + [fact(T0 + days(k % 2), event_id=f"{name}-{i}-{k}") for k in range(4)]
                    wh.commit(facts=batch, positions={name: i}, state=name.encode())
                    ids.update(f.event.event_id for f in batch)
                    last[name] = i
                    commits[0] += 1
                    if stop.is_set() and i >= 3:
                        return
                    stop.wait(0.3)  # a writer's pace, not a measurement: batches keep coming
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(f"w{n}",)) for n in range(3)]
    for t in threads:
        t.start()
    toml = shape.toml(snapshot_retention_s=0, max_snapshots=12, commit_retries=200)
    files_in = expired = during = 0
    try:
        while commits[0] < 6 and not errors:
            stop.wait(0.05)  # let the writers start: compaction needs files to rewrite
        # Two compactions at least, more (up to ten) until a writer's commit has landed
        # while one ran: a compaction quicker than the writers' pace can miss them all.
        runs = 0
        while runs < 2 or (during == 0 and runs < 10):
            started = commits[0]
            out = _compact(capsys, shape.machine("ops"), toml, "--min-files", "2")
            during += commits[0] - started
            runs += 1
            for m in _SUMMARY.finditer(out):
                files_in += int(m[1])
                expired += int(m[2].replace(",", ""))
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=600)
    assert not errors, ["".join(traceback.format_exception(e)) for e in errors]
    assert not any(t.is_alive() for t in threads)
    assert files_in > 0 and expired > 0, "compaction rewrote and expired nothing"
    assert during > 0, "no writer committed while compaction ran"

    union = set().union(*attempted.values())
    sql = "SELECT count(*), count(DISTINCT event_id) FROM usage_facts"
    assert run_sql(shape.machine("r"), sql, config=shape.base)[1] == [(len(union), len(union))]
    landed = run_sql(shape.machine("r"), "SELECT event_id FROM usage_facts", config=shape.base)
    assert {r[0] for r in landed[1]} == union
    with Warehouse(shape.machine("check"), writer="w0", config=cfg) as wh:
        assert {w: (r.positions, r.state) for w, r in wh.writers().items()} == {
            name: ({name: i}, name.encode()) for name, i in last.items()
        }
        assert wh.resume().positions == {"w0": last["w0"]}
