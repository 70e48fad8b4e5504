"""Real PostgreSQL and S3 servers for tests (a pytest plugin, like tests/kafka_fixtures.py).

- ``postgres_server`` (session): ``$SPENDSTREAM_TEST_POSTGRES`` (a SQLAlchemy URL; the
  password in ``$SPENDSTREAM_TEST_POSTGRES_PASSWORD``) if set, else a testcontainers
  PostgreSQL if a Docker engine answers, else a ``LocalPostgres`` from Debian's binaries.
- ``s3_server`` (session): ``$SPENDSTREAM_TEST_S3`` (an endpoint URL; keys in
  ``$SPENDSTREAM_TEST_S3_KEY``/``_SECRET``) if set, else a ``LocalS3`` (s3proxy).
- ``cluster_config`` (function): a ``WarehouseConfig`` on both, with a namespace and a bucket
  prefix of its own, and the secrets in the environment.

A service that cannot be had is a test *failure*, never a skip.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from spendstream.config import WarehouseConfig, WarehouseS3Config

ENV_POSTGRES = "SPENDSTREAM_TEST_POSTGRES"
ENV_S3 = "SPENDSTREAM_TEST_S3"
BUCKET = "spendstream-tests"


@dataclass(frozen=True, slots=True)
class Postgres:
    uri: str
    password: str


@dataclass(frozen=True, slots=True)
class S3:
    endpoint: str
    access_key_id: str
    secret_access_key: str


def _service_dir(prefix: str) -> Path:
    # As root, PostgreSQL runs as another user: its dir must be reachable (not under
    # pytest's root-only tmp dir).
    d = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
    d.chmod(0o755)
    return d


def _docker_engine() -> bool:
    try:
        import docker

        docker.from_env(timeout=5).ping()
    except Exception:
        return False
    return True


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Postgres]:
    shared = os.environ.get(ENV_POSTGRES)
    if shared:
        yield Postgres(shared, os.environ.get(ENV_POSTGRES + "_PASSWORD", ""))
        return
    reasons = []
    if _docker_engine():
        from testcontainers.postgres import PostgresContainer

        container = PostgresContainer("postgres:16-alpine", driver="psycopg2")
        try:
            container.start()
        except Exception as exc:
            reasons.append(f"testcontainers PostgreSQL did not start ({exc})")
        else:
            try:
                url = container.get_connection_url()
                yield Postgres(url.replace(f":{container.password}@", "@"), container.password)
            finally:
                container.stop()
            return
    from spendstream.errors import SpendstreamError
    from spendstream.local.postgres import LocalPostgres

    base = _service_dir("spendstream-test-pg-")
    pg = LocalPostgres(base / "pg", stop_with_parent=True)
    try:
        pg.start()
    except SpendstreamError as exc:
        reasons.append(f"LocalPostgres: {exc}")
        pytest.fail("no PostgreSQL for the tests:\n" + "\n".join(reasons), pytrace=False)
    try:
        yield Postgres(pg.uri, pg.password)
    finally:
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3]:
    shared = os.environ.get(ENV_S3)
    if shared:
        yield S3(
            shared,
            os.environ.get(ENV_S3 + "_KEY", ""),
            os.environ.get(ENV_S3 + "_SECRET", ""),
        )
        return
    from spendstream.errors import SpendstreamError
    from spendstream.local.s3 import LocalS3

    s3 = LocalS3(tmp_path_factory.mktemp("s3-session"), stop_with_parent=True)
    try:
        s3.start()
        s3.create_bucket(BUCKET)
    except (SpendstreamError, OSError) as exc:
        pytest.fail(f"no S3 server for the tests: LocalS3: {exc}", pytrace=False)
    try:
        yield S3(s3.endpoint, s3.access_key_id, s3.secret_access_key)
    finally:
        s3.stop()


@pytest.fixture
def cluster_config(
    postgres_server: Postgres, s3_server: S3, monkeypatch: pytest.MonkeyPatch
) -> WarehouseConfig:
    """The cluster shape: PostgreSQL catalog, S3 data; isolated per test."""
    token = uuid.uuid4().hex[:10]
    monkeypatch.setenv("SPENDSTREAM_CATALOG_PASSWORD", postgres_server.password)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_access_key)
    return WarehouseConfig(
        catalog_uri=postgres_server.uri,
        namespace=f"t_{token}",
        location=f"s3://{BUCKET}/{token}",
        s3=WarehouseS3Config(endpoint_url=s3_server.endpoint, checksums="when_required"),
    )


def cluster_toml(config: WarehouseConfig) -> str:
    """The same configuration as a TOML file's [warehouse] sections (for subprocesses)."""
    return (
        "[warehouse]\n"
        f'catalog_uri = "{config.catalog_uri}"\n'
        f'namespace = "{config.namespace}"\n'
        f'location = "{config.location}"\n'
        "[warehouse.s3]\n"
        f'endpoint_url = "{config.s3.endpoint_url}"\n'
        'checksums = "when_required"\n'
    )
