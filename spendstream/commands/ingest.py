"""``spendstream ingest FILE...``: the pipeline, embedded, over event files ('-' is stdin).

``--format jsonl`` (the default): usage events as JSON Lines. ``--format otlp``: OTLP/JSON
trace exports (what the OpenTelemetry Collector's file exporter writes); their GenAI spans
become events by the ``[otel]`` mapping, and go through the same pipeline.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from spendstream.commands._options import add_pipeline, config_from_args

if TYPE_CHECKING:
    from spendstream.config import Config

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "files", nargs="+", metavar="FILE", help="event files ('-' is stdin), as --format says"
    )
    parser.add_argument(
        "--format",
        choices=("jsonl", "otlp"),
        default="jsonl",
        help="jsonl: usage events, one JSON object a line, each with its own event_id and ts "
        "(a replay adds nothing; producers/usage-event.schema.json) (default); "
        "otlp: OTLP/JSON trace exports whose GenAI spans become events ([otel] mapping)",
    )
    add_pipeline(parser)


def run(args: argparse.Namespace) -> int:
    # Configuration and arguments first: a mistake there is exit 2 before any heavy import.
    config = config_from_args(args)

    from spendstream.errors import ConfigError
    from spendstream.workdir import WorkdirLock, resolve_workdir

    for path in args.files:
        if path != "-":
            try:
                open(path, "rb").close()
            except OSError as exc:
                raise ConfigError(f"cannot read input file {path}: {exc.strerror}") from None
    if "-" in args.files and args.format == "jsonl" and sys.stdin.isatty():
        # `spendstream ingest -` typed with nothing piped in waited without a word.
        print(
            "spendstream ingest: reading events from the terminal, one JSON object a line "
            "(Ctrl-D ends them, Ctrl-C stops); pipe them in instead: "
            "`tail -F calls.jsonl | spendstream ingest -`",
            file=sys.stderr,
            flush=True,
        )
    workdir = resolve_workdir(args.workdir)
    if not workdir.exists():
        # Run from another directory (or with a mistyped --workdir), ingest landed in a
        # warehouse of its own there, unsaid, and `sql` where the user's was found none of it.
        from spendstream.workdir import ENV_HOME

        where = (
            ""
            if args.workdir or os.environ.get(ENV_HOME)
            else " (commands run in this directory read it; elsewhere --workdir or "
            f"${ENV_HOME} names it)"
        )
        print(f"spendstream ingest: new workdir {workdir}{where}", file=sys.stderr)
    if (workdir / "demo").is_dir():
        # `make demo`, then `spendstream ingest calls.jsonl` in the same directory: the
        # user's calls landed among 50,000 synthetic ones, and every sum mixed them.
        print(
            f"spendstream ingest: note: {workdir} holds `spendstream demo`'s synthetic "
            "calls; these land beside them (and every query sums both). Your own: "
            "--workdir DIR, or run it in another directory",
            file=sys.stderr,
        )
    # One writer per workdir, refused before any heavy import (exit 3 when taken).
    with WorkdirLock(workdir, "ingest"):
        return _ingest(args, config, workdir)


def _ingest(args: argparse.Namespace, config: Config, workdir: Path) -> int:
    from spendstream.commands._pipeline_output import (
        print_summary,
        progress_printer,
        summary_on_interrupt,
    )
    from spendstream.runtime.embedded import ingest_records, read_lines

    # A pipe may be a live stream: its alerts should wait neither for 20,000 lines nor for
    # 2,000 (a batch is cut batch_within_s after its first line), while a piped backlog
    # still lands in large batches (backlog_batch_size).
    live = "-" in args.files
    otlp = None
    if args.format == "otlp":
        from spendstream.producers.otel import OtelMapping
        from spendstream.runtime.otlp_files import OtlpFiles

        otlp = OtlpFiles(args.files, OtelMapping.from_config(config.otel))
    shown = workdir if args.workdir else None
    with summary_on_interrupt(sys.stdout, shown, args.config):
        summary = ingest_records(
            workdir,
            config,
            otlp if otlp is not None else read_lines(args.files),
            route_alerts=args.route_alerts,
            batch_size=config.pipeline.batch_size if live else config.pipeline.ingest_batch_size,
            progress=progress_printer(sys.stderr),
            live=live,
        )
    print_summary(summary, sys.stdout, shown, args.config)
    if otlp is None and summary.dead_lettered:
        from spendstream.commands._input_shapes import shape_hint

        for path in dict.fromkeys(args.files):
            hint = None if path == "-" else shape_hint(path)
            if hint is not None:
                print(f"hint: {hint}", file=sys.stderr)
    if otlp is None and summary.read == 0 and not live:
        # "read 0 = landed 0 + ..." and nothing else: the file named was not the one written.
        for path in dict.fromkeys(args.files):
            file = Path(path)
            if file.is_file() and file.stat().st_size < 1 << 20 and not file.read_bytes().strip():
                print(
                    f"hint: {path} is empty: nothing to land (a file that a producer is "
                    f"still writing is followed with `tail -F {path} | spendstream ingest -`)",
                    file=sys.stderr,
                )
    if otlp is not None:
        print(
            f"spans: {otlp.spans:,} read, {otlp.ignored:,} ignored (no GenAI usage: not a model call)"
        )
    return 0
