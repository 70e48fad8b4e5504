"""``spendstream breakers [list | reset SCOPE]``: circuit-breaker state, and closing one by hand.

``list`` shows each scope's latest breaker event from the warehouse (open and half-open ones;
``--all`` adds closed). ``reset SCOPE`` publishes a ``closed`` event to the compacted breakers
topic, lands it in the warehouse, and tells the running detection engine (a command on the
priced topic) so a running ``spendstream run`` forgets the open breaker too.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

from spendstream.commands._options import add_config, add_format, add_workdir, config_from_args
from spendstream.errors import ConfigError

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    ls = sub.add_parser("list", help="each scope's breaker state (default)")
    ls.add_argument("--all", action="store_true", help="include closed breakers")
    add_workdir(ls)
    add_format(ls)
    rs = sub.add_parser("reset", help="close SCOPE's breaker by hand")
    rs.add_argument("scope", metavar="SCOPE", help="e.g. api_key:k-123 or session:s-9")
    add_workdir(rs)
    add_config(rs)
    # `spendstream breakers` alone lists.
    add_workdir(parser)
    add_format(parser)
    parser.set_defaults(all=False)


def _check_scope(scope: str) -> None:
    from spendstream.scopes import scope_error

    problem = scope_error(scope)
    if problem is not None:
        raise ConfigError(f"SCOPE: {problem}")


def run(args: argparse.Namespace) -> int:
    from spendstream.workdir import resolve_workdir

    workdir = resolve_workdir(args.workdir)
    if args.action == "reset":
        _check_scope(args.scope)
        config = config_from_args(args)
        from spendstream.stream.kafka.breaker_control import publish_reset

        try:
            event = publish_reset(config, workdir, args.scope, datetime.now(UTC))
        except Exception as exc:  # kafka-python: NoBrokersAvailable, KafkaTimeoutError...
            print(
                f"spendstream breakers reset: cannot publish to Kafka at "
                f"{config.kafka.bootstrap_servers} ([kafka] bootstrap_servers): "
                f"{type(exc).__name__}: {exc}",
                file=sys.stderr,
            )
            return 1
        print(f"{event.scope}: closed ({event.reason}) at {event.ts.isoformat()}")
        return 0

    from spendstream.stream.kafka.breaker_control import latest_breakers
    from spendstream.warehouse.output import render

    states = latest_breakers(workdir, include_closed=args.all, config=config_from_args(args))
    render(
        ["scope", "state", "reason", "ts"],
        [(b.scope, b.state, b.reason, b.ts) for b in states],
        args.format,
        sys.stdout,
    )
    return 0
