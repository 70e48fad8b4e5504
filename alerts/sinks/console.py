"""The console / log sink: one line per notification, for a terminal or a log collector."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import Literal, TextIO

from spendstream.config import ConsoleSinkConfig

from ..delivery import DeliveryResult, HttpDeliverer
from ..notification import Notification
from ._text import amount, summary

__all__ = ["ConsoleSink", "console_line"]

log = logging.getLogger("spendstream.alerts.console")


def console_line(n: Notification) -> str:
    a = n.alert
    verb = "RESOLVED" if n.action == "resolve" else a.severity.upper()
    return (
        f"[{verb}] {summary(n, 500)} | {amount(n)} | since {a.ts.isoformat()} "
        f"| alerts={n.count} key={n.key}"
    )


@dataclass(slots=True)
class ConsoleSink:
    name: str
    stream: Literal["stdout", "stderr", "log"] = "stderr"
    max_per_scope: int = 10
    rate_window_s: float = 3600.0
    out: TextIO | None = None  # tests pass a buffer

    @classmethod
    def from_config(cls, cfg: ConsoleSinkConfig) -> ConsoleSink:
        return cls(
            name=cfg.name,
            stream=cfg.stream,
            max_per_scope=cfg.max_per_scope,
            rate_window_s=cfg.rate_window_s,
        )

    def deliver(self, notification: Notification, deliverer: HttpDeliverer) -> DeliveryResult:
        line = console_line(notification)
        if self.stream == "log" and self.out is None:
            level = logging.INFO if notification.action == "resolve" else logging.WARNING
            log.log(level, "%s", line)
        else:
            out = self.out or (sys.stdout if self.stream == "stdout" else sys.stderr)
            out.write(line + "\n")
            out.flush()
        return DeliveryResult("delivered", 1)
