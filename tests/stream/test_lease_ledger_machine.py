"""The lease ledger under any interleaving (hypothesis.stateful).

A model of honest clients holds leases, reserves calls' worst cases, settles what they cost
(facts with the call's finish time), gives leases back and crashes; facts land late, in
any order, from two sources, and some batches are delivered twice; unleased spend lands too;
time moves across hour, day and month boundaries; the ledger is restored from its snapshot
and from its changelog at any point. After every step, for every hard cap and period:

- the ledger never under-counts: what was spent or may still be spent in the period (facts
  whose call finished in it, landed or not, plus the worst case of calls in flight and the
  unused part of usable leases that may finish in it) <= what the ledger has committed;
- every grant leaves committed <= the cap;
- so what is spent or may be spent <= the cap, plus only unleased spend that landed after
  the period's last grant;
- a lease id is never granted for two requests, and a repeated request gets its own lease
  back without committing more.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from spendstream.config import BudgetConfig
from spendstream.producers.lease_protocol import (
    LeaseGrant,
    LeaseRefusal,
    LeaseRelease,
    LeaseRequest,
    LeaseSettle,
)
from spendstream.stream.leases import LeaseLedger, LeasePolicy, Spend
from spendstream.stream.windows import period_bounds

BUDGETS = [
    BudgetConfig(scope="team:a", period="day", amount_usd=Decimal(10), hard_limit=Decimal(1)),
    BudgetConfig(scope="team:a", period="hour", amount_usd=Decimal(4), hard_limit=Decimal(1)),
    # Same scope and period, higher: the lower cap (4) must hold.
    BudgetConfig(scope="team:a", period="hour", amount_usd=Decimal(5), hard_limit=Decimal(1)),
    BudgetConfig(scope="global", period="month", amount_usd=Decimal(4), hard_limit=Decimal("1.5")),
    BudgetConfig(scope="team:b", period="day", amount_usd=Decimal(100)),  # soft: no leases
]
CAPS = {
    ("team:a", "day"): Decimal(10),
    ("team:a", "hour"): Decimal(4),
    ("global", "month"): Decimal(6),
}
POLICY = LeasePolicy(
    ttl_s=60, grace_s=20, min_grant_usd=Decimal("0.05"), max_grant_usd=Decimal(3), retain_s=900
)
T0 = datetime(2026, 3, 31, 23, 50, tzinfo=UTC)  # close to an hour, a day and a month boundary
CLIENTS = ("c0", "c1", "c2")
SCOPES = ("team:a", "global")
CENTS = Decimal("0.01")

money = st.integers(min_value=0, max_value=300).map(lambda n: Decimal(n) * CENTS)


@dataclass(eq=False)
class Call:
    lease: ModelLease
    max_usd: Decimal


@dataclass(eq=False)
class ModelLease:
    scope: str
    client: str
    lease_id: str
    granted: Decimal
    granted_at: datetime
    deadline: datetime
    close_at: datetime
    used: Decimal = Decimal(0)
    late: Decimal = Decimal(0)
    retired: bool = False
    inflight: list[Call] = field(default_factory=list)

    @property
    def reserved(self) -> Decimal:
        return sum((c.max_usd for c in self.inflight), Decimal(0))

    def free(self, now: datetime) -> Decimal:
        if self.retired or now >= self.deadline:
            return Decimal(0)
        return self.granted - self.used - self.reserved


@dataclass(eq=False)
class Fact:
    scope: str
    ts: datetime
    cost: Decimal
    lease_ids: tuple[str, ...]
    client: str | None
    leased: bool  # reserved under a lease (its worst case was counted before it ran)


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ledger = LeaseLedger(BUDGETS, POLICY)
        self.now = T0
        self.leases: list[ModelLease] = []
        self.crashed: set[str] = set()
        self.facts: list[Fact] = []  # pending (not landed)
        self.landed: list[Fact] = []
        self.batches: list[tuple[str, int, list[Spend]]] = []
        self.positions = {"p0": 0, "p1": 0}
        self.requests: list[tuple[LeaseRequest, LeaseGrant | LeaseRefusal]] = []
        self.lease_of_request: dict[str, tuple[str, Decimal]] = {}  # lease id -> (request, amt)
        self.unleased_since_grant: dict[tuple[str, str, datetime], Decimal] = {}
        self.changelog: dict[tuple[str, str, str], bytes | None] = {}
        self.serial = 0

    # --- helpers --------------------------------------------------------------------------

    def _log(self) -> None:
        self.changelog.update(self.ledger.changes())

    def _periods(self, scope: str) -> list[tuple[str, Decimal]]:
        return [(period, limit) for (s, period), limit in CAPS.items() if s == scope]

    def _grant_checks(self, scope: str) -> None:
        for period, limit in self._periods(scope):
            start = period_bounds(self.now, period)[0]
            assert self.ledger.committed(scope, period, start) <= limit
            self.unleased_since_grant[(scope, period, start)] = Decimal(0)

    def _settle_call(self, call: Call, actual: Decimal, at: datetime) -> None:
        lease = call.lease
        lease.inflight.remove(call)
        lease.used += actual
        if at >= lease.deadline:
            lease.late += actual
        self.facts.append(Fact(lease.scope, at, actual, (lease.lease_id,), lease.client, True))
        if lease.retired and not lease.inflight:
            self.ledger.release(
                LeaseRelease(
                    lease.scope, lease.client, lease.lease_id, lease.used, lease.late, Decimal(0)
                ),
                at,
            )
            self._log()

    def _retire(self, lease: ModelLease, at: datetime) -> None:
        lease.retired = True
        self.ledger.release(
            LeaseRelease(
                lease.scope, lease.client, lease.lease_id, lease.used, lease.late, lease.reserved
            ),
            at,
        )
        self._log()

    def _live(self) -> list[ModelLease]:
        return [x for x in self.leases if x.client not in self.crashed]

    # --- clients --------------------------------------------------------------------------

    @rule(
        client=st.sampled_from(CLIENTS),
        scope=st.sampled_from((*SCOPES, "team:b")),
        need=money,
        want_calls=st.integers(1, 20),
    )
    def request(self, client: str, scope: str, need: Decimal, want_calls: int) -> None:
        if client in self.crashed:
            return
        self.serial += 1
        req = LeaseRequest(scope, client, f"r{self.serial}", need, need * want_calls)
        reply = self.ledger.request(req, self.now)
        self._log()
        self.requests.append((req, reply))
        self._take(req, reply)

    def _take(self, req: LeaseRequest, reply: LeaseGrant | LeaseRefusal) -> None:
        if isinstance(reply, LeaseRefusal):
            if req.scope == "team:b":
                assert reply.reason == "unbudgeted"
                return
            assert reply.reason == "exhausted"
            assert reply.left_usd < req.need_usd or reply.left_usd == 0
            lefts = [
                limit - self.ledger.committed(req.scope, p, period_bounds(self.now, p)[0])
                for p, limit in self._periods(req.scope)
            ]
            assert reply.left_usd == max(min(lefts), Decimal(0))
            return
        assert req.scope != "team:b"
        assert reply.amount_usd >= req.need_usd
        seen = self.lease_of_request.get(reply.lease_id)
        assert seen is None or seen[0] == req.request_id, "a lease id granted twice"
        self.lease_of_request[reply.lease_id] = (req.request_id, reply.amount_usd)
        if seen is not None:
            return  # a repeated request: the client already holds it
        self._grant_checks(req.scope)
        expires = self.now + timedelta(seconds=reply.ttl_s)
        assert expires == reply.expires_at
        self.leases.append(
            ModelLease(
                req.scope,
                req.client_id,
                reply.lease_id,
                reply.amount_usd,
                self.now,
                expires,
                reply.expires_at + timedelta(seconds=POLICY.grace_s),
            )
        )

    @precondition(lambda self: self.requests)
    @rule(data=st.data())
    def repeat_request(self, data: st.DataObject) -> None:
        req, first = data.draw(st.sampled_from(self.requests))
        if req.client_id in self.crashed:
            return
        # The last answer to this request (a request older than retention is a new one).
        first = next(r for q, r in reversed(self.requests) if q.request_id == req.request_id)
        self.ledger.expire(self.now)  # a restored ledger forgets what it must first
        self._log()
        before = self.ledger.snapshot()
        kept = {x.lease_id for x in self.ledger.leases()}
        reply = self.ledger.request(req, self.now)
        self._log()
        if isinstance(first, LeaseGrant) and first.lease_id in kept:
            assert isinstance(reply, LeaseGrant)
            assert (reply.lease_id, reply.amount_usd) == (first.lease_id, first.amount_usd)
            assert reply.ttl_s <= first.ttl_s
            assert self.ledger.snapshot() == before  # nothing more committed
        self.requests.append((req, reply))
        self._take(req, reply)

    @precondition(lambda self: self._live())
    @rule(data=st.data(), max_usd=money)
    def start_call(self, data: st.DataObject, max_usd: Decimal) -> None:
        lease = data.draw(st.sampled_from(self._live()))
        if lease.free(self.now) >= max_usd:
            lease.inflight.append(Call(lease, max_usd))

    @precondition(lambda self: any(x.inflight for x in self._live()))
    @rule(data=st.data(), share=st.integers(0, 100))
    def finish_call(self, data: st.DataObject, share: int) -> None:
        lease = data.draw(st.sampled_from([x for x in self._live() if x.inflight]))
        call = data.draw(st.sampled_from(lease.inflight))
        actual = (call.max_usd * share / 100).quantize(CENTS / 100)
        self._settle_call(call, actual, self.now)

    @precondition(lambda self: self._live())
    @rule(data=st.data())
    def report_use(self, data: st.DataObject) -> None:
        lease = data.draw(st.sampled_from(self._live()))
        self.ledger.settle(
            LeaseSettle(lease.scope, lease.client, lease.lease_id, lease.used, lease.late),
            self.now,
        )
        self._log()

    @precondition(lambda self: any(not x.retired for x in self._live()))
    @rule(data=st.data())
    def give_back(self, data: st.DataObject) -> None:
        lease = data.draw(st.sampled_from([x for x in self._live() if not x.retired]))
        self._retire(lease, self.now)

    @rule(client=st.sampled_from(CLIENTS))
    def crash(self, client: str) -> None:
        """The process dies: its calls die with it, and so do the events it had not sent."""
        self.crashed.add(client)
        for lease in self.leases:
            if lease.client == client:
                lease.inflight.clear()
        self.facts = [f for f in self.facts if f.client != client]

    # --- spend ----------------------------------------------------------------------------

    @rule(scope=st.sampled_from(SCOPES), cost=money, bogus=st.booleans())
    def unleased_call(self, scope: str, cost: Decimal, bogus: bool) -> None:
        ids = ("not-a-lease",) if bogus else ()
        self.facts.append(Fact(scope, self.now, cost, ids, None, False))

    @precondition(lambda self: self.facts)
    @rule(data=st.data(), source=st.sampled_from(("p0", "p1")))
    def land(self, data: st.DataObject, source: str) -> None:
        picked = data.draw(st.sets(st.integers(0, len(self.facts) - 1), min_size=1))
        batch = [self.facts[i] for i in sorted(picked)]
        self.facts = [f for i, f in enumerate(self.facts) if i not in picked]
        known = {x.lease_id for x in self.ledger.leases()}
        for f in batch:
            if not f.leased or not known.intersection(f.lease_ids):
                for period, _ in self._periods(f.scope):
                    key = (f.scope, period, period_bounds(f.ts, period)[0])
                    self.unleased_since_grant[key] = (
                        self.unleased_since_grant.get(key, Decimal(0)) + f.cost
                    )
        self.positions[source] += 1
        spends = [Spend(f.scope, f.ts, f.cost, f.lease_ids) for f in batch]
        self.ledger.land(source, self.positions[source], spends, self.now)
        self._log()
        self.batches.append((source, self.positions[source], spends))
        self.landed += batch

    @precondition(lambda self: self.batches)
    @rule(data=st.data())
    def land_again(self, data: st.DataObject) -> None:
        source, position, spends = data.draw(st.sampled_from(self.batches))
        before = self.ledger.snapshot()
        assert self.ledger.land(source, position, spends, self.now) == 0
        self._log()
        assert self.ledger.snapshot() == before

    # --- time and restarts ----------------------------------------------------------------

    @rule(seconds=st.integers(1, 1200))
    def tick(self, seconds: int) -> None:
        """Time passes: live clients give back expired leases at their deadline and finish
        every call before its lease closes (the honest client's contract)."""
        target = self.now + timedelta(seconds=seconds)
        while True:
            due: list[tuple[datetime, int, ModelLease, Call | None]] = []
            for lease in self._live():
                if not lease.retired and lease.deadline <= target:
                    due.append((lease.deadline, 0, lease, None))
                for call in lease.inflight:
                    finish = lease.close_at - timedelta(seconds=1)
                    if finish <= target:
                        due.append((finish, 1, lease, call))
            if not due:
                break
            at, _, lease, call = min(due, key=lambda d: (d[0], d[1]))
            self.now = max(self.now, at)
            if call is None:
                self._retire(lease, self.now)
            else:
                self._settle_call(call, call.max_usd, self.now)
        self.now = target
        self.ledger.expire(self.now)
        self._log()

    @rule()
    def restore_from_snapshot(self) -> None:
        self.ledger = LeaseLedger.restore(BUDGETS, POLICY, self.ledger.snapshot())
        self.ledger.check()

    @rule()
    def restore_from_changelog(self) -> None:
        self._log()
        rebuilt = LeaseLedger(BUDGETS, POLICY)
        rebuilt.load(self.changelog.items())
        mine = json.loads(self.ledger.snapshot())["records"]
        theirs = json.loads(rebuilt.snapshot())["records"]
        assert [r for r in mine if r not in theirs] == [r for r in theirs if r not in mine] == []
        self.ledger = rebuilt

    # --- what must always hold ------------------------------------------------------------

    @invariant()
    def committed_matches_a_recount(self) -> None:
        self.ledger.check()

    @invariant()
    def the_caps_hold(self) -> None:
        exposure: dict[tuple[str, str, datetime], Decimal] = {}

        def add(key: tuple[str, str, datetime], amount: Decimal) -> None:
            exposure[key] = exposure.get(key, Decimal(0)) + amount

        # Unleased spend counts once it lands: until then nothing can know of it.
        for f in [f for f in self.facts if f.leased] + self.landed:
            for period, _ in self._periods(f.scope):
                add((f.scope, period, period_bounds(f.ts, period)[0]), f.cost)
        for lease in self._live():
            potential = lease.reserved + lease.free(self.now)
            for period, _ in self._periods(lease.scope):
                start, end = period_bounds(lease.granted_at, period)
                add((lease.scope, period, start), potential)
                add((lease.scope, period, end), potential)
        retained = self.now - timedelta(seconds=POLICY.retain_s)
        for (scope, period, start), spent in exposure.items():
            if period_bounds(start, period)[1] <= retained:
                continue  # the ledger has forgotten that period
            limit = CAPS[(scope, period)]
            committed = self.ledger.committed(scope, period, start)
            assert spent <= committed, (scope, period, start, spent, committed)
            # Only unleased spend that landed after the period's last grant goes past it.
            allowance = self.unleased_since_grant.get((scope, period, start), Decimal(0))
            assert spent <= limit + allowance, (scope, period, start, spent, limit, allowance)


LedgerMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLedgerMachine = LedgerMachine.TestCase
