"""Where a run keeps its warehouse and state: --workdir, else $SPENDSTREAM_HOME, else ./spendstream-data.

One embedded writer per workdir: ``spendstream ingest`` and ``demo`` hold ``WorkdirLock``
(an exclusive ``flock`` on ``<workdir>/writer.lock``) for their whole run, because two of
them would share the detectors' state and each claim the other's facts. A second one
fails at once with ``WorkdirBusy`` (exit code 3) naming the workdir and the holder's pid.
The kernel drops the lock when its holder exits, however it exits (kill -9 included).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from spendstream.errors import WorkdirBusy

__all__ = ["LOCK_FILE", "WorkdirLock", "resolve_workdir", "write_atomically"]

ENV_HOME = "SPENDSTREAM_HOME"
DEFAULT_WORKDIR = "spendstream-data"
LOCK_FILE = "writer.lock"


def resolve_workdir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Return the work directory (not created), by the contract's precedence."""
    if explicit:
        return Path(explicit).expanduser().resolve()
    env = os.environ.get(ENV_HOME)
    if env:
        return Path(env).expanduser().resolve()
    return (Path.cwd() / DEFAULT_WORKDIR).resolve()


class WorkdirLock:
    """Hold ``<workdir>/writer.lock`` for a block: ``with WorkdirLock(workdir, "ingest"):``."""

    def __init__(self, workdir: Path, command: str) -> None:
        self.workdir = Path(workdir)
        self.command = command
        self.path = self.workdir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").split()
            os.close(fd)
            pid = holder[0] if holder else "unknown"
            what = f"spendstream {holder[1]}" if len(holder) > 1 else "another writer"
            raise WorkdirBusy(
                f"workdir {self.workdir} is in use by {what} (pid {pid}); one ingest or demo "
                "may write a workdir at a time: wait for it to end, or pass another --workdir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {self.command}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> WorkdirLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` by a rename: a reader of a workdir's file (another
    process polling it) sees the old whole file or the new, never half of one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
