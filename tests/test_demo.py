"""`spendstream demo` tells the story its workload holds, and only that story."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import re
import shutil
import sys
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from spendstream.cli import main
from spendstream.synthetic import LOOP_KEY, LOOP_SESSION
from tests.stream.reference.engine import spent


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
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
    # Cents to read, and the exact sum beside them: a total to reconcile is not rounded.
    exact = f"{total.normalize():f}"
    assert f"cost of landed facts: ${total.quantize(Decimal('0.01')):,} (exactly ${exact}) (" in out
    assert f"total ${total.quantize(Decimal('0.01')):,} over" in out
    # The self-hosted team has no price: it says so instead of showing $0.00.
    assert re.search(r"team research +unpriced\n", out)


def test_each_section_shows_as_many_lines_as_its_count_says(demo: tuple[Path, str]) -> None:
    work, out = demo
    kinds = dict(_sql(work, "SELECT kind, count(*) FROM alerts GROUP BY kind"))
    sections = {
        "Hourly anomalies": kinds["hourly_anomaly"],
        "Budget": kinds.get("budget_threshold", 0) + kinds.get("budget_exceeded", 0),
        "Cache hit drops": kinds["cache_hit_drop"],
        "Unpriced models": kinds["unpriced_model"],
    }
    lines = out.splitlines()
    for title, count in sections.items():
        start = next(i for i, li in enumerate(lines) if li.startswith(f"  {title} ("))
        head = lines[start]
        body = [
            li for li in itertools.takewhile(lambda li: li.startswith("    "), lines[start + 1 :])
        ]
        shown = [li for li in body if not li.startswith("    ... all of them")]
        if len(shown) == count:
            assert head == f"  {title} ({count}):"
        else:  # fewer shown: the header says how many and the query for all of them follows
            assert head == f"  {title} ({count}; first {len(shown)}):"
            assert body[-1].startswith("    ... all of them: spendstream sql")


def test_an_anomaly_line_gives_the_running_total_and_the_hours_final_total(
    demo: tuple[Path, str],
) -> None:
    work, out = demo
    rows = _sql(
        work,
        "SELECT a.scope, a.value, a.threshold, (SELECT sum(cost_usd) FROM usage_facts f "
        "WHERE f.ts >= date_trunc('hour', a.ts) AND f.ts < date_trunc('hour', a.ts) + INTERVAL 1 HOUR "
        "AND (a.scope = 'global' OR a.scope = 'team:' || f.team OR a.scope = 'feature:' || f.feature "
        "OR a.scope = 'api_key:' || f.api_key_id)) FROM alerts a WHERE kind = 'hourly_anomaly'",
    )
    assert rows
    for scope, so_far, threshold, final in rows:
        assert final > so_far  # the alert fires at the crossing, well before the hour ends
        # Cents, unless they would not read as past the threshold or miss by more than a
        # thousandth of it (the reference engine's wording).
        expected = f"    {scope}: {spent(so_far, threshold)} spent by "
        line = next(li for li in out.splitlines() if li.startswith(expected))
        assert line.endswith(f"the hour ended at ${final.quantize(Decimal('0.01')):,}")


def test_a_rerun_says_nothing_new_landed_and_that_the_story_is_the_warehouses(
    demo: tuple[Path, str],
) -> None:
    work, first = demo
    assert "What it caught:" in first
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["demo", "--workdir", str(work), "--events", "50000"]) == 0
    again = out.getvalue()
    assert "landed 0 + duplicates" in again
    ((held,),) = _sql(work, "SELECT count(*) FROM usage_facts")
    assert f"Nothing new landed: all {held:,} events were already in the warehouse" in again
    assert "What it caught:" not in again
    assert "Hard cap under a burst" not in again  # the agents' burst is not run twice
    assert "What the warehouse holds, from earlier runs" in again


BURST = re.compile(
    r"  Hard cap under a burst: (\d+) agents made ([\d,]+) calls at once on team:agents "
    r"\(hard budget \$([\d.,]+) a day\),\n"
    r"  asking for \$([\d.,]+) at worst\. Every call first reserved its worst case on a "
    r"budget lease: ([\d,]+) leases granted \$([\d.,]+), [^\n]*\n"
    r"  ([\d,]+) calls ran and landed \$([\d.,]+), within the \$([\d.,]+) cap; ([\d,]+) "
    r"were refused with BudgetExhausted before they were made\.\n"
)


def _n(text: str) -> Decimal:
    return Decimal(text.replace(",", ""))


def test_the_agents_hard_cap_holds_under_their_burst(demo: tuple[Path, str]) -> None:
    work, out = demo
    found = BURST.search(out)
    assert found, out
    agents, calls, cap, asked, leases, granted, ran, landed, cap_again, refused = map(
        _n, found.groups()
    )
    ((w_landed, w_ran, unleased, first, last),) = _sql(
        work,
        "SELECT sum(cost_usd), count(*), count(*) FILTER (WHERE lease_id IS NULL), "
        "min(ts), max(ts) FROM usage_facts WHERE team = 'agents'",
    )
    assert first.date() == last.date()  # one day: the one period of the day cap
    # The cap held while the agents asked for more than twice as much and were refused.
    assert cap == cap_again == Decimal("5.00")
    assert w_landed <= cap
    assert asked > 2 * cap
    assert refused > 0 and leases > agents
    assert ran + refused == calls == 400 and agents == 16
    # The printed figures are the warehouse's.
    assert ran == w_ran
    assert landed == w_landed.quantize(Decimal("0.01"))
    assert unleased == 0  # every call the agents made ran under a lease
    assert granted > 0
    rows = _sql(
        work,
        "SELECT kind FROM alerts WHERE scope = 'team:agents' UNION ALL "
        "SELECT state FROM breaker_events WHERE scope = 'team:agents'",
    )
    assert "budget_exceeded" not in {r[0] for r in rows} and "open" not in {r[0] for r in rows}


def test_the_closing_lines_say_how_to_get_spendstream_on_path_and_suggest_no_duckdb_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = Path(sys.prefix) / "bin"
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # a fresh shell after `make demo`
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["demo", "--workdir", str(tmp_path / "w"), "--events", "1000"]) == 0
    text = out.getvalue()
    assert f". {bin_dir / 'activate'}" in text or ". .venv/bin/activate" in text
    assert "is not on this shell's PATH" in text
    assert "duckdb -readonly" not in text and "import duckdb" in text
    # The advice works: with the environment's bin on PATH, `spendstream` is found.
    assert shutil.which("spendstream", path=str(bin_dir)) is not None
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["demo", "--workdir", str(tmp_path / "w"), "--events", "1000"]) == 0
    assert "is not on this shell's PATH" not in out.getvalue()


def test_a_rerun_after_a_reprice_says_the_unpriced_calls_are_priced_now(tmp_path: Path) -> None:
    # Its own workdir: the module's demo is shared, and a workdir cannot be copied (its
    # catalog names its tables' absolute location).
    work = tmp_path / "spendstream-data"
    demo = ["demo", "--workdir", str(work), "--events", "5000"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(demo) == 0
    assert "no price for self-hosted/" in out.getvalue()
    assert "[priced since:" not in out.getvalue()
    config = tmp_path / "spendstream.toml"
    config.write_text(
        '[[prices.model]]\nprovider = "self-hosted"\nmodel = "llama-3.1-8b-support-ft"\n'
        "input_per_mtok = 0.10\noutput_per_mtok = 0.20\n"
    )
    reprice = ["prices", "reprice", "--since", "2000-01-01", "--until", "2100-01-01", "--yes"]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main([*reprice, "--workdir", str(work), "--config", str(config)]) == 0
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(demo) == 0
    story = out.getvalue().split("  Unpriced models (")[1].split("\n  Circuit breakers")[0]
    lines = story.splitlines()[1:]
    assert lines and all(
        "no price for self-hosted/" in li
        and li.endswith("[priced since: `spendstream prices reprice` wrote their costs]")
        for li in lines
    )


def test_a_late_calls_unpriced_alert_is_not_said_priced_while_its_calls_are_not(
    tmp_path: Path,
) -> None:
    # unpriced_model dates a call too late for its own day in the day it arrived (its
    # details' call_day is the call's): the story looked for that model's unpriced calls
    # on the arrival day, found none, and said "[priced since: ...]" of calls still unpriced.
    work = tmp_path / "spendstream-data"
    demo = ["demo", "--workdir", str(work), "--events", "1000"]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(demo) == 0
    [events] = (work / "demo").glob("events-seed*.jsonl")
    newest = max(
        datetime.fromisoformat(json.loads(line)["ts"]) for line in events.read_text().splitlines()
    )
    late = {
        "event_id": "late-mystery-1",
        "ts": (newest - timedelta(days=3)).isoformat(),
        "provider": "openai",
        "model": "mystery-late-9",
        "input_tokens": 100,
        "output_tokens": 10,
    }
    calls = tmp_path / "late.jsonl"
    calls.write_text(json.dumps(late) + "\n")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(["ingest", str(calls), "--workdir", str(work)]) == 0
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(demo) == 0
    [line] = [li for li in out.getvalue().splitlines() if "mystery-late-9" in li]
    assert "late" in line and "[priced since:" not in line


def test_another_events_count_in_a_workdir_holding_the_seeds_demo_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `demo --events 2000` after `make demo` (50,000, same seed, same workdir): its ids were
    # taken by other content, 2,056 conflicting_duplicate dead letters landed, and the story
    # said every event "was already in the warehouse".
    work = tmp_path / "spendstream-data"
    assert main(["demo", "--workdir", str(work), "--events", "1000"]) == 0
    capsys.readouterr()
    ((dead_before,),) = _sql(work, "SELECT count(*) FROM dead_letters")
    assert main(["demo", "--workdir", str(work), "--events", "1200"]) == 2
    err = capsys.readouterr().err
    assert f"{work} holds the demo of --seed 7 --events 1,000; one of --events 1,200" in err
    assert "--workdir spendstream-demo-1200" in err
    assert _sql(work, "SELECT count(*) FROM dead_letters") == [(dead_before,)]
    assert not (work / "demo" / "events-seed7-1200.jsonl").exists()
    # Its own workdir, or the same --events again, still run.
    assert main(["demo", "--workdir", str(tmp_path / "other"), "--events", "1200"]) == 0
    assert main(["demo", "--workdir", str(work), "--events", "1000"]) == 0
