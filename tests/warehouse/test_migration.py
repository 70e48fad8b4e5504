"""``spendstream warehouse migrate``: a workdir of the old layout becomes Iceberg tables."""

from __future__ import annotations

import tarfile
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from spendstream.cli import main
from spendstream.warehouse import Warehouse
from spendstream.warehouse.reading import run_sql

LEGACY = Path(__file__).parent / "data" / "legacy-workdir.tar.gz"


@pytest.fixture
def legacy(tmp_path: Path) -> Path:
    """A workdir written by the last pre-Iceberg release (data/make_legacy_workdir.py):
    facts over three days, one day compacted (a k-file replacing its c-files), alerts,
    breaker events, a dead letter, revenue, and two writers' states and positions."""
    with tarfile.open(LEGACY) as tar:
        tar.extractall(tmp_path, filter="data")
    return tmp_path


def test_migrate_copies_every_table_and_every_writers_state(
    legacy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["warehouse", "migrate", "--workdir", str(legacy)]) == 0
    assert "migrated 8 usage_facts, 1 alerts, 1 breaker_events, 1 dead_letters" in (
        capsys.readouterr().out
    )
    q = lambda sql: run_sql(legacy, sql)[1]  # noqa: E731
    assert q("SELECT team, count(*), sum(cost_usd) FROM usage_facts GROUP BY 1 ORDER BY 1") == [
        ("ads", 1, None),
        ("search", 6, Decimal("0.06")),
        (None, 1, Decimal("0.01")),
    ]
    assert q("SELECT count(*), count(DISTINCT event_id) FROM usage_facts") == [(8, 8)]
    # Columns the old release did not write: token kinds it did not know were 0, and a
    # priced fact had no tool cost (0); an unpriced one keeps null costs.
    assert q(
        "SELECT priced, tool_cost_usd, max(cache_write_1h_tokens), max(output_audio_tokens), "
        "count(tool_requests) FROM usage_facts GROUP BY ALL ORDER BY 1"
    ) == [(False, None, 0, 0, 0), (True, Decimal(0), 0, 0, 0)]
    assert q("SELECT count(*) FROM alerts") == q("SELECT count(*) FROM breaker_events") == [(1,)]
    assert q("SELECT count(*) FROM dead_letters") == q("SELECT count(*) FROM revenue") == [(1,)]
    with Warehouse(legacy) as wh:
        writers = wh.writers()
    assert writers["embedded"].positions == {"spendstream.usage/0": 42}
    assert writers["embedded"].state == b'{"engine":2}'
    assert writers["usage/1"].positions == {"spendstream.usage/1": 7}
    old = [p.name for p in (legacy / "warehouse").iterdir()]
    assert "catalog.sqlite" not in old and any(n.startswith("legacy-") for n in old)


def test_migrate_twice_is_harmless(legacy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["warehouse", "migrate", "--workdir", str(legacy)]) == 0
    assert main(["warehouse", "migrate", "--workdir", str(legacy)]) == 0
    assert "nothing to migrate" in capsys.readouterr().out
    assert run_sql(legacy, "SELECT count(*) FROM usage_facts")[1] == [(8,)]


def _extract(dest: Path) -> Path:
    with tarfile.open(LEGACY) as tar:
        tar.extractall(dest, filter="data")
    return dest


def _migrated(workdir: Path) -> dict[str, object]:
    """What a migrated workdir holds: every table's rows and every writer's state."""
    q = lambda sql: run_sql(workdir, sql)[1]  # noqa: E731
    out: dict[str, object] = {
        "facts": q("SELECT event_id, team, cost_usd FROM usage_facts ORDER BY event_id"),
        "revenue": q("SELECT month, plan, user_id, revenue_usd FROM revenue ORDER BY ALL"),
    }
    for table in ("alerts", "breaker_events", "dead_letters"):
        out[table] = q(f"SELECT count(*) FROM {table}")
    with Warehouse(workdir) as wh:
        out["writers"] = {
            name: (w.positions, w.state) for name, w in wh.writers().items() if name != "migration"
        }
    return out


def test_a_migration_that_failed_half_way_resumes_copying_nothing_twice(tmp_path: Path) -> None:
    """A migration stopped after some partitions, or after the revenue, and run again ends
    with what one uninterrupted run gives."""
    import sqlite3

    from spendstream.warehouse.migration import migrate

    expected = _extract(tmp_path / "once")
    migrate(expected)
    workdir = _extract(tmp_path / "resumed")
    root = workdir / "warehouse"
    # Stop it at the last facts partition (two already committed): an unreadable file.
    (last,) = sorted(root.glob("usage_facts/date=*/*.parquet"))[-1:]
    good = last.read_bytes()
    last.write_bytes(b"not parquet")
    with pytest.raises(Exception, match=r"(?i)parquet"):
        migrate(workdir)
    last.write_bytes(good)
    # Then after the revenue, at the second writer's state (the first is already copied).
    con = sqlite3.connect(root / "catalog.sqlite")
    with con:
        (rowid, positions) = con.execute(
            "SELECT max(rowid), source_positions FROM writer_state"
        ).fetchone()
        con.execute("UPDATE writer_state SET source_positions = '{' WHERE rowid = ?", (rowid,))
    with pytest.raises(ValueError):
        migrate(workdir)
    with con:
        con.execute(
            "UPDATE writer_state SET source_positions = ? WHERE rowid = ?", (positions, rowid)
        )
    con.close()
    migrate(workdir)
    assert _migrated(workdir) == _migrated(expected)


def test_files_an_old_compaction_superseded_or_has_not_activated_are_not_copied(
    tmp_path: Path,
) -> None:
    """The old visibility rule: a k-file replaces the c-files it compacted (id <= its own)
    and older k-files, from its activation time on; left-over files (a compaction killed
    before deleting them, or one not yet active) are not migrated."""
    from spendstream.warehouse.migration import migrate

    expected = _extract(tmp_path / "clean")
    migrate(expected)
    workdir = _extract(tmp_path / "leftovers")
    (compacted,) = (workdir / "warehouse").glob("usage_facts/date=*/k*.parquet")
    head, since, _ = compacted.name.split("-", 2)
    upto = head.removeprefix("k")
    # The same facts at other costs (the landing dedupes by event_id, so whichever file
    # were read first would win): none of these may be read.
    rows = pq.read_table(compacted)
    cost = rows.schema.get_field_index("cost_usd")
    for i, leftover in enumerate(
        (
            f"c{upto}-9.parquet",  # a commit file it replaced, not yet deleted
            f"k{int(upto) - 1:012d}-{since}-older.parquet",  # an earlier compaction's
            f"k{int(upto) + 1:012d}-9999999999999-future.parquet",  # not active yet
        ),
        start=2,
    ):
        costs = [None if c is None else c * i for c in rows["cost_usd"].to_pylist()]
        other = pa.array(costs, rows.schema.field(cost).type)
        pq.write_table(rows.set_column(cost, "cost_usd", other), compacted.with_name(leftover))
    migrate(workdir)
    assert _migrated(workdir) == _migrated(expected)
