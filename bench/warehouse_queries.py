"""Warehouse benchmark: named queries over 10M facts (local disk and a local S3 server), and
exactly-once landing throughput into the Iceberg tables.

    .venv/bin/python -m bench.warehouse_queries [--facts 10000000] [--landing 1000000] [--no-s3]

Queries: 10M facts (30 days, 8 teams, 40 features, 12 models, 200k users, 30% of calls in
agent sessions with sub-agents) are generated with pyarrow and committed through
``Warehouse.commit`` in 250k-row batches (one file per batch, as after compaction). Every
named query then runs the way ``spendstream query`` runs it: a DuckDB connection over the
catalog's current snapshot (``views.connect_snapshot``; first run and the median of 3 warm
runs), and through ``spendstream.duckdb`` (local only). The same facts are committed to
Iceberg tables on a local s3proxy with the catalog in SQLite, and the queries timed again
(goal: within 2x of local). Baseline in the same run: ``cost_by_team``'s aggregation on a
bare ``read_parquet`` of the same files.

Landing: ``--landing`` facts committed as Arrow tables in batches of 20k rows, each with
source positions and a 64 kB state, through classify + write + catalog commit (the
embedded writer's path), then the whole stream replayed (every id must be skipped).
Baseline: the same batches written with ``pq.write_table`` alone. Goal: not slower than the
columnar engine's ~100k events/s.

Results: bench/results/warehouse_queries.json and a line in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bench._common import machine as shared_machine
from bench._common import record, run_spendstream, write_synthetic
from spendstream.producers.event import UsageEvent
from spendstream.records import Cost, Fact
from spendstream.table_schemas import FACTS, facts_table
from spendstream.warehouse import Warehouse
from spendstream.warehouse.queries import QUERIES

NAME = "warehouse_queries"
START = datetime(2026, 9, 1, tzinfo=UTC)
DAYS = 30
ROWS_PER_FILE = 250_000
GOAL_S = 1.0


def machine() -> dict[str, Any]:
    return shared_machine(("spendstream", "duckdb", "pyarrow", "numpy", "pydantic"))


def _strings(prefix: str, ints: np.ndarray) -> pa.Array:
    return pc.binary_join_element_wise(prefix, pa.array(ints).cast(pa.string()), "")


def _money(nano_usd: np.ndarray) -> pa.Array:
    """DECIMAL(38, 18) from non-negative nano-dollars, built from 128-bit little-endian words."""
    words = np.zeros((len(nano_usd), 2), dtype=np.int64)
    words[:, 0] = nano_usd.astype(np.int64) * 1_000_000_000
    return pa.Array.from_buffers(
        FACTS.field("cost_usd").type, len(nano_usd), [None, pa.py_buffer(words.tobytes())]
    )


def _chunk(rng: np.random.Generator, start_id: int, n: int, day: datetime) -> pa.Table:
    teams = np.array(["search", "support", "growth", "platform", "data", "mobile", "ads", "shared"])
    models = [
        ("openai", "gpt-5-mini"), ("openai", "gpt-5"), ("openai", "gpt-4o"),
        ("anthropic", "claude-sonnet-4-5"), ("anthropic", "claude-haiku-4-5"),
        ("anthropic", "claude-opus-4-1"), ("google", "gemini-2.5-pro"),
        ("google", "gemini-2.5-flash"), ("deepseek", "deepseek-chat"),
        ("bedrock", "anthropic.claude-3-5-sonnet"), ("self-hosted", "llama-3.1-70b"),
        ("openrouter", "meta-llama/llama-3.3-70b"),
    ]  # fmt: skip
    ids = np.arange(start_id, start_id + n)
    feature = rng.integers(0, 40, n)
    team_idx = feature % len(teams)
    model_idx = rng.integers(0, len(models), n)
    inp = rng.integers(100, 20_000, n)
    read = (inp * rng.random(n) * (feature % 3 != 0)).astype(np.int64)
    out = rng.integers(10, 2_000, n)
    nano = inp * 3 + out * 15  # ~$3 / $15 per Mtok, in nano-dollars
    attempt = np.where(rng.random(n) < 0.05, 2, 1)
    status = np.where(rng.random(n) < 0.03, "error", "ok")
    in_session = rng.random(n) < 0.3
    sess = rng.integers(0, max(n // 50, 1), n) + start_id // 50
    parent = sess - sess % 5
    ts_us = int(day.timestamp() * 1e6) + np.sort(rng.integers(0, 86_400_000_000, n))
    untagged = rng.random(n) < 0.02
    priced = model_idx != 10
    cols: dict[str, pa.Array] = {
        "event_id": _strings("ev-", ids),
        "ts": pa.array(ts_us, pa.timestamp("us", tz="UTC")),
        "provider": pc.take(pa.array([m[0] for m in models]), model_idx),
        "model": pc.take(pa.array([m[1] for m in models]), model_idx),
        "input_tokens": pa.array(inp),
        "output_tokens": pa.array(out),
        "cache_read_tokens": pa.array(read),
        "cache_write_tokens": pa.array(np.zeros(n, dtype=np.int64)),
        "batch": pa.array(np.zeros(n, dtype=bool)),
        "status": pa.array(status),
        "attempt": pa.array(attempt),
        "request_id": _strings("req-", ids - (attempt - 1)),
        "team": pc.if_else(pa.array(untagged), pa.nulls(n, pa.string()), pa.array(teams[team_idx])),
        "feature": _strings("feature-", feature),
        "user_id": _strings("user-", rng.integers(0, 200_000, n)),
        "api_key_id": _strings("key-", feature),
        "session_id": pc.if_else(
            pa.array(in_session), _strings("sess-", sess), pa.nulls(n, pa.string())
        ),
        "parent_session_id": pc.if_else(
            pa.array(in_session & (sess % 5 != 0)),
            _strings("sess-", parent),
            pa.nulls(n, pa.string()),
        ),
        "cost_usd": pc.if_else(
            pa.array(priced), _money(nano), pa.nulls(n, FACTS.field("cost_usd").type)
        ),
        "priced": pa.array(priced),
        "price_source": pc.if_else(
            pa.array(priced), pa.scalar("genai-prices"), pa.nulls(n, pa.string())
        ),
        "ingested_at": pa.array(ts_us, pa.timestamp("us", tz="UTC")),
        "schema_version": pa.array(np.ones(n, dtype=np.int32)),
    }
    cols["input_cost_usd"] = cols["cost_usd"]
    zero = pc.if_else(
        pa.array(priced), _money(np.zeros(n)), pa.nulls(n, FACTS.field("cost_usd").type)
    )
    for name in ("cache_read_cost_usd", "cache_write_cost_usd", "output_cost_usd"):
        cols[name] = zero
    arrays = [cols[f.name] if f.name in cols else pa.nulls(n, f.type) for f in FACTS]
    return pa.Table.from_arrays(arrays, schema=FACTS)


def generate(wh: Warehouse, n: int, seed: int = 7) -> float:
    """Commit n generated facts through the warehouse (positions: rows so far)."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    per_day = n // DAYS
    made = 0
    for d in range(DAYS):
        day = START + timedelta(days=d)
        rows_today = per_day if d < DAYS - 1 else n - made
        done = 0
        while done < rows_today:
            k = min(ROWS_PER_FILE, rows_today - done)
            result = wh.commit(facts=_chunk(rng, made, k, day), positions={"rows": made + k})
            assert result.facts == k, result
            done += k
            made += k
    wh.ensure_views()
    return time.perf_counter() - t0


def time_queries(wh: Warehouse, local_file: bool) -> dict[str, Any]:
    from spendstream.warehouse.tables import Storage
    from spendstream.warehouse.views import connect_database, connect_snapshot

    t = time.perf_counter()
    con = connect_snapshot(wh)
    out: dict[str, Any] = {"connect_s": round(time.perf_counter() - t, 3)}
    file_con = connect_database(wh.storage) if local_file else None

    def measure(c: Any, sql: str) -> dict[str, Any]:
        # Arrow results: the time is DuckDB's, not Python's boxing of millions of Decimals.
        t = time.perf_counter()
        rows = c.sql(sql).to_arrow_table()
        first = time.perf_counter() - t
        warm = []
        for _ in range(3):
            t = time.perf_counter()
            c.sql(sql).to_arrow_table()
            warm.append(time.perf_counter() - t)
        med = statistics.median(warm)
        return {
            "first_s": round(first, 3),
            "warm_median_s": round(med, 3),
            "rows": rows.num_rows,
            "under_goal": med < GOAL_S,
        }

    for q in QUERIES:
        out[q.name] = measure(con, f"SELECT * FROM {q.name}")
        if file_con is not None:
            out[q.name]["duckdb_file_warm_median_s"] = measure(file_con, f"SELECT * FROM {q.name}")[
                "warm_median_s"
            ]
        print(f"  {q.name:<24} {out[q.name]}")
    if not wh.storage.is_s3:
        files = [
            Storage.to_fs_path(f.file_path)
            for f in wh.manifests.live_files(wh.tables.load("usage_facts"))
        ]
        listing = ", ".join(f"'{p}'" for p in files)
        out["baseline_bare_read_parquet_cost_by_team"] = measure(
            con,
            "SELECT coalesce(team, '(untagged)') AS team, count(*), sum(input_tokens), "
            f"sum(output_tokens), sum(cost_usd) FROM read_parquet([{listing}]) "
            "GROUP BY ALL ORDER BY 5 DESC NULLS LAST",
        )
    out["count_usage_facts"] = con.execute("SELECT count(*) FROM usage_facts").fetchone()[0]  # type: ignore[index]
    con.close()
    if file_con is not None:
        file_con.close()
    return out


def _events(start: int, n: int) -> list[dict[str, Any]]:
    ts = START.isoformat()
    return [
        {
            "event_id": f"land-{i}",
            "ts": ts,
            "provider": "openai",
            "model": "gpt-5-mini",
            "input_tokens": 1200 + i % 500,
            "output_tokens": 100 + i % 50,
            "cache_read_tokens": 300,
            "team": f"team-{i % 8}",
            "feature": f"feature-{i % 40}",
            "user_id": f"user-{i % 50_000}",
            "session_id": f"s-{i // 20}",
        }
        for i in range(start, start + n)
    ]


def land(workdir: Path, n: int, batch: int = 20_000) -> dict[str, Any]:
    cost = Cost(
        Decimal("0.0036"),
        Decimal("0.00009"),
        Decimal(0),
        Decimal("0.0015"),
        Decimal("0.00519"),
        "bench",
    )
    now = datetime.now(UTC)
    validate = UsageEvent.model_validate
    state = bytes(64 * 1024)  # a detection engine's snapshot, roughly
    res: dict[str, Any] = {"events": n, "batch": batch, "state_bytes": len(state)}
    tables = [
        facts_table([Fact(validate(e), cost, now) for e in _events(start, min(batch, n - start))])
        for start in range(0, n, batch)
    ]
    baseline_dir = Path(tempfile.mkdtemp(prefix="bench-bare-"))
    t = time.perf_counter()
    for i, table in enumerate(tables):
        pq.write_table(table, baseline_dir / f"{i}.parquet", compression="zstd")
    t_bare = time.perf_counter() - t
    shutil.rmtree(baseline_dir)

    wh = Warehouse(workdir, writer="bench")
    t_land = t_replay = 0.0
    landed = skipped = 0
    for replay in (False, True):
        done = 0
        for table in tables:
            done += len(table)
            t = time.perf_counter()
            r = wh.commit(facts=table, positions={"line": done}, state=state)
            dt = time.perf_counter() - t
            if replay:
                t_replay += dt
                skipped += r.duplicates
            else:
                t_land += dt
                landed += r.facts
    snapshots = len(wh.tables.load("usage_facts").metadata.snapshots)
    wh.close()
    res.update(
        {
            "bare_parquet_write_events_per_s": round(n / t_bare),
            "warehouse_commit_events_per_s": round(n / t_land),
            "replay_events_per_s": round(n / t_replay),
            "commit_vs_bare_write": round(t_land / t_bare, 2),
            "commit_ms_per_batch": round(t_land / len(tables) * 1000, 1),
            "landed": landed,
            "replay_skipped": skipped,
            "exactly_once": landed == n and skipped == n,
            "snapshots": snapshots,
        }
    )
    return res


def s3_queries(base: Path, n: int) -> dict[str, Any]:
    """The same facts in Iceberg tables on a local s3proxy; the queries timed again."""
    import os

    from spendstream.config import WarehouseConfig, WarehouseS3Config
    from spendstream.local.s3 import LocalS3

    s3 = LocalS3(base / "s3proxy", stop_with_parent=True)
    s3.start()
    try:
        s3.create_bucket("bench")
        os.environ["AWS_ACCESS_KEY_ID"] = s3.access_key_id
        os.environ["AWS_SECRET_ACCESS_KEY"] = s3.secret_access_key
        config = WarehouseConfig(
            location="s3://bench/wh",
            s3=WarehouseS3Config(endpoint_url=s3.endpoint, checksums="when_required"),
        )
        wh = Warehouse(base / "s3-work", writer="bench", config=config)
        print(f"generating {n:,} facts (S3) ...")
        out: dict[str, Any] = {"generate_s": round(generate(wh, n), 1)}
        out["queries"] = time_queries(wh, local_file=False)
        wh.close()
        return out
    finally:
        s3.stop()


def ingest(base: Path, n: int) -> dict[str, Any]:
    """Peak RSS and rate of ``spendstream ingest`` over n synthetic events, in a child process."""
    events = base / "ingest-events.jsonl"
    write_synthetic(events, n, seed=11)
    wall, rss_mb, _ = run_spendstream(["ingest", str(events), "--workdir", str(base / "ingest")])
    return {
        "events": n,
        "wall_s": round(wall, 1),
        "events_per_s": round(n / wall),
        "peak_rss_mb": round(rss_mb),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--facts", type=int, default=10_000_000)
    ap.add_argument("--landing", type=int, default=1_000_000)
    ap.add_argument(
        "--ingest", type=int, default=0, help="also time `spendstream ingest` on N events"
    )
    ap.add_argument("--keep", metavar="DIR", default=None, help="generate into DIR and keep it")
    ap.add_argument("--no-s3", action="store_true", help="skip the local S3 server run")
    args = ap.parse_args()
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-wh-"))
    report: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
    }
    try:
        import duckdb

        report["duckdb_version"] = duckdb.__version__
        if args.landing:
            # First, so that peak RSS measures landing alone.
            print(f"landing {args.landing:,} events ...")
            report["landing"] = land(base / "landing", args.landing)
            report["landing"]["peak_rss_mb"] = round(
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            )
            print(f"  {report['landing']}")
        if args.ingest:
            print(f"spendstream ingest of {args.ingest:,} events ...")
            report["ingest"] = ingest(base, args.ingest)
            print(f"  {report['ingest']}")
        print(f"generating {args.facts:,} facts (local) ...")
        local = Warehouse(base / "queries", writer="bench")
        report["generate_local_s"] = round(generate(local, args.facts), 1)
        report["facts"] = args.facts
        report["queries"] = time_queries(local, local_file=True)
        local.close()
        if not args.no_s3:
            report["s3"] = s3_queries(base, args.facts)
        report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)

    qs = report["queries"]
    named = {k: v for k, v in qs.items() if isinstance(v, dict) and not k.startswith("baseline")}
    s3_note = ""
    if "s3" in report:
        s3q = report["s3"]["queries"]
        ratios = {k: s3q[k]["warm_median_s"] / max(named[k]["warm_median_s"], 1e-3) for k in named}
        worst = max(ratios, key=lambda k: ratios[k])
        within = sum(1 for r in ratios.values() if r <= 2)
        report["s3_vs_local"] = {k: round(r, 2) for k, r in ratios.items()}
        s3_note = (
            f"; on local S3 (s3proxy) {within}/{len(named)} within 2x of local, worst {worst} "
            f"{s3q[worst]['warm_median_s']} s ({ratios[worst]:.1f}x)"
        )
    slowest = max(named, key=lambda k: named[k]["warm_median_s"])
    under = sum(1 for v in named.values() if v["under_goal"])
    m = report["machine"]
    cpu = " ".join(str(m["cpu_model"]).split()[:2])
    line = (
        f"- {NAME} ({report['when']}, {cpu}, {m['cores']} cores, duckdb {report['duckdb_version']}, "
        f"{args.facts:,} facts, Iceberg): {under}/{len(named)} named queries under {GOAL_S:g} s warm; "
        f"cost_by_team {qs['cost_by_team']['warm_median_s']} s vs bare read_parquet "
        f"{qs['baseline_bare_read_parquet_cost_by_team']['warm_median_s']} s; slowest {slowest} "
        f"{named[slowest]['warm_median_s']} s{s3_note}"
    )
    if "landing" in report:
        ld = report["landing"]
        line += (
            f"; landing {ld['warehouse_commit_events_per_s']}/s vs bare Parquet write "
            f"{ld['bare_parquet_write_events_per_s']}/s, replay {ld['replay_events_per_s']}/s, "
            f"({ld['batch']:,}-row commits with positions + state, {ld['commit_ms_per_batch']} ms each), "
            f"exactly once {ld['exactly_once']}, landing peak RSS {ld['peak_rss_mb']} MB"
        )
    if "ingest" in report:
        ig = report["ingest"]
        line += (
            f"; spendstream ingest of {ig['events']:,} events {ig['events_per_s']}/s, "
            f"peak RSS {ig['peak_rss_mb']} MB"
        )
    line += f" -> results/{NAME}.json"
    record(NAME, report, line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
