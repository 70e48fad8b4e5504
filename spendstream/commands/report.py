"""``spendstream report``: one self-contained HTML cost report, written from the warehouse.

    spendstream report [--workdir DIR] [--config FILE] [--since T] [--until T] [--team T] [--feature F]
                       [--scope SCOPE] [--out report.html]

The page opens offline (no script, font or link to fetch); see docs/report.md.
``spendstream serve`` shows the same page live.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from spendstream.commands._options import add_config, add_workdir, config_from_args
from spendstream.errors import ConfigError

if TYPE_CHECKING:
    from spendstream.warehouse.report import ReportFilter

__all__ = ["add_report_filters", "configure", "filters_from_args", "run"]


def add_report_filters(parser: argparse.ArgumentParser) -> None:
    """The report's filters: a period, and optionally one team, feature or scope."""
    parser.add_argument(
        "--since",
        default=None,
        metavar="T",
        help="from this UTC date or time, ISO 8601 (default: the first day with facts)",
    )
    parser.add_argument(
        "--until",
        default=None,
        metavar="T",
        help="up to (excluding) this UTC date or time (default: the end of the last day with facts)",
    )
    parser.add_argument("--team", default=None, help="only this team's calls (and alerts)")
    parser.add_argument("--feature", default=None, help="only this feature's calls (and alerts)")
    parser.add_argument(
        "--scope",
        default=None,
        metavar="SCOPE",
        help="only this scope's calls, e.g. api_key:k-1 or session:s-9",
    )


def filters_from_args(
    args: argparse.Namespace,
) -> tuple[datetime | None, datetime | None, ReportFilter]:
    """(since, until, ReportFilter) from the parsed options, checked."""
    from spendstream.scopes import scope_error
    from spendstream.warehouse.report import ReportFilter, parse_instant

    since = parse_instant(args.since, "--since")
    until = parse_instant(args.until, "--until")
    if since is not None and until is not None and since >= until:
        raise ConfigError("--since must be before --until")
    if args.scope is not None:
        problem = scope_error(args.scope)
        if problem is not None:
            raise ConfigError(f"--scope: {problem}")
    return since, until, ReportFilter(team=args.team, feature=args.feature, scope=args.scope)


def configure(parser: argparse.ArgumentParser) -> None:
    add_workdir(parser)
    add_config(parser)
    add_report_filters(parser)
    parser.add_argument(
        "--out",
        default="report.html",
        metavar="FILE",
        help="where to write the HTML page (default: ./report.html)",
    )


def run(args: argparse.Namespace) -> int:
    from spendstream.warehouse.report import write_report
    from spendstream.workdir import resolve_workdir

    since, until, flt = filters_from_args(args)
    out = write_report(
        resolve_workdir(args.workdir),
        Path(args.out).expanduser(),
        since,
        until,
        flt,
        config_from_args(args).warehouse,
        note=lambda text: print(f"spendstream report: {text}", file=sys.stderr),
    )
    print(f"wrote {out.resolve()}", file=sys.stderr)
    return 0
