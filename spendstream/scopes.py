"""Scopes: the one table of scope kinds and the event fields they name.

A scope is ``global`` or ``<kind>:<value>``, e.g. ``team:search`` or ``session:s-42``.
Every module that turns an event into scopes, checks a scope string, or maps a scope
back to event fields uses this table; no second copy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final, Literal

__all__ = [
    "GLOBAL",
    "SCOPE_FIELDS",
    "SCOPE_KINDS",
    "ScopeKind",
    "event_scope",
    "event_scopes",
    "is_known_scope",
    "scope_error",
    "scope_fields",
]

GLOBAL: Final = "global"
ScopeKind = Literal["global", "team", "feature", "project", "user", "api_key", "session"]

# Scope kind -> the usage-event field holding its value (every kind but ``global``).
SCOPE_FIELDS: Final[Mapping[str, str]] = {
    "team": "team",
    "feature": "feature",
    "project": "project",
    "user": "user_id",
    "api_key": "api_key_id",
    "session": "session_id",
}
# Every kind, ``global`` first.
SCOPE_KINDS: Final[tuple[str, ...]] = (GLOBAL, *SCOPE_FIELDS)


def event_scope(event: Any, kind: str) -> str | None:
    """The scope of one kind an event belongs to (``team`` -> ``team:search``); None when
    the event has no value for it. ``event`` is anything with the event's attributes."""
    if kind == GLOBAL:
        return GLOBAL
    value = getattr(event, SCOPE_FIELDS[kind])
    return None if value is None else f"{kind}:{value}"


def event_scopes(event: Any, kinds: Iterable[str]) -> list[str]:
    """The event's scopes of the given kinds, in that order, skipping those it lacks."""
    out = []
    for kind in kinds:
        scope = event_scope(event, kind)
        if scope is not None:
            out.append(scope)
    return out


def scope_error(scope: str) -> str | None:
    """Why ``scope`` is not a scope string, or None when it is one."""
    if scope == GLOBAL:
        return None
    kind, sep, value = scope.partition(":")
    if not sep or kind not in SCOPE_FIELDS:
        return (
            f"scope {scope!r} must be 'global' or '<kind>:<value>' with kind one of "
            f"{', '.join(SCOPE_FIELDS)}, e.g. 'team:search'"
        )
    if not value:
        return f"scope {scope!r} has no value after '{kind}:'"
    return None


def is_known_scope(scope: str) -> bool:
    return scope_error(scope) is None


def scope_fields(scope: str) -> dict[str, str]:
    """``session:abc`` -> ``{"session_id": "abc"}``; ``global`` (or no scope) -> ``{}``."""
    kind, sep, value = scope.partition(":")
    field = SCOPE_FIELDS.get(kind)
    return {field: value} if sep and field else {}
