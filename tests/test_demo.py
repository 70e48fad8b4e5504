"""`spendstream demo` tells the story its workload holds, and only that story."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from spendstream.cli import main
from spendstream.synthetic import LOOP_KEY, LOOP_SESSION


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    import contextlib
    import io

    work = tmp_path_factory.mktemp("demo")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["demo", "--workdir", str(work), "--events", "50000"]) == 0
    return work, out.getvalue()


def _sql(work: Path, sql: str) -> list[tuple[object, ...]]:
    con = duckdb.connect(str(work / "warehouse" / "spendstream.duckdb"), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_only_the_runaway_loop_opens_breakers(demo: tuple[Path, str]) -> None:
    work, out = demo
    opened = {r[0] for r in _sql(work, "SELECT scope FROM breaker_events WHERE state = 'open'")}
    assert opened == {f"session:{LOOP_SESSION}", f"api_key:{LOOP_KEY}"}
    assert f"Runaway agent loop: session {LOOP_SESSION}" in out


def test_the_loop_is_flagged_at_its_101st_turn(demo: tuple[Path, str]) -> None:
    work, _ = demo
    # Turns, then cost, then duration: the first of the session's runaway alerts is the
    # crossing event of the 100-turn limit, not a later batch boundary.
    rows = _sql(
        work,
        "SELECT (SELECT min(ts) FROM alerts WHERE kind = 'runaway_session' "
        f"AND scope = 'session:{LOOP_SESSION}') = "
        f"(SELECT ts FROM usage_facts WHERE session_id = '{LOOP_SESSION}' AND turn = 101)",
    )
    assert rows == [(True,)]


def test_the_spike_hour_the_budget_and_the_cache_drop_are_caught(demo: tuple[Path, str]) -> None:
    work, _ = demo
    kinds = dict(_sql(work, "SELECT kind, count(*) FROM alerts GROUP BY kind"))
    assert kinds.keys() >= {
        "hourly_anomaly",
        "budget_threshold",
        "cache_hit_drop",
        "unpriced_model",
    }
    spike = _sql(
        work,
        "SELECT DISTINCT hour(ts) FROM alerts WHERE kind = 'hourly_anomaly' "
        "AND scope = 'feature:onboarding-emails'",
    )
    assert spike == [(14,)]
    levels = sorted(
        r[0]
        for r in _sql(
            work,
            "SELECT threshold FROM alerts WHERE kind = 'budget_threshold' "
            "AND scope = 'team:growth'",
        )
    )
    assert len(levels) == 3
    drops = {r[0] for r in _sql(work, "SELECT scope FROM alerts WHERE kind = 'cache_hit_drop'")}
    assert drops == {"feature:support-chat"}


def test_costs_add_up_between_the_story_and_the_warehouse(demo: tuple[Path, str]) -> None:
    work, out = demo
    (total,) = _sql(work, "SELECT sum(cost_usd) FROM usage_facts")[0]
    assert (
        f"cost of landed facts: ${total.quantize(__import__('decimal').Decimal('0.000001'))}" in out
    )
