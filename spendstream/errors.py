"""The project's exceptions, one tree.

    SpendstreamError
     ├── ConfigError       bad configuration or arguments (CLI exit 2)
     ├── ToolMissingError  a required external tool (java, mvn, ...) is absent (CLI exit 2)
     ├── KafkaLocalError   the local broker could not be started or stopped
     ├── WorkdirBusy       another ingest/demo holds the workdir's writer lock (CLI exit 3)
     └── BreakerOpen       a circuit breaker refuses the call (raised by Meter.guard)

Bad *input records* are not exceptions: they become dead letters with a reason.
"""

from __future__ import annotations

__all__ = [
    "BreakerOpen",
    "ConfigError",
    "KafkaLocalError",
    "SpendstreamError",
    "ToolMissingError",
    "WorkdirBusy",
]


class SpendstreamError(Exception):
    """Base class of every error spendstream raises on purpose."""


class ConfigError(SpendstreamError):
    """Configuration or argument error; the message names the key at fault."""


class ToolMissingError(SpendstreamError):
    """An external tool the command needs is not installed."""


class KafkaLocalError(SpendstreamError):
    """The local single-node Kafka could not be prepared, started or stopped."""


class BreakerOpen(SpendstreamError):
    """A circuit breaker covering this call is open: the call must not be made."""

    def __init__(self, scope: str, reason: str) -> None:
        super().__init__(f"circuit breaker open for {scope}: {reason}")
        self.scope = scope
        self.reason = reason


class WorkdirBusy(SpendstreamError):
    """Another embedded writer (``ingest``, ``demo``) holds the workdir; the message names its pid."""

    exit_code = 3
