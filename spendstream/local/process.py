"""What the local servers (PostgreSQL, s3proxy) share: one child process, its pid file, the
port it listens on, starting, waiting until it answers and stopping."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from spendstream.errors import LocalServiceError
from spendstream.local.kafka import _die_with_parent, _pid_alive

__all__ = ["ServiceProcess"]

S = TypeVar("S", bound="ServiceProcess")


class ServiceProcess:
    """One server process whose state lives in ``data_dir`` (pid file, state file, log)."""

    name: ClassVar[str]
    pid_file: ClassVar[str]
    state_file: ClassVar[str]
    log_file: ClassVar[str]
    stop_signal: ClassVar[int] = signal.SIGTERM

    def __init__(self, data_dir: Path, port: int, stop_with_parent: bool) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.stop_with_parent = stop_with_parent
        self._proc: subprocess.Popen[bytes] | None = None

    def running_pid(self) -> int | None:
        try:
            pid = int((self.data_dir / self.pid_file).read_text())
        except (OSError, ValueError):
            return None
        return pid if _pid_alive(pid) else None

    def _spawn(self, cmd: list[str], **kwargs: Any) -> None:
        """Start ``cmd`` with its output in the log file; it dies with us if ``stop_with_parent``."""
        log = open(self.data_dir / self.log_file, "ab")  # noqa: SIM115 (the child keeps it)
        self._proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent if self.stop_with_parent else None,
            start_new_session=not self.stop_with_parent,
            **kwargs,
        )
        log.close()
        (self.data_dir / self.pid_file).write_text(str(self._proc.pid))

    def _wait_ready(self, ready: Callable[[], bool], timeout_s: float) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + timeout_s
        while not ready():
            if self._proc.poll() is not None:
                raise LocalServiceError(
                    f"{self.name} exited ({self._proc.returncode}); "
                    f"{self.data_dir / self.log_file}:\n"
                    + (self.data_dir / self.log_file).read_text(errors="replace")[-2000:]
                )
            if time.monotonic() > deadline:
                self.stop()
                raise LocalServiceError(f"{self.name} did not answer within {timeout_s:.0f}s")
            time.sleep(0.2)
        (self.data_dir / self.state_file).write_text(json.dumps({"port": self.port}))

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Ask the server to stop (SIGKILL after ``timeout_s``); True if one was running."""
        pid = self.running_pid()
        if pid is None:
            return False
        os.kill(pid, self.stop_signal)
        deadline = time.monotonic() + timeout_s
        while _pid_alive(pid):
            if self._proc is not None:
                self._proc.poll()
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                break
            time.sleep(0.1)
        if self._proc is not None:
            self._proc.wait(timeout=10)
        (self.data_dir / self.pid_file).unlink(missing_ok=True)
        return True

    @classmethod
    def from_dir(cls: type[S], data_dir: Path) -> S:
        """The server whose state file is in ``data_dir`` (to stop or inspect it)."""
        state = json.loads((Path(data_dir) / cls.state_file).read_text())
        return cls(Path(data_dir), port=int(state["port"]))  # type: ignore[call-arg]
