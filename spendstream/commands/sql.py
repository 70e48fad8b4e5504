"""``spendstream sql "SELECT ..."``: a read-only SQL statement against the warehouse views."""

from __future__ import annotations

import argparse
import sys

from spendstream.commands._options import add_config, add_format, add_workdir, config_from_args

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "statement", metavar="SQL", help='the statement, e.g. "SELECT * FROM cost_by_team"'
    )
    parser.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="VALUE",
        help="a value bound to the next ? placeholder (repeatable); values are never pasted into SQL",
    )
    add_workdir(parser)
    add_config(parser)
    add_format(parser)


def run(args: argparse.Namespace) -> int:
    from spendstream.warehouse.output import render_chunks
    from spendstream.warehouse.reading import streamed_sql
    from spendstream.workdir import resolve_workdir

    with streamed_sql(
        resolve_workdir(args.workdir),
        args.statement,
        list(args.param),
        config_from_args(args).warehouse,
    ) as (columns, chunks):
        render_chunks(columns, chunks, args.format, sys.stdout)
    return 0
