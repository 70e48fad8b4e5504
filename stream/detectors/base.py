"""What every detector shares: the finding it reports and how an alert is named.

A detector reads a batch as columns (``stream.columns.FactColumns``), keeps typed state
between batches, and reports ``Finding``s: an alert at the position of the fact that
caused it. The engine sorts findings by (position, detector, order), drops alerts whose
``dedup_key`` it already emitted, and feeds the rest to the breakers in that order, so the
result is the same as judging the facts one at a time.

Detectors never read the wall clock and never do I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from spendstream.money import held_amount, money_error
from spendstream.records import Alert, AlertKind, Severity, stable_id
from spendstream.stream.columns import Pos

__all__ = [
    "ANOMALY",
    "BUDGETS",
    "CACHE",
    "RATE",
    "RETRIES",
    "SESSIONS",
    "UNPRICED",
    "Finding",
    "make_alert",
]

# The fixed order detectors report in at one fact (part of determinism).
RATE, SESSIONS, RETRIES, ANOMALY, BUDGETS, CACHE, UNPRICED = range(7)


@dataclass(frozen=True, slots=True)
class Finding:
    """An alert raised at ``pos``; ``detector`` and ``order`` order alerts of one fact."""

    pos: Pos
    detector: int
    order: int
    alert: Alert
    forwarded: bool = False  # emitted by another engine; only its breaker is judged here

    @property
    def key(self) -> tuple[Pos, int, int]:
        return self.pos, self.detector, self.order


def make_alert(
    kind: AlertKind,
    scope: str,
    severity: Severity,
    ts: datetime,
    value: Decimal,
    threshold: Decimal,
    message: str,
    condition: Iterable[str],
    details: dict[str, str] | None = None,
) -> Alert:
    """An alert whose ids depend only on what the condition is, never on when it was seen.

    ``condition`` names the window, period or session the rule is judged over, so the
    embedded runtime and the Kafka runtime produce identical ``dedup_key``/``alert_id``.
    """
    dedup_key = "|".join((kind, scope, *condition))
    details = dict(details or {})
    # An amount DECIMAL(38,18) cannot hold (past its range: an absurd rate; past 18 places:
    # a budget of $1e11 times a level of 1/3) stopped every worker at each restart,
    # unwritable to the alerts table: the alert holds the nearest amount that fits, and says
    # the exact one in its details when it is past the range.
    value, threshold = Decimal(value), Decimal(threshold)  # a count's may come as an int
    held_value, held_threshold = held_amount(value), held_amount(threshold)
    if money_error(value) is not None:
        details["value_usd"] = str(value)
    if money_error(threshold) is not None:
        details["threshold_usd"] = str(threshold)
    return Alert(
        alert_id=stable_id("alert", dedup_key),
        kind=kind,
        scope=scope,
        severity=severity,
        ts=ts,
        value=held_value,
        threshold=held_threshold,
        message=message,
        dedup_key=dedup_key,
        details=details,
    )
