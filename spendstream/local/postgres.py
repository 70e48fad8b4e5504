"""A throwaway PostgreSQL cluster under a data dir, from Debian's ``postgresql-15`` binaries.

``initdb`` refuses to run as root, and CI runs as root: as root the cluster runs as the
Debian package's ``postgres`` user (or a ``spendstream-pg`` system user the code creates),
and the data dir is handed to that user. Only 127.0.0.1 is listened on; the role has a
password (scram-sha-256), as a real cluster would.

Layout of a data dir::

    pgdata/ (the cluster)  postgres.log  postgres.pid  local-postgres.json  password
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from spendstream.errors import LocalServiceError, ToolMissingError
from spendstream.local.kafka import find_free_ports
from spendstream.local.process import ServiceProcess

__all__ = ["LocalPostgres", "PostgresStatus", "find_bindir"]

USER = "spendstream"
DATABASE = "spendstream"
STATE_FILE = "local-postgres.json"
_SERVICE_USERS = ("postgres", "spendstream-pg")


def find_bindir() -> Path:
    """The newest ``/usr/lib/postgresql/<v>/bin`` holding initdb (or ``pg_config --bindir``)."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1].parent
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        bindir = Path(out.stdout.strip())
        if (bindir / "initdb").exists():
            return bindir
    raise ToolMissingError(
        "PostgreSQL server binaries not found (initdb); install them with "
        "`apt-get install postgresql-15` (scripts/install-system-deps does)"
    )


def _service_user() -> pwd.struct_passwd | None:
    """None when not root; else the unprivileged user the cluster runs as."""
    if os.geteuid() != 0:
        return None
    for name in _SERVICE_USERS:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
         _SERVICE_USERS[-1]],
        check=True, capture_output=True,
    )  # fmt: skip
    return pwd.getpwnam(_SERVICE_USERS[-1])


@dataclass(frozen=True, slots=True)
class PostgresStatus:
    running: bool
    pid: int | None
    port: int
    data_dir: Path

    def describe(self) -> str:
        if self.running:
            return f"PostgreSQL running (pid {self.pid}) on 127.0.0.1:{self.port}, data {self.data_dir}"
        return f"PostgreSQL not running (data {self.data_dir})"


class LocalPostgres(ServiceProcess):
    """One ``postgres`` server process whose cluster lives in ``data_dir/pgdata``."""

    name = "postgres"
    pid_file = "postgres.pid"
    state_file = STATE_FILE
    log_file = "postgres.log"
    stop_signal = signal.SIGINT  # "fast" shutdown: roll back clients, checkpoint, exit

    def __init__(self, data_dir: Path, port: int | None = None, stop_with_parent: bool = False):
        super().__init__(data_dir, port or find_free_ports(1)[0], stop_with_parent)

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def password(self) -> str:
        path = self.data_dir / "password"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(18))
            path.chmod(0o644)
        return path.read_text().strip()

    @property
    def uri(self) -> str:
        """The SQLAlchemy URL, without the password (give it through the environment)."""
        return f"postgresql+psycopg2://{USER}@127.0.0.1:{self.port}/{DATABASE}"

    def _as_user(self) -> dict[str, object]:
        user = _service_user()
        if user is None:
            return {}
        return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}

    def _hand_over(self) -> None:
        user = _service_user()
        if user is None:
            return
        # The service user must reach the data dir: hand it the whole tree and let it
        # traverse the parents it needs (a data dir under a root-only path cannot work).
        for path in [self.data_dir, *self.data_dir.rglob("*")]:
            os.chown(path, user.pw_uid, user.pw_gid)
        parent = self.data_dir.parent
        probe = subprocess.run(
            ["test", "-x", str(parent)],
            **self._as_user(),  # type: ignore[call-overload]
        )
        if probe.returncode != 0:
            raise LocalServiceError(
                f"PostgreSQL runs as {user.pw_name}, which cannot enter {parent}; "
                "choose a data dir under a directory it can traverse (e.g. /var/tmp)"
            )

    def _initdb(self) -> None:
        if (self.pgdata / "PG_VERSION").exists():
            return
        bindir = find_bindir()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        pwfile = self.data_dir / "pwfile"
        pwfile.write_text(self.password + "\n")
        self._hand_over()
        proc = subprocess.run(
            [str(bindir / "initdb"), "-D", str(self.pgdata), "-U", USER, "-E", "UTF8",
             "--no-locale", "--auth-local=trust", "--auth-host=scram-sha-256",
             f"--pwfile={pwfile}"],
            capture_output=True, text=True, **self._as_user(),  # type: ignore[call-overload]
        )  # fmt: skip
        pwfile.unlink(missing_ok=True)
        if proc.returncode != 0:
            raise LocalServiceError(f"initdb failed:\n{(proc.stdout + proc.stderr)[-2000:]}")

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0):
                return True
        except OSError:
            return False

    def status(self) -> PostgresStatus:
        pid = self.running_pid()
        return PostgresStatus(pid is not None and self._answers(), pid, self.port, self.data_dir)

    def start(self, timeout_s: float = 60.0) -> str:
        """Start (initdb first if needed), create the database; returns ``uri``."""
        if self.running_pid() is not None:
            return self.uri
        self._initdb()
        bindir = find_bindir()
        cmd = [str(bindir / "postgres"), "-D", str(self.pgdata), "-p", str(self.port),
               "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="]  # fmt: skip
        if self.stop_with_parent:
            cmd += ["-c", "fsync=off"]  # a test cluster: durability across power loss is moot
        self._spawn(cmd, **self._as_user())
        self._wait_ready(self._ready, timeout_s)
        self._create_database()
        return self.uri

    def _ready(self) -> bool:
        if not self._answers():
            return False
        try:
            import psycopg2

            psycopg2.connect(
                host="127.0.0.1", port=self.port, user=USER, password=self.password,
                dbname="postgres", connect_timeout=2,
            ).close()  # fmt: skip
        except Exception:
            return False
        return True

    def _create_database(self) -> None:
        import psycopg2

        con = psycopg2.connect(
            host="127.0.0.1", port=self.port, user=USER, password=self.password, dbname="postgres"
        )
        try:
            con.autocommit = True
            with con.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
                if cur.fetchone() is None:
                    cur.execute(f"CREATE DATABASE {DATABASE}")
        finally:
            con.close()
