"""``spendstream local start|stop|status``: Kafka, PostgreSQL and an S3 server on this machine.

Each service keeps its state in a subfolder of one data dir (``kafka/``, ``postgres/``,
``s3/``); ``start`` prints the matching configuration as TOML and writes the secrets it
needs (the catalog password, the S3 keys) to ``<data dir>/local.env`` for ``source``.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from spendstream.local.kafka import LocalKafka
from spendstream.local.postgres import LocalPostgres
from spendstream.local.s3 import LocalS3

__all__ = ["LocalServices", "config_toml", "default_data_dir"]

DEFAULT_BUCKET = "spendstream"


def default_data_dir() -> Path:
    # As root, PostgreSQL runs as another user, which must be able to reach the data dir:
    # root's home is closed to it, /var/tmp is not.
    if os.geteuid() == 0:
        return Path("/var/tmp/spendstream-local")
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "spendstream" / "local"


def config_toml(bootstrap: str, catalog_uri: str, s3_endpoint: str, bucket: str) -> str:
    return (
        "[kafka]\n"
        f'bootstrap_servers = "{bootstrap}"\n\n'
        "[warehouse]\n"
        f'catalog_uri = "{catalog_uri}"\n'
        f'location = "s3://{bucket}/warehouse"\n\n'
        "[warehouse.s3]\n"
        f'endpoint_url = "{s3_endpoint}"\n'
        'region = "us-east-1"\n'
        "# s3proxy 2.6 does not implement the newer AWS SDK checksums (real S3 does).\n"
        'checksums = "when_required"\n'
    )


@dataclass(slots=True)
class LocalServices:
    data_dir: Path
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    postgres_port: int = 55432
    s3_port: int = 9000
    bucket: str = DEFAULT_BUCKET

    def _kafka(self) -> LocalKafka:
        d = self.data_dir / "kafka"
        if (d / "kafka-local.json").exists():
            return LocalKafka.from_dir(d)
        return LocalKafka(d, port=self.kafka_port, controller_port=self.kafka_controller_port)

    def _postgres(self) -> LocalPostgres:
        d = self.data_dir / "postgres"
        if (d / "local-postgres.json").exists():
            return LocalPostgres.from_dir(d)
        return LocalPostgres(d, port=self.postgres_port)

    def _s3(self) -> LocalS3:
        d = self.data_dir / "s3"
        if (d / "local-s3.json").exists():
            return LocalS3.from_dir(d)
        return LocalS3(d, port=self.s3_port)

    @property
    def env_file(self) -> Path:
        return self.data_dir / "local.env"

    def start(self) -> str:
        """Start all three (each only if not running); returns the configuration as TOML."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o755)  # PostgreSQL's user (when root) must traverse it
        kafka, pg, s3 = self._kafka(), self._postgres(), self._s3()
        bootstrap = kafka.start()
        catalog_uri = pg.start()
        endpoint = s3.start()
        s3.create_bucket(self.bucket)
        self.env_file.write_text(
            f"export SPENDSTREAM_CATALOG_PASSWORD={shlex.quote(pg.password)}\n"
            f"export AWS_ACCESS_KEY_ID={shlex.quote(s3.access_key_id)}\n"
            f"export AWS_SECRET_ACCESS_KEY={shlex.quote(s3.secret_access_key)}\n"
        )
        self.env_file.chmod(0o600)
        return config_toml(bootstrap, catalog_uri, endpoint, self.bucket)

    def stop(self) -> list[str]:
        out = []
        for name, svc in (("s3proxy", self._s3()), ("PostgreSQL", self._postgres()),
                          ("Kafka", self._kafka())):  # fmt: skip
            out.append(f"{name}: {'stopped' if svc.stop() else 'was not running'}")
        return out

    def status(self) -> tuple[bool, list[str]]:
        """(whether all three run, a line each)."""
        kafka, pg, s3 = self._kafka().status(), self._postgres().status(), self._s3().status()
        running = kafka.running and pg.running and s3.running
        return running, [kafka.describe(), pg.describe(), s3.describe()]
