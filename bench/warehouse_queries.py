"""Warehouse benchmark: named queries over 10M facts, and exactly-once landing throughput.

    .venv/bin/python -m bench.warehouse_queries [--facts 10000000] [--landing 1000000]

Queries: 10M facts (30 days, 8 teams, 40 features, 12 models, 200k users, 30% of calls
in agent sessions with sub-agents) are generated straight into the warehouse layout
with pyarrow (one c-file per 250k rows, as after compaction); every named query then
runs through spendstream.duckdb's views (first run and the median of 3 warm runs).
Baseline in the same run: the same aggregation as ``cost_by_team`` on a bare
``read_parquet`` glob, which shows what the views' file-visibility filter costs.

Landing: ``--landing`` events validated as UsageEvents and committed in batches of
1000 through ``Warehouse.unseen`` + ``Warehouse.commit`` (staging, fsync, SQLite catalog,
rename), then the whole stream replayed (every id must be skipped). Baseline: the same
batches written with ``pq.write_table`` alone. Peak RSS is recorded (goal: 1M within 1.5 GB).

Ingest (``--ingest N``, default 0): ``spendstream ingest`` on N synthetic events (the demo
workload) in a child process; its peak RSS is the whole pipeline's (parse, price, detect,
land), read from ``getrusage(RUSAGE_CHILDREN)``.

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
from spendstream.warehouse.layout import Layout
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
    arrays = [cols[f.name] if f.name in cols else pa.nulls(n, f.type) for f in FACTS]
    return pa.Table.from_arrays(arrays, schema=FACTS)


def generate(workdir: Path, n: int, seed: int = 7) -> float:
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    wh = Warehouse(workdir)
    wh.ensure_views()
    layout = wh.layout
    wh.close()
    per_day = n // DAYS
    made, file_no = 0, 0
    for d in range(DAYS):
        day = START + timedelta(days=d)
        rows_today = per_day if d < DAYS - 1 else n - made
        done = 0
        while done < rows_today:
            k = min(ROWS_PER_FILE, rows_today - done)
            table = _chunk(rng, made, k, day)
            file_no += 1
            path = layout.date_dir("usage_facts", day.date()) / Layout.commit_file_name(file_no, 0)
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, path, compression="zstd")
            done += k
            made += k
    return time.perf_counter() - t0


def time_queries(workdir: Path) -> dict[str, Any]:
    import duckdb

    layout = Layout.for_workdir(workdir)
    con = duckdb.connect(str(layout.db_path), read_only=True)
    con.execute("SET TimeZone = 'UTC'")
    out: dict[str, Any] = {}

    def measure(sql: str) -> dict[str, Any]:
        # Arrow results: the time is DuckDB's, not Python's boxing of millions of Decimals.
        t = time.perf_counter()
        rows = con.sql(sql).to_arrow_table()
        first = time.perf_counter() - t
        warm = []
        for _ in range(3):
            t = time.perf_counter()
            con.sql(sql).to_arrow_table()
            warm.append(time.perf_counter() - t)
        med = statistics.median(warm)
        return {
            "first_s": round(first, 3),
            "warm_median_s": round(med, 3),
            "rows": rows.num_rows,
            "under_goal": med < GOAL_S,
        }

    for q in QUERIES:
        out[q.name] = measure(f"SELECT * FROM {q.name}")
        print(f"  {q.name:<24} {out[q.name]}")
    glob = layout.glob("usage_facts").replace("'", "''")
    out["baseline_bare_read_parquet_cost_by_team"] = measure(
        f"SELECT coalesce(team, '(untagged)') AS team, count(*), sum(input_tokens), sum(output_tokens), "
        f"sum(cost_usd) FROM read_parquet('{glob}', hive_partitioning = true, union_by_name = true) "
        "GROUP BY ALL ORDER BY 5 DESC NULLS LAST"
    )
    out["count_usage_facts"] = con.execute("SELECT count(*) FROM usage_facts").fetchone()[0]  # type: ignore[index]
    con.close()
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


def land(workdir: Path, n: int, batch: int = 1000) -> dict[str, Any]:
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
    res: dict[str, Any] = {"events": n, "batch": batch}

    baseline_dir = Path(tempfile.mkdtemp(prefix="bench-bare-"))
    t_bare = 0.0
    for start in range(0, n, batch):
        facts = [Fact(validate(e), cost, now) for e in _events(start, min(batch, n - start))]
        t = time.perf_counter()
        pq.write_table(facts_table(facts), baseline_dir / f"{start}.parquet", compression="zstd")
        t_bare += time.perf_counter() - t
    shutil.rmtree(baseline_dir)

    wh = Warehouse(workdir, writer="bench")
    t_land = t_replay = 0.0
    landed = skipped = 0
    for replay in (False, True):
        for start in range(0, n, batch):
            facts_in = [validate(e) for e in _events(start, min(batch, n - start))]
            t = time.perf_counter()
            new = wh.unseen(facts_in)
            r = wh.commit(
                facts=[Fact(e, cost, now) for e in new],
                state={"at": start},
                source_positions={"line": start},
            )
            dt = time.perf_counter() - t
            if replay:
                t_replay += dt
                skipped += len(facts_in) - len(new)
            else:
                t_land += dt
                landed += r.facts
    catalog_mb = wh.layout.catalog_path.stat().st_size / 1e6
    wh.close()
    res.update(
        {
            "bare_parquet_write_events_per_s": round(n / t_bare),
            "warehouse_commit_events_per_s": round(n / t_land),
            "replay_events_per_s": round(n / t_replay),
            "commit_vs_bare_write": round(t_land / t_bare, 2),
            "landed": landed,
            "replay_skipped": skipped,
            "exactly_once": landed == n and skipped == n,
            "catalog_mb": round(catalog_mb, 1),
        }
    )
    return res


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
        qdir = base / "queries"
        if not (Layout.for_workdir(qdir).root / "usage_facts").exists():
            print(f"generating {args.facts:,} facts ...")
            report["generate_s"] = round(generate(qdir, args.facts), 1)
        report["facts"] = args.facts
        report["queries"] = time_queries(qdir)
        report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)

    qs = report["queries"]
    named = {k: v for k, v in qs.items() if isinstance(v, dict) and not k.startswith("baseline")}
    slowest = max(named, key=lambda k: named[k]["warm_median_s"])
    under = sum(1 for v in named.values() if v["under_goal"])
    m = report["machine"]
    cpu = " ".join(str(m["cpu_model"]).split()[:2])
    line = (
        f"- {NAME} ({report['when']}, {cpu}, {m['cores']} cores, duckdb {report['duckdb_version']}, "
        f"{args.facts:,} facts): {under}/{len(named)} named queries under {GOAL_S:g} s warm; "
        f"cost_by_team {qs['cost_by_team']['warm_median_s']} s vs bare read_parquet "
        f"{qs['baseline_bare_read_parquet_cost_by_team']['warm_median_s']} s; slowest {slowest} "
        f"{named[slowest]['warm_median_s']} s"
    )
    if "landing" in report:
        ld = report["landing"]
        line += (
            f"; landing {ld['warehouse_commit_events_per_s']}/s vs bare Parquet write "
            f"{ld['bare_parquet_write_events_per_s']}/s, replay {ld['replay_events_per_s']}/s, "
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
