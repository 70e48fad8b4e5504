"""``spendstream warehouse compact|check|writers|load-revenue|migrate``: warehouse maintenance."""

from __future__ import annotations

import argparse
import sys

from spendstream.commands._options import add_config, add_format, add_workdir, config_from_args

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    p = sub.add_parser(
        "compact",
        help="rewrite small files per day, expire old snapshots, delete orphan files "
        "(safe while writers commit)",
    )
    p.add_argument(
        "--min-files",
        type=int,
        default=2,
        metavar="N",
        help="compact partitions with at least N files (default: 2)",
    )
    p.add_argument(
        "--retention-s",
        type=float,
        default=None,
        metavar="S",
        help="expire snapshots older than S seconds (default: [warehouse] snapshot_retention_s)",
    )
    p.add_argument(
        "--orphan-grace-s",
        type=float,
        default=None,
        metavar="S",
        help="delete unreferenced files older than S seconds (default: [warehouse] orphan_grace_s)",
    )
    add_workdir(p)
    add_config(p)
    p = sub.add_parser(
        "check", help="run the great-expectations data quality suite over landed facts"
    )
    p.add_argument(
        "--since", default=None, metavar="WHEN", help="only facts at or after this UTC time/date"
    )
    add_workdir(p)
    add_config(p)
    add_format(p)
    p = sub.add_parser(
        "writers",
        help="each writer (usage/<p>, scopes/<q>, embedded, ...) with its commits and the "
        "last source position it landed",
    )
    add_workdir(p)
    add_config(p)
    add_format(p)
    p = sub.add_parser(
        "load-revenue", help="load revenue per month (total, plan or user) from a CSV"
    )
    p.add_argument(
        "file", metavar="FILE.csv", help="columns: month, revenue_usd, and plan or user_id"
    )
    add_workdir(p)
    add_config(p)
    p = sub.add_parser(
        "migrate",
        help="convert a workdir written before the Iceberg tables (catalog.sqlite layout)",
    )
    add_workdir(p)
    add_config(p)


def _warehouse(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from spendstream.warehouse import Warehouse
    from spendstream.warehouse.reading import open_reader
    from spendstream.workdir import resolve_workdir

    workdir = resolve_workdir(args.workdir)
    config = config_from_args(args).warehouse
    open_reader(workdir, config).close()  # says what to do when there is no warehouse yet
    return Warehouse(workdir, writer="maintenance", config=config)


def run(args: argparse.Namespace) -> int:
    from spendstream.errors import ConfigError

    if args.action == "migrate":
        from spendstream.warehouse.migration import migrate
        from spendstream.workdir import resolve_workdir

        report = migrate(resolve_workdir(args.workdir), config_from_args(args).warehouse)
        print(report.describe())
        return 0
    if args.action == "compact":
        if args.min_files < 2:
            raise ConfigError("--min-files must be at least 2")
        from spendstream.config import MAX_DURATION_S

        for flag, value in (
            ("--retention-s", args.retention_s),
            ("--orphan-grace-s", args.orphan_grace_s),
        ):
            # The bounds of their [warehouse] keys: -1 (or nan) was taken, and -1 expired
            # every snapshot but the newest, or deleted a live writer's uncommitted files.
            if value is not None and not 0 <= value <= MAX_DURATION_S:
                raise ConfigError(
                    f"{flag} must be between 0 and {MAX_DURATION_S:,} seconds (got {value:g})"
                )
        with _warehouse(args) as wh:
            s = wh.compact(
                min_files=args.min_files,
                retention_s=args.retention_s,
                orphan_grace_s=args.orphan_grace_s,
            )
        from spendstream.warehouse.charts import plural

        print(
            f"compacted {plural(s.partitions, 'partition')}: {s.files_in} files -> {s.files_out} "
            f"({s.rows:,} rows); {plural(s.snapshots_expired, 'snapshot')} expired, "
            f"{plural(s.orphans_deleted, 'orphan file')} deleted, {s.retries} commit retries"
        )
        for note in s.skipped:
            print(f"  skipped {note}")
        return 0
    if args.action == "load-revenue":
        from pathlib import Path

        from spendstream.warehouse.charts import plural
        from spendstream.warehouse.revenue import load_revenue

        with _warehouse(args) as wh:
            n = load_revenue(wh, Path(args.file))
        print(f"loaded {plural(n, 'revenue row')}; see `spendstream query unit_economics`")
        return 0
    if args.action == "writers":
        from spendstream.warehouse.output import render

        with _warehouse(args) as wh:
            found = wh.writers()
        rows = [
            (name, resume.seq, source, position)
            for name, resume in sorted(found.items())
            for source, position in sorted((resume.positions or {"": -1}).items())
        ]
        render(["writer", "commits", "source", "position"], rows, args.format, sys.stdout)
        return 0
    # check
    from datetime import UTC, datetime

    from spendstream.warehouse.output import render
    from spendstream.warehouse.quality import run_suite
    from spendstream.warehouse.quarantine import quarantined
    from spendstream.warehouse.views import connect_snapshot

    since = None
    if args.since:
        try:
            since = datetime.fromisoformat(args.since)
        except ValueError:
            raise ConfigError(f"--since {args.since!r} is not an ISO date or time") from None
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
    with _warehouse(args) as wh:
        con = connect_snapshot(wh)
        try:
            result = run_suite(con, since)
        finally:
            con.close()
        batches = quarantined(wh)
    render(
        ["expectation", "passed", "detail"],
        [(name, ok, detail) for name, ok, detail in result.results],
        args.format,
        sys.stdout,
    )
    for b in batches:
        print(
            f"quarantined batch: {b.batch_id} from writer {b.writer} "
            f"({b.failing} failing; {b.path}/report.json)",
            file=sys.stderr,
        )
    return 0 if result.success else 1
