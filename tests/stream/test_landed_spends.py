"""landed_spends: the Spend a batch of priced facts lands on each hard-budget scope (pure:
no lease server; the embedded and Kafka lease services both land through it)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from spendstream.stream.leases import Spend, landed_spends
from spendstream.table_schemas import facts_table
from tests.stream.detection_facts import fact

T = datetime(2026, 3, 4, 10, 0, tzinfo=UTC)


def test_unleased_facts_are_summed_per_hour_and_leased_ones_kept_apart() -> None:
    # An hourly hard cap needs each hour's unleased spend in its own hour, at its start;
    # most calls carry no lease, and a null lease_id is none (taken for one, each call
    # landed on its own, looking for a lease that does not exist).
    facts = [
        fact(T + timedelta(minutes=15), "0.03", team="a"),
        fact(T + timedelta(minutes=45), "0.04", team="a"),
        fact(T + timedelta(minutes=65), "0.05", team="a"),
        fact(T + timedelta(minutes=20), "0.06", team="a", lease_id="L1 L2"),
        fact(T + timedelta(minutes=30), None, team="a"),  # unpriced: spends nothing
        fact(T + timedelta(minutes=5), "0.07", team="b"),  # not on the scope
    ]
    spends = landed_spends(facts_table(facts), ["team:a"])
    assert sorted(spends, key=lambda s: (s.ts, s.lease_ids)) == [
        Spend("team:a", T, Decimal("0.07")),
        Spend("team:a", T + timedelta(minutes=20), Decimal("0.06"), ("L1", "L2")),
        Spend("team:a", T + timedelta(hours=1), Decimal("0.05")),
    ]
