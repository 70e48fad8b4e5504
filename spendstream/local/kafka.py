"""A real single-node Apache Kafka (KRaft, combined broker+controller) without Docker.

The broker's jars come from Maven Central (``org.apache.kafka:kafka_2.13`` and its runtime
dependencies, resolved by ``mvn``) and are cached per version under
``$XDG_CACHE_HOME/spendstream/kafka/<version>/libs``. Only ``java`` (17+) and ``mvn`` are
needed; nothing here imports a third-party package.

Why Kafka 4.4.0: it is the newest 4.x that Maven Central serves here, and Kafka 4.0 dropped
old protocol versions (KIP-896). Checked against 4.4.0 on a real broker: confluent-kafka 2.16
(admin, produce, group consume with cooperative rebalancing, commit and read back committed
offsets, transactions) and kcat 1.7.1 (produce and consume) work, so there is no need to fall
back to 3.9.x. 3.x versions still work if asked for
(``version="3.9.1"``): they get an SLF4J->reload4j binding instead of log4j2.

Layout of a data dir::

    server.properties  log4j2.properties (log4j.properties on 3.x)  kafka-local.json
    kafka.pid  kafka.out (JVM stdout/stderr)  logs/server.log  kraft/ (log.dirs)
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import fcntl
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spendstream.errors import KafkaLocalError, ToolMissingError
from spendstream.local.kafka_security import TlsFiles, ensure_tls, scram_format_args, security_props

__all__ = [
    "DEFAULT_VERSION",
    "KafkaLocalError",
    "KafkaStatus",
    "LocalKafka",
    "PortInUseError",
    "ToolUnavailableError",
    "api_versions_ok",
    "configure",
    "default_data_dir",
    "ensure_jars",
    "find_free_port",
    "find_free_ports",
    "main",
    "run",
    "running_bootstrap",
]

log = logging.getLogger(__name__)

DEFAULT_VERSION = "4.4.0"
SCALA_VERSION = "2.13"
# 4.x logs through log4j2, but its pom brings no SLF4J binding: without one the broker's
# SLF4J loggers (most of them) print nothing. Kafka 4.x is built against slf4j-api 1.7.x,
# hence log4j-slf4j-impl (the 1.x binding), not log4j-slf4j2-impl. The BOM keeps every
# log4j2 jar at one version.
LOG4J2_VERSION = "2.25.5"
SLF4J_RELOAD4J_VERSION = "1.7.36"  # 3.x only
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
MIN_JAVA = 17
MARKER = "complete.json"
STATE_FILE = "kafka-local.json"
PID_FILE = "kafka.pid"
OUT_FILE = "kafka.out"
# Small heap: CI machines have 2 cores and tests may run several brokers at once.
JVM_OPTS = (
    "-Xms256m",
    "-Xmx512m",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-Djava.awt.headless=true",
)
STORAGE_TOOL = "kafka.tools.StorageTool"
BROKER_MAIN = "kafka.Kafka"


class ToolUnavailableError(KafkaLocalError, ToolMissingError):
    """``java`` or ``mvn`` is missing or too old (a KafkaLocalError; the CLI exits 2)."""


class PortInUseError(KafkaLocalError):
    """The broker's or controller's port is taken by another process."""


@dataclass(frozen=True)
class KafkaStatus:
    running: bool
    pid: int | None
    bootstrap: str
    data_dir: Path
    version: str
    log_path: Path
    stdout_path: Path

    sasl_bootstrap: str | None = None
    ssl_bootstrap: str | None = None

    def describe(self) -> str:
        if self.running:
            head = f"Kafka {self.version} running (pid {self.pid}) at {self.bootstrap}"
        else:
            head = f"Kafka {self.version} not running (would listen on {self.bootstrap})"
        for label, address in (
            ("SASL_PLAINTEXT", self.sasl_bootstrap),
            ("SASL_SSL", self.ssl_bootstrap),
        ):
            if address is not None:
                head += f"\n  {label}: {address}"
        return f"{head}\n  data dir: {self.data_dir}\n  log:      {self.log_path}"


# --------------------------------------------------------------------------- tools


def _java() -> str:
    # Same precedence as Kafka's own scripts: $JAVA_HOME first, then PATH.
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        if os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("java")
    if found is None:
        raise ToolUnavailableError(
            "java not found: Kafka needs a Java 17+ runtime "
            "(e.g. `apt-get install openjdk-17-jre-headless`, or set JAVA_HOME)"
        )
    return found


def _java_major(java: str) -> int:
    proc = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    # `java -version` prints to stderr: 'openjdk version "17.0.15" ...' or '"1.8.0_392"'.
    match = re.search(r'version "(\d+)(?:\.(\d+))?', proc.stderr + proc.stdout)
    if match is None:
        raise ToolUnavailableError(f"cannot tell the version of {java}: {proc.stderr.strip()!r}")
    major = int(match.group(1))
    if major == 1 and match.group(2):
        major = int(match.group(2))
    return major


def _checked_java() -> str:
    java = _java()
    major = _java_major(java)
    if major < MIN_JAVA:
        raise ToolUnavailableError(
            f"{java} is Java {major}; Kafka needs Java {MIN_JAVA}+ "
            "(e.g. `apt-get install openjdk-17-jre-headless`, or point JAVA_HOME at one)"
        )
    return java


def _mvn() -> str:
    found = shutil.which("mvn")
    if found is None:
        raise ToolUnavailableError(
            "mvn not found: it fetches the Kafka jars from Maven Central on first use "
            "(e.g. `apt-get install maven`)"
        )
    return found


# --------------------------------------------------------------------------- jars


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "spendstream" / "kafka"


def _is_3x(version: str) -> bool:
    return version.split(".", 1)[0] in {"2", "3"}


def _pom(version: str) -> str:
    deps = [("org.apache.kafka", f"kafka_{SCALA_VERSION}", version)]
    managed = ""
    if _is_3x(version):
        deps.append(("org.slf4j", "slf4j-reload4j", SLF4J_RELOAD4J_VERSION))
    else:
        deps.append(("org.apache.logging.log4j", "log4j-slf4j-impl", LOG4J2_VERSION))
        managed = (
            "<dependencyManagement><dependencies><dependency>"
            "<groupId>org.apache.logging.log4j</groupId><artifactId>log4j-bom</artifactId>"
            f"<version>{LOG4J2_VERSION}</version><type>pom</type><scope>import</scope>"
            "</dependency></dependencies></dependencyManagement>"
        )
    dep_xml = "".join(
        f"<dependency><groupId>{g}</groupId><artifactId>{a}</artifactId>"
        f"<version>{v}</version></dependency>"
        for g, a, v in deps
    )
    return (
        '<project xmlns="http://maven.apache.org/POM/4.0.0">'
        "<modelVersion>4.0.0</modelVersion>"
        "<groupId>spendstream.local</groupId><artifactId>kafka-libs</artifactId>"
        "<version>1</version><packaging>pom</packaging>"
        f"{managed}<dependencies>{dep_xml}</dependencies></project>\n"
    )


def _marker_ok(version_dir: Path, pom: str) -> Path | None:
    libs = version_dir / "libs"
    try:
        marker = json.loads((version_dir / MARKER).read_text())
    except (OSError, ValueError):
        return None
    # A marker from another recipe (pom) or with a jar gone is not a usable cache.
    if marker.get("pom") != pom:
        return None
    if not all((libs / jar).is_file() for jar in marker.get("jars", [])):
        return None
    return libs


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    # Serialises downloads of one version across processes (parallel test sessions).
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_jars(version: str = DEFAULT_VERSION, timeout_s: float = 900.0) -> Path:
    """Return the folder of jars for ``version``, downloading them once with Maven."""
    version_dir = _cache_root() / version
    pom = _pom(version)
    libs = _marker_ok(version_dir, pom)
    if libs is not None:
        return libs
    mvn = _mvn()
    with _locked(version_dir / ".lock"):
        libs = _marker_ok(version_dir, pom)  # another process may have finished meanwhile
        if libs is not None:
            return libs
        for stale in version_dir.glob(".download-*"):  # left by a killed download
            shutil.rmtree(stale, ignore_errors=True)
        log.warning("fetching Kafka %s jars from Maven Central (first use only)...", version)
        with tempfile.TemporaryDirectory(prefix=".download-", dir=version_dir) as tmp:
            tmp_path = Path(tmp)
            (tmp_path / "pom.xml").write_text(pom)
            out_dir = tmp_path / "libs"
            cmd = [
                mvn, "-q", "-B", "-f", str(tmp_path / "pom.xml"),
                f"{DEPENDENCY_PLUGIN}:copy-dependencies",
                "-DincludeScope=runtime", f"-DoutputDirectory={out_dir}",
            ]  # fmt: skip
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
            except subprocess.TimeoutExpired as exc:
                raise KafkaLocalError(
                    f"mvn did not fetch Kafka {version} within {timeout_s:.0f}s"
                ) from exc
            jars = sorted(p.name for p in out_dir.glob("*.jar")) if out_dir.is_dir() else []
            if proc.returncode != 0 or not any(j.startswith("kafka_") for j in jars):
                tail = (proc.stdout + proc.stderr).strip()[-2000:]
                raise KafkaLocalError(
                    f"mvn could not fetch org.apache.kafka:kafka_{SCALA_VERSION}:{version} "
                    f"(exit {proc.returncode}):\n{tail}"
                )
            # Swap the finished folder in by rename, then write the marker by rename:
            # a crash at any point leaves no marker, so a partial download is never used.
            libs = version_dir / "libs"
            (version_dir / MARKER).unlink(missing_ok=True)
            if libs.exists():
                shutil.rmtree(libs)
            os.replace(out_dir, libs)
            marker_tmp = version_dir / f".{MARKER}.tmp"
            marker_tmp.write_text(json.dumps({"version": version, "pom": pom, "jars": jars}))
            os.replace(marker_tmp, version_dir / MARKER)
        return libs


# --------------------------------------------------------------------------- probing


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed")
        buf += chunk
    return bytes(buf)


def api_versions_ok(host: str, port: int, timeout_s: float = 2.0) -> bool:
    """True if a Kafka broker answers an ApiVersions request on host:port.

    The broker binds its port early but serves requests only once it is ready, so a
    successful TCP connect alone proves nothing. ApiVersions v0 is never removed (clients
    use it to negotiate), so this works on every broker version.
    """
    client_id = b"spendstream-probe"
    correlation = 0x5EED
    header = struct.pack(">hhih", 18, 0, correlation, len(client_id)) + client_id
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(struct.pack(">i", len(header)) + header)
            (size,) = struct.unpack(">i", _recv_exact(sock, 4))
            body = _recv_exact(sock, size)
    except (OSError, struct.error):
        return False
    if len(body) < 6:
        return False
    got_correlation, error_code = struct.unpack(">ih", body[:6])
    return bool(got_correlation == correlation and error_code == 0)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Java binds with SO_REUSEADDR, so TIME_WAIT from a previous run must not count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def find_free_ports(count: int = 1) -> list[int]:
    """``count`` distinct ports that are free on 127.0.0.1 right now.

    Picked at random below Linux's ephemeral range (32768-60999): a port from that range can
    be taken by any outgoing connection while a test has its broker stopped for a restart.
    """
    rng = secrets.SystemRandom()
    held: list[socket.socket] = []
    try:
        for _ in range(500):
            if len(held) == count:
                break
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.bind(("127.0.0.1", rng.randrange(20000, 32768)))
            except OSError:
                sock.close()
                continue
            held.append(sock)  # kept bound until all are picked, so none repeats
        while len(held) < count:  # crowded machine: let the OS choose
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            held.append(sock)
        return [int(s.getsockname()[1]) for s in held]
    finally:
        for sock in held:
            sock.close()


def find_free_port() -> int:
    """One port that is free on 127.0.0.1 right now (see ``find_free_ports``)."""
    return find_free_ports(1)[0]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        with contextlib.suppress(OSError, IndexError):
            # A zombie (exited, not yet reaped) counts as gone.
            return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def _die_with_parent() -> None:
    # Runs in the child between fork and exec. PR_SET_PDEATHSIG = 1; Linux only.
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


def _cluster_id() -> str:
    while True:
        cid = base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode()
        if not cid.startswith("-"):  # the storage tool would read it as an option
            return cid


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "spendstream" / "kafka-local"


# --------------------------------------------------------------------------- broker


class LocalKafka:
    """One KRaft broker+controller process whose state lives in ``data_dir``."""

    def __init__(
        self,
        data_dir: Path,
        port: int = 9092,
        controller_port: int = 9093,
        version: str = DEFAULT_VERSION,
        *,
        stop_with_parent: bool = False,
        sasl_port: int | None = None,
        ssl_port: int | None = None,
        scram_users: Mapping[str, str] | None = None,
        acls: bool = False,
    ) -> None:
        """``stop_with_parent`` (Linux, for tests): the kernel SIGTERMs the broker when the
        thread that started it dies, so a killed test run leaves no JVM behind.

        ``sasl_port`` adds a SASL_PLAINTEXT listener and ``ssl_port`` a SASL_SSL one (a
        throwaway CA in ``<data dir>/tls``), both SCRAM-SHA-256/512 for ``scram_users``
        (name -> password; stored in the metadata log when the data dir is first formatted).
        The PLAINTEXT listener on ``port`` stays: the broker talks to itself over it.

        ``acls``: Kafka's StandardAuthorizer, no access without an ACL, except for the
        PLAINTEXT listeners' ``User:ANONYMOUS`` (the broker itself, and whoever grants
        the SCRAM users their ACLs): a broker like a managed service's, where a client may
        lack, say, the right to alter a topic's configs."""
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.port = port
        self.controller_port = controller_port
        self.version = version
        self.stop_with_parent = stop_with_parent
        self.sasl_port = sasl_port
        self.ssl_port = ssl_port
        self.scram_users = dict(scram_users or {})
        self.acls = acls
        self._proc: subprocess.Popen[bytes] | None = None

    # paths -----------------------------------------------------------------
    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def sasl_bootstrap(self) -> str | None:
        """The SASL_PLAINTEXT listener's address, if any."""
        return None if self.sasl_port is None else f"127.0.0.1:{self.sasl_port}"

    @property
    def ssl_bootstrap(self) -> str | None:
        """The SASL_SSL listener's address, if any."""
        return None if self.ssl_port is None else f"127.0.0.1:{self.ssl_port}"

    @property
    def tls(self) -> TlsFiles:
        """The CA and client certificate files of the SASL_SSL listener."""
        return TlsFiles(self.data_dir / "tls")

    @property
    def log_path(self) -> Path:
        return self.data_dir / "logs" / "server.log"

    @property
    def stdout_path(self) -> Path:
        return self.data_dir / OUT_FILE

    @property
    def _pid_path(self) -> Path:
        return self.data_dir / PID_FILE

    @property
    def _props_path(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def _kraft_dir(self) -> Path:
        return self.data_dir / "kraft"

    # state -----------------------------------------------------------------
    def _read_pid(self) -> int | None:
        try:
            return int(self._pid_path.read_text().strip())
        except (OSError, ValueError):
            return None

    def _is_our_broker(self, pid: int) -> bool:
        if self._proc is not None and self._proc.pid == pid:
            return self._proc.poll() is None
        if not _pid_alive(pid):
            return False
        cmdline = Path(f"/proc/{pid}/cmdline")
        if cmdline.exists():
            # Guards against a recycled pid: it must be a broker on *this* data dir.
            with contextlib.suppress(OSError):
                return str(self._props_path).encode() in cmdline.read_bytes()
        return True

    def running_pid(self) -> int | None:
        pid = self._read_pid()
        return pid if pid is not None and self._is_our_broker(pid) else None

    def status(self) -> KafkaStatus:
        pid = self.running_pid()
        return KafkaStatus(
            running=pid is not None,
            pid=pid,
            bootstrap=self.bootstrap,
            data_dir=self.data_dir,
            version=self.version,
            log_path=self.log_path,
            stdout_path=self.stdout_path,
            sasl_bootstrap=self.sasl_bootstrap,
            ssl_bootstrap=self.ssl_bootstrap,
        )

    # config ----------------------------------------------------------------
    def _write_config(self) -> None:
        tls = ensure_tls(self.tls.directory) if self.ssl_port is not None else None
        sec_listeners, sec_protocols, sec_props = security_props(self.sasl_port, self.ssl_port, tls)
        listeners = [f"PLAINTEXT://127.0.0.1:{self.port}", *sec_listeners]
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            # A static single voter: no --standalone format and no dynamic quorum needed.
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": ",".join([*listeners, f"CONTROLLER://127.0.0.1:{self.controller_port}"]),
            "advertised.listeners": ",".join(listeners),
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": ",".join(
                ["CONTROLLER:PLAINTEXT", "PLAINTEXT:PLAINTEXT", *sec_protocols]
            ),
            "log.dirs": str(self._kraft_dir),
            "num.partitions": "1",
            # One broker: every internal topic must make do with one replica.
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            # Fewer internal partitions: faster first group join / first transaction.
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.num.partitions": "10",
            # No 3 s wait before the first rebalance: tests and the demo start faster.
            "group.initial.rebalance.delay.ms": "0",
            **sec_props,
        }
        if self.acls:
            props["authorizer.class.name"] = (
                "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
            )
            props["super.users"] = "User:ANONYMOUS"
        text = "".join(f"{k}={v}\n" for k, v in props.items())
        self._props_path.write_text("# written by spendstream kafka-local\n" + text)
        (self.data_dir / "logs").mkdir(exist_ok=True)
        log_file = self.log_path
        if _is_3x(self.version):
            (self.data_dir / "log4j.properties").write_text(
                "log4j.rootLogger=INFO, file\n"
                "log4j.appender.file=org.apache.log4j.RollingFileAppender\n"
                f"log4j.appender.file.File={log_file}\n"
                "log4j.appender.file.MaxFileSize=20MB\n"
                "log4j.appender.file.MaxBackupIndex=3\n"
                "log4j.appender.file.layout=org.apache.log4j.PatternLayout\n"
                "log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n\n"
            )
        else:
            (self.data_dir / "log4j2.properties").write_text(
                "status = warn\n"
                # Kafka logs its own shutdown from a JVM shutdown hook; log4j2's hook would
                # close the file first and lose those lines (the file flushes every line).
                "shutdownHook = disable\n"
                "appender.file.type = RollingFile\n"
                "appender.file.name = FILE\n"
                f"appender.file.fileName = {log_file}\n"
                f"appender.file.filePattern = {log_file}.%i\n"
                "appender.file.layout.type = PatternLayout\n"
                "appender.file.layout.pattern = [%d] %p %m (%c)%n\n"
                "appender.file.policies.type = Policies\n"
                "appender.file.policies.size.type = SizeBasedTriggeringPolicy\n"
                "appender.file.policies.size.size = 20MB\n"
                "appender.file.strategy.type = DefaultRolloverStrategy\n"
                "appender.file.strategy.max = 3\n"
                "rootLogger.level = INFO\n"
                "rootLogger.appenderRef.file.ref = FILE\n"
            )

    def _jvm_logging_opts(self) -> list[str]:
        if _is_3x(self.version):
            return [f"-Dlog4j.configuration=file:{self.data_dir / 'log4j.properties'}"]
        return [f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}"]

    def _java_cmd(self, java: str, libs: Path, main_class: str, *args: str) -> list[str]:
        return [
            java, *JVM_OPTS, *self._jvm_logging_opts(),
            f"-Dkafka.logs.dir={self.data_dir / 'logs'}",
            "-cp", f"{libs}/*", main_class, *args,
        ]  # fmt: skip

    def _format_once(self, java: str, libs: Path) -> None:
        if (self._kraft_dir / "meta.properties").exists():
            return  # restart with the same data: formatting again would refuse or wipe
        cmd = self._java_cmd(
            java, libs, STORAGE_TOOL, "format", "-t", _cluster_id(), "-c", str(self._props_path),
            *scram_format_args(self.scram_users),
        )  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
        if proc.returncode != 0:
            raise KafkaLocalError(
                f"formatting {self._kraft_dir} failed (exit {proc.returncode}):\n"
                + (proc.stdout + proc.stderr).strip()[-2000:]
            )

    def _tail(self, path: Path, n: int = 25) -> str:
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    # lifecycle -------------------------------------------------------------
    def start(self, timeout_s: float = 120.0) -> str:
        """Start the broker in the background; return its bootstrap address once it serves."""
        self._check_users()
        pid = self.running_pid()
        if pid is not None:
            if api_versions_ok("127.0.0.1", self.port):
                return self.bootstrap
            running = LocalKafka.from_dir(self.data_dir)
            raise KafkaLocalError(
                f"a broker (pid {pid}) already runs on {self.data_dir} at {running.bootstrap}, "
                f"not answering on {self.bootstrap}; stop it first"
            )
        java = _checked_java()
        libs = ensure_jars(self.version)
        ports = (self.port, self.controller_port, self.sasl_port, self.ssl_port)
        flags = ("--port", "--controller-port", "--sasl-port", "--ssl-port")
        for port, flag in zip(ports, flags, strict=True):
            if port is not None and not _port_free(port):
                raise PortInUseError(
                    f"port {port} on 127.0.0.1 is in use; choose another with {flag} N"
                )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._kraft_dir.mkdir(exist_ok=True)
        self._write_config()
        self._format_once(java, libs)
        self._write_state()

        cmd = self._java_cmd(java, libs, BROKER_MAIN, str(self._props_path))
        with open(self.stdout_path, "ab") as out:
            # New session: the broker outlives the CLI and ignores the terminal's Ctrl-C.
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                start_new_session=True,
                preexec_fn=_die_with_parent if self.stop_with_parent else None,
            )
        self._pid_path.write_text(f"{self._proc.pid}\n")

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._pid_path.unlink(missing_ok=True)
                raise KafkaLocalError(
                    f"Kafka exited with code {self._proc.returncode} while starting; "
                    f"{self.stdout_path}:\n{self._tail(self.stdout_path)}\n"
                    f"{self.log_path}:\n{self._tail(self.log_path)}"
                )
            if api_versions_ok("127.0.0.1", self.port, timeout_s=2.0):
                return self.bootstrap
            time.sleep(0.25)
        self.stop(timeout_s=15)
        raise KafkaLocalError(
            f"Kafka did not answer on {self.bootstrap} within {timeout_s:.0f}s; "
            f"{self.log_path}:\n{self._tail(self.log_path)}"
        )

    def stop(self, timeout_s: float = 60.0) -> bool:
        """SIGTERM the broker and wait for its clean shutdown (SIGKILL after ``timeout_s``).

        Returns False if nothing was running.
        """
        pid = self.running_pid()
        if pid is None:
            self._pid_path.unlink(missing_ok=True)
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not self._wait_gone(pid, timeout_s):
            log.warning("Kafka pid %d ignored SIGTERM for %.0fs; killing it", pid, timeout_s)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            if not self._wait_gone(pid, 15.0):
                raise KafkaLocalError(f"Kafka pid {pid} survived SIGKILL")
        self._pid_path.unlink(missing_ok=True)
        return True

    def _wait_gone(self, pid: int, timeout_s: float) -> bool:
        if self._proc is not None and self._proc.pid == pid:
            try:
                self._proc.wait(timeout=timeout_s)  # also reaps it: no zombie left behind
            except subprocess.TimeoutExpired:
                return False
            return True
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not _pid_alive(pid):
                return True
            time.sleep(0.1)
        return not _pid_alive(pid)

    def _check_users(self) -> None:
        # Users are written when the data dir is formatted (formatting again would refuse or
        # wipe), so a formatted dir can only have those it was formatted with.
        if not (self._kraft_dir / "meta.properties").exists():
            return
        known = set(self._read_state().get("scram_users", []))
        missing = sorted(set(self.scram_users) - known)
        if missing:
            raise KafkaLocalError(
                f"{self.data_dir} was formatted without SCRAM user(s) {', '.join(missing)}; "
                "users are added when a data dir is first formatted: use a new --dir"
            )

    def _read_state(self) -> dict[str, Any]:
        try:
            state = json.loads((self.data_dir / STATE_FILE).read_text())
        except (OSError, ValueError):
            return {}
        return state if isinstance(state, dict) else {}

    def _write_state(self) -> None:
        users = set(self._read_state().get("scram_users", [])) | set(self.scram_users)
        state = {
            "version": self.version,
            "port": self.port,
            "controller_port": self.controller_port,
            "sasl_port": self.sasl_port,
            "ssl_port": self.ssl_port,
            "scram_users": sorted(users),  # names only: passwords are the caller's
        }
        tmp = self.data_dir / f".{STATE_FILE}.tmp"
        tmp.write_text(json.dumps(state) + "\n")
        os.replace(tmp, self.data_dir / STATE_FILE)

    @classmethod
    def from_dir(cls, data_dir: Path) -> LocalKafka:
        """The broker last started in ``data_dir`` (its ports and version), or the defaults."""
        data_dir = Path(data_dir).expanduser()
        try:
            state = json.loads((data_dir / STATE_FILE).read_text())
            return cls(
                data_dir,
                port=int(state["port"]),
                controller_port=int(state["controller_port"]),
                version=str(state["version"]),
                sasl_port=_opt_int(state.get("sasl_port")),
                ssl_port=_opt_int(state.get("ssl_port")),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return cls(data_dir)


def _opt_int(value: object) -> int | None:
    return None if value is None else int(value)  # type: ignore[call-overload]


# --------------------------------------------------------------------------- CLI


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``spendstream kafka-local`` (also usable by the spendstream dispatcher)."""
    parser.add_argument("action", choices=["start", "stop", "status"])
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help=f"data directory (default: {default_data_dir()})",
    )
    parser.add_argument("--port", type=_port_arg, default=None, help="client port (default: 9092)")
    parser.add_argument(
        "--controller-port",
        type=_port_arg,
        default=None,
        help="KRaft controller port (default: client port + 1)",
    )
    parser.add_argument(
        "--kafka-version", default=None, help=f"Kafka version to start (default {DEFAULT_VERSION})"
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait")
    parser.add_argument(
        "--sasl-port",
        type=_port_arg,
        default=None,
        help="also listen for SASL_PLAINTEXT (SCRAM-SHA-256/512) clients on this port",
    )
    parser.add_argument(
        "--ssl-port",
        type=_port_arg,
        default=None,
        help="also listen for SASL_SSL clients on this port (a throwaway CA in <dir>/tls)",
    )
    parser.add_argument(
        "--sasl-user", default="spendstream", help="SCRAM user to create (default: spendstream)"
    )
    parser.add_argument(
        "--sasl-password-env",
        default="SPENDSTREAM_KAFKA_PASSWORD",
        metavar="VAR",
        help="environment variable holding that user's password "
        "(default: SPENDSTREAM_KAFKA_PASSWORD; never on the command line)",
    )


def _port_arg(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range 1-65535: {port}")
    return port


def client_hint(broker: LocalKafka, user: str, password_env: str) -> str:
    """The ``[kafka]`` section a client needs for the broker's SASL listeners, as TOML."""
    out = []
    for address, protocol in (
        (broker.sasl_bootstrap, "SASL_PLAINTEXT"),
        (broker.ssl_bootstrap, "SASL_SSL"),
    ):
        if address is None:
            continue
        lines = [
            f"# {protocol} listener of this broker:",
            "[kafka]",
            f'bootstrap_servers = "{address}"',
            f'security_protocol = "{protocol}"',
            'sasl_mechanism = "SCRAM-SHA-512"',
            f'sasl_username = "{user}"',
            f'sasl_password_env = "{password_env}"',
        ]
        if protocol == "SASL_SSL":
            lines.append(f'ssl_ca_location = "{broker.tls.ca}"')
        out.append("\n".join(lines))
    return "\n\n".join(out)


def run(args: argparse.Namespace) -> int:
    """Carry out a parsed ``kafka-local`` command. Status exits 1 when nothing runs."""
    data_dir: Path = args.dir if args.dir is not None else default_data_dir()
    broker = LocalKafka.from_dir(data_dir)
    if args.action == "start":
        if args.port is not None:
            broker.port = args.port
            broker.controller_port = args.controller_port or args.port + 1
        elif args.controller_port is not None:
            broker.controller_port = args.controller_port
        if args.kafka_version:
            broker.version = args.kafka_version
        if args.sasl_port is not None:
            broker.sasl_port = args.sasl_port
        if args.ssl_port is not None:
            broker.ssl_port = args.ssl_port
        if broker.sasl_port is not None or broker.ssl_port is not None:
            password = os.environ.get(args.sasl_password_env, "")
            if password:
                broker.scram_users = {args.sasl_user: password}
            elif not (broker.data_dir / "kraft" / "meta.properties").exists():
                print(
                    f"spendstream kafka-local: set ${args.sasl_password_env} to the password of "
                    f"SCRAM user {args.sasl_user!r} (--sasl-password-env names another variable)",
                    file=sys.stderr,
                )
                return 2
        reused = (broker.data_dir / "kraft" / "meta.properties").exists()
        bootstrap = broker.start(timeout_s=args.timeout)
        print(bootstrap)  # stdout holds the address alone, for scripts: B=$(... start)
        notes = _start_notes(broker, explicit_dir=args.dir is not None, reused=reused)
        print(notes, file=sys.stderr)
        hint = client_hint(broker, args.sasl_user, args.sasl_password_env)
        if hint:  # last, so a script can take the SASL sections from its first line on
            print(hint, file=sys.stderr)
        return 0
    if args.action == "stop":
        if broker.stop(timeout_s=args.timeout):
            print(f"stopped Kafka on {broker.bootstrap} ({broker.data_dir})")
        else:
            print(f"no Kafka running on {broker.data_dir}")
        return 0
    status = broker.status()
    print(status.describe())
    return 0 if status.running else 1


def _start_notes(broker: LocalKafka, *, explicit_dir: bool, reused: bool = False) -> str:
    where = f" --dir {broker.data_dir}" if explicit_dir else ""
    # A broker keeps its topics as any Kafka does; a new workdir's warehouse has no positions
    # yet, so `run` there reads every record earlier trials produced. Said, not surprising.
    kept = (
        f"\n  its topics keep what earlier runs produced there (a new warehouse lands those "
        f"records too); for an empty broker: stop it and remove {broker.data_dir}, or start one "
        f"with --dir elsewhere"
        if reused
        else ""
    )
    found = (
        "spendstream run, alerts, breakers and leases serve use it by themselves while it runs "
        "(when no configuration names a broker)"
        if not explicit_dir
        else "point spendstream at it"
    )
    return (
        f"Kafka {broker.version} is running at {broker.bootstrap} (data in {broker.data_dir}).\n"
        f"  {found}; in a spendstream.toml:\n"
        f"    [kafka]\n"
        f'    bootstrap_servers = "{broker.bootstrap}"\n'
        f"  or: --bootstrap-servers {broker.bootstrap}\n"
        f"  stop it:  spendstream kafka-local stop{where}{kept}"
    )


def running_bootstrap(data_dir: Path | None = None) -> str | None:
    """The address of the kafka-local broker running on ``data_dir`` (default dir), or None.

    Reads the state ``start`` records there (port, pid) and checks the broker answers.
    """
    broker = LocalKafka.from_dir(data_dir if data_dir is not None else default_data_dir())
    if broker.running_pid() is None:
        return None
    return broker.bootstrap if api_versions_ok("127.0.0.1", broker.port) else None


def main(argv: Sequence[str] | None = None) -> int:
    """``spendstream kafka-local start|stop|status [--dir DIR] [--port N]``."""
    parser = argparse.ArgumentParser(
        prog="spendstream kafka-local",
        description="Start, stop or inspect a real single-node Kafka on this machine (no Docker).",
    )
    configure(parser)
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as exc:  # argparse reports usage errors by exiting 2
        return int(exc.code) if isinstance(exc.code, int) else 2
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    try:
        return run(args)
    except ToolMissingError as exc:
        print(f"spendstream kafka-local: {exc}", file=sys.stderr)
        return 2
    except KafkaLocalError as exc:
        print(f"spendstream kafka-local: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
