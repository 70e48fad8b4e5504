"""The live report page of ``spendstream serve`` (pure: data in, HTML out).

The page is the HTML report (``report_page.render``) with, above it, a bar of filters
(period, team, feature, scope) and the live status, and two sections the static report
has no use for: the breakers open right now and the most recent alerts. A small script
asks the server every few seconds whether the warehouse changed (``/fragment?v=<version>``)
and swaps the content in place when it did; without script, the page is the report as of
its loading.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from html import escape
from typing import Any
from urllib.parse import urlencode

from spendstream.warehouse.report_page import clip
from spendstream.wording import plural

__all__ = ["LiveExtras", "content_html", "page_html", "status_text"]


@dataclass(slots=True)
class LiveExtras:
    """What the live page adds to the report."""

    version: str
    facts: int
    as_of: datetime
    query: dict[str, str]  # the filters as given, to keep them in the form and the polling
    teams: Sequence[str] = ()
    features: Sequence[str] = ()
    open_breakers: list[tuple[Any, ...]] = field(default_factory=list)  # scope, state, reason, ts
    recent_alerts: list[tuple[Any, ...]] = field(default_factory=list)  # ts, kind, sev, scope, msg
    refresh_s: float = 5.0


_STYLE = """<style>
  #live-bar { position: sticky; top: 0; z-index: 2; background: #fff; border-bottom: 1px solid #ddd;
              padding: 8px 0; display: flex; flex-wrap: wrap; gap: 6px 12px; align-items: end; }
  #live-bar label { font-size: 12px; color: #555; display: flex; flex-direction: column; }
  #live-bar input, #live-bar select { font: inherit; font-size: 13px; padding: 2px 4px; }
  #live-status { margin-left: auto; font-size: 12px; color: #555; }
  #live-status .dot { display: inline-block; width: 8px; height: 8px; border-radius: 4px;
                      background: #59a14f; margin-right: 4px; }
  .state-open { color: #b00; font-weight: bold; }
</style>"""

_SCRIPT = """<script>
(function () {
  var content = document.getElementById("live-content");
  var status = document.getElementById("live-status-text");
  var every = Number(content.dataset.refreshMs) || 5000;
  function poll() {
    var q = new URLSearchParams(window.location.search);
    q.delete("token");
    q.set("v", content.dataset.version);
    fetch("/fragment?" + q.toString(), {credentials: "same-origin", cache: "no-store"})
      .then(function (r) {
        if (r.status === 204) { return null; }
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        return r.json();
      })
      .then(function (data) {
        if (data) {
          content.innerHTML = data.html;
          content.dataset.version = data.version;
          status.textContent = data.status;
        }
      })
      .catch(function (e) { status.textContent = "not updating: " + e.message; })
      .finally(function () { setTimeout(poll, every); });
  }
  setTimeout(poll, every);
})();
</script>"""


def _options(values: Sequence[str], chosen: str | None, empty: str) -> str:
    opts = [f'<option value="">{escape(empty)}</option>']
    for v in values:
        sel = " selected" if v == chosen else ""
        opts.append(f'<option value="{escape(v)}"{sel}>{escape(v)}</option>')
    return "".join(opts)


def status_text(x: LiveExtras) -> str:
    return f"live · {plural(x.facts, 'fact')} · as of {x.as_of:%H:%M:%S} UTC"


def _bar(x: LiveExtras) -> str:
    q = x.query
    field_ = '<label>{label}<input name="{name}" value="{value}" placeholder="{ph}" size="{size}"></label>'
    return (
        '<form id="live-bar" method="get" action="/">'
        + field_.format(
            label="since", name="since", value=escape(q.get("since", "")), ph="2026-11-01", size=16
        )
        + field_.format(
            label="until", name="until", value=escape(q.get("until", "")), ph="(now)", size=16
        )
        + f'<label>team<select name="team">{_options(x.teams, q.get("team"), "all teams")}'
        "</select></label>" + f'<label>feature<select name="feature">'
        f"{_options(x.features, q.get('feature'), 'all features')}</select></label>"
        + field_.format(
            label="scope", name="scope", value=escape(q.get("scope", "")), ph="api_key:k", size=18
        )
        + '<button type="submit">show</button> <a href="/">all</a>'
        + f'<span id="live-status"><span class="dot"></span><span id="live-status-text">'
        f"{escape(status_text(x))}</span></span></form>"
    )


def _live_sections(x: LiveExtras) -> str:
    if x.open_breakers:
        rows = "".join(
            f'<tr><td><code>{escape(str(scope))}</code></td><td class="state-{escape(str(state))}">'
            f"{escape(str(state))}</td><td>{escape(clip(str(reason), 160))}</td>"
            f"<td>{ts:%Y-%m-%d %H:%M:%S}</td></tr>"
            for scope, state, reason, ts in x.open_breakers
        )
        breakers = (
            '<table id="open-breakers"><thead><tr><th>scope</th><th>state</th><th>reason</th>'
            f"<th>since</th></tr></thead><tbody>{rows}</tbody></table>"
            '<p class="muted">Clients calling <code>meter.guard()</code> are refused on these '
            "scopes; <code>spendstream breakers reset SCOPE</code> closes one.</p>"
        )
    else:
        breakers = '<p id="open-breakers" class="muted">No breaker is open.</p>'
    if x.recent_alerts:
        rows = "".join(
            f"<tr><td>{ts:%Y-%m-%d %H:%M:%S}</td><td>{escape(str(kind))}</td>"
            f'<td>{escape(str(sev))}</td><td><a href="/?{escape(urlencode({"scope": scope}))}">'
            f"<code>{escape(str(scope))}</code></a></td><td>{escape(clip(str(msg), 200))}</td></tr>"
            for ts, kind, sev, scope, msg in x.recent_alerts
        )
        alerts = (
            '<table id="recent-alerts"><thead><tr><th>when</th><th>kind</th><th>severity</th>'
            f"<th>scope</th><th>message</th></tr></thead><tbody>{rows}</tbody></table>"
        )
    else:
        alerts = '<p id="recent-alerts" class="muted">No alert yet.</p>'
    return (
        '<section id="live"><div class="cols">'
        f"<div><h2>Breakers open now</h2>{breakers}</div>"
        f"<div><h2>Recent alerts <small>newest first</small></h2>{alerts}</div>"
        "</div></section>"
    )


def _split(report: str) -> tuple[str, str, str]:
    head, rest = report.split("<body>", 1)
    body, tail = rest.rsplit("</body>", 1)
    return head, body, tail


def content_html(report: str, x: LiveExtras) -> str:
    """What the script swaps in: the live sections and the report's body."""
    return _live_sections(x) + _split(report)[1]


def page_html(report: str, x: LiveExtras) -> str:
    """The whole live page around a rendered report."""
    head, _, tail = _split(report)
    head = head.replace("</head>", _STYLE + "</head>", 1)
    return (
        f"{head}<body>{_bar(x)}"
        f'<div id="live-content" data-version="{escape(x.version)}" '
        f'data-refresh-ms="{int(x.refresh_s * 1000)}">{content_html(report, x)}</div>'
        f"{_SCRIPT}</body>{tail}"
    )
