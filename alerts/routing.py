"""Routing rules, pure: which routes an alert takes, quiet hours, and how alerts group.

Routes are tried in configuration order; the first that matches wins unless it says
``continue_matching = true``. An empty filter matches everything.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, time
from fnmatch import fnmatchcase

from spendstream.config import RouteConfig
from spendstream.records import Alert, stable_id
from spendstream.scopes import scope_fields

__all__ = [
    "SEVERITY_RANK",
    "alert_field",
    "alert_team",
    "at_least",
    "group_key",
    "in_quiet_hours",
    "matching_routes",
]

SEVERITY_RANK: dict[str, int] = {"info": 0, "warning": 1, "critical": 2}


def at_least(severity: str, minimum: str) -> bool:
    return SEVERITY_RANK.get(severity, 0) >= SEVERITY_RANK[minimum]


def alert_team(alert: Alert) -> str | None:
    return scope_fields(alert.scope).get("team") or alert.details.get("team") or None


def alert_field(alert: Alert, name: str) -> str | None:
    """A field to route or group on: kind, scope, severity, team, or any details key."""
    if name == "kind":
        return alert.kind
    if name == "scope":
        return alert.scope
    if name == "severity":
        return alert.severity
    if name == "team":
        return alert_team(alert)
    return alert.details.get(name) or scope_fields(alert.scope).get(name)


def _matches(route: RouteConfig, alert: Alert) -> bool:
    if route.kinds and alert.kind not in route.kinds:
        return False
    if not at_least(alert.severity, route.min_severity):
        return False
    if route.scopes and not any(fnmatchcase(alert.scope, p) for p in route.scopes):
        return False
    return not (route.teams and alert_team(alert) not in route.teams)


def matching_routes(routes: Sequence[RouteConfig], alert: Alert) -> list[RouteConfig]:
    out: list[RouteConfig] = []
    for route in routes:
        if _matches(route, alert):
            out.append(route)
            if not route.continue_matching:
                break
    return out


def _parse_hhmm(text: str) -> time:
    hh, mm = text.split(":")
    return time(int(hh), int(mm))


def in_quiet_hours(spec: str | None, now: datetime) -> bool:
    """Whether UTC ``now`` falls in ``"HH:MM-HH:MM"`` (which may wrap past midnight)."""
    if not spec:
        return False
    start_s, end_s = spec.split("-")
    start, end = _parse_hhmm(start_s), _parse_hhmm(end_s)
    t = now.time().replace(second=0, microsecond=0, tzinfo=None)
    if start <= end:
        return start <= t < end
    return t >= start or t < end


def group_key(route: RouteConfig, alert: Alert) -> tuple[str, dict[str, str]]:
    """The incident key an alert belongs to on ``route``, and the values that formed it.

    Without ``group_by`` (or when the alert lacks a group field) the incident is the
    alert's own condition, ``dedup_key``. With it, every alert sharing the values is one
    incident: a storm of runaway sessions from one api key becomes one page. An entry
    ``"a|b"`` takes the first field the alert has.
    """
    if not route.group_by:
        return alert.dedup_key, {}
    values: dict[str, str] = {}
    for spec in route.group_by:
        # "a|b": the first of the alternatives the alert has.
        found = next(
            ((n, v) for n in spec.split("|") if (v := alert_field(alert, n)) is not None), None
        )
        if found is None:
            return alert.dedup_key, {}
        values[found[0]] = found[1]
    parts = [route.name, *(f"{k}={v}" for k, v in values.items())]
    return "group-" + stable_id(*parts), values
