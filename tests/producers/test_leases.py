"""The lease client against the in-process lease service (a real ledger; time is injected)."""

from __future__ import annotations

import logging
import os
import random
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from spendstream.config import BudgetConfig, Config
from spendstream.errors import BreakerOpen, BudgetExhausted, LeaseUnavailable
from spendstream.producers import LeaseClient, Reservation
from spendstream.producers.lease_protocol import LeaseSettle
from spendstream.producers.leases import to_usd
from spendstream.stream.leases import Lease, LeaseLedger, LeasePolicy, LocalLeaseService

D = Decimal
T0 = datetime(2026, 5, 12, 10, 0, tzinfo=UTC)


class Clock:
    """One clock for both sides: the client's monotonic seconds and the service's UTC time."""

    def __init__(self) -> None:
        self.s = 1000.0

    def mono(self) -> float:
        return self.s

    def utc(self) -> datetime:
        return T0 + timedelta(seconds=self.s - 1000.0)

    def advance(self, seconds: float) -> None:
        self.s += seconds


def budgets(team_limit: str = "100", global_limit: str | None = None) -> list[BudgetConfig]:
    out = [
        BudgetConfig(scope="team:a", period="day", amount_usd=D(team_limit), hard_limit=D(1)),
        BudgetConfig(scope="team:soft", period="day", amount_usd=D(10)),
    ]
    if global_limit is not None:
        out.append(
            BudgetConfig(scope="global", period="day", amount_usd=D(global_limit), hard_limit=D(1))
        )
    return out


class World:
    def __init__(self, team_limit: str = "100", global_limit: str | None = None) -> None:
        self.clock = Clock()
        self.budgets = budgets(team_limit, global_limit)
        self.ledger = LeaseLedger(self.budgets, LeasePolicy(ttl_s=30, grace_s=10))
        self.service = LocalLeaseService(self.ledger, self.clock.utc)

    def client(self, **kw: object) -> LeaseClient:
        kw.setdefault("background", False)
        return LeaseClient(self.service, self.ledger.scopes, clock=self.clock.mono, **kw)  # type: ignore[arg-type]

    def left(self, scope: str = "team:a") -> Decimal:
        return min(s.left_usd for s in self.ledger.standing(scope, self.clock.utc()))


def test_with_a_lease_in_hand_reserve_asks_the_service_nothing() -> None:
    w = World()
    c = w.client(refill_calls=10)
    for _ in range(10):
        c.reserve("0.1", team="a").settle("0.1")
    assert c.metrics.requests == 1 and c.metrics.reserved == 10
    assert w.left() == D(99)  # one lease of 10 x 0.1


def test_settling_below_the_worst_case_returns_the_rest_to_the_lease() -> None:
    w = World()
    c = w.client(refill_calls=2)
    c.reserve("1", team="a").settle("0.25")
    assert c.held("team:a") == D("1.75")
    for _ in range(7):
        c.reserve("0.25", team="a").settle("0.25")
    assert c.metrics.requests == 1
    assert c.held("team:a") == 0


def test_a_short_lease_goes_back_keeping_its_calls_in_flight_before_asking_for_more() -> None:
    w = World()
    c = w.client(refill_calls=2)
    inflight = c.reserve("1", team="a")  # lease of 2
    c.reserve("0.5", team="a").settle("0.5")
    second = c.reserve("1", team="a")  # 0.5 left: short, so a new lease
    assert c.metrics.requests == 2
    first_lease = next(x for x in w.ledger.leases() if x.lease_id == inflight.lease_id)
    assert first_lease.released and not first_lease.closed
    assert first_lease.cap_usd == D("1.5")  # 0.5 used + 1 in flight
    inflight.settle("0.75")
    first_lease = next(x for x in w.ledger.leases() if x.lease_id == inflight.lease_id)
    assert first_lease.closed and first_lease.used_usd == D("1.25")
    assert second.lease_id != inflight.lease_id


def test_budget_exhausted_names_the_scope_the_budget_and_what_is_left() -> None:
    w = World(team_limit="1")
    c = w.client()
    c.reserve("0.7", team="a").settle("0.7")
    other = w.client()
    with pytest.raises(BudgetExhausted) as caught:
        other.reserve("0.5", team="a")
    err = caught.value
    assert isinstance(err, BreakerOpen)  # guard() callers already catch it
    assert (err.scope, err.budget, err.need_usd) == ("team:a", "team:a/day", D("0.5"))
    assert err.left_usd == D("0.3") - (c.held("team:a"))
    assert "budget exhausted for team:a: hard budget team:a/day has $" in str(err)
    assert other.metrics.refused == 1


def test_budget_exhausted_writes_amounts_exactly_without_the_money_scale_zeros() -> None:
    # The ledger's amounts carry DECIMAL(38,18)'s 18 places; the refusal said
    # "$0.001735000000000000 left to lease".
    err = BudgetExhausted(
        "team:a",
        "team:a/day",
        D("0.001735000000000000"),
        need_usd=D("0.002298000000000000"),
        held_usd=D("2.500000000000000000"),
    )
    assert "has $0.001735 left to lease, the call needs $0.002298 ($2.5 more is held" in str(err)
    err = BudgetExhausted("team:a", "team:a/day", D("0E-18"), need_usd=D("100"))
    assert "has $0 left to lease, the call needs $100" in str(err)
    err = BudgetExhausted("team:a", "team:a/day", D("4.999999999999999999"), need_usd=D("5"))
    assert "has $4.999999999999999999 left to lease, the call needs $5" in str(err)


@pytest.mark.parametrize(
    ("seconds", "written"),
    [(42.4, "42 s"), (59.6, "1 min"), (600, "10 min"), (65667, "18 h 14 min")],
)
def test_when_the_period_renews_is_written_for_people(seconds: float, written: str) -> None:
    err = BudgetExhausted("team:a", "team:a/day", D(0), need_usd=D("0.5"), retry_after_s=seconds)
    assert str(err).endswith(f"(the budget period renews in {written})")


def test_a_refusal_is_remembered_briefly_for_larger_calls_only() -> None:
    w = World(team_limit="1")
    c = w.client(refusal_hold_s=0.25)
    with pytest.raises(BudgetExhausted):
        c.reserve("2", team="a")
    with pytest.raises(BudgetExhausted):
        c.reserve("1.5", team="a")
    assert c.metrics.requests == 1  # the second was refused from memory
    c.reserve("0.5", team="a").cancel()  # small enough for what was left: asked
    assert c.metrics.requests == 2
    w.clock.advance(0.25)
    with pytest.raises(BudgetExhausted):
        c.reserve("2", team="a")
    assert c.metrics.requests == 3  # remembered no longer


def test_a_call_no_hard_budget_covers_needs_no_lease() -> None:
    w = World()
    c = w.client()
    r = c.reserve("5", team="soft", feature="x")
    assert r.lease_id is None and r.scopes == ()
    r.settle("5")
    assert c.metrics.requests == 0


def test_a_call_under_two_hard_budgets_draws_on_both_and_names_both_leases() -> None:
    w = World(global_limit="50")
    c = w.client(refill_calls=1)
    r = c.reserve("2", team="a", feature="f")
    assert r.scopes == ("global", "team:a")
    ids = r.lease_id.split() if r.lease_id else []
    assert len(ids) == 2
    assert {x.lease_id for x in w.ledger.leases()} == set(ids)
    r.settle("1")


def test_when_one_budget_refuses_the_others_reservation_is_given_back() -> None:
    w = World(global_limit="1")
    c = w.client(refill_calls=1)
    with pytest.raises(BudgetExhausted) as caught:
        c.reserve("2", team="a")
    assert caught.value.scope == "global"
    assert c.metrics.reserved == 0
    # team:a was never asked: global comes first and refused.
    w2 = World(global_limit="50", team_limit="1")
    c2 = w2.client(refill_calls=1)
    with pytest.raises(BudgetExhausted) as caught:
        c2.reserve("2", team="a")
    assert caught.value.scope == "team:a"
    assert c2.held("global") == D(2)  # global's reservation went back into its lease


def test_an_expired_lease_is_not_drawn_on_and_goes_back() -> None:
    w = World()
    c = w.client(refill_calls=10)
    first = c.reserve("1", team="a")
    first.settle("1")
    w.clock.advance(30)  # the lease's ttl
    second = c.reserve("1", team="a")
    assert second.lease_id != first.lease_id
    old = next(x for x in w.ledger.leases() if x.lease_id == first.lease_id)
    assert old.closed and old.used_usd == D(1)


def test_an_idle_lease_goes_back_after_idle_return_s() -> None:
    w = World()
    c = w.client(refill_calls=10, idle_return_s=5)
    c.reserve("1", team="a").settle("0.5")
    w.clock.advance(4.9)
    assert c.return_idle() == 0
    w.clock.advance(0.1)
    assert c.return_idle() == 1
    assert w.left() == D("99.5")
    assert c.held("team:a") == 0


def test_a_lease_with_calls_in_flight_is_not_idle() -> None:
    w = World()
    c = w.client(refill_calls=10, idle_return_s=5)
    r = c.reserve("1", team="a")
    w.clock.advance(6)
    assert c.return_idle() == 0
    r.settle("1")


def test_calls_settled_after_the_deadline_are_reported_late() -> None:
    w = World()
    c = w.client(refill_calls=10)
    early = c.reserve("1", team="a")
    late = c.reserve("1", team="a")
    early.settle("0.5")
    w.clock.advance(30)
    late.settle("0.75")
    c.return_idle()
    (lease,) = w.ledger.leases()
    assert (lease.used_usd, lease.late_usd, lease.closed) == (D("1.25"), D("0.75"), True)


def test_leaving_the_block_without_settling_assumes_the_worst_case() -> None:
    w = World()
    c = w.client(refill_calls=4)
    with c.reserve("1", team="a") as r:
        pass
    assert r.actual_usd == D(1)
    with pytest.raises(RuntimeError), c.reserve("1", team="a") as r2:
        raise RuntimeError("the call failed")
    assert r2.actual_usd == D(1)
    with c.reserve("1", team="a") as r3:
        r3.cancel()
    assert r3.actual_usd == 0
    r3.settle("1")  # a second settle changes nothing
    assert r3.actual_usd == 0
    assert c.held("team:a") == D(2)


def test_an_overspent_call_is_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    w = World()
    c = w.client()
    with caplog.at_level(logging.WARNING, "spendstream.producers.leases"):
        c.reserve("1", team="a").settle("1.5")
    assert c.metrics.overspent == 1 and c.metrics.overspent_usd == D("0.5")
    assert "above the $1 it reserved" in caplog.text


def test_close_gives_every_lease_back_and_refuses_after() -> None:
    w = World()
    c = w.client(refill_calls=10)
    c.reserve("1", team="a").settle("0.4")
    c.close()
    assert w.left() == D("99.6")
    with pytest.raises(LeaseUnavailable, match="closed"):
        c.reserve("1", team="a")


def test_money_must_be_finite_and_not_negative() -> None:
    assert to_usd(0.1) == D("0.1")
    assert to_usd("99999999999999999999.99") == D("99999999999999999999.99")
    for bad in ("-1", "NaN", "Infinity", "1e20", "9e999999"):
        with pytest.raises(ValueError, match=">= 0 and below 1e20"):
            to_usd(bad)
    with pytest.raises(ValueError, match="must be a decimal, got 'lots'"):
        to_usd("lots")
    with pytest.raises(TypeError):
        to_usd(True)


def test_from_config_takes_the_hard_budgets_and_the_leases_section() -> None:
    config = Config.model_validate(
        {
            "budget": [
                {"scope": "team:a", "amount_usd": 5, "hard_limit": 1},
                {"scope": "team:b", "amount_usd": 5},
            ],
            "leases": {"refill_calls": 3, "idle_return_s": 2, "request_timeout_s": 0.5},
        }
    )
    w = World()
    c = LeaseClient.from_config(w.service, config, background=False)
    assert c.scopes == frozenset({"team:a"})
    assert (c.refill_calls, c.idle_return_s, c.request_timeout_s) == (3, 2, 0.5)


def test_many_threads_and_clients_never_spend_past_the_cap() -> None:
    ledger = LeaseLedger(budgets("20"), LeasePolicy(ttl_s=30, grace_s=10))
    service = LocalLeaseService(ledger)
    clients = [LeaseClient(service, ledger.scopes, refill_calls=8) for _ in range(4)]
    spent: list[Decimal] = []
    refused: list[int] = []
    lock = threading.Lock()

    def work(c: LeaseClient, seed: int) -> None:
        rng = random.Random(seed)
        misses = 0
        while misses < 3:
            worst = D(rng.randint(1, 50)) / 100
            try:
                r = c.reserve(worst, team="a")
            except BudgetExhausted:
                misses += 1
                continue
            actual = worst * rng.randint(0, 100) / 100
            r.settle(actual)
            with lock:
                spent.append(actual)
        with lock:
            refused.append(misses)

    threads = [threading.Thread(target=work, args=(clients[i % 4], i)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for c in clients:
        c.close()
    total = sum(spent, D(0))
    assert total <= 20
    assert total > D("19")  # the last dollars were not stranded in idle leases
    standing = ledger.standing("team:a", datetime.now(UTC))[0]
    assert standing.committed_usd == total  # every lease closed at exactly what it spent
    ledger.check()


def test_reservation_repr_names_the_amount_and_leases() -> None:
    w = World()
    r = w.client().reserve("1", team="a")
    assert isinstance(r, Reservation) and repr(r).startswith("Reservation(max_usd=1, lease_id='")


def test_a_forked_child_does_not_draw_on_its_parents_lease() -> None:
    w = World()
    c = w.client(refill_calls=10)
    c.reserve("1", team="a").settle("1")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its own client id, no lease of its parent's
        os.write(write, f"{c.held('team:a')} {c.client_id}".encode())
        os._exit(0)
    os.close(write)
    held, child_id = os.read(read, 200).decode().split()
    os.waitpid(pid, 0)
    assert held == "0" and child_id != c.client_id
    assert c.held("team:a") == D(9)


# --- pinned by a mutation pass --------------------------------------------------------------


def test_a_remembered_refusal_still_asks_for_a_call_of_exactly_what_was_left() -> None:
    w = World(team_limit="1")
    c = w.client(refusal_hold_s=0.25)
    with pytest.raises(BudgetExhausted) as caught:
        c.reserve("2", team="a")
    assert caught.value.left_usd == D(1)
    c.reserve("1", team="a").cancel()  # not more than was left: asked, and granted
    assert c.metrics.requests == 2 and c.metrics.refused == 1


def test_a_refusal_is_remembered_no_longer_than_the_service_says_a_lease_ends() -> None:
    w = World(team_limit="1")
    holder = w.client(refill_calls=1)
    inflight = holder.reserve("1", team="a")  # all of the budget, never settled
    w.clock.advance(39.9)  # its lease closes at 30 s + 10 s of grace
    other = w.client(refusal_hold_s=0.25)
    with pytest.raises(BudgetExhausted) as caught:
        other.reserve("0.5", team="a")
    assert caught.value.retry_after_s is not None and caught.value.retry_after_s < 0.25
    w.clock.advance(0.2)  # past the lease's end, within refusal_hold_s
    other.reserve("0.5", team="a").cancel()
    assert other.metrics.requests == 2
    inflight.cancel()


def test_a_call_settled_at_exactly_its_worst_case_is_not_overspent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    w = World()
    c = w.client()
    with caplog.at_level(logging.WARNING, "spendstream.producers.leases"):
        c.reserve("1", team="a").settle("1")
    assert c.metrics.overspent == 0 and c.metrics.overspent_usd == 0
    assert "above the" not in caplog.text


def test_a_given_back_lease_closes_only_when_its_last_call_in_flight_settles() -> None:
    w = World()
    c = w.client(refill_calls=2)
    a = c.reserve("1", team="a")  # a lease of 2
    b = c.reserve("0.5", team="a")
    c.reserve("1", team="a").cancel()  # 0.5 left: the first lease goes back, two calls in it
    a.settle("0.25")

    def first() -> Lease:
        return next(x for x in w.ledger.leases() if x.lease_id == a.lease_id)

    lease = first()
    assert lease.released and not lease.closed  # b's worst case is still held
    assert lease.cap_usd == D("1.5")
    b.settle("0.5")
    lease = first()
    assert lease.closed and lease.used_usd == D("0.75")


def test_a_lease_holds_nothing_for_this_process_from_its_deadline() -> None:
    w = World()
    c = w.client(refill_calls=10)
    c.reserve("1", team="a").settle("1")
    w.clock.advance(29.5)
    assert c.held("team:a") == D(9)
    w.clock.advance(0.5)  # the lease's ttl: no new reservation on it
    assert c.held("team:a") == 0


def test_idle_time_counts_from_the_last_reservation_not_from_the_grant() -> None:
    w = World()
    c = w.client(refill_calls=10, idle_return_s=5)
    c.reserve("1", team="a").settle("1")
    w.clock.advance(4)
    c.reserve("1", team="a").settle("1")  # the same lease, used again
    w.clock.advance(4)
    assert c.return_idle() == 0
    w.clock.advance(1)
    assert c.return_idle() == 1
    assert c.metrics.requests == 1


def test_a_call_in_flight_past_the_deadline_reports_its_late_use_when_it_settles() -> None:
    w = World()
    c = w.client(refill_calls=10)
    r = c.reserve("1", team="a")
    w.clock.advance(30)  # the lease's ttl: it goes back with the call still running
    assert c.return_idle() == 1
    r.settle("0.75")
    (lease,) = w.ledger.leases()
    assert (lease.used_usd, lease.late_usd, lease.closed) == (D("0.75"), D("0.75"), True)


def test_a_grant_forgets_the_refusal_before_it() -> None:
    w = World(team_limit="1")
    other = w.client(refill_calls=1)
    theirs = other.reserve("0.6", team="a")
    c = w.client(refill_calls=1, refusal_hold_s=0.25)
    with pytest.raises(BudgetExhausted) as caught:
        c.reserve("0.8", team="a")
    assert caught.value.left_usd == D("0.4")
    c.reserve("0.3", team="a").cancel()  # asked and granted: the refusal is stale now
    theirs.cancel()
    other.close()  # 0.6 more is free
    c.reserve("0.7", team="a").cancel()  # still within refusal_hold_s: asked, not refused
    assert c.metrics.refused == 1 and c.metrics.requests == 3


def test_refill_calls_must_be_at_least_one() -> None:
    with pytest.raises(ValueError, match="refill_calls"):
        World().client(refill_calls=0)
    assert World().client(refill_calls=1).refill_calls == 1


def test_the_in_process_service_applies_a_holders_settle() -> None:
    w = World()
    c = w.client(refill_calls=10)
    r = c.reserve("1", team="a")
    assert r.lease_id is not None
    w.service.settle(LeaseSettle("team:a", c.client_id, r.lease_id, D("0.5"), D(0)))
    (lease,) = w.ledger.leases()
    assert lease.used_usd == D("0.5")
    r.settle("0.5")
