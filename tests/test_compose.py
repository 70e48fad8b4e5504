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


def test_compose_publishes_ports_on_localhost_only() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    published = [
        (name, port) for name, svc in compose["services"].items() for port in svc.get("ports", [])
    ]
    assert {name for name, _ in published} == {"kafka", "pipeline"}
    for name, port in published:
        assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"


def test_compose_passes_the_token_and_breaker_key_it_configures() -> None:
    from spendstream.config import load_config

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    config = load_config(ROOT / "deploy" / "spendstream.toml")
    env = compose["services"]["pipeline"]["environment"]
    assert config.http.token_env in env and config.breaker.hmac_key_env in env
    assert config.breaker.hmac_key_env in compose["services"]["alerts"]["environment"]
