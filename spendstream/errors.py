"""The project's exceptions, one tree.

    SpendstreamError
     ├── ConfigError       bad configuration or arguments (CLI exit 2)
     ├── ToolMissingError  a required external tool (java, mvn, ...) is absent (CLI exit 2)
     ├── KafkaLocalError   the local broker could not be started or stopped
     ├── KafkaClientError  a Kafka client call failed (spendstream.kafka; .code, .retriable)
     │    ├── KafkaUnavailable  no broker answered in time (down, wrong address, network)
     │    └── KafkaAuthError    the broker refused us: SASL credentials, TLS, or an ACL
     ├── LocalServiceError a local service (PostgreSQL, the S3 server) could not be run
     ├── WarehouseError    the warehouse could not be opened, read or committed to
     │    ├── CommitConflict    a commit kept losing the race to other writers
     │    ├── WriterFenced      another instance of the same writer committed meanwhile
     │    └── LegacyWarehouse   a workdir in the old layout: run `spendstream warehouse migrate`
     ├── WorkdirBusy       another ingest/demo holds the workdir's writer lock (CLI exit 3)
     └── BreakerOpen       a circuit breaker refuses the call (raised by Meter.guard)
          ├── BudgetExhausted   a hard budget cannot lease the call's worst case (Meter.reserve)
          └── LeaseUnavailable  the lease service did not answer in time (Meter.reserve)

Bad *input records* are not exceptions: they become dead letters with a reason.
"""

from __future__ import annotations

from decimal import Decimal

from spendstream.wording import exact_usd

__all__ = [
    "BreakerOpen",
    "BudgetExhausted",
    "CommitConflict",
    "ConfigError",
    "KafkaAuthError",
    "KafkaClientError",
    "KafkaLocalError",
    "KafkaUnavailable",
    "LeaseUnavailable",
    "LegacyWarehouse",
    "LocalServiceError",
    "SpendstreamError",
    "ToolMissingError",
    "WarehouseError",
    "WorkdirBusy",
    "WriterFenced",
]


class SpendstreamError(Exception):
    """Base class of every error spendstream raises on purpose."""


class ConfigError(SpendstreamError):
    """Configuration or argument error; the message names the key at fault."""


class ToolMissingError(SpendstreamError):
    """An external tool the command needs is not installed."""


class KafkaLocalError(SpendstreamError):
    """The local single-node Kafka could not be prepared, started or stopped."""


class KafkaClientError(SpendstreamError):
    """A Kafka client operation failed; ``code`` is librdkafka's error name (e.g.
    ``_MSG_TIMED_OUT``), ``retriable`` whether trying again later may succeed, ``abortable``
    whether a failed transaction only needs ``abort_transaction`` before it is redone."""

    def __init__(
        self, message: str, *, code: str = "", retriable: bool = False, abortable: bool = False
    ) -> None:
        super().__init__(message)
        self.code = code
        self.retriable = retriable
        self.abortable = abortable


class KafkaUnavailable(KafkaClientError):
    """No broker answered in time: it is down, the address is wrong, or the network is."""


class KafkaAuthError(KafkaClientError):
    """The broker refused this client: wrong SASL credentials or mechanism, a TLS problem
    (untrusted certificate, bad client key), or an ACL denying the topic or group."""


class LocalServiceError(SpendstreamError):
    """A local service (PostgreSQL, the S3 server) could not be prepared, started or stopped."""


class WarehouseError(SpendstreamError):
    """The warehouse could not be opened, read or committed to."""


class CommitConflict(WarehouseError):
    """A commit lost the race to other writers more times than ``commit_retries`` allows."""


class WriterFenced(WarehouseError):
    """Another instance of this writer committed since this one resumed (a zombie is stopped)."""


class LegacyWarehouse(WarehouseError):
    """The workdir holds the old (pre-Iceberg) layout; ``spendstream warehouse migrate`` converts it."""


class BreakerOpen(SpendstreamError):
    """A circuit breaker covering this call is open: the call must not be made."""

    def __init__(self, scope: str, reason: str) -> None:
        super().__init__(f"circuit breaker open for {scope}: {reason}")
        self.scope = scope
        self.reason = reason


class WorkdirBusy(SpendstreamError):
    """Another embedded writer (``ingest``, ``demo``) holds the workdir; the message names its pid."""

    exit_code = 3


def _duration(seconds: float) -> str:
    """65667 s as "18 h 14 min": a wait people read at a glance (seconds below a minute)."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    hours, minutes = divmod(whole // 60, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"


class BudgetExhausted(BreakerOpen):
    """A hard budget cannot lease this call's worst case: the call must not be made.

    ``left_usd`` is what the budget could still grant (not held by any lease), ``held_usd``
    what open leases hold unused and may return, ``retry_after_s`` when the next of those
    ends (with none, when the budget period renews).
    """

    def __init__(
        self,
        scope: str,
        budget: str,
        left_usd: Decimal,
        *,
        need_usd: Decimal,
        held_usd: Decimal = Decimal(0),
        retry_after_s: float | None = None,
    ) -> None:
        reason = (
            f"hard budget {budget} has {exact_usd(left_usd)} left to lease, "
            f"the call needs {exact_usd(need_usd)}"
        )
        if held_usd > 0:
            reason += f" ({exact_usd(held_usd)} more is held by open leases"
            if retry_after_s is not None:
                reason += f"; the next one ends in {retry_after_s:.1f} s"
            reason += ")"
        elif retry_after_s is not None:
            reason += f" (the budget period renews in {_duration(retry_after_s)})"
        super().__init__(scope, reason)
        self.args = (f"budget exhausted for {scope}: {reason}",)
        self.budget = budget
        self.left_usd = left_usd
        self.need_usd = need_usd
        self.held_usd = held_usd
        self.retry_after_s = retry_after_s


class LeaseUnavailable(BreakerOpen):
    """The lease service did not answer in time: a hard-capped call is refused, not risked."""

    def __init__(self, scope: str, reason: str) -> None:
        super().__init__(scope, reason)
        self.args = (f"no budget lease for {scope}: {reason}",)
