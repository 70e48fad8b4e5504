"""``spendstream leases serve``: the lease server for hard budgets (docs/budget-leases.md).

Answers lease requests on Kafka for every ``[[budget]]`` with ``hard_limit``, until SIGTERM
or Ctrl-C. ``--instance`` names this server for good: a restart with the same name takes its
partitions back at once and fences what the killed one left behind.
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import threading
from types import FrameType

from spendstream.commands._options import add_config, add_kafka, kafka_config_from_args

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    serve = sub.add_parser("serve", help="answer lease requests on Kafka until stopped")
    add_config(serve)
    add_kafka(serve)
    serve.add_argument(
        "--instance",
        metavar="ID",
        default=None,
        help="this server's stable name (default: the host name); distinct per server",
    )


def run(args: argparse.Namespace) -> int:
    config = kafka_config_from_args(args)
    from spendstream.runtime.lease_server import serve_leases

    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    # Which partitions (scopes) this server owns, and takeovers, are what an operator watches.
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("spendstream.leases").setLevel(logging.INFO)
    from spendstream.warehouse.charts import plural

    hard = [b.scope for b in config.budget if b.hard_limit is not None]
    instance = args.instance or socket.gethostname()
    print(
        f"spendstream leases: serving {plural(len(hard), 'hard budget')} as {instance!r} on "
        f"{config.kafka.bootstrap_servers}",
        flush=True,
    )
    serve_leases(config, instance, stop)
    return 0
