"""``spendstream ingest FILE...``: the pipeline, embedded, over JSON Lines files ('-' is stdin)."""

from __future__ import annotations

import argparse
import sys

from spendstream.commands._options import add_config, add_workdir, config_from_args

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "files", nargs="+", metavar="FILE", help="JSON Lines event files; '-' is stdin"
    )
    add_workdir(parser)
    add_config(parser)


def run(args: argparse.Namespace) -> int:
    # Configuration and arguments first: a mistake there is exit 2 before any heavy import.
    config = config_from_args(args)

    from spendstream.commands._pipeline_output import print_summary, progress_printer
    from spendstream.errors import ConfigError
    from spendstream.stream.embedded import EmbeddedRunner, read_lines
    from spendstream.workdir import resolve_workdir

    for path in args.files:
        if path != "-":
            try:
                open(path, "rb").close()
            except OSError as exc:
                raise ConfigError(f"cannot read input file {path}: {exc.strerror}") from None
    workdir = resolve_workdir(args.workdir)
    runner = EmbeddedRunner(workdir, config)
    summary = runner.run(read_lines(args.files), progress=progress_printer(sys.stderr))
    print_summary(summary, sys.stdout)
    return 0
