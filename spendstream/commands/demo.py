"""``spendstream demo``: the whole pipeline, embedded, on a synthetic workload with a story in it."""

from __future__ import annotations

import argparse
import sys
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from spendstream.commands._options import add_config, add_workdir

if TYPE_CHECKING:
    from spendstream.config import Config

__all__ = ["configure", "run", "tell_story"]


def configure(parser: argparse.ArgumentParser) -> None:
    add_workdir(parser)
    parser.add_argument(
        "--events", type=int, default=50_000, metavar="N", help="events to generate (default 50000)"
    )
    parser.add_argument("--seed", type=int, default=7, metavar="N", help="random seed (default 7)")
    add_config(parser)


def _money(v: Any) -> str:
    if v is None:
        return "$0.00"
    return f"${Decimal(v).quantize(Decimal('0.01')):,}"


def run(args: argparse.Namespace) -> int:
    from spendstream.config import config_from_dict, load_config
    from spendstream.errors import ConfigError
    from spendstream.synthetic import DEMO_CONFIG_TOML
    from spendstream.workdir import WorkdirLock, resolve_workdir

    if args.events < 1000:
        raise ConfigError(
            f"--events must be at least 1000 for the story to show (got {args.events})"
        )
    import tomllib

    config = (
        load_config(args.config)
        if args.config
        else config_from_dict(tomllib.loads(DEMO_CONFIG_TOML), "demo")
    )

    workdir = resolve_workdir(args.workdir)
    with WorkdirLock(workdir, "demo"):
        return _demo(args, config, workdir)


def _demo(args: argparse.Namespace, config: Config, workdir: Path) -> int:
    from spendstream.commands._pipeline_output import print_summary, progress_printer
    from spendstream.runtime.embedded import EmbeddedRunner, read_lines
    from spendstream.synthetic import write_jsonl

    events_file = workdir / "demo" / f"events-seed{args.seed}-{args.events}.jsonl"
    events_file.parent.mkdir(parents=True, exist_ok=True)
    out = sys.stdout
    out.write(
        f"spendstream demo: {args.events:,} synthetic LLM calls over 3 days (seed {args.seed})\n"
    )
    write_jsonl(events_file, args.events, args.seed)
    out.write(f"  events written to {events_file}\n\n")
    runner = EmbeddedRunner(workdir, config)
    summary = runner.run(read_lines([str(events_file)]), progress=progress_printer(sys.stderr))
    print_summary(summary, out, workdir if args.workdir else None)
    out.write("\n")
    tell_story(workdir, out, config.anomaly.factor)
    from spendstream.warehouse.report import write_report

    report = write_report(workdir, workdir / "report.html")
    out.write("\nQuery the warehouse yourself:\n")
    wd = f" --workdir {workdir}" if args.workdir else ""
    out.write(
        f'  spendstream sql{wd} "SELECT team, sum(cost_usd) AS usd FROM usage_facts GROUP BY ALL ORDER BY usd DESC"\n'
    )
    out.write(f"  spendstream query{wd} --list\n")
    out.write(f"  duckdb -readonly {workdir / 'warehouse' / 'spendstream.duckdb'}\n")
    out.write(f"\nReport: {report}  (open it in a browser; it works offline)\n")
    return 0


def tell_story(workdir: Path, out: TextIO, factor: Decimal) -> None:
    """Say what the pipeline caught and where the money went, from the warehouse views."""
    import duckdb

    from spendstream.synthetic import LOOP_SESSION

    db = workdir / "warehouse" / "spendstream.duckdb"
    con = duckdb.connect(str(db), read_only=True)
    try:
        q = con.execute
        out.write("What it caught:\n")
        rows = q("SELECT kind, count(*) FROM alerts GROUP BY kind ORDER BY kind").fetchall()
        for kind, n in rows:
            out.write(f"  {kind:<18} {n:>5} alert(s)\n")
        loop = q(
            "SELECT min(ts) FILTER (WHERE kind IN ('runaway_session', 'runaway_rate')), "
            "string_agg(DISTINCT kind, ', ') FROM alerts WHERE scope IN (?, ?)",
            [f"session:{LOOP_SESSION}", "api_key:key-platform-agent-ci"],
        ).fetchone()
        spend = q(
            "SELECT sum(cost_usd), count(*), min(ts), max(ts) FROM usage_facts WHERE session_id = ?",
            [LOOP_SESSION],
        ).fetchone()
        if loop and loop[0] is not None and spend and spend[0] is not None:
            after = q(
                "SELECT sum(cost_usd), count(*) FROM usage_facts WHERE session_id = ? AND ts > ?",
                [LOOP_SESSION, loop[0]],
            ).fetchone()
            out.write(
                f"\n  Runaway agent loop: session {LOOP_SESSION} made {spend[1]:,} calls "
                f"({spend[2]:%H:%M}-{spend[3]:%H:%M} UTC) costing {_money(spend[0])}.\n"
                f"  It was flagged at {loop[0]:%H:%M:%S} ({loop[1]}); its breaker opened then. "
                f"With meter.guard() the {after[1]:,} later calls ({_money(after[0])}) would have been refused.\n"
                if after
                else ""
            )
        for scope, ts, value, threshold in q(
            "SELECT scope, ts, value, threshold FROM alerts WHERE kind = 'hourly_anomaly' ORDER BY ts LIMIT 5"
        ).fetchall():
            out.write(
                f"  Hourly anomaly: {scope} spent {_money(value)} in the hour of {ts:%Y-%m-%d %H}:00 UTC "
                f"(> {_money(threshold)}, {float(factor):g}x its previous-24h hourly mean)\n"
            )
        for (message,) in q(
            "SELECT message FROM alerts WHERE kind IN ('budget_threshold', 'budget_exceeded') "
            "ORDER BY ts LIMIT 6"
        ).fetchall():
            out.write(f"  Budget: {message}\n")
        for (message,) in q(
            "SELECT message FROM alerts WHERE kind = 'cache_hit_drop' ORDER BY ts LIMIT 3"
        ).fetchall():
            out.write(f"  Cache: {message}\n")
        for (message,) in q(
            "SELECT message FROM alerts WHERE kind = 'unpriced_model' LIMIT 3"
        ).fetchall():
            out.write(f"  Unpriced: {message}\n")
        opened = q(
            "SELECT scope, reason FROM breaker_events WHERE state = 'open' ORDER BY ts LIMIT 8"
        ).fetchall()
        if opened:
            out.write("\n  Circuit breakers opened:\n")
            for scope, reason in opened:
                out.write(f"    {scope}: {reason}\n")

        out.write("\nWhere the money went:\n")
        total = q("SELECT sum(cost_usd), count(*) FROM usage_facts").fetchone()
        out.write(
            f"  total {_money(total[0] if total else 0)} over {total[1] if total else 0:,} calls\n"
        )
        for team, usd, share in q(
            "SELECT coalesce(team, '(untagged)'), sum(cost_usd) AS usd, "
            "100 * sum(cost_usd) / (SELECT sum(cost_usd) FROM usage_facts) "
            "FROM usage_facts GROUP BY ALL ORDER BY usd DESC NULLS LAST"
        ).fetchall():
            out.write(f"  team {team:<10} {_money(usd):>12}  {float(share or 0):5.1f}%\n")
        out.write("  top features:\n")
        for feature, model, usd in q(
            "SELECT feature, model, sum(cost_usd) AS usd FROM usage_facts "
            "GROUP BY ALL ORDER BY usd DESC NULLS LAST LIMIT 5"
        ).fetchall():
            out.write(f"    {feature:<20} {model:<26} {_money(usd):>12}\n")
    finally:
        con.close()
