"""The lease ledger: grants budget leases so that a hard cap holds under concurrency.

For every hard cap (scope, UTC period kind) and period the ledger keeps

    committed = landed spend not covered by a lease of that period
              + the charge of every lease granted in the period (``Lease.charge``)
              + while open, what a lease of the previous period may still land

and grants only from ``limit - committed``. An open lease charges all it may still come to,
so **granted-and-unspent + landed <= limit** holds after every grant. Between grants it can
be broken only by spend the ledger never leased: unleased calls (landed as ``Spend`` with no
lease), a call whose actual cost exceeded the worst case it reserved, and a call still
running past ``expires_at + grace_s`` of its lease (its lease has closed at what its holder
had reported; what lands later counts when it lands). docs/budget-leases.md says the same.

Pure: no I/O, no clock of its own; every operation takes ``now`` (UTC). The ledger's time
never moves back (``now`` below the newest seen is read as the newest). Inputs:
``request`` / ``settle`` / ``release`` (the protocol's messages, ``handle`` dispatches),
``land(source, position, spends)`` (one call per landed batch; a position at or below the
last applied one for that source and scope is a duplicate and ignored), ``expire(now)``.
State: ``snapshot()`` / ``restore(...)`` as bytes, and ``changes()``: the changelog records
written since the last call, keyed (scope, kind, name) so a partitioned changelog can follow
the requests' partitioning; ``load`` adds records (a server gaining a partition builds
one ledger per partition from its changelog, and drops it whole when the partition goes).
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from spendstream.config import BudgetConfig
from spendstream.money import exact_money, money_error
from spendstream.producers import wire_json
from spendstream.producers.lease_protocol import (
    LeaseGrant,
    LeaseMessage,
    LeaseRefusal,
    LeaseRelease,
    LeaseReply,
    LeaseRequest,
    LeaseSettle,
)
from spendstream.records import stable_id
from spendstream.stream.leases.lease import Lease, RecordKey, Spend
from spendstream.stream.leases.policy import HardCap, LeasePolicy, grant_size, hard_caps
from spendstream.stream.windows import period_bounds

__all__ = ["LEASE_ID_CHARS", "LeaseLedger", "Standing"]

SNAPSHOT_VERSION = 1
# 96 bits: five ids still fit the event's 128-character lease_id field.
LEASE_ID_CHARS = 24
_ZERO = Decimal(0)

# (scope, period kind, period start)
Account = tuple[str, str, datetime]


@dataclass(frozen=True, slots=True)
class Standing:
    """Where one hard cap stands in the current period."""

    budget: str
    period_start: datetime
    limit_usd: Decimal
    committed_usd: Decimal
    left_usd: Decimal  # limit - committed: what the ledger may still grant


def _acct_name(period: str, start: datetime) -> str:
    return f"{period}/{start.isoformat()}"


class LeaseLedger:
    """Leases on hard budgets; see the module docstring for the invariant. Its entry points
    run in spendstream.money.MONEY_CONTEXT: limits and sums past $1e10 keep all 18 places."""

    @exact_money
    def __init__(self, budgets: Sequence[BudgetConfig], policy: LeasePolicy | None = None) -> None:
        self.policy = policy or LeasePolicy()
        self._caps = hard_caps(budgets)
        self._ttl = timedelta(seconds=self.policy.ttl_s)
        self._grace = timedelta(seconds=self.policy.grace_s)
        # A period is kept at least until its last lease has closed.
        self._retain = timedelta(seconds=max(self.policy.retain_s, self.policy.grace_s))
        self._leases: dict[str, Lease] = {}
        self._by_request: dict[tuple[str, str], str] = {}
        self._open: dict[str, dict[str, Lease]] = {}  # scope -> open leases
        self._closing: list[tuple[datetime, str]] = []  # heap of (expires_at + grace, lease id)
        self._unleased: dict[Account, Decimal] = {}
        self._positions: dict[tuple[str, str], int] = {}  # (scope, source) -> position
        self._committed: dict[Account, Decimal] = {}
        self._contrib: dict[str, dict[Account, Decimal]] = {}
        self._now: datetime | None = None
        self._next_sweep: datetime | None = None
        self._dirty: dict[RecordKey, None] = {}

    # --- what the ledger covers ---------------------------------------------------------------

    @property
    def scopes(self) -> frozenset[str]:
        """The scopes with a hard budget: a call covered by one needs a lease on it."""
        return frozenset(self._caps)

    def caps(self, scope: str) -> tuple[HardCap, ...]:
        return self._caps.get(scope, ())

    @property
    def now(self) -> datetime | None:
        """The newest time the ledger has been given (None before any): its clock."""
        return self._now

    # --- the protocol ---------------------------------------------------------------------

    @exact_money
    def handle(self, message: LeaseMessage, now: datetime) -> LeaseReply | None:
        """Apply one protocol message; a request gets its reply, the others None."""
        if isinstance(message, LeaseRequest):
            return self.request(message, now)
        if isinstance(message, LeaseSettle):
            self.settle(message, now)
        else:
            self.release(message, now)
        return None

    @exact_money
    def request(self, req: LeaseRequest, now: datetime) -> LeaseReply:
        now = self._advance(now)
        caps = self._caps.get(req.scope)
        if not caps:
            return LeaseRefusal(
                req.scope, req.request_id, "unbudgeted", "", req.need_usd, _ZERO, _ZERO, None
            )
        known = self._by_request.get((req.scope, req.request_id))
        if known is not None:
            return self._grant_of(self._leases[known], now)
        standing = [(cap, *self._free(cap, now)) for cap in caps]
        cap, free, period_end = min(standing, key=lambda s: s[1])
        others = [
            lease
            for lease in self._open.get(req.scope, {}).values()
            if lease.client_id != req.client_id
        ]
        if free < req.need_usd or free <= 0:
            opened = self._open.get(req.scope, {}).values()
            ends = [lease.expires_at + self._grace for lease in opened if lease.unused() > 0]
            ends.append(period_end)
            return LeaseRefusal(
                req.scope,
                req.request_id,
                "exhausted",
                cap.budget,
                req.need_usd,
                max(free, _ZERO),
                sum((lease.unused() for lease in self._open.get(req.scope, {}).values()), _ZERO),
                max((min(ends) - now).total_seconds(), 0.0),
            )
        holders = {
            lease.client_id for lease in others if not lease.released and now < lease.expires_at
        }
        amount = grant_size(self.policy, free, req.need_usd, req.want_usd, len(holders))
        expires = min([now + self._ttl] + [end for _, _, end in standing])
        lease = Lease(
            lease_id=stable_id("lease", req.scope, req.request_id)[:LEASE_ID_CHARS],
            scope=req.scope,
            client_id=req.client_id,
            request_id=req.request_id,
            granted_usd=amount,
            cap_usd=amount,
            used_usd=_ZERO,
            landed_usd=_ZERO,
            granted_at=now,
            expires_at=expires,
        )
        self._add(lease)
        return self._grant_of(lease, now)

    @exact_money
    def settle(self, msg: LeaseSettle, now: datetime) -> bool:
        """Record the holder's cumulative use; False for a lease this ledger does not know."""
        self._advance(now)
        lease = self._leases.get(msg.lease_id)
        if lease is None or lease.scope != msg.scope:
            return False
        if msg.used_usd > lease.used_usd or msg.late_usd > lease.late_usd:
            self._use(lease, msg.used_usd, msg.late_usd)
            self._refresh(lease)
        return True

    @staticmethod
    def _use(lease: Lease, used: Decimal, late: Decimal) -> None:
        lease.used_usd = max(lease.used_usd, used)
        lease.late_usd = max(lease.late_usd, late)

    @exact_money
    def release(self, msg: LeaseRelease, now: datetime) -> bool:
        """The holder keeps ``pending_usd`` for calls in flight; nothing pending closes it."""
        self._advance(now)
        lease = self._leases.get(msg.lease_id)
        if lease is None or lease.scope != msg.scope:
            return False
        self._use(lease, msg.used_usd, msg.late_usd)
        # A cap only comes down: a stale or repeated release never raises it again.
        lease.cap_usd = min(lease.cap_usd, msg.used_usd + msg.pending_usd)
        lease.released = True
        if msg.pending_usd == 0 and not lease.closed:
            self._close(lease)
        self._refresh(lease)
        return True

    # --- landed spend ---------------------------------------------------------------------

    @exact_money
    def land(self, source: str, position: int, spends: Iterable[Spend], now: datetime) -> int:
        """Apply one landed batch from ``source`` at ``position``; returns the spends applied.

        A scope that already applied ``position`` (or a later one) of ``source`` skips the
        batch: redelivered batches count once. Facts are expected deduplicated by event_id
        upstream (the warehouse lands each event once).
        """
        now = self._advance(now)
        by_scope: dict[str, list[Spend]] = {}
        for spend in spends:
            if spend.cost_usd < 0:
                raise ValueError(f"landed spend must not be negative: {spend}")
            if spend.scope in self._caps:
                by_scope.setdefault(spend.scope, []).append(spend)
        applied = 0
        for scope, items in by_scope.items():
            key = (scope, source)
            if position <= self._positions.get(key, -1):
                continue
            self._positions[key] = position
            self._dirty[(scope, "pos", source)] = None
            for spend in items:
                self._land_one(spend, now)
                applied += 1
        return applied

    def position(self, scope: str, source: str) -> int:
        """The last position of ``source`` applied on ``scope`` (-1: none yet)."""
        return self._positions.get((scope, source), -1)

    def mark(self, scope: str, source: str, position: int) -> None:
        """Record that ``scope`` has read ``source`` up to ``position`` (a reader's resume
        point, kept in the changelog with the rest). Positions only move forward."""
        if scope in self._caps and position > self._positions.get((scope, source), -1):
            self._positions[(scope, source)] = position
            self._dirty[(scope, "pos", source)] = None

    def _land_one(self, spend: Spend, now: datetime) -> None:
        lease = next(
            (
                self._leases[lid]
                for lid in spend.lease_ids
                if lid in self._leases and self._leases[lid].scope == spend.scope
            ),
            None,
        )
        for cap in self._caps[spend.scope]:
            start = period_bounds(spend.ts, cap.period)[0]
            # Spend under a lease of this very period is inside the lease's charge already;
            # anything else (unleased, or a call that finished in another period than its
            # lease's) adds to the period it landed in.
            if lease is None or start != period_bounds(lease.granted_at, cap.period)[0]:
                self._add_unleased((spend.scope, cap.period, start), spend.cost_usd, now)
        if lease is not None:
            lease.landed_usd += spend.cost_usd
            if spend.ts >= lease.expires_at:
                lease.landed_late_usd += spend.cost_usd
            self._refresh(lease)

    def _add_unleased(self, acct: Account, cost: Decimal, now: datetime) -> None:
        if self._gone(acct, now):
            return  # that period's account is gone: too late to count anywhere
        self._unleased[acct] = self._unleased.get(acct, _ZERO) + cost
        self._committed[acct] = self._committed.get(acct, _ZERO) + cost
        self._note_account(acct)
        self._dirty[(acct[0], "acct", _acct_name(acct[1], acct[2]))] = None

    # --- time -----------------------------------------------------------------------------

    @exact_money
    def expire(self, now: datetime) -> None:
        """Close leases past ``expires_at + grace_s``; drop periods past retention."""
        self._advance(now)

    def _advance(self, now: datetime) -> datetime:
        if now.tzinfo is None:
            raise ValueError("the ledger's clock must be timezone-aware (UTC)")
        if self._now is None or now > self._now:
            self._now = now.astimezone(UTC)
        now = self._now
        heap = self._closing
        while heap and heap[0][0] <= now:
            _, lease_id = heapq.heappop(heap)
            lease = self._leases.get(lease_id)
            if lease is not None and not lease.closed:
                self._close(lease)
                self._refresh(lease)
        if self._next_sweep is not None and self._next_sweep <= now:
            self._sweep(now)
        return now

    def _close(self, lease: Lease) -> None:
        lease.closed = True
        opened = self._open.get(lease.scope)
        if opened is not None:
            opened.pop(lease.lease_id, None)
            if not opened:
                del self._open[lease.scope]

    def _sweep(self, now: datetime) -> None:
        """Forget periods (and their closed leases) that ended more than ``retain_s`` ago."""
        for lease in [x for x in self._leases.values() if x.closed]:
            if self._lease_end(lease) + self._retain <= now:
                self._drop_lease(lease)
        dropped = {a for a in self._committed if self._gone(a, now)}
        for acct in dropped:
            del self._committed[acct]
            if self._unleased.pop(acct, None) is not None:
                self._dirty[(acct[0], "acct", _acct_name(acct[1], acct[2]))] = None
        if dropped:
            for lease_id, contrib in self._contrib.items():
                if not dropped.isdisjoint(contrib):
                    self._contrib[lease_id] = {a: v for a, v in contrib.items() if a not in dropped}
        self._next_sweep = None
        for acct in self._committed:
            self._note_account(acct)
        for lease in self._leases.values():
            self._note_time(self._lease_end(lease) + self._retain)

    def _drop_lease(self, lease: Lease) -> None:
        for acct, value in self._contrib.pop(lease.lease_id, {}).items():
            self._committed[acct] = self._committed.get(acct, _ZERO) - value
        del self._leases[lease.lease_id]
        self._close(lease)
        self._by_request.pop((lease.scope, lease.request_id), None)
        self._dirty[(lease.scope, "lease", lease.lease_id)] = None

    def _gone(self, acct: Account, now: datetime | None) -> bool:
        """Past retention: the period's account is forgotten and takes nothing more."""
        return now is not None and self._account_end(acct) + self._retain <= now

    def _account_end(self, acct: Account) -> datetime:
        return period_bounds(acct[2], acct[1])[1]

    def _lease_end(self, lease: Lease) -> datetime:
        """The end of the last period the lease may count in. A lease that may close after
        its period ends carries late spend into the next one (``_contributions``) until
        that spend lands: it is kept as long as that period, not dropped with its own."""
        ends = []
        for cap in self._caps.get(lease.scope, ()):
            end = period_bounds(lease.granted_at, cap.period)[1]
            ends.append(period_bounds(end, cap.period)[1] if self._crosses(lease, end) else end)
        return max(ends, default=lease.expires_at + self._grace)

    def _crosses(self, lease: Lease, end: datetime) -> bool:
        """Whether calls under the lease may finish after ``end``, its period's end: it
        closes (``expires_at + grace_s``) at or after it. One rule for what the lease
        carries over (``_contributions``) and for how long it is kept (``_lease_end``)."""
        return end <= lease.expires_at + self._grace

    def _note_account(self, acct: Account) -> None:
        self._note_time(self._account_end(acct) + self._retain)

    def _note_time(self, when: datetime) -> None:
        if self._next_sweep is None or when < self._next_sweep:
            self._next_sweep = when

    # --- accounting -----------------------------------------------------------------------

    def _free(self, cap: HardCap, now: datetime) -> tuple[Decimal, datetime]:
        start, end = period_bounds(now, cap.period)
        return cap.limit_usd - self._committed.get((cap.scope, cap.period, start), _ZERO), end

    def _add(self, lease: Lease) -> None:
        self._leases[lease.lease_id] = lease
        self._by_request[(lease.scope, lease.request_id)] = lease.lease_id
        if not lease.closed:
            self._open.setdefault(lease.scope, {})[lease.lease_id] = lease
            heapq.heappush(self._closing, (lease.expires_at + self._grace, lease.lease_id))
        self._note_time(self._lease_end(lease) + self._retain)
        self._refresh(lease)

    def _contributions(self, lease: Lease) -> dict[Account, Decimal]:
        out: dict[Account, Decimal] = {}
        charge = lease.charge()
        for cap in self._caps.get(lease.scope, ()):
            start, end = period_bounds(lease.granted_at, cap.period)
            out[(lease.scope, cap.period, start)] = charge
            # Calls started under the lease may finish (and be priced) in the next period:
            # while open, all it may still land; closed, what settled late and has not landed.
            if not lease.closed:
                carry = charge - lease.landed_usd
            elif self._crosses(lease, end):
                carry = lease.late_unlanded()
            else:
                continue  # the lease closed before its period ended: nothing crossed over
            if carry > 0:
                out[(lease.scope, cap.period, end)] = carry
        return {a: v for a, v in out.items() if not self._gone(a, self._now)}

    def _refresh(self, lease: Lease) -> None:
        """Bring ``committed`` in line with the lease's state; mark it for the changelog."""
        new = self._contributions(lease)
        old = self._contrib.get(lease.lease_id, {})
        committed = self._committed
        for acct in old.keys() | new.keys():
            delta = new.get(acct, _ZERO) - old.get(acct, _ZERO)
            if delta:
                committed[acct] = committed.get(acct, _ZERO) + delta
            if acct not in old:
                committed.setdefault(acct, _ZERO)
                self._note_account(acct)
        self._contrib[lease.lease_id] = new
        self._dirty[(lease.scope, "lease", lease.lease_id)] = None

    def _grant_of(self, lease: Lease, now: datetime) -> LeaseGrant:
        usable = not lease.closed and not lease.released and now < lease.expires_at
        ttl = (lease.expires_at - now).total_seconds() if usable else 0.0
        return LeaseGrant(
            lease.scope, lease.request_id, lease.lease_id, lease.granted_usd, ttl, lease.expires_at
        )

    # --- looking in -----------------------------------------------------------------------

    @exact_money
    def standing(self, scope: str, now: datetime) -> list[Standing]:
        """Each hard cap of ``scope`` in the period holding ``now``."""
        now = self._advance(now)
        out = []
        for cap in self._caps.get(scope, ()):
            free, _ = self._free(cap, now)
            start = period_bounds(now, cap.period)[0]
            out.append(Standing(cap.budget, start, cap.limit_usd, cap.limit_usd - free, free))
        return out

    def committed(self, scope: str, period: str, start: datetime) -> Decimal:
        """What one period of a hard cap has committed (landed + leased), as kept."""
        return self._committed.get((scope, period, start), _ZERO)

    def leases(self, scope: str | None = None) -> list[Lease]:
        """Every lease the ledger keeps (of ``scope``), oldest first. Read-only copies."""
        picked = [x for x in self._leases.values() if scope is None or x.scope == scope]
        return [Lease(**{f: getattr(x, f) for f in Lease.__dataclass_fields__}) for x in picked]

    @exact_money
    def check(self) -> None:
        """Recompute ``committed`` from scratch and compare (tests; O(leases))."""
        fresh: dict[Account, Decimal] = dict(self._unleased)
        for lease in self._leases.values():
            for acct, value in self._contributions(lease).items():
                fresh[acct] = fresh.get(acct, _ZERO) + value
        mine = {a: v for a, v in self._committed.items() if v}
        theirs = {a: v for a, v in fresh.items() if v}
        if mine != theirs:
            raise AssertionError(f"ledger out of step: kept {mine}, recomputed {theirs}")

    # --- state ----------------------------------------------------------------------------

    def changes(self) -> list[tuple[RecordKey, bytes | None]]:
        """The changelog records (key, value; None deletes) written since the last call."""
        out = [(key, self._record(key)) for key in self._dirty]
        self._dirty = {}
        return out

    def records(self, scopes: Iterable[str] | None = None) -> list[tuple[RecordKey, bytes]]:
        """Every record (of ``scopes``): a full changelog of the current state."""
        wanted = None if scopes is None else set(scopes)
        keys: list[RecordKey] = [(x.scope, "lease", x.lease_id) for x in self._leases.values()]
        keys += [(a[0], "acct", _acct_name(a[1], a[2])) for a in self._unleased]
        keys += [(scope, "pos", source) for scope, source in self._positions]
        out = []
        for key in keys:
            if wanted is None or key[0] in wanted:
                value = self._record(key)
                assert value is not None
                out.append((key, value))
        return out

    def _record(self, key: RecordKey) -> bytes | None:
        scope, kind, name = key
        value: Any
        if kind == "lease":
            lease = self._leases.get(name)
            value = None if lease is None else lease.to_json()
        elif kind == "acct":
            period, _, start = name.partition("/")
            amount = self._unleased.get((scope, period, datetime.fromisoformat(start)))
            value = None if amount is None else {"unleased_usd": str(amount)}
        else:
            position = self._positions.get((scope, name))
            value = None if position is None else {"position": position}
        return None if value is None else json.dumps(value, sort_keys=True).encode()

    @exact_money
    def load(self, records: Iterable[tuple[RecordKey, bytes | None]]) -> list[str]:
        """Apply changelog records (a later record of a key wins; None deletes it).

        Returns the records passed over, each with why: one no ledger wrote (another
        kind, a value that does not parse) must not stop a server from restoring every
        other scope, at every start. A key's latest record that does parse wins."""
        latest: dict[RecordKey, Lease | Decimal | int | None] = {}
        passed_over: list[str] = []
        for key, value in records:
            try:
                latest[key] = _parse_record(key, value)
            except (ValueError, KeyError, TypeError, ArithmeticError) as exc:
                passed_over.append(f"{list(key)}: {type(exc).__name__}: {exc}")
        for (scope, kind, name), parsed in latest.items():
            if kind == "lease":
                old = self._leases.get(name)
                if old is not None:
                    self._drop_lease(old)
                if isinstance(parsed, Lease):
                    self._add(parsed)
                    # A new owner whose clock lags must not grant from a period already left.
                    if self._now is None or parsed.granted_at > self._now:
                        self._now = parsed.granted_at
            elif kind == "acct":
                period, _, start = name.partition("/")
                acct = (scope, period, datetime.fromisoformat(start))
                before = self._unleased.pop(acct, _ZERO)
                self._committed[acct] = self._committed.get(acct, _ZERO) - before
                if isinstance(parsed, Decimal):
                    self._unleased[acct] = parsed
                    self._committed[acct] += parsed
                    self._note_account(acct)
            elif isinstance(parsed, int):
                self._positions[(scope, name)] = parsed
            else:
                self._positions.pop((scope, name), None)
        self._dirty = {}  # what was loaded is already in the changelog
        if self._now is not None:
            self._advance(self._now)  # what is due by the newest lease's time: now
        return passed_over

    def snapshot(self) -> bytes:
        """The whole state as bytes (restore with ``LeaseLedger.restore``)."""
        doc = {
            "v": SNAPSHOT_VERSION,
            "records": [[list(key), json.loads(value)] for key, value in self.records()],
        }
        return json.dumps(doc, sort_keys=True).encode()

    @classmethod
    def restore(
        cls, budgets: Sequence[BudgetConfig], policy: LeasePolicy | None, data: bytes
    ) -> LeaseLedger:
        doc = json.loads(data)
        if doc.get("v") != SNAPSHOT_VERSION:
            raise ValueError(f"lease ledger snapshot version {doc.get('v')!r} is not 1")
        ledger = cls(budgets, policy)
        ledger.load(
            ((k[0], k[1], k[2]), json.dumps(v, sort_keys=True).encode()) for k, v in doc["records"]
        )
        return ledger


def _parse_record(key: RecordKey, value: bytes | None) -> Lease | Decimal | int | None:
    """A changelog record's value as ``load`` applies it (None: a deletion); raises if no
    ledger wrote the record."""
    scope, kind, name = key
    if kind not in ("lease", "acct", "pos"):
        raise ValueError(f"unknown lease ledger record kind {kind!r}")
    if kind == "acct":
        period, _, start = name.partition("/")
        if not period or datetime.fromisoformat(start).tzinfo is None:
            raise ValueError(f"not an account name: {name!r}")
    if value is None:
        return None
    data = wire_json.loads(value)
    if not isinstance(data, dict):
        raise TypeError("the value is not a JSON object")
    if kind == "lease":
        lease = Lease.from_json(name, scope, data)
        for money in (
            lease.granted_usd,
            lease.cap_usd,
            lease.used_usd,
            lease.landed_usd,
            lease.late_usd,
            lease.landed_late_usd,
        ):
            _check_money(money)
        if lease.granted_at.tzinfo is None or lease.expires_at.tzinfo is None:
            raise ValueError("a lease's times must carry their offset")
        return lease
    if kind == "acct":
        return _check_money(Decimal(data["unleased_usd"]))
    position = data["position"]
    if not isinstance(position, int) or isinstance(position, bool):
        raise TypeError(f"position {position!r} is not an integer")
    return position


def _check_money(amount: Decimal) -> Decimal:
    problem = money_error(amount)
    if problem is not None:
        raise ValueError(problem)
    return amount
