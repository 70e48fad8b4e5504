"""Slack incoming webhooks: what, which scope, how much, since when, where to look."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from spendstream.config import SlackSinkConfig

from ..delivery import DeliveryResult, HttpDeliverer, HttpRequest
from ..notification import Notification
from ..secrets import SecretStr, load_secret
from ._text import amount, investigate_link, investigate_sql, sql_literal, summary

__all__ = ["SlackSink", "slack_message"]

_ICON = {"critical": ":rotating_light:", "warning": ":warning:", "info": ":information_source:"}
_SECTION_MAX = 3000  # characters of a section's text Slack accepts


def _esc(text: str) -> str:
    # Slack mrkdwn control characters; everything else is shown as written.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _when(n: Notification) -> str:
    ts = n.opened_at if (n.action == "resolve" and n.opened_at) else n.alert.ts
    return ts.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def slack_message(n: Notification, link_base_url: str | None = None) -> dict[str, Any]:
    """The incoming-webhook body for ``n`` (pure): a fallback ``text`` plus Block Kit blocks."""
    a = n.alert
    if n.action == "resolve":
        title = f":white_check_mark: Resolved: {a.kind} on {a.scope}"
    else:
        title = f"{_ICON.get(a.severity, '')} {a.kind} ({a.severity})".strip()
        if n.count > 1:
            title += f" x{n.count}"
    fields = [
        {"type": "mrkdwn", "text": f"*Scope*\n`{_esc(a.scope)}`"},
        {"type": "mrkdwn", "text": f"*How much*\n{_esc(amount(n))}"},
        {"type": "mrkdwn", "text": f"*Since*\n{_when(n)}"},
        {"type": "mrkdwn", "text": f"*Alerts*\n{n.count}"},
    ]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title[:150], "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _esc(summary(n, 2900))}},
        {"type": "section", "fields": fields},
    ]
    if n.count > 1 and n.scopes:
        shown = ", ".join(f"`{_esc(s)}`" for s in n.scopes[:10])
        more = f" and {len(n.scopes) - 10} more" if len(n.scopes) > 10 else ""
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": shown + more}]})
    link = investigate_link(n, link_base_url)
    if link:
        look = f"<{link}|Investigate {_esc(a.scope)}>"
    else:
        # The query alone, in a code block: a ready-made shell command would run whatever a
        # scope value smuggled into it when pasted. Values are chr()-spelled SQL literals.
        look = f"*Investigate* with `spendstream sql` (the query below):\n```{_esc(investigate_sql(n))}```"
        if len(look) > _SECTION_MAX:
            # A scope of 256 characters Slack would escape, spelled chr() by chr(), passes
            # Slack's limit: a 400 no retry mends. The alert's own row is short and leads to it.
            look = (
                "*Investigate* with `spendstream sql` (the scope is too long to quote here):\n"
                f"```SELECT * FROM alerts WHERE alert_id = {sql_literal(a.alert_id)}```"
            )
    blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": look}})
    return {"text": _esc(summary(n, 3000)), "blocks": blocks}


@dataclass(slots=True)
class SlackSink:
    name: str
    webhook_url: SecretStr
    link_base_url: str | None = None
    max_per_scope: int = 10
    rate_window_s: float = 3600.0

    @classmethod
    def from_config(
        cls,
        cfg: SlackSinkConfig,
        *,
        link_base_url: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> SlackSink:
        url = load_secret(
            f"alerts.sink.{cfg.name}.webhook_url",
            cfg.webhook_url_env,
            cfg.webhook_url_file,
            environ,
        )
        return cls(
            name=cfg.name,
            webhook_url=url,
            link_base_url=link_base_url,
            max_per_scope=cfg.max_per_scope,
            rate_window_s=cfg.rate_window_s,
        )

    def request(self, n: Notification) -> HttpRequest:
        body = json.dumps(slack_message(n, self.link_base_url)).encode()
        return HttpRequest(
            self.webhook_url.get_secret_value(), body, {"Content-Type": "application/json"}
        )

    def deliver(self, notification: Notification, deliverer: HttpDeliverer) -> DeliveryResult:
        return deliverer.send(self.name, self.request(notification))
