"""``spendstream import-batch FILE...``: provider batch result files through the embedded pipeline.

Each line of an OpenAI Batch API output file or an Anthropic Message Batches results file
becomes a usage event with ``batch = true`` (``spendstream.producers.batch_results``),
landed exactly as ``spendstream ingest`` lands events; importing a file again adds nothing.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator

from spendstream.commands._options import add_pipeline, config_from_args
from spendstream.errors import ConfigError
from spendstream.instants import parse_instant

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE", help="batch results files (JSON Lines)")
    parser.add_argument(
        "--provider",
        choices=["openai", "anthropic"],
        default=None,
        help="whose results these are (default: each line's shape says)",
    )
    parser.add_argument(
        "--at",
        default=None,
        metavar="T",
        help="event time for lines without their own (Anthropic's), as ISO 8601 "
        "(default: the file's modification time)",
    )
    add_pipeline(parser)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    at = parse_instant(args.at, "--at")
    for path in args.files:
        try:
            open(path, "rb").close()
        except OSError as exc:
            raise ConfigError(f"cannot read batch results file {path}: {exc.strerror}") from None

    from spendstream.commands._pipeline_output import (
        print_summary,
        progress_printer,
        summary_on_interrupt,
    )
    from spendstream.producers.batch_results import read_batch_results
    from spendstream.runtime.embedded import Rejected, ingest_records
    from spendstream.workdir import WorkdirLock, resolve_workdir

    def records() -> Iterator[tuple[str, bytes] | Rejected]:
        for path in args.files:
            for line in read_batch_results(path, provider=args.provider, default_ts=at):
                if line.event is not None:
                    yield f"{path}:{line.line}", line.event
                else:
                    yield Rejected(f"{path}:{line.line}", line.raw, line.error or "rejected")

    workdir = resolve_workdir(args.workdir)
    shown = workdir if args.workdir else None
    # One embedded writer per workdir (exit 3).
    with WorkdirLock(workdir, "import-batch"), summary_on_interrupt(sys.stdout, shown):
        summary = ingest_records(
            workdir,
            config,
            records(),
            route_alerts=args.route_alerts,
            progress=progress_printer(sys.stderr),
        )
    print_summary(summary, sys.stdout, shown)
    return 0
