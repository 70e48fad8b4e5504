"""``spendstream sql "SELECT ..."``: a read-only SQL statement against the warehouse views."""

from __future__ import annotations

import argparse
import re
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


_EXAMPLE = 'spendstream sql "SELECT * FROM cost_by_team"'


def run(args: argparse.Namespace) -> int:
    import duckdb

    from spendstream.errors import ConfigError
    from spendstream.warehouse.output import render_chunks
    from spendstream.warehouse.reading import QueryError, streamed_sql
    from spendstream.workdir import resolve_workdir

    try:
        empty = not duckdb.extract_statements(args.statement)
    except duckdb.Error:
        empty = False  # a syntax error: the warehouse's answer below names it
    if empty:
        # "", " ; " or a comment alone ran nothing and ended in a traceback.
        raise ConfigError(f"no SQL statement given; e.g. {_EXAMPLE} (spendstream query --list)")
    try:
        with streamed_sql(
            resolve_workdir(args.workdir),
            args.statement,
            list(args.param),
            config_from_args(args).warehouse,
        ) as (columns, chunks):
            render_chunks(columns, chunks, args.format, sys.stdout)
    except QueryError as exc:
        hint = _hint(args.statement.strip(), str(exc))
        if hint is None:
            raise
        raise QueryError(f"{exc}\n{hint}") from None
    return 0


def _hint(statement: str, error: str) -> str | None:
    """The next step after a first user's usual mistakes, beside DuckDB's own words."""
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*;?", statement):
        # `spendstream sql cost_by_team`: "Parser Error: syntax error at or near ...".
        from spendstream.warehouse.queries import QUERIES

        name = statement.rstrip(";")
        named = (
            f", or spendstream query {name} (--help: its filters)"
            if any(q.name == name for q in QUERIES)
            else ""
        )
        return f'hint: a table or view is read with a query: spendstream sql "SELECT * FROM {name}"{named}'
    if "Values were not provided for the following parameters" in error:
        return "hint: give each ? placeholder its value with -p VALUE, in order"
    return None
