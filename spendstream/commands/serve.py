"""``spendstream serve``: the report as a live web page, with open breakers and recent alerts.

    spendstream serve [--workdir DIR] [--host H] [--port N] [--config FILE] [--refresh-s S]

Token-protected like ``POST /v1/events`` when ``[http] token_env`` / ``token_file`` holds a
token. See ``spendstream.runtime.live_report`` and docs/report.md.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

from spendstream.commands._options import (
    add_config,
    add_workdir,
    config_from_args,
    warehouse_where,
)

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    add_workdir(parser)
    add_config(parser)
    parser.add_argument("--host", default="127.0.0.1", help="interface (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8788, help="port (default: 8788)")
    parser.add_argument(
        "--refresh-s",
        type=float,
        default=5.0,
        metavar="S",
        help="how often the page asks whether new facts landed (default: 5)",
    )


def run(args: argparse.Namespace) -> int:
    from spendstream.commands.run import read_token
    from spendstream.errors import ConfigError
    from spendstream.runtime.live_report import serve
    from spendstream.warehouse.reading import open_reader
    from spendstream.workdir import resolve_workdir

    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port: {args.port} is not a port number")
    if args.refresh_s <= 0:
        raise ConfigError("--refresh-s must be positive")
    config = config_from_args(args)
    token = read_token(config.http)
    workdir = resolve_workdir(args.workdir)
    open_reader(workdir, config.warehouse).close()  # ConfigError naming what to run first
    httpd = serve(
        workdir,
        args.host,
        args.port,
        token=token,
        refresh_s=args.refresh_s,
        config=config.warehouse,
    )
    port = httpd.server_address[1]
    where = f"http://{args.host}:{port}/"
    holder = (
        f"the token in {config.http.token_file}"
        if config.http.token_file
        else f"${config.http.token_env}"
    )
    print(
        f"spendstream serve: the warehouse {warehouse_where(config, workdir)} at {where}"
        + (
            f" (token required: open {where}?token=<{holder}> once)"
            if token
            else " (no token configured: anyone who can reach the port can read it)"
        ),
        file=sys.stderr,
        flush=True,
    )
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        stop.wait()
    finally:
        httpd.shutdown()
        httpd.server_close()
    return 0
