"""The embedded runtime's lease service: fed with the spend it lands, leased or not."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spendstream.config import Config, config_from_dict
from spendstream.errors import BudgetExhausted
from spendstream.producers.event import UsageEvent
from spendstream.records import Cost, Fact
from spendstream.runtime.embedded import EmbeddedRunner
from spendstream.runtime.embedded_leases import EmbeddedLeases
from spendstream.stream.leases import LeaseLedger, Spend
from spendstream.table_schemas import facts_table
from spendstream.warehouse.reading import connect

# Noon: an hour of retention after the day began (allowed_lateness_s = 3600) is long past.
T = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
CAP = Decimal(2)


def _config() -> Config:
    return config_from_dict(
        {
            "budget": [
                {"scope": "team:a", "period": "day", "amount_usd": 2, "hard_limit": 1.0},
                {"scope": "team:b", "period": "day", "amount_usd": 50},  # soft: not leased
            ],
        },
        "test",
    )


def _event(n: int, team: str, ts: datetime, **extra: Any) -> tuple[str, bytes]:
    event = {
        "event_id": f"e-{team}-{n}-{ts:%d%H%M}",
        "ts": ts.isoformat(),
        "provider": "openai",
        "model": "gpt-5",
        "input_tokens": 20_000,
        "output_tokens": 5_000,
        "team": team,
        **extra,
    }
    return "test", json.dumps(event).encode()


def _landed(work: Path, team: str, since: datetime, until: datetime) -> Decimal:
    con = connect(work)
    try:
        (usd,) = con.execute(
            "SELECT coalesce(sum(cost_usd), 0) FROM usage_facts WHERE team = ? AND ts >= ? "
            "AND ts < ?",
            [team, since, until],
        ).fetchone() or (None,)
    finally:
        con.close()
    return Decimal(usd)


def _day(ts: datetime) -> tuple[datetime, datetime]:
    start = ts.replace(hour=0, minute=0, second=0, microsecond=0)
    return start, start + timedelta(days=1)


def _left(runner: EmbeddedRunner, scope: str = "team:a") -> Decimal:
    (standing,) = runner.leases.service.ledger.standing(scope, T)
    return standing.left_usd


def _check(runner: EmbeddedRunner) -> None:
    ledger: LeaseLedger = runner.leases.service.ledger
    ledger.check()


def test_unleased_landed_spend_lowers_what_is_granted_next(tmp_path: Path) -> None:
    runner = EmbeddedRunner(tmp_path, _config(), lease_clock=lambda: T)
    assert runner.leases.scopes == {"team:a"}  # only the hard budget is leased
    assert _left(runner) == CAP
    # Unleased calls on the capped team, and on another team that must not count.
    runner.run([_event(n, "a", T - timedelta(minutes=n)) for n in range(3)])
    runner.run([_event(n, "b", T - timedelta(minutes=n)) for n in range(3)])
    landed = _landed(tmp_path, "a", *_day(T))
    assert Decimal(0) < landed < CAP
    assert _left(runner) == CAP - landed
    _check(runner)

    client = runner.leases.client(client_id="c1", background=False)
    try:
        left = CAP - landed
        with pytest.raises(BudgetExhausted) as refused:
            client.reserve(left + Decimal("0.000001"), team="a")
        assert refused.value.left_usd == left
        r = client.reserve(left, team="a")  # all that is left, and no more
        r.cancel()
        # What was granted never reaches past what landed spend left.
        granted = sum(x.granted_usd for x in runner.leases.service.ledger.leases("team:a"))
        assert granted == left
    finally:
        client.close()


def test_landed_spend_of_another_day_or_a_replayed_file_does_not_count(tmp_path: Path) -> None:
    runner = EmbeddedRunner(tmp_path, _config(), lease_clock=lambda: T)
    yesterday = [_event(n, "a", T - timedelta(days=1, minutes=n)) for n in range(3)]
    runner.run(yesterday)
    assert _landed(tmp_path, "a", T - timedelta(days=2), T) > 0
    assert _left(runner) == CAP  # another period's spend leaves today's cap whole
    today = [_event(n, "a", T - timedelta(minutes=n)) for n in range(2)]
    runner.run(today)
    left = _left(runner)
    assert left == CAP - _landed(tmp_path, "a", *_day(T))
    replay = runner.run(today)  # the warehouse lands nothing twice; nor does the ledger
    assert replay.duplicates == 2 and replay.landed == 0
    assert _left(runner) == left


def test_spend_under_a_lease_counts_once_and_frees_the_rest_when_the_lease_closes(
    tmp_path: Path,
) -> None:
    runner = EmbeddedRunner(tmp_path, _config(), lease_clock=lambda: T)
    client = runner.leases.client(client_id="c1", background=False)
    r = client.reserve(Decimal("1.5"), team="a")
    assert r.lease_id
    held = CAP - _left(runner)
    assert held >= Decimal("1.5")
    # The holder says less than the warehouse prices (e.g. it priced at a discount it lacks).
    r.settle(Decimal("0.01"))
    # The call lands under its lease: inside the lease's charge, not added on top of it.
    runner.run([_event(1, "a", T, lease_id=r.lease_id)])
    landed = _landed(tmp_path, "a", *_day(T))
    assert landed > Decimal("0.01")
    assert CAP - _left(runner) == held
    _check(runner)
    client.close()  # the lease goes back: what did not land is free again
    assert _left(runner) == CAP - landed
    _check(runner)


def test_a_restarted_runner_starts_from_what_the_warehouse_holds(tmp_path: Path) -> None:
    first = EmbeddedRunner(tmp_path, _config(), lease_clock=lambda: T)
    first.run(
        [_event(n, "a", T - timedelta(minutes=n)) for n in range(2)]
        + [_event(9, "a", T - timedelta(days=1))]  # yesterday: another period
        + [_event(n, "b", T) for n in range(2)]  # another team
    )
    left = _left(first)
    assert left < CAP
    again = EmbeddedRunner(tmp_path, _config(), lease_clock=lambda: T)
    assert _left(again) == left == CAP - _landed(tmp_path, "a", *_day(T))
    _check(again)
    # The seeded spend is counted once: a batch landing after it adds only itself.
    again.run([_event(5, "a", T)])
    assert _left(again) == CAP - _landed(tmp_path, "a", *_day(T))


def _fact(team: str, ts: datetime, cents: int | None, lease_id: str | None) -> Fact:
    event = UsageEvent(
        event_id=f"{team}-{ts.isoformat()}-{cents}",
        ts=ts,
        provider="openai",
        model="gpt-5",
        input_tokens=1,
        output_tokens=1,
        team=team,
        lease_id=lease_id,
    )
    usd = None if cents is None else Decimal(cents) / 100
    cost = None if usd is None else Cost(usd, Decimal(0), Decimal(0), Decimal(0), usd, "test")
    return Fact(event, cost, ts)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b"]),
            st.integers(min_value=-30 * 60, max_value=20),  # minutes from now: today, yesterday
            st.one_of(st.none(), st.integers(min_value=0, max_value=30)),
            st.booleans(),
        ),
        max_size=40,
    )
)
def test_landing_facts_commits_what_landing_each_one_alone_does(
    rows: list[tuple[str, int, int | None, bool]],
) -> None:
    """Unleased facts are summed per hour before the ledger sees them: nothing is lost or
    moved to another period, and unpriced or unbudgeted facts count nowhere."""
    positions = iter(range(1, 10_000))

    def alone_pos() -> int:
        return next(positions)

    config = _config()
    # Half past midnight: yesterday's account still takes late landings (for an hour).
    now = T.replace(hour=0, minute=30)
    hosted, alone = EmbeddedLeases(config, lambda: now), EmbeddedLeases(config, lambda: now)
    # A lease some facts land under, the same on both sides.
    held = [
        x.client(client_id="c", background=False).reserve(Decimal("0.5"), team="a")
        for x in (hosted, alone)
    ]
    assert held[0].lease_id and held[1].lease_id
    facts = [
        _fact(team, now + timedelta(minutes=m), cents, held[0].lease_id if leased else None)
        for team, m, cents, leased in rows
    ]
    hosted.land(facts_table(facts))
    for f in facts:  # one batch per fact, one Spend each, as the event carries it
        if f.cost is not None and f.event.team == "a":
            ids = held[1].lease_id if f.event.lease_id else None
            alone.service.land(
                "one", alone_pos(), [Spend.of("team:a", f.event.ts, f.cost.cost_usd, ids)]
            )
    for day in (now, now - timedelta(days=1)):
        start = day.replace(hour=0, minute=0)
        assert hosted.service.ledger.committed("team:a", "day", start) == (
            alone.service.ledger.committed("team:a", "day", start)
        )
    hosted.service.ledger.check()
