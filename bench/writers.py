"""Three writers committing at once, with maintenance running: nothing lost, nothing doubled.

    .venv/bin/python -m bench.writers [--minutes 2] [--batch 2000] [--interval-s 1] [--local]

Three writer processes (``usage/0..2``, separate workdirs) each commit a batch of facts with
their source positions and a state every ``--interval-s`` (as a runtime does, one batch per
``batch_within_s``; 0: back to back, the worst case for lost races), for ``--minutes``; a fourth process runs
``warehouse compact`` (snapshot retention 60 s, orphan grace 60 s) every 30 s. The default
is the cluster shape on real services started here: the catalog in PostgreSQL
(``LocalPostgres``), the data on s3proxy (``LocalS3``); ``--local`` uses the embedded
default (SQLite + a local directory). The issue's goal is a 10-minute run; the recorded run
says how long it ran.

Checked at the end: every committed row is in ``usage_facts`` exactly once, each writer's
positions in the head snapshot equal its last commit, and the snapshot and file counts are
held by maintenance. Measured: commits and snapshots per minute, commit retries (lost
races), commit latency p50/p99 (the produce -> queryable time is one batch wait plus it).

Results: bench/results/writers.json and a line in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from bench._common import machine, record

NAME = "writers"
WRITERS = 3


def _writer(
    workdir: str, writer: int, seconds: float, batch: int, config: str | None, interval_s: float
) -> None:
    import pyarrow as pa

    from spendstream.config import load_config
    from spendstream.table_schemas import COST_FIELDS, FACTS
    from spendstream.warehouse import Warehouse

    cfg = load_config(config).warehouse if config else None
    now = datetime.now(UTC)
    latencies, retries = [], 0
    with Warehouse(Path(workdir), writer=f"usage/{writer}", config=cfg) as wh:
        offset = (wh.resume().positions or {}).get(f"usage/{writer}", 0)
        end = time.monotonic() + seconds
        next_at = time.monotonic()
        while time.monotonic() < end:
            time.sleep(max(0.0, next_at - time.monotonic()))
            next_at = time.monotonic() + interval_s
            ids = [f"w{writer}-{offset + i}" for i in range(batch)]
            ts = [now - timedelta(seconds=(offset + i) % 86_400) for i in range(batch)]
            cols: dict[str, Any] = {
                "event_id": pa.array(ids),
                "ts": pa.array(ts, FACTS.field("ts").type),
                "provider": pa.array(["openai"] * batch),
                "model": pa.array(["gpt-5-mini"] * batch),
                "input_tokens": pa.array([1000] * batch, pa.int64()),
                "output_tokens": pa.array([100] * batch, pa.int64()),
                **{
                    name: pa.array([Decimal("0.001")] * batch, FACTS.field(name).type)
                    for name in COST_FIELDS
                },
                "priced": pa.array([True] * batch),
                "price_source": pa.array(["bench"] * batch),
                "ingested_at": pa.array([now] * batch, FACTS.field("ts").type),
            }
            for f in FACTS:
                if f.name not in cols:
                    cols[f.name] = pa.nulls(batch, f.type)
            for name in ("cache_read_tokens", "cache_write_tokens"):
                cols[name] = pa.array([0] * batch, pa.int64())
            table = pa.table([cols[f.name] for f in FACTS], schema=FACTS)
            offset += batch
            t = time.perf_counter()
            r = wh.commit(
                facts=table,
                positions={f"usage/{writer}": offset},
                state=json.dumps({"offset": offset}).encode(),
            )
            latencies.append(time.perf_counter() - t)
            retries += r.retries
            assert r.facts == batch, r
    print(json.dumps({"rows": offset, "commits": len(latencies), "retries": retries,
                      "latencies": latencies}))  # fmt: skip


def _maintenance(workdir: str, seconds: float, config: str | None) -> None:
    from spendstream.config import load_config
    from spendstream.warehouse import Warehouse

    cfg = load_config(config).warehouse if config else None
    runs = []
    end = time.monotonic() + seconds
    with Warehouse(Path(workdir), writer="maintenance", config=cfg) as wh:
        while time.monotonic() < end:
            time.sleep(min(30.0, max(end - time.monotonic(), 0)))
            s = wh.compact(min_files=4, retention_s=60, orphan_grace_s=60)
            runs.append(
                {"files_in": s.files_in, "files_out": s.files_out, "expired": s.snapshots_expired,
                 "orphans": s.orphans_deleted, "retries": s.retries}
            )  # fmt: skip
    print(json.dumps({"runs": runs}))


def _services(base: Path) -> tuple[str, dict[str, str], list[Any]]:
    """Start PostgreSQL and s3proxy; return a config file, the env and the services."""
    from spendstream.local.postgres import LocalPostgres
    from spendstream.local.s3 import LocalS3
    from spendstream.local.services import config_toml

    pg_dir = Path(tempfile.mkdtemp(prefix="bench-pg-", dir="/var/tmp"))
    pg_dir.chmod(0o755)
    pg = LocalPostgres(pg_dir / "pg", stop_with_parent=True)
    s3 = LocalS3(base / "s3", stop_with_parent=True)
    uri, endpoint = pg.start(), s3.start()
    s3.create_bucket("bench")
    path = base / "cluster.toml"
    toml = config_toml("127.0.0.1:9092", uri, endpoint, "bench")
    path.write_text(toml)
    env = {
        "SPENDSTREAM_CATALOG_PASSWORD": pg.password,
        "AWS_ACCESS_KEY_ID": s3.access_key_id,
        "AWS_SECRET_ACCESS_KEY": s3.secret_access_key,
    }
    return str(path), env, [pg, s3]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--minutes", type=float, default=2.0)
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--interval-s", type=float, default=1.0)
    ap.add_argument("--local", action="store_true", help="SQLite + local files instead")
    ap.add_argument("--role", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--args", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role:
        a = json.loads(args.args)
        if args.role == "writer":
            _writer(
                a["workdir"], a["writer"], a["seconds"], a["batch"], a["config"], a["interval_s"]
            )
        else:
            _maintenance(a["workdir"], a["seconds"], a["config"])
        return 0

    base = Path(tempfile.mkdtemp(prefix="bench-writers-"))
    services: list[Any] = []
    config: str | None = None
    env = dict(os.environ)
    if not args.local:
        config, extra, services = _services(base)
        env.update(extra)
    seconds = args.minutes * 60
    shared = str(base / "shared")  # --local: every process shares the embedded warehouse

    def spawn(role: str, workdir: str, **kw: Any) -> subprocess.Popen[str]:
        payload = json.dumps({"workdir": workdir, "seconds": seconds, "config": config, **kw})
        return subprocess.Popen(
            [sys.executable, "-m", "bench.writers", "--role", role, "--args", payload],
            stdout=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip

    try:
        from spendstream.config import load_config
        from spendstream.warehouse import Warehouse

        cfg = load_config(config).warehouse if config else None
        os.environ.update(env)
        Warehouse(Path(shared), writer="setup", config=cfg).close()  # create the tables once
        t0 = time.monotonic()
        procs = [
            spawn("writer", shared if args.local else str(base / f"machine-{w}"), writer=w,
                  batch=args.batch, interval_s=args.interval_s)
            for w in range(WRITERS)
        ]  # fmt: skip
        maint = spawn("maintenance", shared if args.local else str(base / "machine-m"))
        outs = []
        for p in procs:
            out, _ = p.communicate(timeout=seconds + 600)
            assert p.returncode == 0, f"writer exited {p.returncode}"
            outs.append(json.loads(out.strip().splitlines()[-1]))
        m_out, _ = maint.communicate(timeout=seconds + 900)
        assert maint.returncode == 0, "maintenance failed"
        elapsed_min = (time.monotonic() - t0) / 60
        maintenance = json.loads(m_out.strip().splitlines()[-1])

        with Warehouse(Path(shared) if args.local else base / "reader", writer="reader",
                       config=cfg) as wh:  # fmt: skip
            from spendstream.warehouse.views import connect_snapshot

            con = connect_snapshot(wh)
            total, distinct = con.execute(
                "SELECT count(*), count(DISTINCT event_id) FROM usage_facts"
            ).fetchone()  # type: ignore[misc]
            con.close()
            tbl = wh.tables.load("usage_facts")
            snapshots = len(tbl.metadata.snapshots)
            files = len(wh.manifests.live_files(tbl))
            positions = {w: r.positions for w, r in wh.writers().items() if w.startswith("usage/")}
    finally:
        for svc in services:
            svc.stop()

    rows = sum(o["rows"] for o in outs)
    commits = sum(o["commits"] for o in outs)
    retries = sum(o["retries"] for o in outs)
    lat = sorted(x for o in outs for x in o["latencies"])
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    report: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(("spendstream", "pyiceberg", "duckdb", "pyarrow")),
        "shape": "sqlite + local files" if args.local else "PostgreSQL catalog + s3proxy data",
        "minutes": round(elapsed_min, 2),
        "writers": WRITERS,
        "batch": args.batch,
        "interval_s": args.interval_s,
        "rows_committed": rows,
        "rows_in_table": total,
        "distinct_event_ids": distinct,
        "no_lost_or_doubled": total == rows == distinct,
        "positions_match": all(
            positions.get(f"usage/{w}") == {f"usage/{w}": outs[w]["rows"]} for w in range(WRITERS)
        ),
        "commits": commits,
        "commits_per_minute": round(commits / elapsed_min, 1),
        "commit_retries": retries,
        "retries_per_commit": round(retries / max(commits, 1), 3),
        "commit_latency_p50_s": round(statistics.median(lat), 3),
        "commit_latency_p99_s": round(p99, 3),
        "events_per_s": round(rows / (elapsed_min * 60)),
        "facts_snapshots_at_end": snapshots,
        "facts_files_at_end": files,
        "maintenance": maintenance["runs"],
    }
    m = report["machine"]
    cpu = " ".join(str(m["cpu_model"]).split()[:2])
    line = (
        f"- {NAME} ({report['when']}, {cpu}, {m['cores']} cores, {report['shape']}, "
        f"load avg {m['load_average'][0]:.1f}, {report['minutes']} min): {WRITERS} writers "
        f"committing {args.batch:,} rows every {args.interval_s:g} s, {commits} commits "
        f"({report['commits_per_minute']}/min, {report['events_per_s']} events/s), "
        f"{retries} retries ({report['retries_per_commit']}/commit), commit p50 "
        f"{report['commit_latency_p50_s']} s p99 {report['commit_latency_p99_s']} s; "
        f"lost or doubled: {'none' if report['no_lost_or_doubled'] else 'YES'}, positions "
        f"{'match' if report['positions_match'] else 'DIFFER'}; with compaction every 30 s: "
        f"{snapshots} snapshots, {files} data files at the end -> results/{NAME}.json"
    )
    record(NAME, report, line)
    return 0 if report["no_lost_or_doubled"] and report["positions_match"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
