"""One lease as the ledger keeps it, a unit of landed spend, and their changelog records.

A lease is *open* until its holder closes it (a release with nothing pending) or until
``expires_at + grace``; an open lease charges its budget ``max(cap, used, landed)`` (all it
may still come to), a closed one ``max(used, landed)`` (what it came to, as far as anyone
reported).

Calls started under a lease may finish, and be priced, in the next period. While the lease
is open the next period carries all it may still land; once closed, what its holder
reported as settled after the lease's deadline (``late_unlanded``) until that lands.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

__all__ = ["Lease", "RecordKey", "Spend"]


@dataclass(frozen=True, slots=True)
class Spend:
    """Spend that landed in the warehouse: ``cost_usd`` of calls on ``scope`` at ``ts``.

    ``lease_ids`` are the leases the calls were reserved under (the event's ``lease_id``,
    split on spaces); empty for unleased calls. One ``Spend`` may be one fact or the sum of
    a batch's facts with the same scope, lease and period.
    """

    scope: str
    ts: datetime
    cost_usd: Decimal
    lease_ids: tuple[str, ...] = ()

    @classmethod
    def of(cls, scope: str, ts: datetime, cost_usd: Decimal, lease_id: str | None) -> Spend:
        """From an event's fields: ``lease_id`` as the event carries it (space-separated)."""
        return cls(scope, ts, cost_usd, tuple(lease_id.split()) if lease_id else ())


@dataclass(slots=True)
class Lease:
    lease_id: str
    scope: str
    client_id: str
    request_id: str
    granted_usd: Decimal
    cap_usd: Decimal  # the most the holder may still come to: granted, lowered by a release
    used_usd: Decimal  # reported by the holder; only grows
    landed_usd: Decimal  # landed in the warehouse under this lease
    granted_at: datetime
    expires_at: datetime
    released: bool = False  # the holder gave back its free part (no longer an active holder)
    closed: bool = False
    late_usd: Decimal = Decimal(0)  # of used: settled after the holder's deadline
    landed_late_usd: Decimal = Decimal(0)  # landed with ts at or after expires_at

    def charge(self) -> Decimal:
        """What this lease counts against its budget's period."""
        done = max(self.used_usd, self.landed_usd)
        return done if self.closed else max(self.cap_usd, done)

    def unused(self) -> Decimal:
        """What the lease holds that nobody has used yet (0 once closed)."""
        return self.charge() - max(self.used_usd, self.landed_usd)

    def late_unlanded(self) -> Decimal:
        """Reported use of calls that settled after expiry and has not landed yet."""
        return max(self.late_usd - self.landed_late_usd, Decimal(0))

    def to_json(self) -> dict[str, Any]:
        return {
            "client_id": self.client_id,
            "request_id": self.request_id,
            "granted_usd": str(self.granted_usd),
            "cap_usd": str(self.cap_usd),
            "used_usd": str(self.used_usd),
            "landed_usd": str(self.landed_usd),
            "granted_at": self.granted_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "released": self.released,
            "closed": self.closed,
            "late_usd": str(self.late_usd),
            "landed_late_usd": str(self.landed_late_usd),
        }

    @classmethod
    def from_json(cls, lease_id: str, scope: str, data: dict[str, Any]) -> Lease:
        return cls(
            lease_id=lease_id,
            scope=scope,
            client_id=str(data["client_id"]),
            request_id=str(data["request_id"]),
            granted_usd=Decimal(data["granted_usd"]),
            cap_usd=Decimal(data["cap_usd"]),
            used_usd=Decimal(data["used_usd"]),
            landed_usd=Decimal(data["landed_usd"]),
            granted_at=datetime.fromisoformat(data["granted_at"]),
            expires_at=datetime.fromisoformat(data["expires_at"]),
            released=bool(data["released"]),
            closed=bool(data["closed"]),
            late_usd=Decimal(data["late_usd"]),
            landed_late_usd=Decimal(data["landed_late_usd"]),
        )


# A changelog record's key: (scope, kind, name). kind is "lease" (name: lease id), "acct"
# (name: "<period>/<period start>", value: unleased landed spend) or "pos" (name: a landing
# source, value: its last applied position). The scope comes first so a partitioned
# changelog keeps a scope's records together with its requests (spendstream.kafka_leases
# writes it as a JSON array).
RecordKey = tuple[str, str, str]
