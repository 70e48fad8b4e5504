"""The agents' burst: concurrent Meters reserving on one hard budget of the embedded runner."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from spendstream.config import Config, config_from_dict
from spendstream.producers.guard import call_cost_usd
from spendstream.runtime.agent_burst import MODEL, PROVIDER, plan_calls, run_agent_burst
from spendstream.runtime.embedded import EmbeddedRunner, read_lines
from spendstream.warehouse.reading import connect

AT = datetime(2026, 3, 4, 9, 30, tzinfo=UTC)


def _config(cap_usd: str = "1.0") -> Config:
    return config_from_dict(
        {
            "budget": [
                {"scope": "team:agents", "period": "day", "amount_usd": cap_usd, "hard_limit": 1}
            ],
            "leases": {"refill_calls": 4},
        },
        "test",
    )


def test_the_plan_is_seeded_and_every_call_uses_less_than_it_reserves() -> None:
    plan = plan_calls(7, 3, 5)
    assert plan == plan_calls(7, 3, 5)
    assert plan != plan_calls(8, 3, 5)
    assert [len(p) for p in plan] == [5, 5, 5]
    for call in (c for p in plan for c in p):
        assert call.output_tokens < call.max_tokens
        used = call_cost_usd(PROVIDER, MODEL, call.input_tokens, call.output_tokens)
        assert used is not None and used < call.worst_usd


def test_a_burst_lands_at_most_the_cap_all_of_it_under_leases(tmp_path: Path) -> None:
    runner = EmbeddedRunner(tmp_path, _config(), lease_clock=lambda: AT)
    events = tmp_path / "agents.jsonl"
    burst = run_agent_burst(runner, AT, events, agents=6, calls_per_agent=20, seed=3)
    assert burst.budget == "team:agents/day" and burst.cap_usd == Decimal(1)
    assert burst.requested_usd > 2 * burst.cap_usd
    assert burst.refused > 0 and burst.ran + burst.refused == burst.calls == 120
    con = connect(tmp_path)
    try:
        facts = con.execute(
            "SELECT cost_usd, lease_id, user_id FROM usage_facts WHERE team = 'agents'"
        ).fetchall()
    finally:
        con.close()
    landed = sum((cost for cost, _, _ in facts), Decimal(0))
    assert len(facts) == burst.ran == burst.summary.landed
    assert landed == burst.summary.cost_usd
    assert 0 < landed <= burst.cap_usd
    assert {user for _, _, user in facts} == {f"agent-{i:02d}" for i in range(6)}
    # Every call ran under a lease the embedded ledger granted to one of the agents.
    ledger = runner.leases.service.ledger
    leases = {x.lease_id: x for x in ledger.leases("team:agents")}
    assert len(leases) == burst.leases
    assert burst.granted_usd == sum(x.granted_usd for x in leases.values())
    assert all(lease_id in leases for _, lease_id, _ in facts)
    # The agents closed their leases: what the cap has committed is what landed, no more.
    assert all(x.closed for x in leases.values())
    ((standing),) = ledger.standing("team:agents", AT)
    assert standing.committed_usd == landed
    ledger.check()
    # The events file lands again as duplicates, and the ledger does not count them twice.
    again = runner.run(read_lines([str(events)]))
    assert again.duplicates == burst.ran and again.landed == 0
    assert ledger.standing("team:agents", AT)[0].committed_usd == landed


def test_a_burst_needs_a_hard_budget_on_a_team(tmp_path: Path) -> None:
    runner = EmbeddedRunner(tmp_path, _config(), lease_clock=lambda: AT)
    with pytest.raises(ValueError, match="hard"):
        run_agent_burst(runner, AT, tmp_path / "x.jsonl", scope="team:other")
    with pytest.raises(ValueError, match="hard"):
        run_agent_burst(runner, AT, tmp_path / "x.jsonl", scope="global")


def test_a_second_burst_after_a_restart_still_lands_at_most_the_cap(tmp_path: Path) -> None:
    first = run_agent_burst(
        EmbeddedRunner(tmp_path, _config(), lease_clock=lambda: AT),
        AT,
        tmp_path / "one.jsonl",
        agents=4,
        calls_per_agent=20,
        seed=1,
    )
    # A new process on the same warehouse: its ledger starts from what landed.
    again = EmbeddedRunner(tmp_path, _config(), lease_clock=lambda: AT)
    second = run_agent_burst(again, AT, tmp_path / "two.jsonl", agents=4, calls_per_agent=20)
    assert first.ran > 0 and second.refused > 0
    con = connect(tmp_path)
    try:
        ((landed, calls),) = con.execute(
            "SELECT sum(cost_usd), count(*) FROM usage_facts WHERE team = 'agents'"
        ).fetchall()
    finally:
        con.close()
    assert calls == first.ran + second.ran
    assert landed <= Decimal(1)
    # All the second burst could spend is what the first left.
    assert second.summary.cost_usd <= Decimal(1) - first.summary.cost_usd
