"""``spendstream ingest FILE...``: the pipeline, embedded, over JSON Lines files ('-' is stdin)."""

from __future__ import annotations

import argparse
import sys

from spendstream.commands._options import add_pipeline, config_from_args

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "files", nargs="+", metavar="FILE", help="JSON Lines event files; '-' is stdin"
    )
    add_pipeline(parser)


def run(args: argparse.Namespace) -> int:
    # Configuration and arguments first: a mistake there is exit 2 before any heavy import.
    config = config_from_args(args)

    from spendstream.commands._pipeline_output import print_summary, progress_printer
    from spendstream.errors import ConfigError
    from spendstream.runtime.embedded import ingest_records, read_lines
    from spendstream.workdir import resolve_workdir

    for path in args.files:
        if path != "-":
            try:
                open(path, "rb").close()
            except OSError as exc:
                raise ConfigError(f"cannot read input file {path}: {exc.strerror}") from None
    # A pipe may be a live stream: its alerts should not wait for 20,000 lines.
    live = "-" in args.files
    summary = ingest_records(
        resolve_workdir(args.workdir),
        config,
        read_lines(args.files),
        route_alerts=args.route_alerts,
        batch_size=config.pipeline.batch_size if live else config.pipeline.ingest_batch_size,
        progress=progress_printer(sys.stderr),
    )
    print_summary(summary, sys.stdout)
    return 0
