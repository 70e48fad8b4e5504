"""The one place that knows Kafka topic names and how records are keyed."""

from __future__ import annotations

__all__ = [
    "ALERTS",
    "BREAKERS",
    "DEAD_LETTERS",
    "USAGE",
    "USAGE_PARTITIONS",
]

# Contract names (shared/CONTRACT.md): never rename.
USAGE = "spendstream.usage"
ALERTS = "spendstream.alerts"
BREAKERS = "spendstream.breakers"  # compacted, keyed by scope
DEAD_LETTERS = "spendstream.dead-letters"

# Default partition count when spendstream creates the usage topic itself.
USAGE_PARTITIONS = 6
