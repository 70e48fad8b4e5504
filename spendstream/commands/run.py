"""``spendstream run``: the stream processors on Kafka (faust-streaming workers) and HTTP ingest.

With hard budgets (and ``[leases] serve_in_run``, the default) each worker also hosts a
budget lease server (``spendstream.runtime.lease_server.host_leases``).

Start as many as you like with the same configuration: they form one consumer group and
split the usage topic's partitions. Each serves POST /v1/events, GET /v1/breakers,
/healthz and /metrics on its own [http] port (a bearer token on all but /healthz).
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys

from spendstream.commands._options import (
    add_config,
    add_kafka,
    add_workdir,
    kafka_config_from_args,
)
from spendstream.errors import ConfigError, KafkaClientError
from spendstream.http_auth import read_token
from spendstream.kafka.settings import KafkaSettings

__all__ = ["configure", "read_token", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    add_workdir(parser)
    add_config(parser)
    add_kafka(parser)
    parser.add_argument(
        "--http-port",
        type=int,
        default=None,
        metavar="PORT",
        help="port of this worker's HTTP endpoints (default: [http] port)",
    )
    parser.add_argument(
        "--stage",
        choices=["all", "usage", "detect"],
        default="all",
        help="all (default): both stages here; usage: only validate/price/land; detect: only "
        "the detection stage, in its own group (run N usage workers + 1 detect, never detect "
        "next to all)",
    )
    parser.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default="warning",
        help="worker log level (default: warning)",
    )


def run(args: argparse.Namespace) -> int:
    config = kafka_config_from_args(args)
    port = config.http.port if args.http_port is None else args.http_port
    if not 0 <= port <= 65535:
        raise ConfigError(f"--http-port: {port} is not a port number")
    token = read_token(config.http)
    kafka = KafkaSettings.from_config(config.kafka)  # a missing secret: exit 2 naming it

    import faust

    from spendstream.stream.kafka.app import Runtime, WebSettings
    from spendstream.stream.kafka.topology import ensure_topics, topic_names, topic_specs
    from spendstream.workdir import resolve_workdir

    workdir = resolve_workdir(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        counts = ensure_topics(kafka, topic_specs(config.kafka))
    except KafkaClientError as exc:
        print(f"spendstream run: {exc}", file=sys.stderr)
        return 1
    rt = Runtime(
        config,
        workdir,
        WebSettings(config.http.host, port, token),
        counts.get(topic_names(config.kafka).usage, config.kafka.usage_partitions),
        args.stage,
        kafka,
    )
    print(
        f"spendstream run: {rt.names.usage} ({counts.get(rt.names.usage)} partitions) from "
        f"{kafka.describe()}, stage {args.stage}, group {rt.app.conf.id}; "
        f"warehouse in {workdir}; "
        f"http://{config.http.host}:{port}"
        + (
            ""
            if token
            else f" (HTTP endpoints but /healthz disabled: set ${config.http.token_env})"
        )
        + ("" if rt.signer else "; breaker records unsigned (no [breaker] hmac_key_env)"),
        file=sys.stderr,
        flush=True,
    )
    logging.getLogger("spendstream").setLevel(args.log_level.upper())
    from spendstream.runtime.lease_server import host_leases

    # Budget leases for the hard budgets, as `spendstream leases serve` would: a stable name
    # per worker (host and HTTP port) so a restarted worker takes its partitions back.
    leases = host_leases(config, f"{socket.gethostname()}-run-{port}")
    if leases is not None:
        print(
            f"spendstream run: serving budget leases as {leases.instance_id!r} "
            f"(group {config.kafka.topic_prefix + config.leases.group_id})",
            file=sys.stderr,
            flush=True,
        )
    worker = faust.Worker(rt.app, loglevel=args.log_level, quiet=True)
    if worker.spinner is not None and not worker.spinner.file.isatty():
        # Faust's start-up spinner writes cursor codes (ESC[?25l ...) even into a pipe or a
        # log file; it is only for terminals.
        worker.spinner = None
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        if leases is not None:
            leases.stop()
        rt.close()
    return 0
