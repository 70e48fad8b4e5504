"""``spendstream breakers [list | reset SCOPE]``: circuit-breaker state, and closing one by hand.

``list`` shows each scope's latest breaker event from the warehouse (open and half-open ones;
``--all`` adds closed); ``list --from-kafka`` shows what clients' ``guard()`` sees instead:
the compacted breakers topic read as a ``BreakerView`` does (signatures checked when
``[breaker]`` has an HMAC key). ``reset SCOPE`` publishes a (signed) ``closed`` event to the
breakers topic, lands it in the warehouse, and tells the running detection engine (a command
on the priced topic) so a running ``spendstream run`` forgets the open breaker too.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

from spendstream.commands._options import add_config, add_format, add_workdir, config_from_args
from spendstream.config import Config
from spendstream.errors import ConfigError, KafkaClientError, KafkaUnavailable

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    ls = sub.add_parser("list", help="each scope's breaker state (default)")
    ls.add_argument("--all", action="store_true", help="include closed breakers")
    ls.add_argument(
        "--from-kafka",
        action="store_true",
        help="read the breakers topic (what clients see) instead of the warehouse",
    )
    add_workdir(ls)
    add_config(ls)
    add_format(ls)
    rs = sub.add_parser("reset", help="close SCOPE's breaker by hand")
    rs.add_argument("scope", metavar="SCOPE", help="e.g. api_key:k-123 or session:s-9")
    add_workdir(rs)
    add_config(rs)
    # `spendstream breakers` alone lists.
    add_workdir(parser)
    add_format(parser)
    parser.set_defaults(all=False, from_kafka=False, config=None)


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
        except KafkaClientError as exc:
            print(f"spendstream breakers reset: cannot publish the reset: {exc}", file=sys.stderr)
            return 1
        print(f"{event.scope}: closed ({event.reason}) at {event.ts.isoformat()}")
        return 0

    from spendstream.warehouse.output import render

    if args.from_kafka:
        rows, note = _from_kafka(config_from_args(args))
        render(["scope", "state", "reason", "ts"], rows, args.format, sys.stdout)
        if note:
            print(note, file=sys.stderr)
        return 0
    from spendstream.stream.kafka.breaker_control import latest_breakers

    states = latest_breakers(workdir, include_closed=args.all)
    render(
        ["scope", "state", "reason", "ts"],
        [(b.scope, b.state, b.reason, b.ts) for b in states],
        args.format,
        sys.stdout,
    )
    return 0


def _from_kafka(
    config: Config, timeout_s: float = 30.0
) -> tuple[list[tuple[str, str, str, str]], str]:
    """Every breaker that is not closed on the topic, and a note on ignored records."""
    from spendstream.producers.guard import BreakerView

    with BreakerView.from_config(config) as view:
        if not view.wait_ready(timeout_s):
            raise KafkaUnavailable(
                f"could not read {view.topic} within {timeout_s:.0f}s"
                + (f": {view.error}" if view.error else ""),
                code="_TIMED_OUT",
                retriable=True,
            )
        rows = [(scope, e.state, e.reason, e.ts) for scope, e in sorted(view.snapshot().items())]
        note = (
            f"{view.unverified} record(s) ignored: not signed with the [breaker] HMAC key"
            if view.unverified
            else ""
        )
    return rows, note
