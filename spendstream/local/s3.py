"""A real S3 API server on this machine: s3proxy (``org.gaul:s3proxy`` from Maven Central).

s3proxy serves the S3 API over a local directory (jclouds' filesystem provider). Its jars
(131 with their dependencies) are fetched once with ``mvn`` into
``$XDG_CACHE_HOME/spendstream/s3proxy/<version>/libs``, like the Kafka jars. It logs at
DEBUG unless told otherwise: a logback config at WARN keeps it quiet.

Clients of s3proxy 2.6 need ``AWS_REQUEST_CHECKSUM_CALCULATION=WHEN_REQUIRED`` and
``AWS_RESPONSE_CHECKSUM_VALIDATION=WHEN_REQUIRED`` (``[warehouse.s3] checksums =
"when_required"``): newer AWS SDKs send and ask for checksums it does not implement.

Layout of a data dir::

    s3proxy.properties  logback.xml  s3proxy.out  s3proxy.pid  local-s3.json  data/<bucket>/
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from spendstream.errors import LocalServiceError
from spendstream.local.kafka import DEPENDENCY_PLUGIN, _checked_java, _locked, _mvn, find_free_ports
from spendstream.local.process import ServiceProcess

__all__ = ["DEFAULT_VERSION", "LocalS3", "S3Status", "ensure_jars"]

DEFAULT_VERSION = "2.6.0"
MAIN_CLASS = "org.gaul.s3proxy.Main"
STATE_FILE = "local-s3.json"
_LOGBACK = """<configuration>
  <appender name="OUT" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>%d %-5level %logger{20} %msg%n</pattern></encoder>
  </appender>
  <root level="WARN"><appender-ref ref="OUT"/></root>
</configuration>
"""


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "spendstream" / "s3proxy"


def _pom(version: str) -> str:
    return (
        '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
        "<groupId>spendstream.local</groupId><artifactId>s3proxy-libs</artifactId>"
        "<version>1</version><packaging>pom</packaging><dependencies><dependency>"
        f"<groupId>org.gaul</groupId><artifactId>s3proxy</artifactId><version>{version}</version>"
        "</dependency></dependencies></project>\n"
    )


def ensure_jars(version: str = DEFAULT_VERSION, timeout_s: float = 900.0) -> Path:
    """The folder of s3proxy's jars, fetched once with Maven (a marker file says complete)."""
    version_dir = _cache_root() / version
    libs, marker = version_dir / "libs", version_dir / "complete.json"
    pom = _pom(version)

    def ready() -> bool:
        try:
            return json.loads(marker.read_text()).get("pom") == pom and any(
                libs.glob("s3proxy-*.jar")
            )
        except (OSError, ValueError):
            return False

    if ready():
        return libs
    mvn = _mvn()
    with _locked(version_dir / ".lock"):
        if ready():
            return libs
        with tempfile.TemporaryDirectory(prefix=".download-", dir=version_dir) as tmp:
            (Path(tmp) / "pom.xml").write_text(pom)
            out = Path(tmp) / "libs"
            cmd = [mvn, "-q", "-B", "-f", str(Path(tmp) / "pom.xml"),
                   f"{DEPENDENCY_PLUGIN}:copy-dependencies", "-DincludeScope=runtime",
                   f"-DoutputDirectory={out}"]  # fmt: skip
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
            if proc.returncode != 0 or not any(out.glob("s3proxy-*.jar")):
                raise LocalServiceError(
                    f"mvn could not fetch org.gaul:s3proxy:{version} (exit {proc.returncode}):\n"
                    + (proc.stdout + proc.stderr)[-2000:]
                )
            marker.unlink(missing_ok=True)
            if libs.exists():
                shutil.rmtree(libs)
            os.replace(out, libs)
            marker.write_text(json.dumps({"version": version, "pom": pom}))
    return libs


@dataclass(frozen=True, slots=True)
class S3Status:
    running: bool
    pid: int | None
    endpoint: str
    data_dir: Path

    def describe(self) -> str:
        if self.running:
            return f"s3proxy running (pid {self.pid}) at {self.endpoint}, data {self.data_dir}"
        return f"s3proxy not running (data {self.data_dir})"


class LocalS3(ServiceProcess):
    """One s3proxy process serving ``data_dir/data`` at ``endpoint`` with one key pair."""

    name = "s3proxy"
    pid_file = "s3proxy.pid"
    state_file = STATE_FILE
    log_file = "s3proxy.out"

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        version: str = DEFAULT_VERSION,
        stop_with_parent: bool = False,
    ) -> None:
        super().__init__(data_dir, port or find_free_ports(1)[0], stop_with_parent)
        self.version = version

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _keys(self) -> dict[str, str]:
        path = self.data_dir / "keys.json"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            keys = {
                "access_key_id": "spendstream-" + secrets.token_hex(4),
                "secret_access_key": secrets.token_urlsafe(24),
            }
            path.write_text(json.dumps(keys))
            path.chmod(0o600)
        return dict(json.loads(path.read_text()))

    @property
    def access_key_id(self) -> str:
        return self._keys()["access_key_id"]

    @property
    def secret_access_key(self) -> str:
        return self._keys()["secret_access_key"]

    def _answers(self) -> bool:
        try:
            urllib.request.urlopen(self.endpoint, timeout=1.0).close()
        except urllib.error.HTTPError:
            return True  # 403 for an anonymous request: the server is up
        except OSError:
            return False
        return True

    def status(self) -> S3Status:
        pid = self.running_pid()
        return S3Status(pid is not None and self._answers(), pid, self.endpoint, self.data_dir)

    def start(self, timeout_s: float = 120.0) -> str:
        """Start s3proxy (fetching its jars on first use); returns the endpoint URL."""
        if self.running_pid() is not None:
            return self.endpoint
        java = _checked_java()
        libs = ensure_jars(self.version)
        (self.data_dir / "data").mkdir(parents=True, exist_ok=True)
        props = self.data_dir / "s3proxy.properties"
        props.write_text(
            f"s3proxy.endpoint={self.endpoint}\n"
            "s3proxy.authorization=aws-v2-or-v4\n"
            f"s3proxy.identity={self.access_key_id}\n"
            f"s3proxy.credential={self.secret_access_key}\n"
            "jclouds.provider=filesystem\n"
            f"jclouds.filesystem.basedir={self.data_dir / 'data'}\n"
        )
        (self.data_dir / "logback.xml").write_text(_LOGBACK)
        self._spawn(
            [java, "-Xmx256m", f"-Dlogback.configurationFile={self.data_dir / 'logback.xml'}",
             "-cp", f"{libs}/*", MAIN_CLASS, "--properties", str(props)],
        )  # fmt: skip
        self._wait_ready(self._answers, timeout_s)
        return self.endpoint

    def create_bucket(self, bucket: str) -> None:
        """Create ``bucket`` through the S3 API (idempotent)."""
        import pyarrow.fs as pafs

        os.environ["AWS_REQUEST_CHECKSUM_CALCULATION"] = "WHEN_REQUIRED"
        os.environ["AWS_RESPONSE_CHECKSUM_VALIDATION"] = "WHEN_REQUIRED"
        fs = pafs.S3FileSystem(
            access_key=self.access_key_id,
            secret_key=self.secret_access_key,
            endpoint_override=f"127.0.0.1:{self.port}",
            scheme="http",
            region="us-east-1",
            allow_bucket_creation=True,
        )
        fs.create_dir(bucket)
