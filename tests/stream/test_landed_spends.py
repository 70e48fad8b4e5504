"""landed_spends: the Spend a batch of priced facts lands on each hard-budget scope."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from spendstream.producers.event import UsageEvent
from spendstream.records import Cost, Fact
from spendstream.stream.leases import Spend, landed_spends
from spendstream.table_schemas import facts_table

HOUR = datetime(2026, 3, 4, 10, 0, tzinfo=UTC)


def _fact(ts: datetime, cents: int, lease_id: str | None = None, team: str = "a") -> Fact:
    event = UsageEvent(
        event_id=f"{team}-{ts.isoformat()}-{cents}-{lease_id}",
        ts=ts,
        provider="openai",
        model="gpt-5",
        input_tokens=1,
        output_tokens=1,
        team=team,
        lease_id=lease_id,
    )
    usd = Decimal(cents) / 100
    return Fact(event, Cost(usd, Decimal(0), Decimal(0), Decimal(0), usd, "test"), ts)


def test_facts_without_a_lease_id_are_unleased_spend_summed_at_their_hours_start() -> None:
    # Most calls carry no lease: a null lease_id taken for a lease would land each call on
    # its own at its own time, and the ledger would look for a lease that does not exist.
    facts = [
        _fact(HOUR + timedelta(minutes=15), 3),
        _fact(HOUR + timedelta(minutes=45), 4),
        _fact(HOUR + timedelta(minutes=20), 6, "L1 L2"),
    ]
    spends = landed_spends(facts_table(facts), ["team:a"])
    assert sorted(spends, key=lambda s: s.ts) == [
        Spend("team:a", HOUR, Decimal("0.07")),
        Spend("team:a", HOUR + timedelta(minutes=20), Decimal("0.06"), ("L1", "L2")),
    ]


def test_unleased_spend_is_summed_per_hour_not_per_day() -> None:
    # An hourly hard cap needs each hour's unleased spend in its own hour: summed per day,
    # the 10:15 and 11:05 calls would land together at midnight, in neither of their hours.
    facts = [
        _fact(HOUR + timedelta(minutes=15), 3),
        _fact(HOUR + timedelta(minutes=65), 5),
        _fact(HOUR + timedelta(minutes=5), 7, team="b"),  # not on the scope
    ]
    spends = landed_spends(facts_table(facts), ["team:a"])
    assert sorted(spends, key=lambda s: s.ts) == [
        Spend("team:a", HOUR, Decimal("0.03")),
        Spend("team:a", HOUR + timedelta(hours=1), Decimal("0.05")),
    ]
