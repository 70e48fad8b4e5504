"""``spendstream breakers [list | reset SCOPE]``: circuit-breaker state, and closing one by hand.

``list`` shows the scopes whose latest breaker event in the warehouse leaves them open or
half-open, and says how many closed ones it leaves out (``--all`` lists them too); ``list --from-kafka`` shows what clients' ``guard()`` sees instead:
the compacted breakers topic read as a ``BreakerView`` does (signatures checked when
``[breaker]`` has an HMAC key). ``reset SCOPE`` closes a breaker that ``ingest`` or ``demo`` opened in the
workdir's own state (no Kafka: runtime/embedded_reset.py); any other it publishes as a
(signed) ``closed`` event to the breakers topic, lands it in the warehouse, and tells the running detection engine (a command
on the priced topic) so a running ``spendstream run`` forgets the open breaker too.

Both actions (and ``breakers`` alone, which lists) take the same options, before or after
the action: ``--workdir``, ``--config``, ``--bootstrap-servers``, ``--format``. ``reset``
finds the broker as ``run`` does, and says at once when nothing listens there.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from spendstream.commands._options import (
    add_config,
    add_format,
    add_kafka,
    add_workdir,
    config_from_args,
    kafka_config_from_args,
)
from spendstream.config import Config
from spendstream.errors import ConfigError, KafkaClientError, KafkaUnavailable
from spendstream.kafka.settings import answering_servers
from spendstream.wording import plural

if TYPE_CHECKING:
    from spendstream.producers.guard import BreakerView
    from spendstream.records import BreakerEvent

__all__ = ["configure", "run"]

# How long `reset` waits for a TCP answer from each bootstrap server before saying none answers.
CONNECT_TIMEOUT_S = 3.0


def _common(parser: argparse.ArgumentParser, *, inherit: bool) -> None:
    add_workdir(parser, inherit=inherit)
    add_config(parser, inherit=inherit)
    add_kafka(parser, inherit=inherit)
    add_format(parser, inherit=inherit)


def configure(parser: argparse.ArgumentParser) -> None:
    _common(parser, inherit=False)
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    ls = sub.add_parser(
        "list",
        help="the scopes whose breaker is open or half-open (default; --all adds closed ones)",
    )
    ls.add_argument(
        "--all", action="store_true", help="list closed breakers too (by default only counted)"
    )
    ls.add_argument(
        "--from-kafka",
        action="store_true",
        help="read the breakers topic (what clients see) instead of the warehouse",
    )
    _common(ls, inherit=True)
    rs = sub.add_parser(
        "reset",
        help="close SCOPE's breaker by hand (in the workdir when ingest/demo opened it, "
        "else on Kafka)",
    )
    rs.add_argument("scope", metavar="SCOPE", help="e.g. api_key:k-123 or session:s-9")
    rs.add_argument(
        "--force",
        action="store_true",
        help="publish the reset even when the breakers topic shows SCOPE's breaker closed or "
        "never opened (by default that is refused: a mistyped scope would look reset)",
    )
    _common(rs, inherit=True)
    parser.set_defaults(all=False, from_kafka=False)


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
        config = kafka_config_from_args(args)
        if _reset_embedded(workdir, config, args.scope):
            return 0
        bootstrap = config.kafka.bootstrap_servers
        if not answering_servers(bootstrap, CONNECT_TIMEOUT_S):
            known, in_warehouse = _latest_in_warehouse(workdir, config)
            landed = in_warehouse.get(args.scope)
            if known and landed is None and not args.force:
                # Most likely a typo, with no broker to ask (an embedded workdir): say that,
                # not that Kafka is missing, and name the scope it most likely meant.
                raise ConfigError(
                    f"SCOPE: {args.scope} has no breaker in the warehouse in {workdir} (it "
                    f"never opened there: a typo?{_did_you_mean(args.scope, in_warehouse)} "
                    "`spendstream breakers list` shows the open "
                    f"ones), and no Kafka broker answers at {bootstrap} to ask; nothing "
                    "reset. --force publishes the reset to Kafka anyway, once a broker answers"
                )
            if landed is not None and landed.state == "closed" and not args.force:
                print(
                    f"{args.scope}: already closed (the warehouse in {workdir} says so since "
                    f"{landed.ts.isoformat()}); nothing reset",
                    file=sys.stderr,
                )
                return 0
            # Run away from the directory `ingest` ran in, only Kafka was named, though the
            # breaker was most likely the workdir's.
            elsewhere = (
                ""
                if known
                else f"; nor is there a warehouse in {workdir} (a breaker `ingest` opened is "
                "reset where it ran, or with --workdir DIR)"
            )
            from spendstream.commands.kafka_local import elsewhere_hint

            # A kafka-local broker at another address: a typo, not a broker to start.
            running = elsewhere_hint(bootstrap, args)
            print(
                f"spendstream breakers reset: no Kafka broker answers at {bootstrap} "
                "([kafka] bootstrap_servers in --config, or --bootstrap-servers); "
                + (
                    running
                    if running is not None
                    else "is `spendstream run` pointed at another broker? For a local one: "
                    "spendstream kafka-local start"
                )
                + elsewhere,
                file=sys.stderr,
            )
            return 1
        from spendstream.runtime.kafka.breaker_control import publish_reset

        if not args.force:
            latest = _latest_on_topic(config, args.scope)
            where = config.kafka.topic_prefix + "spendstream.breakers"
            if latest is None:
                # A usage error (exit 2): most likely a mistyped scope.
                raise ConfigError(
                    f"SCOPE: {args.scope} has no breaker on {where} (it never opened: a typo? "
                    "`spendstream breakers list` shows the open ones); nothing reset. --force "
                    "publishes the reset anyway"
                )
            if latest[0] == "closed":
                # What was asked for already holds: done, as stopping a stopped service is.
                print(
                    f"{args.scope}: already closed ({where} says so since {latest[1]}); "
                    "nothing reset. --force publishes the reset anyway",
                    file=sys.stderr,
                )
                return 0
        try:
            event = publish_reset(config, workdir, args.scope, datetime.now(UTC))
        except KafkaClientError as exc:
            print(
                f"spendstream breakers reset: cannot publish the reset to Kafka at {bootstrap} "
                f"([kafka] bootstrap_servers): {exc}",
                file=sys.stderr,
            )
            return 1
        print(f"{event.scope}: closed ({event.reason}) at {event.ts.isoformat()}")
        return 0

    from spendstream.warehouse.output import render

    if args.from_kafka:
        kafka_config = kafka_config_from_args(args)
        bootstrap = kafka_config.kafka.bootstrap_servers
        if not answering_servers(bootstrap, CONNECT_TIMEOUT_S):
            # As reset says it: at once, not after the view's 30 s of retries.
            print(
                f"spendstream breakers list --from-kafka: no Kafka broker answers at "
                f"{bootstrap} ([kafka] bootstrap_servers in --config, or --bootstrap-servers); "
                "without --from-kafka, list shows the warehouse's breakers (those `ingest` "
                "opened included)",
                file=sys.stderr,
            )
            from spendstream.commands.kafka_local import say_where_it_runs

            say_where_it_runs("spendstream breakers list --from-kafka", bootstrap, args)
            return 1
        rows, note = _from_kafka(kafka_config)
    else:
        from spendstream.runtime.kafka.breaker_control import latest_breakers

        note = ""
        try:
            states = latest_breakers(workdir, include_closed=True, config=config_from_args(args))
        except ConfigError as exc:
            # Nothing listed is the truth for this workdir, but maybe not the one meant.
            print(
                f"spendstream breakers: {exc}; none listed (`breakers list --from-kafka` shows "
                "what clients see)",
                file=sys.stderr,
            )
            states = []
        rows = [(b.scope, b.state, b.reason, b.ts) for b in states]
    shown = [r for r in rows if args.all or r[1] != "closed"]
    render(["scope", "state", "reason", "ts"], shown, args.format, sys.stdout)
    # Notes on stderr: the table (or CSV/JSON) on stdout stays what a script reads.
    sys.stdout.flush()
    if note:
        print(note, file=sys.stderr)
    if len(shown) < len(rows):
        hidden = plural(len(rows) - len(shown), "closed scope")
        print(f"{hidden} not shown (--all lists them)", file=sys.stderr)
    return 0


def _reset_embedded(workdir: Path, config: Config, scope: str) -> bool:
    """Close ``scope``'s breaker where ``ingest``/``demo`` keep it (the workdir, no Kafka);
    False: it is not open there."""
    from spendstream.runtime.embedded_reset import reset_embedded

    done = reset_embedded(workdir, config, scope, datetime.now(UTC))
    if done is None:
        return False
    event = done.event
    print(
        f"{event.scope}: closed ({event.reason}) at {event.ts.isoformat()} in {workdir} "
        "(opened by spendstream ingest/demo; a running ingest goes on with it closed, as does "
        "the next)"
    )
    if done.resolved or done.dead_lettered:
        print(
            f"notifications: {done.resolved:,} resolved, {done.dead_lettered:,} dead-lettered"
            + (" (spendstream alerts --replay-dead-letters)" if done.dead_lettered else ""),
            file=sys.stderr,
        )
    return True


def _latest_in_warehouse(workdir: Path, config: Config) -> tuple[bool, dict[str, BreakerEvent]]:
    """(whether ``workdir`` has a warehouse, each scope's latest breaker event there)."""
    from spendstream.runtime.kafka.breaker_control import latest_breakers

    try:
        return True, {b.scope: b for b in latest_breakers(workdir, config=config)}
    except ConfigError:
        return False, {}  # no warehouse here


def _did_you_mean(scope: str, latest: dict[str, BreakerEvent]) -> str:
    """`` Did you mean team:search?``: the scope with a breaker nearest to a mistyped one,
    an open one first (what a reset is for); empty when none is near."""
    import difflib

    for scopes in (
        [s for s, b in latest.items() if b.state != "closed"],
        [s for s, b in latest.items() if b.state == "closed"],
    ):
        close = difflib.get_close_matches(scope, sorted(scopes), n=1, cutoff=0.6)
        if close:
            state = latest[close[0]].state
            return f" Did you mean {close[0]} ({state})?"
    return ""


def _wait_ready(view: BreakerView, timeout_s: float) -> None:
    if not view.wait_ready(timeout_s):
        raise KafkaUnavailable(
            f"could not read {view.topic} within {timeout_s:.0f}s"
            + (f": {view.error}" if view.error else ""),
            code="_TIMED_OUT",
            retriable=True,
        )


def _latest_on_topic(config: Config, scope: str, timeout_s: float = 30.0) -> tuple[str, str] | None:
    """(state, ts) of ``scope``'s latest transition on the breakers topic; None: none."""
    from spendstream.producers.guard import BreakerView

    with BreakerView.from_config(config, keep_closed=True) as view:
        _wait_ready(view, timeout_s)
        entry = view.latest(include_closed=True).get(scope)
    return None if entry is None else (entry.state, entry.ts)


def _instant(ts: str) -> datetime | str:
    # As the warehouse's rows are: a time, shown alike in every format (the record's text
    # as it came when it is not one).
    try:
        return datetime.fromisoformat(ts)
    except ValueError:
        return ts


def _from_kafka(
    config: Config, timeout_s: float = 30.0
) -> tuple[list[tuple[str, str, str, datetime | str]], str]:
    """Each scope's latest transition on the topic, closed ones too, and a note on ignored
    records."""
    from spendstream.producers.guard import BreakerView

    with BreakerView.from_config(config, keep_closed=True) as view:
        _wait_ready(view, timeout_s)
        rows = [
            (scope, e.state, e.reason, _instant(e.ts))
            for scope, e in sorted(view.latest(include_closed=True).items())
        ]
        note = (
            f"{plural(view.unverified, 'record')} ignored: not signed with the [breaker] HMAC key"
            if view.unverified
            else ""
        )
    return rows, note
