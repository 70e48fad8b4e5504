"""docker-compose.yml runs only commands the CLI has, and creates the contract's topics."""

from __future__ import annotations

from pathlib import Path

import yaml

from spendstream import topics
from spendstream.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def _cli_commands() -> set[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return set(action.choices)  # type: ignore[arg-type]


def test_compose_services_run_existing_cli_commands() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    built = {name: svc for name, svc in compose["services"].items() if "build" in svc}
    assert {"pipeline", "alerts"} <= set(built)
    for name, svc in built.items():
        command = svc["command"]
        assert command[0] in _cli_commands(), f"service {name} runs unknown command {command[0]}"
        parser = build_parser()
        parser.parse_args(command)  # raises SystemExit(2) on arguments the CLI does not accept


def test_compose_creates_every_contract_topic() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    for topic in (topics.USAGE, topics.ALERTS, topics.BREAKERS, topics.DEAD_LETTERS):
        assert f"--topic {topic} " in text
    assert f"--topic {topics.BREAKERS} --partitions 1 --config cleanup.policy=compact" in text


def test_compose_runs_the_cluster_shape_bound_to_localhost() -> None:
    """PostgreSQL holds the catalog and an S3 server the tables; the pipeline mounts no
    data dir; every published port is on 127.0.0.1; the config it mounts points at both."""
    from spendstream.config import load_config

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "s3", "bucket"} <= set(services)
    for name, svc in services.items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond localhost"
    assert not any("/data" in v for v in services["pipeline"].get("volumes", []))
    config = load_config(ROOT / "deploy" / "spendstream.toml").warehouse
    assert config.catalog_uri.startswith("postgresql") and "@postgres:" in config.catalog_uri
    assert config.location.startswith("s3://") and config.s3.endpoint_url == "http://s3:80"
