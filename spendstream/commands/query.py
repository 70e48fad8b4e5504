"""``spendstream query NAME``: a named warehouse query (each is also a view), filters bound."""

from __future__ import annotations

import argparse
import difflib
import sys

from spendstream.commands._options import add_config, add_format, add_workdir, config_from_args

__all__ = ["configure", "run"]

_MAX_LIMIT = 2**63 - 1  # SQL LIMIT is a BIGINT


def configure(parser: argparse.ArgumentParser) -> None:
    from spendstream.warehouse.queries import FILTERS

    parser.add_argument("name", nargs="?", metavar="NAME", help="the query (see --list)")
    parser.add_argument(
        "--list", action="store_true", help="list the named queries and what they answer"
    )
    for name, (_, help_text) in FILTERS.items():
        parser.add_argument(f"--{name}", default=None, metavar="VALUE", help=help_text)
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="at most N rows")
    add_workdir(parser)
    add_config(parser)
    add_format(parser)


def run(args: argparse.Namespace) -> int:
    from spendstream.errors import ConfigError
    from spendstream.warehouse.output import render
    from spendstream.warehouse.queries import BY_NAME, FILTERS, QUERIES

    if args.list:
        if args.format != "table":
            render(
                ["name", "description"],
                [(q.name, q.description) for q in QUERIES],
                args.format,
                sys.stdout,
            )
            return 0
        _print_list([(q.name, q.description) for q in QUERIES])
        return 0
    if not args.name:
        raise ConfigError("give a query NAME, or --list to see them")
    if args.name not in BY_NAME:
        # `COST_BY_TEAM` (as SQL shouts it) is as near as `cost-by-team`.
        close = difflib.get_close_matches(args.name.lower().replace("-", "_"), BY_NAME, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"unknown query {args.name!r}; {hint}one of: {', '.join(BY_NAME)}")
    if args.limit is not None and not 0 <= args.limit <= _MAX_LIMIT:
        raise ConfigError(f"--limit must be >= 0 and at most {_MAX_LIMIT:,} (a BIGINT)")
    from spendstream.warehouse.reading import run_named
    from spendstream.warehouse.report import parse_instant
    from spendstream.workdir import resolve_workdir

    filters = {name: getattr(args, name) for name in FILTERS}
    for bound in ("since", "until"):
        # Checked here, as `report` checks them: DuckDB's own cast error shows internal SQL.
        instant = parse_instant(filters[bound], f"--{bound}")
        filters[bound] = None if instant is None else instant.isoformat()
    columns, rows = run_named(
        resolve_workdir(args.workdir),
        args.name,
        filters,
        args.limit,
        config_from_args(args).warehouse,
        note=lambda text: print(f"spendstream query: {text}", file=sys.stderr),
    )
    render(columns, rows, args.format, sys.stdout)
    return 0


def _print_list(queries: list[tuple[str, str]]) -> None:
    """Each query and what it answers, the description wrapped, never cut: the table
    renderer cut the longest ones at 100 characters ("gross margin, AI cost …"), and what
    a query answers is what --list is read for."""
    import shutil
    import textwrap

    name_width = max(len(name) for name, _ in queries) + 2
    width = max(shutil.get_terminal_size((100, 24)).columns, name_width + 40)
    for name, description in queries:
        lines = textwrap.wrap(
            description, width - name_width, break_long_words=False, break_on_hyphens=False
        ) or [""]
        print(f"{name:<{name_width}}{lines[0]}")
        for line in lines[1:]:
            print(" " * name_width + line)
    print(
        "\nrun one: spendstream query NAME [--since DATE] [--team TEAM] ... "
        "(--help lists the filters; --format csv|json for programs)"
    )
