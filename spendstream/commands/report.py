"""``spendstream report``: one self-contained HTML cost report, written from the warehouse.

    spendstream report [--workdir DIR] [--since T] [--until T] [--out report.html]

The page opens offline (no script, font or link to fetch); see docs/report.md.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

from spendstream.commands._options import add_config, add_workdir, config_from_args
from spendstream.errors import ConfigError

__all__ = ["configure", "parse_instant", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    add_workdir(parser)
    add_config(parser)
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
    parser.add_argument(
        "--out",
        default="report.html",
        metavar="FILE",
        help="where to write the HTML page (default: ./report.html)",
    )


def parse_instant(value: str | None, flag: str) -> datetime | None:
    """An ISO 8601 date or time as an aware UTC datetime (naive means UTC); None passes."""
    if value is None:
        return None
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(
            f"{flag} {value!r} is not an ISO 8601 date or time "
            "(e.g. 2026-11-01 or 2026-11-01T12:00:00Z)"
        ) from None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def run(args: argparse.Namespace) -> int:
    from spendstream.warehouse.report import write_report
    from spendstream.workdir import resolve_workdir

    since = parse_instant(args.since, "--since")
    until = parse_instant(args.until, "--until")
    if since is not None and until is not None and since >= until:
        raise ConfigError("--since must be before --until")
    out = write_report(
        resolve_workdir(args.workdir),
        Path(args.out).expanduser(),
        since,
        until,
        config_from_args(args).warehouse,
    )
    print(f"wrote {out.resolve()}", file=sys.stderr)
    return 0
