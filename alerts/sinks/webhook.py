"""Generic webhooks, signed: ``X-Spendstream-Signature: v1=<hex HMAC-SHA256>``.

The signed message is ``f"{timestamp}.{body}"`` with the timestamp (Unix seconds) sent in
``X-Spendstream-Timestamp``: a receiver recomputes the HMAC with the shared secret,
compares in constant time, and rejects old timestamps to stop replays (docs/alerts.md).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from spendstream.config import WebhookSinkConfig
from spendstream.records import alert_to_wire, stable_id

from ..delivery import DeliveryResult, HttpDeliverer, HttpRequest
from ..notification import Notification
from ..secrets import SecretStr, load_secret
from ._text import investigate_sql, summary

__all__ = ["WebhookSink", "sign", "verify", "webhook_body"]

SIGNATURE_HEADER = "X-Spendstream-Signature"
TIMESTAMP_HEADER = "X-Spendstream-Timestamp"
DELIVERY_HEADER = "X-Spendstream-Delivery"


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def verify(
    secret: bytes, timestamp: str, body: bytes, signature: str, now: float, tolerance_s: float = 300
) -> bool:
    """The receiver's check (also what docs/alerts.md shows)."""
    if not timestamp.isdigit() or abs(now - int(timestamp)) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, int(timestamp), body), signature)


def webhook_body(n: Notification) -> dict[str, Any]:
    return {
        "version": 1,
        "action": n.action,
        "key": n.key,
        "route": n.route,
        "summary": summary(n),
        "count": n.count,
        "scopes": list(n.scopes),
        "group": n.group,
        "opened_at": n.opened_at.isoformat() if n.opened_at else None,
        "alert": alert_to_wire(n.alert),
        "investigate_sql": investigate_sql(n),
    }


@dataclass(slots=True)
class WebhookSink:
    name: str
    url: str
    secret: SecretStr | None
    clock: Callable[[], float] = field(default=time.time)
    max_per_scope: int = 10
    rate_window_s: float = 3600.0

    @classmethod
    def from_config(
        cls, cfg: WebhookSinkConfig, *, environ: Mapping[str, str] | None = None
    ) -> WebhookSink:
        secret = None
        if cfg.secret_env or cfg.secret_file:
            secret = load_secret(
                f"alerts.sink.{cfg.name}.secret", cfg.secret_env, cfg.secret_file, environ
            )
        return cls(
            name=cfg.name,
            url=cfg.url,
            secret=secret,
            max_per_scope=cfg.max_per_scope,
            rate_window_s=cfg.rate_window_s,
        )

    def request(self, n: Notification) -> HttpRequest:
        body = json.dumps(webhook_body(n), separators=(",", ":")).encode()
        ts = int(self.clock())
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: str(ts),
            # Same notification, same id across retries and restarts: receivers can dedupe.
            DELIVERY_HEADER: stable_id(self.name, n.key, n.action),
        }
        if self.secret is not None:
            headers[SIGNATURE_HEADER] = sign(self.secret.get_secret_value().encode(), ts, body)
        return HttpRequest(self.url, body, headers)

    def deliver(self, notification: Notification, deliverer: HttpDeliverer) -> DeliveryResult:
        # Re-signed on each call so a retried delivery carries a fresh timestamp.
        return deliverer.send(self.name, self.request(notification))
