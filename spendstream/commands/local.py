"""``spendstream local start|stop|status``: Kafka + PostgreSQL + an S3 server, no Docker."""

from __future__ import annotations

import argparse

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action",
        choices=["start", "stop", "status"],
        help="start (prints the matching [kafka] and [warehouse] configuration as TOML), "
        "stop, or status (exit 1 when not running)",
    )
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        default=None,
        help="where the services keep their data "
        "(default: ~/.local/share/spendstream/local; as root /var/tmp/spendstream-local)",
    )
    parser.add_argument(
        "--kafka-port",
        type=int,
        default=9092,
        metavar="N",
        help="Kafka's client port (default: 9092)",
    )
    parser.add_argument(
        "--kafka-controller-port",
        type=int,
        default=9093,
        metavar="N",
        help="Kafka's KRaft controller port (default: 9093)",
    )
    parser.add_argument(
        "--postgres-port",
        type=int,
        default=55432,
        metavar="N",
        help="PostgreSQL's port, for the warehouse catalog (default: 55432)",
    )
    parser.add_argument(
        "--s3-port",
        type=int,
        default=9000,
        metavar="N",
        help="the S3 server's (s3proxy) port, for the warehouse tables (default: 9000)",
    )
    parser.add_argument(
        "--bucket",
        default="spendstream",
        metavar="NAME",
        help="the S3 bucket the warehouse tables go in (default: spendstream)",
    )


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from spendstream.local.services import LocalServices, default_data_dir

    services = LocalServices(
        Path(args.data_dir).expanduser().resolve() if args.data_dir else default_data_dir(),
        kafka_port=args.kafka_port,
        kafka_controller_port=args.kafka_controller_port,
        postgres_port=args.postgres_port,
        s3_port=args.s3_port,
        bucket=args.bucket,
    )
    if args.action == "start":
        toml = services.start()
        print(f"# spendstream local: Kafka, PostgreSQL and s3proxy under {services.data_dir}")
        print(f"# secrets for the catalog and the bucket: source {services.env_file}")
        print(toml, end="")
        return 0
    if args.action == "stop":
        for line in services.stop():
            print(line)
        return 0
    running, lines = services.status()
    for line in lines:
        print(line)
    return 0 if running else 1  # as `kafka-local status`: scripts can wait on it
