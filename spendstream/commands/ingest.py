"""``spendstream ingest FILE...``: the pipeline, embedded, over JSON Lines files ('-' is stdin)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from spendstream.commands._options import add_config, add_workdir, config_from_args

if TYPE_CHECKING:
    from spendstream.config import Config

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "files", nargs="+", metavar="FILE", help="JSON Lines event files; '-' is stdin"
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

    from spendstream.errors import ConfigError
    from spendstream.workdir import WorkdirLock, resolve_workdir

    for path in args.files:
        if path != "-":
            try:
                open(path, "rb").close()
            except OSError as exc:
                raise ConfigError(f"cannot read input file {path}: {exc.strerror}") from None
    workdir = resolve_workdir(args.workdir)
    # One writer per workdir, refused before any heavy import (exit 3 when taken).
    with WorkdirLock(workdir, "ingest"):
        return _ingest(args, config, workdir)


def _ingest(args: argparse.Namespace, config: Config, workdir: Path) -> int:
    from spendstream.commands._pipeline_output import print_summary, progress_printer
    from spendstream.runtime.embedded import EmbeddedRunner, read_lines

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
        summary = runner.run(read_lines(args.files), progress=progress_printer(sys.stderr))
        if router is not None:
            idle = router.tick()
            summary.notifications.update(resolved=idle.resolved, dead_lettered=idle.dead_lettered)
    finally:
        if router is not None:
            router.close()
    print_summary(summary, sys.stdout, workdir if args.workdir else None)
    return 0
