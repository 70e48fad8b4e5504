"""Wrong or missing warehouse credentials on a cluster (PostgreSQL catalog, data on S3): every
command says which setting to fix in one line and exits 1, and `spendstream run` refuses to
start rather than take partitions it cannot land."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from spendstream.config import WarehouseConfig
from spendstream.warehouse import Warehouse
from tests.service_fixtures import cluster_toml
from tests.warehouse.factories import T0, fact

ROOT = Path(__file__).resolve().parents[2]


def _landed(tmp_path: Path, config: WarehouseConfig) -> Path:
    with Warehouse(tmp_path / "m1", writer="usage/0", config=config) as wh:
        wh.commit(facts=[fact(T0)])
    path = tmp_path / "spendstream.toml"
    path.write_text(cluster_toml(config))
    return path


def _spendstream(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spendstream", *args],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=300, check=False,
    )  # fmt: skip


def _said(stderr: str) -> list[str]:
    """The lines of an error, without ingest's "new workdir" notice (where the run's own
    state went, said before the warehouse was reached)."""
    return [
        line
        for line in stderr.strip().splitlines()
        if not line.startswith("spendstream ingest: new workdir ")
    ]


def test_a_wrong_s3_secret_is_one_line_naming_the_setting(
    tmp_path: Path, cluster_config: WarehouseConfig
) -> None:
    config = _landed(tmp_path, cluster_config)
    env = {**os.environ, "AWS_SECRET_ACCESS_KEY": "wrong-secret-of-the-right-length"}
    done = _spendstream(
        "sql", "SELECT count(*) FROM usage_facts", "--config", str(config),
        "--workdir", str(tmp_path / "reader"), env=env,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert "AWS_SECRET_ACCESS_KEY" in done.stderr, done.stderr
    assert len(_said(done.stderr)) == 1, done.stderr


def test_a_missing_catalog_password_names_its_variable(
    tmp_path: Path, cluster_config: WarehouseConfig
) -> None:
    config = _landed(tmp_path, cluster_config)
    env = {k: v for k, v in os.environ.items() if k != "SPENDSTREAM_CATALOG_PASSWORD"}
    done = _spendstream(
        "sql", "SELECT count(*) FROM usage_facts", "--config", str(config),
        "--workdir", str(tmp_path / "reader"), env=env,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "SPENDSTREAM_CATALOG_PASSWORD" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr


@pytest.mark.kafka
def test_run_with_a_wrong_s3_secret_exits_before_taking_partitions(
    tmp_path: Path, cluster_config: WarehouseConfig, kafka_bootstrap: str
) -> None:
    config = _landed(tmp_path, cluster_config)
    config.write_text(
        config.read_text()
        + f'[kafka]\nbootstrap_servers = "{kafka_bootstrap}"\n'
        + f'topic_prefix = "t{tmp_path.name[-8:]}."\n'
    )
    env = {**os.environ, "AWS_SECRET_ACCESS_KEY": "wrong-secret-of-the-right-length"}
    done = _spendstream(
        "run", "--config", str(config), "--workdir", str(tmp_path / "w"), "--http-port", "0",
        env=env,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("spendstream run: cannot read table"), done.stderr[-3000:]
    assert "AWS_SECRET_ACCESS_KEY" in last and "ACCESS_DENIED" in last


@pytest.mark.parametrize("location", ["", "s3://spendstream-elsewhere/p"])
def test_a_location_other_than_the_catalogs_names_the_key(
    tmp_path: Path, cluster_config: WarehouseConfig, location: str
) -> None:
    """One worker's [warehouse] location on local disk (or another bucket) beside a shared
    catalog whose tables are on S3: it read the catalog's files through the wrong settings
    (a hostname lookup of the bucket at AWS, said to be 'at file:///...') or, for another
    bucket, used the catalog's tables while saying 'tables at' the configured one."""
    config = _landed(tmp_path, cluster_config)
    config.write_text(
        config.read_text().replace(
            f'location = "{cluster_config.location}"', f'location = "{location}"'
        )
    )
    done = _spendstream(
        "sql", "SELECT count(*) FROM usage_facts", "--config", str(config),
        "--workdir", str(tmp_path / "reader"), env=dict(os.environ),
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert len(_said(done.stderr)) == 1, done.stderr
    assert "[warehouse] location" in done.stderr, done.stderr
    assert f'location = "{cluster_config.location}"' in done.stderr, done.stderr


def test_a_missing_bucket_names_the_location_not_the_keys(
    tmp_path: Path, cluster_config: WarehouseConfig
) -> None:
    """It said 'credentials from $AWS_ACCESS_KEY_ID and ...' before S3's NO_SUCH_BUCKET."""
    config = tmp_path / "spendstream.toml"
    config.write_text(
        cluster_toml(cluster_config.model_copy(update={"location": "s3://spendstream-nobucket/p"}))
    )
    events = tmp_path / "calls.jsonl"
    events.write_text("")
    done = _spendstream(
        "ingest", str(events), "--config", str(config), "--workdir", str(tmp_path / "w"),
        env=dict(os.environ),
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert len(_said(done.stderr)) == 1, done.stderr
    assert "no bucket 'spendstream-nobucket'" in done.stderr, done.stderr
    assert "[warehouse] location" in done.stderr, done.stderr
    assert "AWS_ACCESS_KEY_ID" not in done.stderr, done.stderr


def test_an_s3_server_without_the_newer_checksums_names_the_checksums_key(
    tmp_path: Path,
) -> None:
    """s3proxy 2.6 (what `spendstream local` runs) refuses the newer AWS SDK checksums: without
    checksums = "when_required" it said 'credentials from $AWS_ACCESS_KEY_ID and ...' before
    XAmzContentSHA256Mismatch, as if the keys were wrong. Its own s3proxy: a shared test
    server ($SPENDSTREAM_TEST_S3) may take them."""
    from spendstream.local.s3 import LocalS3

    s3 = LocalS3(tmp_path / "s3", stop_with_parent=True)
    s3.start()
    try:
        s3.create_bucket("spendstream-checksums")
        config = tmp_path / "spendstream.toml"
        config.write_text(
            '[warehouse]\nlocation = "s3://spendstream-checksums/p"\n'
            f'[warehouse.s3]\nendpoint_url = "{s3.endpoint}"\n'
        )
        events = tmp_path / "calls.jsonl"
        events.write_text("")
        # LocalS3.create_bucket set WHEN_REQUIRED in this process: not the subprocess's.
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env["AWS_ACCESS_KEY_ID"] = s3.access_key_id
        env["AWS_SECRET_ACCESS_KEY"] = s3.secret_access_key
        done = _spendstream(
            "ingest", str(events), "--config", str(config), "--workdir", str(tmp_path / "w"),
            env=env,
        )  # fmt: skip
    finally:
        s3.stop()
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert len(_said(done.stderr)) == 1, done.stderr
    assert 'set [warehouse.s3] checksums = "when_required"' in done.stderr, done.stderr
    assert "AWS_ACCESS_KEY_ID" not in done.stderr, done.stderr
