"""Producers: a metered call becomes a usage event (no pipeline imports here, ever)."""

from __future__ import annotations

from spendstream.producers.event import SCHEMA_VERSION, UsageEvent, describe_validation_error
from spendstream.producers.guard import (
    BreakerView,
    RequestCeilingExceeded,
    RequestRate,
    aguard,
    guard,
)

__all__ = [
    "SCHEMA_VERSION",
    "BreakerView",
    "RequestCeilingExceeded",
    "RequestRate",
    "UsageEvent",
    "aguard",
    "describe_validation_error",
    "guard",
]
