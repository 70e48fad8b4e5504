"""Where notifications go: PagerDuty, Slack, signed webhooks, the console."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from spendstream.config import (
    ConsoleSinkConfig,
    PagerDutySinkConfig,
    SinkConfig,
    SlackSinkConfig,
    WebhookSinkConfig,
)

from ..delivery import DeliveryResult, HttpDeliverer
from ..notification import Notification
from .console import ConsoleSink
from .pagerduty import PagerDutySink
from .slack import SlackSink
from .webhook import WebhookSink

__all__ = ["ConsoleSink", "PagerDutySink", "Sink", "SlackSink", "WebhookSink", "build_sink"]


class Sink(Protocol):
    name: str
    max_per_scope: int
    rate_window_s: float

    def deliver(self, notification: Notification, deliverer: HttpDeliverer) -> DeliveryResult: ...


def build_sink(
    cfg: SinkConfig, *, link_base_url: str | None = None, environ: Mapping[str, str] | None = None
) -> Sink:
    """A sink from its config; secrets are loaded here (ConfigError naming the key if absent)."""
    if isinstance(cfg, PagerDutySinkConfig):
        return PagerDutySink.from_config(cfg, link_base_url=link_base_url, environ=environ)
    if isinstance(cfg, SlackSinkConfig):
        return SlackSink.from_config(cfg, link_base_url=link_base_url, environ=environ)
    if isinstance(cfg, WebhookSinkConfig):
        return WebhookSink.from_config(cfg, environ=environ)
    if isinstance(cfg, ConsoleSinkConfig):
        return ConsoleSink.from_config(cfg)
    raise TypeError(f"unknown sink config {type(cfg).__name__}")
