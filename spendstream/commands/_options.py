"""Argument bundles shared by several subcommands (sqlite-utils style)."""

from __future__ import annotations

import argparse

from spendstream.config import Config, load_config

__all__ = ["add_config", "add_format", "add_pipeline", "add_workdir", "config_from_args"]


def add_workdir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workdir",
        metavar="DIR",
        default=None,
        help="work directory (default: $SPENDSTREAM_HOME, else ./spendstream-data)",
    )


def add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help="TOML configuration file (default: $SPENDSTREAM_CONFIG, else built-in defaults)",
    )


def add_format(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format",
        choices=["table", "csv", "json"],
        default="table",
        help="output format: a table for people, csv or json for programs",
    )


def config_from_args(args: argparse.Namespace) -> Config:
    return load_config(getattr(args, "config", None))


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
