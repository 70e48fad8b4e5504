"""``spendstream warehouse compact|check|load-revenue``: warehouse maintenance."""

from __future__ import annotations

import argparse
import sys

from spendstream.commands._options import add_format, add_workdir

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    p = sub.add_parser(
        "compact", help="merge each partition's small files (safe while readers query)"
    )
    p.add_argument(
        "--min-files",
        type=int,
        default=2,
        metavar="N",
        help="compact partitions with at least N files",
    )
    p.add_argument(
        "--grace-s",
        type=float,
        default=None,
        metavar="S",
        help="delete replaced files only after S seconds (default 300), for queries still reading them",
    )
    add_workdir(p)
    p = sub.add_parser(
        "check", help="run the great-expectations data quality suite over landed facts"
    )
    p.add_argument(
        "--since", default=None, metavar="WHEN", help="only facts at or after this UTC time/date"
    )
    add_workdir(p)
    add_format(p)
    p = sub.add_parser(
        "load-revenue", help="load revenue per month (total, plan or user) from a CSV"
    )
    p.add_argument(
        "file", metavar="FILE.csv", help="columns: month, revenue_usd, and plan or user_id"
    )
    add_workdir(p)


def _warehouse(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from spendstream.errors import ConfigError
    from spendstream.warehouse import Warehouse
    from spendstream.warehouse.layout import Layout
    from spendstream.workdir import resolve_workdir

    workdir = resolve_workdir(args.workdir)
    if not Layout.for_workdir(workdir).root.exists():
        raise ConfigError(f"no warehouse under --workdir {workdir}; run ingest or demo first")
    return Warehouse(workdir, writer="maintenance")


def run(args: argparse.Namespace) -> int:
    from spendstream.errors import ConfigError

    if args.action == "compact":
        if args.min_files < 2:
            raise ConfigError("--min-files must be at least 2")
        with _warehouse(args) as wh:
            s = wh.compact(args.min_files, args.grace_s)
        print(
            f"compacted {s.partitions} partition(s): {s.files_in} files -> {s.files_out} "
            f"({s.rows:,} rows); {s.deleted} replaced file(s) deleted"
        )
        for note in s.skipped:
            print(f"  skipped {note}")
        return 0
    if args.action == "load-revenue":
        from pathlib import Path

        from spendstream.warehouse.revenue import load_revenue

        with _warehouse(args) as wh:
            n = load_revenue(wh.layout, Path(args.file))
            wh.ensure_views()
        print(f"loaded {n} revenue row(s); see `spendstream query unit_economics`")
        return 0
    # check
    from datetime import UTC, datetime

    from spendstream.warehouse.output import render
    from spendstream.warehouse.quality import run_suite

    since = None
    if args.since:
        try:
            since = datetime.fromisoformat(args.since)
        except ValueError:
            raise ConfigError(f"--since {args.since!r} is not an ISO date or time") from None
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
    with _warehouse(args) as wh:
        wh.ensure_views()
        result = run_suite(wh.layout.db_path, since)
        quarantined = wh.catalog.quarantined()
    render(
        ["expectation", "passed", "detail"],
        [(name, ok, detail) for name, ok, detail in result.results],
        args.format,
        sys.stdout,
    )
    for commit_id, created_at, _report in quarantined:
        print(
            f"quarantined batch: commit {commit_id} at {created_at} "
            f"(quarantine/{commit_id:012d}/report.json)",
            file=sys.stderr,
        )
    return 0 if result.success else 1
