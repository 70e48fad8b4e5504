"""docker-compose.yml runs only commands the CLI has, and creates the contract's topics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
    # Services on the image's own entrypoint (`spendstream`); ingest-token runs python.
    built = {
        name: svc
        for name, svc in compose["services"].items()
        if "build" in svc and "entrypoint" not in svc
    }
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


def _compose() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "docker-compose.yml").read_text()))


def test_compose_runs_the_kafka_version_kafka_local_runs() -> None:
    from spendstream.local.kafka import DEFAULT_VERSION

    images = [s["image"] for s in _compose()["services"].values() if "image" in s]
    kafka = [i for i in images if i.startswith("apache/kafka:")]
    assert kafka and set(kafka) == {f"apache/kafka:{DEFAULT_VERSION}"}


def test_every_published_port_is_bound_to_localhost() -> None:
    published = [p for s in _compose()["services"].values() for p in s.get("ports", [])]
    assert published
    assert all(str(p).startswith("127.0.0.1:") for p in published), published


def test_the_image_runs_as_an_unprivileged_user_and_no_service_overrides_it() -> None:
    lines = [li.strip() for li in (ROOT / "Dockerfile").read_text().splitlines()]
    users = [li.split(None, 1)[1] for li in lines if li.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in {"0", "root"}
    for name, svc in _compose()["services"].items():
        assert str(svc.get("user", "10001")).split(":")[0] not in {"0", "root"}, name


def test_the_build_context_leaves_out_the_venv_data_and_caches_but_not_what_is_copied() -> None:
    import fnmatch

    patterns = [
        li.strip().rstrip("/")
        for li in (ROOT / ".dockerignore").read_text().splitlines()
        if li.strip() and not li.startswith("#")
    ]

    def ignored(path: str) -> bool:
        return any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(path, f"**/{p}") for p in patterns)

    for path in (".venv", "spendstream-data", ".mypy_cache", ".pytest_cache", ".git"):
        assert ignored(path), path
    copied = [
        part
        for li in (ROOT / "Dockerfile").read_text().splitlines()
        if li.startswith("COPY ")
        for part in li.split()[1:-1]
    ]
    assert "LICENSE" in copied  # pyproject's license-files: the install fails without it
    for path in copied:
        assert (ROOT / path).exists() and not ignored(path), path


def test_the_pipeline_reads_the_ingest_token_the_token_service_writes(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys
    import tomllib

    services = _compose()["services"]
    token_svc, pipeline = services["ingest-token"], services["pipeline"]
    token_file = token_svc["environment"]["TOKEN_FILE"]
    config = tomllib.loads((ROOT / "deploy" / "spendstream.toml").read_text())
    assert config["http"]["token_file"] == token_file
    volume = token_file.rsplit("/", 1)[0]
    assert any(v.split(":")[1] == volume for v in pipeline["volumes"] if v.count(":") >= 1)
    assert pipeline["depends_on"]["ingest-token"]["condition"] == "service_completed_successfully"

    # The service's own script, as compose hands it to python ($$ is compose's escape for $).
    script = token_svc["command"][0].replace("$$", "$")
    target = tmp_path / "secrets" / "ingest-token"
    env = {**os.environ, "TOKEN_FILE": str(target), "SPENDSTREAM_INGEST_TOKEN": ""}

    def run(**extra: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", script], env={**env, **extra}, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    first = run()
    token = target.read_text().strip()
    assert len(token) >= 32 and token in first  # generated, printed once
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    again = run()
    assert token not in again and target.read_text().strip() == token  # kept, not reprinted
    run(SPENDSTREAM_INGEST_TOKEN="from-env-file")
    assert target.read_text().strip() == "from-env-file"  # an operator's token wins
    from spendstream.config import HttpConfig
    from spendstream.http_auth import read_token

    assert read_token(HttpConfig(token_file=str(target))) == "from-env-file"


def test_breaker_records_are_signed_with_the_key_the_breaker_key_service_writes() -> None:
    from spendstream.config import load_config

    services = _compose()["services"]
    config = load_config(ROOT / "deploy" / "spendstream.toml")
    key_file = services["breaker-key"]["environment"]["TOKEN_FILE"]
    assert config.breaker.hmac_key_file == key_file
    volume = key_file.rsplit("/", 1)[0]
    for name in ("pipeline", "alerts"):
        svc = services[name]
        assert any(v.split(":")[1] == volume for v in svc["volumes"] if v.count(":") >= 1), name
        assert svc["depends_on"]["breaker-key"]["condition"] == "service_completed_successfully"


def test_compose_runs_the_cluster_shape() -> None:
    """PostgreSQL holds the catalog and an S3 server the tables; the pipeline mounts no
    data dir; the config it mounts points at both."""
    from spendstream.config import load_config

    services = _compose()["services"]
    assert {"postgres", "s3", "bucket"} <= set(services)
    assert not any("/data" in v for v in services["pipeline"].get("volumes", []))
    assert services["pipeline"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    config = load_config(ROOT / "deploy" / "spendstream.toml").warehouse
    assert config.catalog_uri.startswith("postgresql") and "@postgres:" in config.catalog_uri
    assert config.location.startswith("s3://") and config.s3.endpoint_url == "http://s3:80"
