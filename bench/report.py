"""Report and what-if benchmark: the HTML report over 10M facts, what-if repricing throughput.

    .venv/bin/python -m bench.report [--facts 10000000] [--whatif-days 1] [--keep DIR]

Facts are generated and committed to the Iceberg tables by bench.warehouse_queries'
generator (30 days, 8 teams, 40 features, 12 models, 200k users, agent sessions).

Report: ``write_report`` over the whole 30 days (daily buckets) and over the last 3 days
(hourly buckets): first run and the median of 2 warm runs, and the page's size.
Baseline in the same run: ``cost_by_team`` over the same period through the same views
(one grouped scan: the least any report must do), so the ratio says how many scans'
worth of work the whole page costs.

What-if: ``run_whatif`` with two levers (a route and a batch share) over the first
``--whatif-days`` days. Baseline in the same run: pricing the same calls once with
``Pricer.price_batch`` (what-if prices each call 1 + levers + 1 times, plus reading).

Results: bench/results/report.json and a line in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import functools
import resource
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

from bench._common import record
from bench.warehouse_queries import DAYS, START, generate, machine
from spendstream.stream.pricing import Pricer
from spendstream.warehouse import Warehouse
from spendstream.warehouse.reading import connect
from spendstream.warehouse.report import write_report
from spendstream.warehouse.whatif import BatchShare, Call, Route, Selector, run_whatif

NAME = "report"


def _timed(fn: Callable[[], Any], warm: int = 2) -> dict[str, Any]:
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    runs = []
    for _ in range(warm):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return {"first_s": round(first, 3), "warm_median_s": round(statistics.median(runs), 3)}


def _baseline(workdir: Path, since: datetime, until: datetime) -> dict[str, Any]:
    def run() -> None:
        con = connect(workdir)
        try:
            con.execute(
                "SELECT team, sum(cost_usd) FROM usage_facts WHERE ts >= $s AND ts < $u "
                "GROUP BY ALL",
                {"s": since, "u": until},
            ).fetchall()
        finally:
            con.close()

    return _timed(run)


def bench_report(workdir: Path, out_dir: Path) -> dict[str, Any]:
    end = START + timedelta(days=DAYS)
    res: dict[str, Any] = {}
    for label, since in (("30_days_daily", START), ("3_days_hourly", end - timedelta(days=3))):
        page = out_dir / f"{label}.html"
        r = _timed(functools.partial(write_report, workdir, page, since, end))
        base = _baseline(workdir, since, end)
        r["page_kb"] = round(page.stat().st_size / 1024, 1)
        r["baseline_cost_by_team_warm_s"] = base["warm_median_s"]
        r["ratio_to_baseline"] = round(r["warm_median_s"] / max(base["warm_median_s"], 1e-9), 1)
        res[label] = r
        print(f"  report {label}: {r}")
    return res


def bench_whatif(workdir: Path, days: int) -> dict[str, Any]:
    since, until = START, START + timedelta(days=days)
    pricer = Pricer.from_config()
    levers = [
        Route(Selector("model", provider="openai", model="gpt-5"), "openai", "gpt-5-mini"),
        BatchShare(Selector(), Decimal("0.3")),
    ]
    t0 = time.perf_counter()
    result = run_whatif(workdir, since, until, pricer, levers)
    whatif_s = time.perf_counter() - t0
    calls = result.total.calls
    con = connect(workdir)
    try:
        rows = con.execute(
            "SELECT ts, provider, model, batch, input_tokens, cache_read_tokens, "
            "cache_write_tokens, output_tokens, team, feature FROM usage_facts "
            "WHERE ts >= $s AND ts < $u",
            {"s": since, "u": until},
        ).fetchall()
    finally:
        con.close()
    objs = [Call(*r) for r in rows]
    fresh = Pricer.from_config()
    t0 = time.perf_counter()
    fresh.price_batch(cast(Any, objs))
    price_s = time.perf_counter() - t0
    res = {
        "calls": calls,
        "levers": len(levers),
        "whatif_s": round(whatif_s, 2),
        "whatif_calls_per_s": round(calls / whatif_s),
        "baseline_price_once_calls_per_s": round(len(objs) / price_s),
        "ratio_to_baseline": round((calls / whatif_s) / (len(objs) / price_s), 3),
        "savings_usd": str(result.total.savings_usd.quantize(Decimal("0.01"))),
    }
    print(f"  whatif: {res}")
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--facts", type=int, default=10_000_000)
    ap.add_argument("--whatif-days", type=int, default=1)
    ap.add_argument("--keep", metavar="DIR", default=None, help="generate into DIR and keep it")
    args = ap.parse_args()
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-report-"))
    report: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "facts": args.facts,
    }
    try:
        work = base / "work"
        if not (work / "warehouse" / "catalog.db").exists():
            print(f"generating {args.facts:,} facts ...")
            with Warehouse(work, writer="bench") as wh:
                report["generate_s"] = round(generate(wh, args.facts), 1)
        report["report"] = bench_report(work, base)
        report["whatif"] = bench_whatif(work, args.whatif_days)
        report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    m = report["machine"]
    cpu = " ".join(str(m["cpu_model"]).split()[:2])
    r30, r3, w = (
        report["report"]["30_days_daily"],
        report["report"]["3_days_hourly"],
        report["whatif"],
    )
    line = (
        f"- {NAME} ({report['when']}, {cpu}, {m['cores']} cores, load avg "
        f"{m['load_average'][0]:.1f}, {args.facts:,} facts): "
        f"write_report 30 days {r30['warm_median_s']} s warm ({r30['first_s']} s first, "
        f"{r30['page_kb']} kB page) = {r30['ratio_to_baseline']}x one cost_by_team scan; "
        f"3 days hourly {r3['warm_median_s']} s ({r3['page_kb']} kB); whatif "
        f"{w['whatif_calls_per_s']} calls/s with {w['levers']} levers vs pricing once "
        f"{w['baseline_price_once_calls_per_s']}/s ({w['ratio_to_baseline']}x); peak RSS "
        f"{report['peak_rss_mb']} MB -> results/{NAME}.json"
    )
    record(NAME, report, line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
