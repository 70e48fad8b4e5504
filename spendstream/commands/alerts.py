"""``spendstream alerts``: route alert events from Kafka to PagerDuty, Slack, webhooks, console."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from types import FrameType
from typing import TYPE_CHECKING

from spendstream.commands._options import (
    add_config,
    add_kafka,
    add_workdir,
    config_from_args,
    kafka_config_from_args,
)
from spendstream.wording import plural

if TYPE_CHECKING:
    from spendstream.alerts.consumer import ConsumeSummary

__all__ = ["configure", "run"]

# How long the start waits for a TCP answer from the bootstrap servers before saying none
# answers (it keeps waiting for the broker after).
BROKER_CHECK_S = 3.0


def configure(parser: argparse.ArgumentParser) -> None:
    add_workdir(parser)
    add_config(parser)
    add_kafka(parser)
    parser.add_argument(
        "--replay-dead-letters",
        action="store_true",
        help="deliver the dead-lettered notifications again, then exit (1 if some still fail)",
    )
    parser.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default="info",
        help="spendstream log level (default: info; the Kafka client logs warnings and up)",
    )
    parser.add_argument(
        "--alerts-topic",
        metavar="TOPIC",
        default=None,
        help="alert topic (default: [kafka] topic_prefix + spendstream.alerts)",
    )
    parser.add_argument(
        "--breakers-topic",
        metavar="TOPIC",
        default=None,
        help="breaker topic (default: [kafka] topic_prefix + spendstream.breakers)",
    )


def run(args: argparse.Namespace) -> int:
    from spendstream.alerts.consumer import AlertConsumer
    from spendstream.alerts.router import AlertRouter, state_path
    from spendstream.errors import KafkaAuthError
    from spendstream.kafka.settings import KafkaSettings
    from spendstream.signing import load_breaker_signer
    from spendstream.topics import ALERTS, BREAKERS
    from spendstream.workdir import resolve_workdir

    config = config_from_args(args) if args.replay_dead_letters else kafka_config_from_args(args)
    workdir = resolve_workdir(args.workdir)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("spendstream").setLevel(args.log_level.upper())
    # Secrets are loaded here: a missing one is a ConfigError (exit 2) naming its key.
    router = AlertRouter.from_config(config.alerts, workdir)
    if args.replay_dead_letters:
        try:
            replay = router.replay_dead_letters()
            # A dead letter whose sink this configuration lacks is left, untried: said as
            # "1 still failing" alone, the replay run without the --config that paged (no
            # sinks at all) looked like the sink still being down.
            unknown = sorted(
                {row.sink for row in router.state.dead_letters(pending_only=True)}
                - set(router.sinks)
            )
        finally:
            router.close()
        print(
            f"spendstream alerts: dead letters: {replay.delivered} delivered, "
            f"{replay.superseded} superseded by newer notifications, {replay.still_dead} still failing",
            file=sys.stderr,
        )
        if unknown:
            names = ", ".join(repr(n) for n in unknown)
            why = (
                "this run's configuration has no [[alerts.sink]]: give the one that paged, "
                "--config FILE"
                if not config.alerts.sink  # the console alone, the default
                else "this run's configuration has no [[alerts.sink]] of that name"
            )
            print(
                f"  not tried, for want of their sink: {names} ({why})",
                file=sys.stderr,
            )
        return 1 if replay.still_dead else 0
    kafka = KafkaSettings.from_config(config.kafka)
    signer = load_breaker_signer(config.breaker)
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    consumer = AlertConsumer(
        router,
        kafka,
        group_id=config.alerts.group_id,
        alerts_topic=args.alerts_topic or config.kafka.topic_prefix + ALERTS,
        breakers_topic=args.breakers_topic or config.kafka.topic_prefix + BREAKERS,
        retry_budget_s=config.alerts.delivery.retry_budget_s,
        signer=signer,
        max_future_skew_s=config.detection.max_future_skew_s,
    )
    sinks = ", ".join(f"{s.name}" for s in router.sinks.values())
    print(
        f"spendstream alerts: routing {consumer.alerts_topic} and {consumer.breakers_topic} "
        f"from {kafka.describe()} to {sinks}; state in {state_path(workdir)}",
        file=sys.stderr,
    )
    from spendstream.kafka.settings import answering_servers

    if not answering_servers(config.kafka.bootstrap_servers, BROKER_CHECK_S):
        # A router waits a broker out (a start before Kafka's is normal), but said nothing
        # but the Kafka client's "Connection refused" once a minute: a user with no Kafka
        # (an `ingest` user following the getting-started's `spendstream alerts`) waited on.
        print(
            f"spendstream alerts: no Kafka broker answers at {config.kafka.bootstrap_servers} "
            "yet; waiting for one (Ctrl-C stops). Without Kafka there is nothing to run here: "
            "`spendstream ingest` pages the [[alerts.sink]] entries itself, and "
            "`spendstream alerts --replay-dead-letters` resends what died, with no broker",
            file=sys.stderr,
            flush=True,
        )
        from spendstream.commands.kafka_local import say_where_it_runs

        say_where_it_runs("spendstream alerts", config.kafka.bootstrap_servers, args)
    try:
        total = consumer.run(stop)
    except KafkaAuthError as exc:
        print(f"spendstream alerts: {exc}", file=sys.stderr)
        return 1
    finally:
        consumer.close()
        router.close()
    print(closing_line(total), file=sys.stderr)
    return 0


def closing_line(total: ConsumeSummary) -> str:
    """What a stopped ``spendstream alerts`` did, with the dead letters it sent itself once
    their sink answered again (auto-replay; they were left out, so a replay after the stop
    seemed to have everything still to send)."""
    line = (
        f"spendstream alerts: read {plural(total.records, 'record')}: "
        f"{plural(total.alerts, 'alert')}, {plural(total.breaker_events, 'breaker event')}, "
        f"{total.bad_records:,} bad; {total.triggered:,} triggered, {total.resolved:,} resolved, "
        f"{total.dead_lettered:,} dead-lettered"
    )
    if total.replayed or total.replay_superseded:
        line += (
            f"; of earlier dead letters, {total.replayed:,} sent once their sink answered "
            f"again, {total.replay_superseded:,} superseded"
        )
    return line
