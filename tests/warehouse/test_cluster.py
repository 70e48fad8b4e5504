"""The cluster shape on real services: a PostgreSQL catalog, data on an S3 server, writers
with separate workdirs and no shared local files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa

from spendstream.config import WarehouseConfig
from spendstream.warehouse import DUPLICATE, NEW, Warehouse
from spendstream.warehouse.reading import run_sql
from tests.service_fixtures import cluster_toml
from tests.warehouse.crashpoints import synthetic_lines
from tests.warehouse.factories import T0, alert, dead_letter, fact

ROOT = Path(__file__).resolve().parents[2]
TS = pa.timestamp("us", tz="UTC")


def _files_under(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.is_file()] if path.exists() else []


def test_landing_dedupe_and_positions_through_postgres_and_s3(
    tmp_path: Path, cluster_config: WarehouseConfig
) -> None:
    first, second, reader = tmp_path / "m1", tmp_path / "m2", tmp_path / "m3"
    landed = [fact(T0), fact(T0)]
    with Warehouse(first, writer="usage/0", config=cluster_config) as wh:
        r = wh.commit(
            facts=landed,
            alerts=[alert()],
            dead_letters=[dead_letter()],
            positions={"spendstream.usage/0": 99},
            state=b"engine-state",
        )
        assert (r.facts, r.alerts, r.dead_letters) == (2, 1, 1)
    # Another machine: same writer resumes; another writer sees what landed.
    with Warehouse(second, writer="usage/0", config=cluster_config) as wh:
        resume = wh.resume()
        assert (resume.positions, resume.state) == ({"spendstream.usage/0": 99}, b"engine-state")
    with Warehouse(second, writer="usage/1", config=cluster_config) as other:
        ids = pa.array([landed[0].event.event_id, "fresh"])
        assert other.classify(ids, pa.array([T0, T0], TS)).tolist() == [DUPLICATE, NEW]
        assert other.commit(facts=[landed[1], fact(T0)]).facts == 1
    rows = run_sql(
        reader, "SELECT count(*), count(DISTINCT event_id) FROM usage_facts", config=cluster_config
    )[1]
    assert rows == [(3, 3)]
    assert run_sql(reader, "SELECT count(*) FROM alerts", config=cluster_config)[1] == [(1,)]
    # No machine kept a local file: the catalog is in PostgreSQL, the data on S3.
    assert _files_under(first) == _files_under(second) == _files_under(reader) == []


def test_compaction_on_s3_keeps_every_row_and_the_writers_positions(
    tmp_path: Path, cluster_config: WarehouseConfig
) -> None:
    with Warehouse(tmp_path / "w", writer="usage/0", config=cluster_config) as wh:
        for n in range(3):
            wh.commit(facts=[fact(T0) for _ in range(5)], positions={"p": n}, state=b"s")
        summary = wh.compact(orphan_grace_s=0)
        assert (summary.files_in, summary.files_out) == (3, 1)
    with Warehouse(tmp_path / "x", writer="usage/0", config=cluster_config) as wh:
        assert wh.resume().positions == {"p": 2}
        assert wh.unseen([fact(T0).event])  # a new id is new ...
    sql = "SELECT count(*), count(DISTINCT event_id) FROM usage_facts"
    assert run_sql(tmp_path / "r", sql, config=cluster_config)[1] == [(15, 15)]


def _writer(
    workdir: Path, events: Path, writer: str, config: Path, point: str = "none", nth: int = 0
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.warehouse.crashpoints", point, str(nth), "--",
         "--writer", str(workdir), str(events), writer, "15", str(config)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _dump(workdir: Path, config: WarehouseConfig | None) -> dict[str, list[tuple[Any, ...]]]:
    def q(sql: str) -> list[tuple[Any, ...]]:
        return run_sql(workdir, sql, config=config)[1]

    return {
        "facts": q("SELECT event_id, ts, input_tokens, cost_usd FROM usage_facts ORDER BY ALL"),
        "alerts": q("SELECT alert_id, ts, message FROM alerts ORDER BY ALL"),
        "breakers": q("SELECT scope, state, reason, ts FROM breaker_events ORDER BY ALL"),
        "dead": q("SELECT raw, source FROM dead_letters ORDER BY ALL"),
    }


def test_two_machines_one_killed_and_restarted_land_what_one_writer_would(
    tmp_path: Path, cluster_config: WarehouseConfig
) -> None:
    """Writer a (killed with SIGKILL after its 3rd facts commit, then restarted) and writer b
    commit concurrently; their inputs overlap by 40 events. The tables equal one writer
    landing both inputs in turn on the embedded default."""
    a_events, b_events = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a_events.write_text("\n".join(synthetic_lines(150)) + "\n")
    b_events.write_text("\n".join(synthetic_lines(150, start=110)) + "\n")
    config = tmp_path / "cluster.toml"
    config.write_text(cluster_toml(cluster_config))

    a = _writer(tmp_path / "machine-a", a_events, "usage/0", config, "after_facts_commit", 3)
    b = _writer(tmp_path / "machine-b", b_events, "usage/1", config)
    assert a.wait(timeout=600) == -9, a.stderr.read() if a.stderr else ""
    restarted = _writer(tmp_path / "machine-a2", a_events, "usage/0", config)
    for proc in (b, restarted):
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]

    reference = tmp_path / "reference"
    for events, writer in ((a_events, "usage/0"), (b_events, "usage/1")):
        p = subprocess.run(
            [sys.executable, "-m", "tests.warehouse.crashpoints", "none", "0", "--",
             "--writer", str(reference), str(events), writer, "15"],
            cwd=ROOT, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert p.returncode == 0, p.stderr[-3000:]
    got, want = _dump(tmp_path / "reader", cluster_config), _dump(reference, None)
    assert got == want
    assert len(got["facts"]) == len({r[0] for r in got["facts"]})
    assert all(_files_under(tmp_path / m) == [] for m in ("machine-a", "machine-a2", "machine-b"))
    with Warehouse(tmp_path / "reader", writer="reader", config=cluster_config) as wh:
        writers = wh.writers()
    assert writers["usage/0"].positions == {"a.jsonl": 150}
    assert writers["usage/1"].positions == {"b.jsonl": 150}
