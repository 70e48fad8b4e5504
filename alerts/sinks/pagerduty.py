"""PagerDuty Events API v2: ``trigger`` with a stable ``dedup_key``, ``resolve`` when over."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from spendstream.config import PagerDutySinkConfig

from ..delivery import DeliveryResult, HttpDeliverer, HttpRequest
from ..notification import Notification
from ..secrets import SecretStr, load_secret
from ._text import amount, investigate_link, investigate_sql, summary

__all__ = ["PagerDutySink", "pagerduty_event"]


def pagerduty_event(
    n: Notification,
    routing_key: str,
    *,
    source: str = "spendstream",
    severity_map: Mapping[str, str] | None = None,
    link_base_url: str | None = None,
) -> dict[str, Any]:
    """The Events API v2 body for ``n`` (pure)."""
    event: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": n.action,
        "dedup_key": n.key,
    }
    if n.action == "resolve":
        return event
    a = n.alert
    details: dict[str, Any] = {
        "message": a.message,
        "scope": a.scope,
        "value": str(a.value),
        "threshold": str(a.threshold),
        "amount": amount(n),
        "alert_id": a.alert_id,
        "alert_dedup_key": a.dedup_key,
        "route": n.route,
        "count": n.count,
        "investigate_sql": investigate_sql(n),
        **{f"detail.{k}": v for k, v in a.details.items()},
    }
    if n.count > 1:
        details["group"] = n.group
        details["scopes"] = list(n.scopes[:50])
    sev = (severity_map or {}).get(a.severity, a.severity)
    event["payload"] = {
        "summary": summary(n, 1024),
        "source": source,
        "severity": sev if sev in {"critical", "error", "warning", "info"} else "error",
        "timestamp": a.ts.isoformat(),
        "component": a.scope,
        "group": a.scope.split(":", 1)[0],
        "class": a.kind,
        "custom_details": details,
    }
    event["client"] = "spendstream"
    link = investigate_link(n, link_base_url)
    if link:
        event["client_url"] = link
        event["links"] = [{"href": link, "text": f"spend of {a.scope}"}]
    return event


@dataclass(slots=True)
class PagerDutySink:
    name: str
    url: str
    routing_key: SecretStr
    source: str = "spendstream"
    severity_map: Mapping[str, str] | None = None
    link_base_url: str | None = None
    max_per_scope: int = 10
    rate_window_s: float = 3600.0

    @classmethod
    def from_config(
        cls,
        cfg: PagerDutySinkConfig,
        *,
        link_base_url: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> PagerDutySink:
        key = load_secret(
            f"alerts.sink.{cfg.name}.routing_key",
            cfg.routing_key_env,
            cfg.routing_key_file,
            environ,
        )
        return cls(
            name=cfg.name,
            url=cfg.url,
            routing_key=key,
            source=cfg.source,
            severity_map={str(k): str(v) for k, v in cfg.severity_map.items()},
            link_base_url=link_base_url,
            max_per_scope=cfg.max_per_scope,
            rate_window_s=cfg.rate_window_s,
        )

    def request(self, n: Notification) -> HttpRequest:
        body = pagerduty_event(
            n,
            self.routing_key.get_secret_value(),
            source=self.source,
            severity_map=self.severity_map,
            link_base_url=self.link_base_url,
        )
        return HttpRequest(
            self.url, json.dumps(body).encode(), {"Content-Type": "application/json"}
        )

    def deliver(self, notification: Notification, deliverer: HttpDeliverer) -> DeliveryResult:
        return deliverer.send(self.name, self.request(notification))
