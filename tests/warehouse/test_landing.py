"""Landing: each event_id once in usage_facts whatever is replayed, state committed with the facts,
and a crash at any step of the commit protocol neither duplicates nor loses a fact."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from spendstream.warehouse import CommitBatch, Warehouse, landing
from tests.warehouse.conftest import Query
from tests.warehouse.factories import T0, alert, breaker, days, dead_letter, event, fact


class Crash(Exception):
    pass


@pytest.fixture
def crash_at() -> Iterator[list[str]]:
    """Names of protocol steps at which the next commit raises (a simulated process death)."""
    steps: list[str] = []

    def fault(step: str) -> None:
        if step in steps:
            raise Crash(step)

    landing._fault = fault
    yield steps
    landing._fault = lambda step: None


def _parquet_files(workdir: Path) -> list[Path]:
    tables = ("usage_facts", "alerts", "breaker_events", "dead_letters")
    return [
        p
        for t in tables
        for p in (workdir / "warehouse" / t).rglob("*.parquet")
        if "date=0001-01-01" not in str(p)
    ]


def test_replayed_batch_lands_each_event_id_once(wh: Warehouse, q: Query) -> None:
    facts = [fact(T0, "0.5") for _ in range(5)]
    first = wh.commit(facts=facts)
    again = wh.commit(facts=facts + facts[:2])
    assert (first.facts, again.facts, again.skipped) == (5, 0, 7)
    assert q("SELECT count(*), count(DISTINCT event_id), sum(cost_usd) FROM usage_facts") == [
        (5, 5, Decimal("2.5"))
    ]


def test_unseen_drops_landed_ids_and_repeats_keeping_the_first(wh: Warehouse) -> None:
    landed = fact()
    wh.commit(facts=[landed])
    a = event(event_id="a", model="first")
    a_again = event(event_id="a", model="second")
    b = event(event_id="b")
    out = wh.unseen([landed.event, a, b, a_again])
    assert [(e.event_id, e.model) for e in out] == [("a", "first"), ("b", "gpt-5-mini")]


def test_a_writer_that_lost_the_race_to_the_catalog_lands_only_the_rest(
    workdir: Path, q: Query
) -> None:
    shared = [fact() for _ in range(3)]
    mine = fact()
    with Warehouse(workdir, writer="a") as a, Warehouse(workdir, writer="b") as b:
        a.ensure_views()
        # Both asked before either committed: both see all three as new.
        assert (
            len(a.unseen([f.event for f in shared]))
            == len(b.unseen([f.event for f in shared]))
            == 3
        )
        a.commit(facts=shared, state={"a": 1})
        r = b.commit(facts=[*shared, mine], state={"b": 1})
        assert (r.facts, r.skipped) == (1, 3)
        assert b.last_commit() == ({"b": 1}, None)
    assert q("SELECT count(*), count(DISTINCT event_id) FROM usage_facts") == [(4, 4)]


def test_last_commit_returns_the_writers_state_and_positions(workdir: Path) -> None:
    with Warehouse(workdir, writer="p0-2") as w1, Warehouse(workdir, writer="p3-5") as w2:
        assert w1.last_commit() is None
        w1.commit(CommitBatch(facts=[fact()], state={"n": 1}, source_positions={"usage/0": 10}))
        w1.commit(CommitBatch(facts=[fact()], state={"n": 2}, source_positions={"usage/0": 20}))
        w2.commit(CommitBatch(facts=[fact()], state={"n": 9}, source_positions={"usage/3": 7}))
    with Warehouse(workdir, writer="p0-2") as again:
        assert again.last_commit() == ({"n": 2}, {"usage/0": 20})
        assert set(again.all_writers()) == {"p0-2", "p3-5"}


def test_a_commit_without_state_keeps_the_writers_last_state(wh: Warehouse) -> None:
    wh.commit(facts=[fact()], state={"n": 1}, source_positions={"f": 3})
    wh.commit(dead_letters=[dead_letter()])
    assert wh.last_commit() == ({"n": 1}, {"f": 3})


def test_a_batch_with_nothing_new_and_no_state_commits_nothing(wh: Warehouse) -> None:
    f = fact()
    first = wh.commit(facts=[f])
    again = wh.commit(facts=[f])
    assert first.commit_id > 0 and (again.commit_id, again.skipped) == (0, 1)
    assert wh.commit().commit_id == 0
    assert wh.commit(state={"n": 1}).commit_id > first.commit_id


def test_state_that_is_not_json_is_refused_before_anything_is_written(
    wh: Warehouse, workdir: Path
) -> None:
    with pytest.raises(TypeError):
        wh.commit(facts=[fact()], state={"when": T0})
    assert _parquet_files(workdir) == []
    assert wh.last_commit() is None


def test_money_is_exact_decimal_38_18_in_the_views(wh: Warehouse, q: Query) -> None:
    tiny = "0.000000000000000001"
    wh.commit(facts=[fact(cost=tiny), fact(cost="123456789.123456789123456789")])
    rows = q("SELECT typeof(cost_usd), cost_usd FROM usage_facts ORDER BY cost_usd")
    assert rows == [
        ("DECIMAL(38,18)", Decimal(tiny)),
        # More than 18 fractional digits: rounded half-even at the contract's scale.
        ("DECIMAL(38,18)", Decimal("123456789.123456789123456789")),
    ]


def test_unpriced_fact_lands_with_priced_false_and_null_costs(wh: Warehouse, q: Query) -> None:
    wh.commit(facts=[fact(cost=None, model="my-finetune")])
    assert q("SELECT priced, cost_usd, price_source, model FROM usage_facts") == [
        (False, None, None, "my-finetune")
    ]


def test_every_event_field_is_a_column_and_tags_are_a_map(wh: Warehouse, q: Query) -> None:
    f = fact(
        T0,
        team="search",
        feature="f",
        project="p",
        environment="prod",
        cost_center="cc",
        user_id="u",
        api_key_id="k",
        session_id="s",
        parent_session_id="ps",
        turn=3,
        request_id="r",
        attempt=2,
        status="error",
        latency_ms=12.5,
        batch=True,
        cache_read_tokens=10,
        cache_write_tokens=5,
        reported_cost_usd="0.02",
        tags={"plan": "pro"},
    )
    wh.commit(facts=[f])
    row = q(
        "SELECT ts, tags['plan'], reported_cost_usd, turn, attempt, status, latency_ms, batch, "
        "cache_read_tokens, cache_write_tokens, parent_session_id, schema_version, date "
        "FROM usage_facts"
    )
    assert row == [
        (T0, "pro", Decimal("0.02"), 3, 2, "error", 12.5, True, 10, 5, "ps", 1, T0.date())
    ]


def test_alerts_breaker_events_and_dead_letters_land_once(wh: Warehouse, q: Query) -> None:
    a, b, d = alert(), breaker(), dead_letter()
    for _ in range(2):
        wh.commit(alerts=[a, a], breaker_events=[b], dead_letters=[d, d])
    assert q("SELECT alert_id, kind, scope, severity, value, threshold FROM alerts") == [
        (a.alert_id, "runaway_rate", "team:search", "warning", Decimal(150), Decimal(120))
    ]
    assert q("SELECT scope, state, reason, ts FROM breaker_events") == [
        ("api_key:k1", "open", "runaway_rate", T0)
    ]
    assert q("SELECT raw, error, source FROM dead_letters") == [
        ("{not json", "invalid JSON", "f.jsonl")
    ]


def test_one_file_per_table_and_utc_day(wh: Warehouse, workdir: Path) -> None:
    wh.commit(facts=[fact(T0), fact(T0), fact(T0 + days(1))], alerts=[alert(T0)])
    names = sorted(p.relative_to(workdir / "warehouse").as_posix() for p in _parquet_files(workdir))
    assert names == [
        "alerts/date=2026-03-02/c000000000001-2.parquet",
        "usage_facts/date=2026-03-02/c000000000001-0.parquet",
        "usage_facts/date=2026-03-03/c000000000001-1.parquet",
    ]


@pytest.mark.parametrize("step", ["after_write", "before_commit"])
def test_crash_before_the_catalog_commit_leaves_nothing_and_the_replay_lands_once(
    workdir: Path, crash_at: list[str], q: Query, step: str
) -> None:
    facts = [fact() for _ in range(4)]
    w = Warehouse(workdir)
    w.ensure_views()
    w.commit(facts=facts[:1], state={"n": 1})
    crash_at.append(step)
    with pytest.raises(Crash):
        w.commit(facts=facts, state={"n": 2})
    w.close()  # the process is gone: its staging lock is released
    crash_at.clear()
    with Warehouse(workdir) as again:
        assert again.last_commit() == ({"n": 1}, None)
        assert q("SELECT count(*) FROM usage_facts") == [(1,)]
        assert not any((workdir / "warehouse" / "_tmp").rglob("*.parquet"))
        replay = again.unseen([f.event for f in facts])
        assert [e.event_id for e in replay] == [f.event.event_id for f in facts[1:]]
        again.commit(facts=facts[1:], state={"n": 2})
    assert q("SELECT count(*), count(DISTINCT event_id) FROM usage_facts") == [(4, 4)]


def test_crash_after_the_catalog_commit_is_rolled_forward_on_recovery(
    workdir: Path, crash_at: list[str], q: Query
) -> None:
    facts = [fact() for _ in range(3)]
    w = Warehouse(workdir)
    w.ensure_views()
    crash_at.append("after_commit")
    with pytest.raises(Crash):
        w.commit(facts=facts, state={"n": 1})
    assert q("SELECT count(*) FROM usage_facts") == [(0,)]  # committed, not yet visible
    w.close()
    crash_at.clear()
    with Warehouse(workdir) as again:
        assert again.last_commit() == ({"n": 1}, None)
        assert again.unseen([f.event for f in facts]) == []
    assert q("SELECT count(*), count(DISTINCT event_id) FROM usage_facts") == [(3, 3)]


def test_recovery_leaves_a_live_writers_staged_files_alone(workdir: Path, q: Query) -> None:
    live = Warehouse(workdir)
    staged = live.stage_dir() / "pending.parquet"
    staged.write_bytes(b"not yet committed")
    with Warehouse(workdir):  # its recovery runs now
        assert staged.exists()
    live.close()
    with Warehouse(workdir):
        assert not staged.exists()


_CHILD = textwrap.dedent(
    """
    import os, sys
    from datetime import UTC, datetime, timedelta
    from decimal import Decimal
    from pathlib import Path
    from spendstream.producers.event import UsageEvent
    from spendstream.records import Cost, Fact
    from spendstream.warehouse import Warehouse, landing

    workdir, step, start, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    t0 = datetime(2026, 3, 2, tzinfo=UTC)

    def die(at):
        if at == step:
            os._exit(17)  # no cleanup, no finally: a kill -9 at this step

    landing._fault = die
    wh = Warehouse(workdir)
    wh.ensure_views()
    last = wh.last_commit()
    pos = last[1]["next"] if last else 0
    while pos < n:
        evs = [
            UsageEvent(event_id=f"id-{i}", ts=t0 + timedelta(minutes=i), provider="openai",
                       model="m", input_tokens=10, output_tokens=1)
            for i in range(pos, min(pos + 10, n))
        ]
        new = wh.unseen(evs)
        c = Cost(Decimal("0.1"), Decimal(0), Decimal(0), Decimal(0), Decimal("0.1"), "t")
        facts = [Fact(e, c, t0) for e in new]
        pos += len(evs)
        if pos >= start:
            landing._fault = die
        else:
            landing._fault = lambda at: None
        wh.commit(facts=facts, state={"seen": pos}, source_positions={"next": pos})
    print("done")
    """
)


@pytest.mark.parametrize("step", ["after_write", "before_commit", "after_commit"])
def test_writer_killed_mid_commit_resumes_from_its_commit_and_lands_each_fact_once(
    workdir: Path, q: Query, step: str, tmp_path: Path
) -> None:
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    killed = subprocess.run(
        [sys.executable, str(script), str(workdir), step, "30", "50"],
        capture_output=True,
        text=True,
    )
    assert killed.returncode == 17, killed.stderr
    done = subprocess.run(
        [sys.executable, str(script), str(workdir), "never", "0", "50"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert q("SELECT count(*), count(DISTINCT event_id), sum(cost_usd) FROM usage_facts") == [
        (50, 50, Decimal("5.0"))
    ]


_WRITER = textwrap.dedent(
    """
    import sys
    from datetime import UTC, datetime
    from decimal import Decimal
    from pathlib import Path
    from spendstream.producers.event import UsageEvent
    from spendstream.records import Cost, Fact
    from spendstream.warehouse import Warehouse

    workdir, name, lo, hi = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    t0 = datetime(2026, 3, 2, tzinfo=UTC)
    c = Cost(Decimal("0.01"), Decimal(0), Decimal(0), Decimal(0), Decimal("0.01"), "t")
    with Warehouse(workdir, writer=name) as wh:
        for start in range(lo, hi, 20):
            evs = [UsageEvent(event_id=f"id-{i}", ts=t0, provider="p", model="m",
                              input_tokens=1, output_tokens=1) for i in range(start, min(start + 20, hi))]
            # No unseen() filter: overlapping batches race to the catalog and must land once.
            wh.commit(facts=[Fact(e, c, t0) for e in evs], state={"at": start})
    """
)


def test_two_writer_processes_with_overlapping_events_land_each_once(
    wh: Warehouse, q: Query, tmp_path: Path, workdir: Path
) -> None:
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    procs = [
        subprocess.Popen([sys.executable, str(script), str(workdir), "w1", "0", "400"]),
        subprocess.Popen([sys.executable, str(script), str(workdir), "w2", "200", "600"]),
    ]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    assert q("SELECT count(*), count(DISTINCT event_id), sum(cost_usd) FROM usage_facts") == [
        (600, 600, Decimal("6.00"))
    ]
    assert set(wh.all_writers()) == {"w1", "w2"}


_READER = textwrap.dedent(
    """
    import sys, time, duckdb
    db, want = sys.argv[1], int(sys.argv[2])
    counts = []
    while True:
        con = duckdb.connect(db, read_only=True)
        n, distinct = con.execute("SELECT count(*), count(DISTINCT event_id) FROM usage_facts").fetchone()
        con.close()
        assert n == distinct, (n, distinct)
        counts.append(n)
        if n >= want:
            break
        time.sleep(0.02)
    print(len(counts), counts == sorted(counts))
    """
)


def test_a_second_process_queries_the_views_while_landing_continues(
    wh: Warehouse, tmp_path: Path, workdir: Path
) -> None:
    script = tmp_path / "reader.py"
    script.write_text(_READER)
    reader = subprocess.Popen(
        [sys.executable, str(script), str(wh.layout.db_path), "200"],
        stdout=subprocess.PIPE,
        text=True,
    )
    for _ in range(20):
        wh.commit(facts=[fact() for _ in range(10)])
    out, _ = reader.communicate(timeout=120)
    assert reader.returncode == 0
    polls, monotonic = out.split()
    assert int(polls) >= 1 and monotonic == "True"


def test_commit_result_counts_add_up(wh: Warehouse) -> None:
    f = fact()
    r = wh.commit(facts=[f, f, fact()], alerts=[alert()], dead_letters=[dead_letter()])
    assert (r.facts, r.alerts, r.dead_letters, r.skipped) == (2, 1, 1, 1)
