"""Argument bundles shared by several subcommands (sqlite-utils style)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from spendstream.config import Config, load_config

__all__ = [
    "add_config",
    "add_format",
    "add_kafka",
    "add_pipeline",
    "add_workdir",
    "config_from_args",
    "kafka_config_from_args",
]


def _default(value: Any, inherit: bool) -> Any:
    # A subcommand's copy of an option must not overwrite the value its parent parsed
    # (`breakers --workdir D list`): argparse copies sub-parser defaults over it otherwise.
    return argparse.SUPPRESS if inherit else value


def add_workdir(parser: argparse.ArgumentParser, *, inherit: bool = False) -> None:
    parser.add_argument(
        "--workdir",
        metavar="DIR",
        default=_default(None, inherit),
        help="work directory (default: $SPENDSTREAM_HOME, else ./spendstream-data)",
    )


def add_config(parser: argparse.ArgumentParser, *, inherit: bool = False) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=_default(None, inherit),
        help="TOML configuration file (default: $SPENDSTREAM_CONFIG, else built-in defaults; "
        "keys: docs/configuration.md)",
    )


def add_kafka(parser: argparse.ArgumentParser, *, inherit: bool = False) -> None:
    parser.add_argument(
        "--bootstrap-servers",
        metavar="HOST:PORT",
        default=_default(None, inherit),
        help="Kafka bootstrap servers (default: [kafka] bootstrap_servers, else a running "
        "`spendstream kafka-local` broker, else localhost:9092)",
    )


def add_format(parser: argparse.ArgumentParser, *, inherit: bool = False) -> None:
    parser.add_argument(
        "--format",
        choices=["table", "csv", "json"],
        default=_default("table", inherit),
        help="output format: a table for people, csv or json for programs",
    )


def config_from_args(args: argparse.Namespace) -> Config:
    return load_config(getattr(args, "config", None))


def kafka_config_from_args(args: argparse.Namespace, *, quiet: bool = False) -> Config:
    """The configuration with the broker chosen as a user expects.

    ``--bootstrap-servers`` wins, then ``[kafka] bootstrap_servers`` when the file sets it,
    then a running ``spendstream kafka-local`` broker (its address recorded in its data
    dir), then the default ``localhost:9092``.
    """
    config = config_from_args(args)
    chosen = getattr(args, "bootstrap_servers", None)
    if not chosen and "bootstrap_servers" not in config.kafka.model_fields_set:
        from spendstream.local.kafka import default_data_dir, running_bootstrap

        chosen = running_bootstrap()
        if chosen and not quiet:
            print(
                f"using the spendstream kafka-local broker at {chosen} (running from "
                f"{default_data_dir()}; no [kafka] bootstrap_servers configured)",
                file=sys.stderr,
            )
    if not chosen:
        return config
    kafka = config.kafka.model_copy(update={"bootstrap_servers": chosen})
    return config.model_copy(update={"kafka": kafka})


def add_pipeline(parser: argparse.ArgumentParser) -> None:
    """The options of every command that runs the embedded pipeline into a workdir."""
    add_workdir(parser)
    add_config(parser)
    parser.add_argument(
        "--no-route-alerts",
        dest="route_alerts",
        action="store_false",
        help="land alerts without routing them to the [[alerts.sink]] entries of the configuration",
    )
