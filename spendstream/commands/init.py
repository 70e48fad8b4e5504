"""``spendstream init [--cluster]``: write a commented starter ``spendstream.toml``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "path",
        nargs="?",
        default="spendstream.toml",
        metavar="FILE",
        help="where to write it (default: ./spendstream.toml)",
    )
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="a Kafka cluster and workers on other hosts or in containers "
        "(default: this machine, with `spendstream kafka-local`)",
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing file")


def run(args: argparse.Namespace) -> int:
    from spendstream.config import load_config
    from spendstream.config_starter import write_starter
    from spendstream.errors import ConfigError

    if Path(args.path).is_dir():
        # `spendstream init myproject`: "exists; ... overwrite it with --force", and with
        # --force a traceback (IsADirectoryError).
        raise ConfigError(
            f"{args.path} is a directory: name the file, e.g. {Path(args.path) / 'spendstream.toml'}"
        )
    path = write_starter(Path(args.path), "cluster" if args.cluster else "local", force=args.force)
    load_config(path)  # what we wrote must load: a broken starter is our bug, caught here
    print(f"wrote {path}")
    if args.cluster:
        print(
            "  next: set [kafka] bootstrap_servers to your brokers and [warehouse] to your "
            "database and bucket (every host lands there), put the ingest token in [http] "
            "token_file and a breaker key in [breaker] hmac_key_file, then on each worker: "
            "spendstream run --config " + str(path),
            file=sys.stderr,
        )
    else:
        # Both ways on: a first user without Java or a broker reads "kafka-local start" as
        # the only one, though every section of the file applies to `ingest` as well.
        print(
            "  next, without Kafka: spendstream ingest calls.jsonl --config "
            f"{path} (JSON Lines, one call a line; '-' reads stdin)\n"
            "  or on Kafka: spendstream kafka-local start, then spendstream run --config "
            f"{path}\n"
            "  (every key: docs/configuration.md)",
            file=sys.stderr,
        )
    return 0
