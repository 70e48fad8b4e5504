"""Alert routing: alert events reach the people on call, once, and hear when it is over.

alerts + breaker transitions -> routing (rules) -> noise (dedup, groups, quiet hours,
rate limits) -> sinks (PagerDuty, Slack, signed webhooks, console) via delivery
(retries, backoff, Retry-After) -> state (sqlite: open incidents, dead letters)
"""

from __future__ import annotations

from .delivery import DeliveryResult, HttpDeliverer, HttpRequest, RetryPolicy
from .notification import Notification
from .router import AlertRouter, HandleSummary
from .sinks import ConsoleSink, PagerDutySink, Sink, SlackSink, WebhookSink, build_sink
from .state import DeliveryState

__all__ = [
    "AlertRouter",
    "ConsoleSink",
    "DeliveryResult",
    "DeliveryState",
    "HandleSummary",
    "HttpDeliverer",
    "HttpRequest",
    "Notification",
    "PagerDutySink",
    "RetryPolicy",
    "Sink",
    "SlackSink",
    "WebhookSink",
    "build_sink",
]
