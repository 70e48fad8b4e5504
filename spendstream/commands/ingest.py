"""``spendstream ingest FILE...``: the pipeline, embedded, over event files ('-' is stdin).

``--format jsonl`` (the default): usage events as JSON Lines. ``--format otlp``: OTLP/JSON
trace exports (what the OpenTelemetry Collector's file exporter writes); their GenAI spans
become events by the ``[otel]`` mapping, and go through the same pipeline.
"""

from __future__ import annotations

import argparse
import sys

from spendstream.commands._options import add_config, add_workdir, config_from_args

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "files", nargs="+", metavar="FILE", help="event files ('-' is stdin), as --format says"
    )
    parser.add_argument(
        "--format",
        choices=("jsonl", "otlp"),
        default="jsonl",
        help="jsonl: usage events, one JSON object a line (default); "
        "otlp: OTLP/JSON trace exports whose GenAI spans become events ([otel] mapping)",
    )
    add_workdir(parser)
    add_config(parser)
    parser.add_argument(
        "--no-route-alerts",
        dest="route_alerts",
        action="store_false",
        help="land alerts without routing them to the [[alerts.sink]] entries of the configuration",
    )


def run(args: argparse.Namespace) -> int:
    # Configuration and arguments first: a mistake there is exit 2 before any heavy import.
    config = config_from_args(args)

    from spendstream.commands._pipeline_output import print_summary, progress_printer
    from spendstream.errors import ConfigError
    from spendstream.runtime.embedded import EmbeddedRunner, read_lines
    from spendstream.workdir import resolve_workdir

    for path in args.files:
        if path != "-":
            try:
                open(path, "rb").close()
            except OSError as exc:
                raise ConfigError(f"cannot read input file {path}: {exc.strerror}") from None
    workdir = resolve_workdir(args.workdir)
    router = None
    if args.route_alerts and config.alerts.sink:
        # Only sinks the user configured: the embedded run pages like `spendstream alerts`
        # does on Kafka (same router, same delivery state in the workdir).
        from spendstream.alerts.router import AlertRouter

        router = AlertRouter.from_config(config.alerts, workdir)
    try:
        # A pipe may be a live stream: its alerts should not wait for 20,000 lines.
        live = "-" in args.files
        batch_size = config.pipeline.batch_size if live else config.pipeline.ingest_batch_size
        runner = EmbeddedRunner(workdir, config, router=router, batch_size=batch_size)
        otlp = None
        if args.format == "otlp":
            from spendstream.producers.otel import OtelMapping
            from spendstream.runtime.otlp_files import OtlpFiles

            otlp = OtlpFiles(args.files, OtelMapping.from_config(config.otel))
        records = otlp if otlp is not None else read_lines(args.files)
        summary = runner.run(records, progress=progress_printer(sys.stderr))
        if router is not None:
            idle = router.tick()
            summary.notifications.update(resolved=idle.resolved, dead_lettered=idle.dead_lettered)
    finally:
        if router is not None:
            router.close()
    print_summary(summary, sys.stdout)
    if otlp is not None:
        print(
            f"spans: {otlp.spans:,} read, {otlp.ignored:,} ignored (no GenAI usage: not a model call)"
        )
    return 0
