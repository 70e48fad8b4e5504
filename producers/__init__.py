"""Producers: a metered call becomes a usage event (no pipeline imports here, ever)."""

from __future__ import annotations

from spendstream.producers.event import SCHEMA_VERSION, UsageEvent, describe_validation_error
from spendstream.producers.guard import (
    BreakerView,
    RequestCeilingExceeded,
    RequestRate,
    WorkdirBreakerView,
    aguard,
    guard,
)
from spendstream.producers.lease_protocol import LeaseService
from spendstream.producers.leases import LeaseClient, LeaseMetrics, Reservation
from spendstream.producers.meter import Call, InvalidUsageEvent, Meter, MeterMetrics
from spendstream.producers.providers import (
    ProviderHelperUnavailable,
    anthropic_usage,
    batch_result_usage,
    bedrock_usage,
    gemini_usage,
    openai_usage,
    openrouter_usage,
    usage_from,
)
from spendstream.producers.spool import Spool
from spendstream.producers.transports import FileTransport, HttpTransport, KafkaTransport

__all__ = [
    "SCHEMA_VERSION",
    "BreakerView",
    "Call",
    "FileTransport",
    "HttpTransport",
    "InvalidUsageEvent",
    "KafkaTransport",
    "LeaseClient",
    "LeaseMetrics",
    "LeaseService",
    "Meter",
    "MeterMetrics",
    "ProviderHelperUnavailable",
    "RequestCeilingExceeded",
    "RequestRate",
    "Reservation",
    "Spool",
    "UsageEvent",
    "WorkdirBreakerView",
    "aguard",
    "anthropic_usage",
    "batch_result_usage",
    "bedrock_usage",
    "describe_validation_error",
    "gemini_usage",
    "guard",
    "openai_usage",
    "openrouter_usage",
    "usage_from",
]
