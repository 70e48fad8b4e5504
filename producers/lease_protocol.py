"""The budget-lease protocol: the messages between a client and the service that grants leases.

A client asks for a lease on a hard budget's scope (``LeaseRequest``); the service answers
with a ``LeaseGrant`` (lease id, amount, time to live) or a ``LeaseRefusal`` (what is left).
While it holds a lease the client reports what it used (``LeaseSettle``, cumulative) and
gives back what it will not use (``LeaseRelease``: everything but ``pending_usd``, the worst
case of calls still in flight; ``pending_usd = 0`` closes the lease).

``LeaseService`` is the boundary every runtime implements: in process
(``spendstream.stream.leases.LocalLeaseService``) or over Kafka
(``spendstream.kafka_leases.KafkaLeaseService``). On the wire a message is one JSON object
(UTF-8) with ``"v": 1`` and ``"op"``; money is a decimal string, never a float
(docs/budget-leases.md, "Wire format").

Import-light: the client imports this, so nothing of the pipeline is imported here.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, Protocol

from spendstream.instants import in_utc
from spendstream.money import is_usd
from spendstream.producers import wire_json
from spendstream.wording import clipped

__all__ = [
    "MAX_TEXT",
    "WIRE_VERSION",
    "LeaseGrant",
    "LeaseMessage",
    "LeaseRefusal",
    "LeaseRelease",
    "LeaseReply",
    "LeaseRequest",
    "LeaseService",
    "LeaseSettle",
    "decode",
    "encode",
    "shown",
]

WIRE_VERSION = 1
# Strings a message carries (scopes, ids, budget names), at most: a scope is a field's
# <= 256-character value behind its prefix (producers.event).
MAX_TEXT = 1024
_SHOWN = 80  # characters of a value an error shows


@dataclass(frozen=True, slots=True)
class LeaseRequest:
    """Lease at least ``need_usd`` (the call's worst case), up to ``want_usd``, on ``scope``.

    ``request_id`` makes the request idempotent: asked again, the service answers with the
    same lease (a retry after a lost reply never takes a second lease).
    """

    scope: str
    client_id: str
    request_id: str
    need_usd: Decimal
    want_usd: Decimal


@dataclass(frozen=True, slots=True)
class LeaseSettle:
    """The holder has used ``used_usd`` under the lease so far (cumulative, only grows).

    ``late_usd`` is the part settled by calls that finished after the lease's deadline:
    they may be priced in the next budget period.
    """

    scope: str
    client_id: str
    lease_id: str
    used_usd: Decimal
    late_usd: Decimal


@dataclass(frozen=True, slots=True)
class LeaseRelease:
    """The holder gives the lease back, keeping ``pending_usd`` for calls still in flight.

    From now on the holder uses at most ``used_usd + pending_usd`` under it; with
    ``pending_usd = 0`` the lease is closed and ``used_usd`` is final. ``late_usd`` as in
    ``LeaseSettle``.
    """

    scope: str
    client_id: str
    lease_id: str
    used_usd: Decimal
    late_usd: Decimal
    pending_usd: Decimal


@dataclass(frozen=True, slots=True)
class LeaseGrant:
    """``amount_usd`` may be spent on calls started within ``ttl_s`` of the request being sent.

    ``expires_at`` is the service's clock; clients count ``ttl_s`` from when they *sent* the
    request, so their deadline is never later than the service's.
    """

    scope: str
    request_id: str
    lease_id: str
    amount_usd: Decimal
    ttl_s: float
    expires_at: datetime


RefusalReason = Literal["exhausted", "unbudgeted"]


@dataclass(frozen=True, slots=True)
class LeaseRefusal:
    """No lease: the budget cannot cover ``need_usd`` now.

    ``left_usd`` is what it could still grant; ``held_usd`` what open leases hold unused
    (some may come back); ``retry_after_s`` when the next of them ends, else when the
    budget period renews (None for ``unbudgeted``: the scope has no hard budget here).
    """

    scope: str
    request_id: str
    reason: RefusalReason
    budget: str
    need_usd: Decimal
    left_usd: Decimal
    held_usd: Decimal
    retry_after_s: float | None


LeaseMessage = LeaseRequest | LeaseSettle | LeaseRelease
LeaseReply = LeaseGrant | LeaseRefusal


class LeaseService(Protocol):
    """Where leases come from. ``request`` waits at most ``timeout_s`` for the answer and
    raises ``LeaseUnavailable`` without one; ``settle`` and ``release`` do not wait."""

    def request(self, request: LeaseRequest, timeout_s: float) -> LeaseReply: ...

    def settle(self, settle: LeaseSettle) -> None: ...

    def release(self, release: LeaseRelease) -> None: ...

    def close(self) -> None: ...


_OPS: dict[type, str] = {
    LeaseRequest: "request",
    LeaseSettle: "settle",
    LeaseRelease: "release",
    LeaseGrant: "grant",
    LeaseRefusal: "refusal",
}
_TYPES = {op: cls for cls, op in _OPS.items()}
_MONEY = frozenset(
    {
        "need_usd",
        "want_usd",
        "used_usd",
        "late_usd",
        "pending_usd",
        "amount_usd",
        "left_usd",
        "held_usd",
    }
)


def encode(message: LeaseMessage | LeaseReply) -> bytes:
    """The message as its wire JSON (sorted keys, money as decimal strings)."""
    out: dict[str, Any] = {"v": WIRE_VERSION, "op": _OPS[type(message)]}
    for f in dataclasses.fields(message):
        value = getattr(message, f.name)
        if isinstance(value, Decimal):
            value = str(value)
        elif isinstance(value, datetime):
            value = value.astimezone(UTC).isoformat()
        out[f.name] = value
    return json.dumps(out, sort_keys=True, separators=(",", ":")).encode()


def decode(data: bytes | str) -> LeaseMessage | LeaseReply:
    """Parse a wire message; ``ValueError`` naming what is wrong for anything else."""
    try:
        raw = wire_json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"lease message is not JSON: {exc}") from None
    try:
        wire_json.require_text(raw)
    except ValueError as exc:
        raise ValueError(f"lease message: {exc}") from None
    if not isinstance(raw, dict):
        raise ValueError("lease message must be a JSON object")
    if raw.get("v") != WIRE_VERSION:
        raise ValueError(f"lease message version {shown(raw.get('v'))} is not {WIRE_VERSION}")
    cls = _TYPES.get(raw.get("op"))  # type: ignore[arg-type]
    if cls is None:
        raise ValueError(
            f"unknown lease message op {shown(raw.get('op'))}; one of {sorted(_TYPES)}"
        )
    fields: dict[str, Any] = {}
    for name in (f.name for f in dataclasses.fields(cls)):
        if name not in raw:
            raise ValueError(f"{raw['op']} message lacks {name!r}")
        fields[name] = _field(name, raw[name])
    return cls(**fields)  # type: ignore[no-any-return]


def _field(name: str, value: Any) -> Any:
    if name in _MONEY:
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise ValueError(f"{name} must be a decimal string, got {shown(value)}")
        try:
            money = Decimal(value)
        except InvalidOperation:
            raise ValueError(f"{name} is not a decimal: {shown(value)}") from None
        if not is_usd(money):
            raise ValueError(f"{name} must be an amount >= 0 and below 1e20, got {shown(value)}")
        return money
    if name == "expires_at":
        try:
            ts = datetime.fromisoformat(value)
        except (TypeError, ValueError):
            raise ValueError(f"expires_at is not an ISO timestamp: {shown(value)}") from None
        if ts.tzinfo is None:
            raise ValueError("expires_at needs a UTC offset")
        try:
            return in_utc(ts)
        except ValueError as exc:
            raise ValueError(f"expires_at {exc}") from None
    if name in ("ttl_s", "retry_after_s"):
        if value is None and name == "retry_after_s":
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{name} must be a number, got {shown(value)}")
        return float(value)
    if name == "reason":
        if value not in ("exhausted", "unbudgeted"):
            raise ValueError(f"reason must be exhausted or unbudgeted, got {shown(value)}")
        return value
    if not isinstance(value, str) or (not value and name != "budget"):
        raise ValueError(f"{name} must be a non-empty string, got {shown(value)}")
    if len(value) > MAX_TEXT:
        # Echoed in replies and dead letters: past a record's size limit, a lease server
        # could not answer nor dead-letter the request, and stopped at it.
        raise ValueError(f"{name} is {len(value)} characters long, more than {MAX_TEXT}")
    return value


def shown(value: Any) -> str:
    """``repr(value)``, cut short: an error names the value, it does not carry it."""
    return clipped(repr(value), _SHOWN)
