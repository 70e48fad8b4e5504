"""One ``spendstream run`` worker: the usage loop and the scope loop (a thread each), and the
HTTP server (``spendstream.runtime.http``) with its Kafka backend.

Workers are interchangeable: each joins the two consumer groups (``<app_id>`` on the usage
topic, ``<app_id>-scopes`` on the partials topic), and everything a partition needs to
continue elsewhere is in the warehouse (its writer's positions and state), so N workers
with the same configuration on 1..N machines form one pipeline.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from spendstream.config import Config
from spendstream.errors import ConfigError
from spendstream.kafka.settings import KafkaSettings
from spendstream.runtime.http.kafka_backend import KafkaBackend
from spendstream.runtime.http.metrics import WorkerMetrics
from spendstream.runtime.http.server import ServerThread
from spendstream.runtime.kafka.scope_loop import ScopeLoop
from spendstream.runtime.kafka.topology import TopicNames, topic_names
from spendstream.runtime.kafka.usage_loop import UsageLoop

__all__ = ["Loops", "Worker"]

log = logging.getLogger(__name__)

Loops = Literal["all", "usage", "scopes"]
_RESTART_S = 2.0


@dataclass(frozen=True, slots=True)
class HttpSettings:
    host: str
    port: int
    token: str | None


class Worker:
    """``start()`` the loops and the server; ``stop()`` ends them after their current batch."""

    def __init__(
        self,
        config: Config,
        workdir: Path,
        settings: KafkaSettings,
        counts: dict[str, int],
        http: HttpSettings | None,
        loops: Loops = "all",
    ) -> None:
        self.config = config
        self.workdir = workdir
        self.settings = settings
        self.names: TopicNames = topic_names(config.kafka)
        usage = counts.get(self.names.usage, config.kafka.usage_partitions)
        partials = counts.get(self.names.partials, usage)
        self.stop_event = threading.Event()
        self.metrics = WorkerMetrics(self.lag, config.http.metrics_label_values)
        self.usage: UsageLoop | None = None
        self.scopes: ScopeLoop | None = None
        if loops in ("all", "usage"):
            self.usage = UsageLoop(
                config, workdir, settings, self.names, partials, self.metrics, self.stop_event
            )
        if loops in ("all", "scopes"):
            self.scopes = ScopeLoop(
                config, workdir, settings, self.names, usage, self.metrics, self.stop_event
            )
        self.http = http
        self.backend: KafkaBackend | None = None
        self.server: ServerThread | None = None
        self._threads: list[threading.Thread] = []

    def assigned(self) -> list[str]:
        parts = []
        for loop in (self.usage, self.scopes):
            if loop is not None:
                parts += [f"{t}/{p}" for t, p in loop.assigned()]
        return sorted(parts)

    def lag(self) -> list[tuple[str, int, int]]:
        return [x for loop in (self.usage, self.scopes) if loop is not None for x in loop.lag()]

    def start(self) -> Worker:
        from spendstream.warehouse import Warehouse

        # spendstream.duckdb: the views a plain DuckDB session (and `spendstream sql`) reads.
        with Warehouse(self.workdir, writer="views", config=self.config.warehouse) as wh:
            wh.ensure_views()
            # Read every table's metadata once: credentials the store refuses (a wrong S3
            # secret) end the start here, in one line naming the setting, instead of in
            # loops that take partitions they then fail to land, again and again.
            wh.check_readable()
        if self.http is not None:
            self.backend = KafkaBackend(
                self.config,
                settings=self.settings,
                metrics=self.metrics,
                workdir=self.workdir,
                assigned=self.assigned,
            ).start()
            try:
                self.server = ServerThread(
                    self.backend,
                    self.config,
                    self.http.token,
                    host=self.http.host,
                    port=self.http.port,
                ).start()
            except OSError as exc:
                self.backend.close()
                raise ConfigError(
                    f"cannot listen for HTTP on {self.http.host}:{self.http.port}: "
                    f"{exc.strerror or exc}. Another `spendstream run` on this machine? Give "
                    "this one --http-port N ([http] port; 0 picks a free port)"
                ) from None
        for name, loop in (("usage", self.usage), ("scopes", self.scopes)):
            if loop is not None:
                t = threading.Thread(
                    target=self._keep_running, args=(name, loop.run), name=f"spendstream-{name}"
                )
                t.start()
                self._threads.append(t)
        return self

    def _keep_running(self, name: str, run: Callable[[], None]) -> None:
        """A loop that fails outside any batch (the broker unreachable when it starts, a
        bug) starts over after a pause: no input, and no outage, ends a worker."""
        while not self.stop_event.is_set():
            try:
                run()
            except Exception:
                log.exception("%s loop failed; starting it again", name)
                self.stop_event.wait(_RESTART_S)

    def alive(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def stop(self) -> None:
        self.stop_event.set()
        for t in self._threads:
            t.join()
        if self.server is not None:
            self.server.close()
        if self.backend is not None:
            self.backend.close()
