"""Argument bundles shared by several subcommands (sqlite-utils style)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from spendstream.config import ENV_CONFIG, Config, load_config
from spendstream.errors import ConfigError

__all__ = [
    "add_config",
    "add_format",
    "add_kafka",
    "add_pipeline",
    "add_workdir",
    "config_from_args",
    "config_path_from_args",
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


def add_config(
    parser: argparse.ArgumentParser, *, inherit: bool = False, help: str | None = None
) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=_default(None, inherit),
        help=help
        or "TOML configuration file (default: $SPENDSTREAM_CONFIG, else ./spendstream.toml "
        "if there is one, else built-in defaults; keys: docs/configuration.md)",
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
        help="output format: table for people (default), csv or json for programs",
    )


# What `spendstream init` writes: read from the working directory when nothing else is named.
LOCAL_CONFIG = "spendstream.toml"
_announced: set[str] = set()


def config_path_from_args(args: argparse.Namespace) -> str | None:
    """``--config``, else ``$SPENDSTREAM_CONFIG``, else ``./spendstream.toml`` when there is
    one (said once on stderr, so a file read without being named is never a surprise),
    else None: the built-in defaults."""
    named = getattr(args, "config", None) or os.environ.get(ENV_CONFIG)
    if named:
        return str(named)
    if not Path(LOCAL_CONFIG).is_file():
        return None
    if LOCAL_CONFIG not in _announced:
        _announced.add(LOCAL_CONFIG)
        print(
            f"using ./{LOCAL_CONFIG} (--config FILE or ${ENV_CONFIG} names another)",
            file=sys.stderr,
        )
    return LOCAL_CONFIG


def config_from_args(args: argparse.Namespace) -> Config:
    path = config_path_from_args(args)
    try:
        return announce_advisories(load_config(path))
    except ConfigError as exc:
        if getattr(args, "config", None) or path != os.environ.get(ENV_CONFIG):
            raise
        # "cannot read configuration file old.toml" for a command given no --config: the
        # variable exported long ago (or in another project's shell) is what to look at.
        raise ConfigError(
            f"{exc}\n  (${ENV_CONFIG} names {path}; --config FILE names another)"
        ) from None


def announce_advisories(config: Config) -> Config:
    """Say on stderr what in ``config`` reads as a mistake (``BudgetConfig.advisories``)."""
    for advice in (a for budget in config.budget for a in budget.advisories()):
        if advice not in _announced:  # once per process: some commands load it twice
            _announced.add(advice)
            print(f"warning: {advice}", file=sys.stderr)
    return config


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
        from spendstream.local.services import default_data_dir as services_dir

        # `kafka-local start`'s broker, else the one `local start` runs beside its database.
        for where in (default_data_dir(), services_dir() / "kafka"):
            chosen = running_bootstrap(where)
            if chosen:
                if not quiet:
                    print(
                        f"using the spendstream kafka-local broker at {chosen} (running from "
                        f"{where}; no [kafka] bootstrap_servers configured)",
                        file=sys.stderr,
                    )
                break
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


def warehouse_where(config: Config, workdir: Path) -> str:
    """Where a command's warehouse is, for its start line: the workdir, or a cluster's
    catalog and tables (never a password)."""
    from spendstream.warehouse.tables import resolve_storage

    if not (config.warehouse.catalog_uri or config.warehouse.location):
        return f"in {workdir}"
    return resolve_storage(config.warehouse, workdir).describe
