"""``spendstream run``: a worker of the Kafka pipeline (usage loop, scope loop, HTTP ingest).

With hard budgets (and ``[leases] serve_in_run``, the default) each worker also hosts a
budget lease server (``spendstream.runtime.lease_server.host_leases``).

Start as many as you like with the same configuration, on one machine or many: they share
the usage partitions (consumer group ``app_id``) and the scope partitions (``app_id-scopes``).
Each serves POST /v1/events, POST /v1/traces, GET /v1/breakers, /healthz and /metrics on
its own [http] port (a bearer token on all but /healthz). docs/kafka.md.
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys
import threading
import time
from typing import cast

from spendstream.commands._options import (
    add_config,
    add_kafka,
    add_workdir,
    kafka_config_from_args,
    warehouse_where,
)
from spendstream.errors import ConfigError, KafkaClientError, KafkaUnavailable
from spendstream.http_auth import read_token
from spendstream.kafka.settings import KafkaSettings

__all__ = ["configure", "read_token", "run", "status_line"]


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
        choices=["all", "usage", "scopes", "detect"],
        default="all",
        help="all (default): both loops here; usage: only the usage loop (decode, price, "
        "per-key detection, land); scopes (or detect): only the scope loop (wide scopes). "
        "Any mix of workers forms one pipeline",
    )
    parser.add_argument(
        "--status-every",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="print what the worker did since it started (events in, facts landed, dead "
        "letters, alerts, lag) on stderr every SECONDS when something changed, and once "
        "when it stops; 0: only when it stops (default: 60)",
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

    import faulthandler
    import signal

    from spendstream.runtime.interpreter import tune_for_worker
    from spendstream.runtime.kafka.topology import ensure_topics, topic_names
    from spendstream.runtime.kafka.worker import HttpSettings, Loops, Worker
    from spendstream.workdir import resolve_workdir

    workdir = resolve_workdir(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        counts = ensure_topics(kafka, config.kafka)
    except KafkaClientError as exc:
        print(f"spendstream run: {exc}", file=sys.stderr)
        from spendstream.commands.kafka_local import elsewhere_hint

        elsewhere = (
            elsewhere_hint(config.kafka.bootstrap_servers, args)
            if isinstance(exc, KafkaUnavailable)
            else None
        )
        if elsewhere is not None:
            # A typo'd address while the user's own kafka-local broker runs: say where it is.
            print(f"spendstream run: {elsewhere}", file=sys.stderr)
        elif isinstance(exc, KafkaUnavailable):
            # No broker: the two ways on a first try, one of which needs none.
            print(
                "spendstream run: a broker on this machine: spendstream kafka-local start "
                "(run finds it by itself); no Kafka at all: spendstream ingest FILE "
                "runs the same pipeline embedded, on JSON Lines files or '-' (stdin)",
                file=sys.stderr,
            )
        return 1
    names = topic_names(config.kafka)
    loops = cast(Loops, "scopes" if args.stage == "detect" else args.stage)
    worker = Worker(
        config, workdir, kafka, counts, HttpSettings(config.http.host, port, token), loops
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("spendstream").setLevel(args.log_level.upper())
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    # kill -USR1 <pid>: every thread's stack on stderr (where a stuck worker is).
    faulthandler.register(signal.SIGUSR1)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    tune_for_worker()
    worker.start()
    if worker.server is not None:
        port = worker.server.port  # --http-port 0: the one the system picked
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
    print(
        f"spendstream run: {names.usage} ({counts.get(names.usage)} partitions) from "
        f"{kafka.describe()}, loops {loops}, groups {config.kafka.app_id} and "
        f"{config.kafka.app_id}-scopes; warehouse {warehouse_where(config, workdir)}; "
        f"http://{config.http.host}:{port}"
        + (
            ""
            if token
            else f" (HTTP endpoints but /healthz disabled: set ${config.http.token_env})"
        )
        + (
            ""
            if config.breaker.hmac_key_env or config.breaker.hmac_key_file
            else "; breaker records unsigned (no [breaker] hmac_key_env)"
        ),
        file=sys.stderr,
        flush=True,
    )
    last: str | None = None
    due = time.monotonic() + args.status_every
    broker = _BrokerWatch(config.kafka.bootstrap_servers)
    logging.getLogger("spendstream.kafka.client").addHandler(broker)
    try:
        while not stop.wait(0.5):
            broker.check()
            if args.status_every > 0 and time.monotonic() >= due:
                due = time.monotonic() + args.status_every
                line = status_line(worker.metrics.totals(), worker.lag())
                if line != last:  # quiet while idle: the same line again says nothing
                    print(f"spendstream run: {line}", file=sys.stderr, flush=True)
                    last = line
    finally:
        if leases is not None:
            leases.stop()
        worker.stop()
        totals = worker.metrics.totals()
        print(f"spendstream run: stopped; {status_line(totals, [])}", file=sys.stderr, flush=True)
    return 0


class _BrokerWatch(logging.Handler):
    """Says once when no bootstrap server accepts a connection any more, and once when one
    does again. A stopped broker left a worker with only the Kafka client's
    "Connection refused" lines, once a minute per client, and /healthz "ok".

    It looks (a TCP connect, every ``every_s``) only after the Kafka client logged a
    warning or an error (it is a handler on ``spendstream.kafka.client``), and until a
    broker answers: a worker whose broker is fine is not probed."""

    def __init__(self, bootstrap: str, every_s: float = 5.0) -> None:
        super().__init__(logging.WARNING)
        self.bootstrap = bootstrap
        self.every_s = every_s
        self._trouble = threading.Event()
        self._due = 0.0
        self._down_since: float | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self._trouble.set()

    def check(self) -> None:
        now = time.monotonic()
        if now < self._due or not (self._trouble.is_set() or self._down_since is not None):
            return
        self._due = now + self.every_s
        self._trouble.clear()
        from spendstream.kafka.settings import answering_servers

        answering = bool(answering_servers(self.bootstrap, 2.0))
        if not answering and self._down_since is None:
            self._down_since = now
            print(
                f"spendstream run: no Kafka broker answers at {self.bootstrap} any more; "
                "waiting for it (nothing lands meanwhile; POST /v1/events answers 503 after "
                "30 s); once it is back, this worker goes on where it stopped",
                file=sys.stderr,
                flush=True,
            )
        elif answering and self._down_since is not None:
            print(
                f"spendstream run: the broker at {self.bootstrap} answers again (after "
                f"{now - self._down_since:.0f} s): the worker goes on where it stopped",
                file=sys.stderr,
                flush=True,
            )
            self._down_since = None


# A count of one reads in the singular ("1 dead letter", not "1 dead letters").
_ONE = {
    "events in": "event in",
    "facts landed": "fact landed",
    "duplicates": "duplicate",
    "dead letters": "dead letter",
    "alerts": "alert",
    "breaker events": "breaker event",
}


def status_line(totals: dict[str, int], lag: list[tuple[str, int, int]]) -> str:
    """``12,345 events in, 12,300 facts landed, ...`` (and the consumer lag, when known)."""
    text = ", ".join(
        f"{n:,} {_ONE.get(what, what) if n == 1 else what}" for what, n in totals.items()
    )
    if lag:
        behind = sum(n for _, _, n in lag)
        text += f"; lag {behind:,} record{'' if behind == 1 else 's'}"
    return text
