"""Meter.reserve, record(reservation=...) and guard(reserve=True): a real ingest server and the
in-process lease service; the soft guard() stays as it was."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal

import pytest

from spendstream.config import BudgetConfig
from spendstream.errors import BreakerOpen, BudgetExhausted, SpendstreamError
from spendstream.producers import BreakerView, LeaseClient, Meter, RequestRate
from spendstream.signing import RecordSigner
from spendstream.stream.leases import LeaseLedger, LeasePolicy, LocalLeaseService
from tests.producers.test_meter import TOKEN, IngestServer

D = Decimal
RATES = {("openai", "m"): RequestRate(input_per_mtok=D(2), output_per_mtok=D(8))}


@pytest.fixture
def server() -> Iterator[IngestServer]:
    s = IngestServer()
    yield s
    s.stop()


@pytest.fixture
def ledger() -> LeaseLedger:
    budgets = [BudgetConfig(scope="team:a", amount_usd=D(1), hard_limit=D(1))]
    return LeaseLedger(budgets, LeasePolicy())


@pytest.fixture
def meter(server: IngestServer, ledger: LeaseLedger) -> Iterator[Meter]:
    m = Meter.http(server.url, TOKEN, spool_dir=None, linger_s=0.01, team="a")
    m.use_leases(LeaseClient(LocalLeaseService(ledger), ledger.scopes, background=False))
    yield m
    assert m.leases is not None
    m.leases.close()
    m.close()


def sent(server: IngestServer, meter: Meter) -> list[dict[str, object]]:
    assert meter.flush(10)
    return [json.loads(line) for body in server.bodies for line in body.splitlines()]


def test_reserve_prices_the_worst_case_and_record_settles_at_the_events_price(
    server: IngestServer, meter: Meter, ledger: LeaseLedger
) -> None:
    r = meter.reserve(provider="openai", model="m", input_tokens=1000, max_tokens=500, rates=RATES)
    assert r.max_usd == D("0.006")  # 1000 x $2 + 500 x $8 per million
    meter.record(provider="openai", model="m", input_tokens=1000, output_tokens=100, reservation=r)
    assert r.actual_usd == D("0.0028")
    (event,) = sent(server, meter)
    assert event["lease_id"] == r.lease_id and event["team"] == "a"
    (lease,) = ledger.leases()
    assert lease.lease_id == r.lease_id


def test_the_catalog_worst_case_covers_a_prompt_written_to_the_cache(meter: Meter) -> None:
    # Anthropic prices cache writes above plain input: the reservation takes the dearer.
    r = meter.reserve(
        provider="anthropic", model="claude-sonnet-4-5", input_tokens=10_000, max_tokens=1000
    )
    assert r.max_usd == D("0.0525")
    r.cancel()


def test_an_event_with_no_price_settles_at_its_reported_cost_else_the_worst_case(
    meter: Meter,
) -> None:
    r = meter.reserve("0.5")
    meter.record(
        provider="self-hosted",
        model="mine",
        input_tokens=1,
        output_tokens=1,
        reported_cost_usd="0.125",
        reservation=r,
    )
    assert r.actual_usd == D("0.125")
    r2 = meter.reserve("0.5")
    meter.record(
        provider="self-hosted", model="mine", input_tokens=1, output_tokens=1, reservation=r2
    )
    assert r2.actual_usd == D("0.5")


def test_track_settles_its_reservation_from_the_recorded_call(
    server: IngestServer, meter: Meter
) -> None:
    r = meter.reserve("0.01")
    r.rates = RATES
    with meter.track("openai", "m", reservation=r) as call:
        call.set(input_tokens=500, output_tokens=50)
    assert r.actual_usd == D("0.0014")
    (event,) = sent(server, meter)
    assert event["lease_id"] == r.lease_id


def test_an_invalid_event_settles_its_reservation_at_the_worst_case(meter: Meter) -> None:
    r = meter.reserve("0.2")
    with pytest.raises(SpendstreamError, match="input_tokens"):
        meter.record(provider="openai", model="m", input_tokens=-1, output_tokens=0, reservation=r)
    assert r.actual_usd == D("0.2")


def test_guard_with_reserve_folds_the_reservation_in(meter: Meter, ledger: LeaseLedger) -> None:
    r = meter.guard(
        reserve=True, provider="openai", model="m", input_tokens=1000, max_tokens=500, rates=RATES
    )
    assert r is not None and r.max_usd == D("0.006") and r.lease_id
    r.cancel()
    with pytest.raises(BudgetExhausted):
        meter.guard(max_usd="1.5")


def test_guard_without_a_reservation_stays_the_breaker_check(meter: Meter) -> None:
    with pytest.raises(SpendstreamError, match="breaker view"):
        meter.guard(team="a")
    assert meter.leases is not None and meter.leases.metrics.requests == 0


def test_reserve_without_a_lease_client_says_what_to_do(server: IngestServer) -> None:
    m = Meter.http(server.url, TOKEN, spool_dir=None)
    try:
        with pytest.raises(SpendstreamError, match="use_leases"):
            m.reserve("1")
        with pytest.raises(TypeError, match="max_usd, or provider"):
            m.use_leases(LeaseClient(object(), [], background=False))  # type: ignore[arg-type]
            m.reserve(provider="openai")
        with pytest.raises(SpendstreamError, match="no price known"):
            m.reserve(provider="nobody", model="nothing", input_tokens=1, max_tokens=1)
    finally:
        m.close()


# --- with main's guard(): call tags, readiness and signed breaker records ----------------


@pytest.fixture
def untagged(server: IngestServer, ledger: LeaseLedger) -> Iterator[Meter]:
    """A Meter with no team default: only meter.tags() puts the call on team:a's budget."""
    m = Meter.http(server.url, TOKEN, spool_dir=None, linger_s=0.01)
    m.use_leases(LeaseClient(LocalLeaseService(ledger), ledger.scopes, background=False))
    yield m
    assert m.leases is not None
    m.leases.close()
    m.close()


def test_a_reservation_covers_the_budgets_of_the_meter_tags_block_the_event_lands_in(
    server: IngestServer, untagged: Meter, ledger: LeaseLedger
) -> None:
    assert untagged.reserve("0.1").lease_id is None  # no team: no hard budget covers it
    with untagged.tags(team="a"):
        r = untagged.reserve("0.1")
        untagged.record(provider="x", model="y", input_tokens=1, output_tokens=1, reservation=r)
    assert r.lease_id is not None
    (event,) = [e for e in sent(server, untagged) if e.get("lease_id")]
    assert event["team"] == "a" and event["lease_id"] == r.lease_id
    with untagged.tags(team="a"), pytest.raises(BudgetExhausted):
        untagged.guard(max_usd="1.5")


def test_guard_inside_a_tags_block_checks_the_blocks_breakers(untagged: Meter) -> None:
    view = BreakerView("127.0.0.1:1")  # never started: records applied by hand
    view.apply(b"session:s1", json.dumps({"state": "open", "reason": "runaway_session"}))
    untagged.breakers = view
    untagged.guard(session_id="s2")
    with untagged.tags(session_id="s1"), pytest.raises(BreakerOpen, match="session:s1"):
        untagged.guard(reserve=True, max_usd="0.1")


def test_a_fail_closed_view_not_ready_refuses_before_any_lease_is_requested(
    meter: Meter, ledger: LeaseLedger
) -> None:
    meter.breakers = BreakerView("127.0.0.1:1", fail_closed=True)  # never catches up
    with pytest.raises(BreakerOpen, match="not caught up") as refused:
        meter.guard(reserve=True, max_usd="0.1")
    assert type(refused.value) is BreakerOpen
    assert meter.leases is not None and meter.leases.metrics.requests == 0
    assert ledger.leases() == []


def test_a_view_not_ready_and_not_fail_closed_lets_the_reservation_through(meter: Meter) -> None:
    meter.breakers = BreakerView("127.0.0.1:1", ready_timeout_s=0)
    r = meter.guard(reserve=True, max_usd="0.1")
    assert r is not None and r.lease_id
    r.cancel()


def test_a_signed_view_ignores_a_forged_open_breaker_and_honours_a_signed_one(
    meter: Meter,
) -> None:
    signer = RecordSigner("k" * 40)
    view = BreakerView("127.0.0.1:1", signer=signer)
    meter.breakers = view
    value = json.dumps({"scope": "team:a", "state": "open", "reason": "budget_exceeded"}).encode()
    view.apply(b"team:a", value, signer.headers("breaker", b"team:a", value.replace(b"a", b"b")))
    assert view.unverified == 1
    r = meter.guard(reserve=True, max_usd="0.1")
    assert r is not None and r.lease_id
    r.cancel()
    view.apply(b"team:a", value, signer.headers("breaker", b"team:a", value))
    assert meter.leases is not None
    reserved = meter.leases.metrics.reserved
    with pytest.raises(BreakerOpen, match="team:a: budget_exceeded"):
        meter.guard(reserve=True, max_usd="0.1")
    assert meter.leases.metrics.reserved == reserved
