"""Landing into the Iceberg tables: exactly once across kills, restarts and racing writers."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from spendstream.errors import WriterFenced
from spendstream.table_schemas import facts_table
from spendstream.warehouse import CONFLICT, DUPLICATE, NEW, Warehouse
from spendstream.warehouse import snapshots as sn
from tests.warehouse.conftest import Query
from tests.warehouse.crashpoints import POINTS, synthetic_lines
from tests.warehouse.factories import T0, alert, breaker, days, dead_letter, fact

ROOT = Path(__file__).resolve().parents[2]


def _tables(q: Query) -> dict[str, list[tuple[Any, ...]]]:
    return {
        "facts": q("SELECT event_id, ts, input_tokens, cost_usd FROM usage_facts ORDER BY ALL"),
        "alerts": q("SELECT alert_id, ts, message FROM alerts ORDER BY ALL"),
        "breakers": q("SELECT scope, state, reason, ts FROM breaker_events ORDER BY ALL"),
        "dead": q("SELECT raw, source FROM dead_letters ORDER BY ALL"),
    }


def test_replayed_batch_lands_each_event_id_once(wh: Warehouse, q: Query) -> None:
    facts = [fact(), fact()]
    first = wh.commit(facts=facts)
    again = wh.commit(facts=facts)
    assert (first.facts, again.facts, again.duplicates) == (2, 0, 2)
    assert q("SELECT count(*), count(DISTINCT event_id) FROM usage_facts") == [(2, 2)]


def test_classify_says_new_duplicate_or_conflict_against_landed_and_earlier_rows(
    wh: Warehouse,
) -> None:
    landed = fact()
    wh.commit(facts=[landed])
    ids = pa.array([landed.event.event_id, "a", "a", "b", "b", landed.event.event_id])
    ts = pa.array([T0] * 6, pa.timestamp("us", tz="UTC"))
    digests = pa.array([None, "x", "x", "y", "z", None])
    codes = wh.classify(ids, ts, digests).tolist()
    assert codes == [DUPLICATE, NEW, DUPLICATE, NEW, CONFLICT, DUPLICATE]


def test_unseen_drops_landed_ids_and_repeats_keeping_the_first(wh: Warehouse) -> None:
    a, b = fact(), fact()
    wh.commit(facts=[a])
    repeat = b.event.model_copy()
    assert wh.unseen([a.event, b.event, repeat]) == [b.event]


def test_the_lease_a_call_was_reserved_under_lands_with_its_fact(wh: Warehouse, q: Query) -> None:
    wh.commit(facts=[fact(T0, lease_id="l-1 l-2"), fact(T0)])
    assert sorted(q("SELECT lease_id FROM usage_facts"), key=str) == [("l-1 l-2",), (None,)]


def test_positions_and_state_survive_a_restart_and_move_only_with_a_commit(
    workdir: Path,
) -> None:
    with Warehouse(workdir, writer="usage/3") as wh:
        assert wh.resume().seq == 0 and wh.resume().state is None
        wh.commit(facts=[fact()], positions={"spendstream.usage/3": 41}, state=b"s1")
        wh.commit(alerts=[alert()])  # no positions/state given: the last ones stay in force
    with Warehouse(workdir, writer="usage/3") as wh:
        r = wh.resume()
        assert (r.seq, r.positions, r.state) == (2, {"spendstream.usage/3": 41}, b"s1")


def test_a_commit_of_state_alone_moves_the_state_and_keeps_the_positions(
    workdir: Path,
) -> None:
    with Warehouse(workdir, writer="usage/3") as wh:
        wh.commit(facts=[fact()], positions={"p": 41}, state=b"s1")
        assert wh.commit(state=b"s2").seq == 2  # no rows, no positions: the state still lands
        assert wh.resume().positions == {"p": 41}
    with Warehouse(workdir, writer="usage/3") as wh:
        r = wh.resume()
        assert (r.seq, r.positions, r.state) == (2, {"p": 41}, b"s2")


def test_every_snapshot_carries_every_writers_positions(workdir: Path) -> None:
    a = Warehouse(workdir, writer="usage/0")
    b = Warehouse(workdir, writer="usage/1")
    a.commit(facts=[fact()], positions={"p0": 10}, state=b"a")
    b.commit(facts=[fact()], positions={"p1": 20}, state=b"b")
    a.commit(facts=[fact()], positions={"p0": 11}, state=b"a2")
    head = sn.summary_of(a.tables.load("usage_facts").current_snapshot())
    assert sn.positions_of(head, "usage/0") == {"p0": 11}
    assert sn.positions_of(head, "usage/1") == {"p1": 20}  # copied forward past a's commit
    assert {w: r.state for w, r in a.writers().items()} == {"usage/0": b"a2", "usage/1": b"b"}
    a.close()
    b.close()


def test_commit_retries_zero_still_makes_the_one_attempt(workdir: Path) -> None:
    from spendstream.config import WarehouseConfig

    with Warehouse(workdir, config=WarehouseConfig(commit_retries=0)) as wh:
        result = wh.commit(facts=[fact()], alerts=[alert()], positions={"p": 1})
        assert (result.seq, result.facts, result.alerts, result.retries) == (1, 1, 1, 0)


def test_a_second_instance_of_a_writer_is_fenced(workdir: Path) -> None:
    old = Warehouse(workdir, writer="usage/0")
    old.commit(facts=[fact()], positions={"p": 1}, state=b"1")
    new = Warehouse(workdir, writer="usage/0")
    assert new.resume().positions == {"p": 1}
    new.commit(facts=[fact()], positions={"p": 2}, state=b"2")
    with pytest.raises(WriterFenced, match="another instance"):
        old.commit(facts=[fact()], positions={"p": 9}, state=b"zombie")
    with Warehouse(workdir, writer="usage/0") as again:
        assert again.resume().positions == {"p": 2}
    old.close()
    new.close()


def test_a_writer_that_lost_the_race_relands_only_what_the_winner_did_not(
    workdir: Path, q: Query
) -> None:
    a = Warehouse(workdir, writer="a")
    b = Warehouse(workdir, writer="b")
    shared, mine, theirs = fact(), fact(), fact()
    a.classify(pa.array(["warm"]), pa.array([T0], pa.timestamp("us", tz="UTC")))
    b.commit(facts=[shared, theirs])
    # a has not seen b's commit: its first attempt conflicts, it refreshes, drops `shared`.
    result = a.commit(facts=facts_table([shared, mine]))
    assert (result.facts, result.duplicates) == (1, 1)
    a.ensure_views()
    ids = {r[0] for r in q("SELECT event_id FROM usage_facts")}
    assert ids == {shared.event.event_id, mine.event.event_id, theirs.event.event_id}
    assert q("SELECT count(*) FROM usage_facts") == [(3,)]
    a.close()
    b.close()


def test_a_commit_raced_after_its_files_were_written_counts_every_skipped_fact(
    workdir: Path, q: Query
) -> None:
    """Another writer lands some of the batch between its classification and its catalog
    commit (here: while its data files are written): those are rewritten away, and the
    result counts them on top of the duplicates found before."""
    b = Warehouse(workdir, writer="b")
    landed, shared, mine = fact(), fact(), fact()
    b.commit(facts=[landed])

    class Raced(Warehouse):
        def _write_files(self, name: str, table: pa.Table) -> Any:
            if name == "usage_facts" and b.seq == 1:
                b.commit(facts=[shared])
            return super()._write_files(name, table)

    a = Raced(workdir, writer="a")
    result = a.commit(facts=[landed, shared, mine])
    assert result.retries >= 1
    assert (result.facts, result.duplicates) == (1, 2)
    a.ensure_views()
    assert q("SELECT count(*), count(DISTINCT event_id) FROM usage_facts") == [(3, 3)]
    a.close()
    b.close()


def test_a_fact_another_writer_lands_between_classify_and_commit_is_not_landed_twice(
    workdir: Path, q: Query
) -> None:
    a = Warehouse(workdir, writer="a")
    b = Warehouse(workdir, writer="b")
    shared, mine = fact(), fact()
    batch = facts_table([shared, mine])
    assert a.classify(batch["event_id"], batch["ts"]).tolist() == [NEW, NEW]
    b.commit(facts=[shared])
    result = a.commit(facts=batch)  # the batch classify judged, but the store has moved
    assert (result.facts, result.duplicates) == (1, 1)
    a.ensure_views()
    assert q("SELECT count(*), count(DISTINCT event_id) FROM usage_facts") == [(2, 2)]
    a.close()
    b.close()


def test_a_breaker_event_another_writer_lands_while_the_outbox_is_written_lands_once(
    workdir: Path, q: Query
) -> None:
    closed = breaker(state="closed")
    cli = Warehouse(workdir, writer="breakers-cli")

    class Raced(Warehouse):
        def _write_files(self, name: str, table: pa.Table) -> Any:
            if name == "breaker_events" and cli.seq == 0:
                cli.commit(breaker_events=[closed])  # after this writer's early key check
            return super()._write_files(name, table)

    engine = Raced(workdir, writer="detect")
    engine.commit(breaker_events=[closed], positions={"p": 1})
    engine.ensure_views()
    assert q("SELECT count(*) FROM breaker_events") == [(1,)]
    engine.close()
    cli.close()


def test_old_events_are_deduplicated_against_their_own_day_in_the_table(workdir: Path) -> None:
    from spendstream.config import WarehouseConfig

    config = WarehouseConfig(dedupe_window_days=1)
    old = fact(T0)
    with Warehouse(workdir, config=config) as wh:
        wh.commit(facts=[old])
        wh.commit(facts=[fact(T0 + days(10))])  # the watermark moves 10 days on
    with Warehouse(workdir, config=config) as wh:
        wh.classify(pa.array(["x"]), pa.array([T0 + days(10)], pa.timestamp("us", tz="UTC")))
        old_day = (T0.date() - date(1970, 1, 1)).days
        assert old_day not in wh.dedupe.days  # outside the window: not held in memory
        new = fact(T0).event
        assert wh.unseen([old.event, new]) == [new]  # found in its own day's partition
        assert old_day in wh.dedupe._old
        assert wh.commit(facts=[old]).duplicates == 1


def test_a_reopened_writer_dedupes_against_the_first_day_of_its_window(
    workdir: Path, q: Query
) -> None:
    from spendstream.config import WarehouseConfig

    config = WarehouseConfig(dedupe_window_days=1)
    edge = fact(T0)
    with Warehouse(workdir, config=config) as wh:
        wh.commit(facts=[edge])
        wh.commit(facts=[fact(T0 + days(1))])  # the window: T0's day and the next
    with Warehouse(workdir, config=config) as wh:  # rebuilds its keys from the table
        result = wh.commit(facts=[edge])
        assert (result.facts, result.duplicates) == (0, 1)
        wh.ensure_views()
    assert q("SELECT count(*), count(DISTINCT event_id) FROM usage_facts") == [(2, 2)]


def test_alerts_breaker_events_and_dead_letters_land_with_their_commit(
    wh: Warehouse, q: Query
) -> None:
    a, b, d = alert(), breaker(), dead_letter()
    r = wh.commit(alerts=[a], breaker_events=[b], dead_letters=[d], positions={"p": 1})
    assert (r.alerts, r.breaker_events, r.dead_letters) == (1, 1, 1)
    assert q("SELECT alert_id FROM alerts") == [(a.alert_id,)]
    assert q("SELECT count(*) FROM breaker_events") == [(1,)]
    assert q("SELECT error FROM dead_letters") == [(d.error,)]


def test_a_batch_with_nothing_to_land_and_no_state_commits_nothing(wh: Warehouse) -> None:
    f = fact()
    wh.commit(facts=[f])
    before = wh.tables.load("usage_facts").current_snapshot()
    result = wh.commit(facts=[f])
    assert result.seq == 1 and not result.committed
    assert wh.tables.load("usage_facts").current_snapshot() == before


def test_another_engine_reads_the_tables(wh: Warehouse) -> None:
    """pyiceberg's own scan (what Spark, Trino or DuckDB's iceberg extension read)."""
    facts = [fact(T0), fact(T0 + days(1), cost=None)]
    wh.commit(facts=facts, alerts=[alert()])
    table = wh.tables.load("usage_facts").scan().to_arrow()
    assert sorted(table["event_id"].to_pylist()) == sorted(f.event.event_id for f in facts)
    assert table.schema.field("cost_usd").type == pa.decimal128(38, 18)
    assert wh.tables.load("alerts").scan().to_arrow().num_rows == 1
    spec = wh.tables.load("usage_facts").spec()
    assert [(f.name, str(f.transform)) for f in spec.fields] == [("ts_day", "day")]


# Kill -9 at each step of the protocol.


def _run(args: list[str], expect_kill: bool) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tests.warehouse.crashpoints", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if expect_kill:
        assert proc.returncode == -9, proc.stderr[-2000:]
    else:
        assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("events") / "events.jsonl"
    path.write_text("\n".join(synthetic_lines(120)) + "\n")
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, events: Path) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("reference")
    _run(["none", "0", "--", "--writer", str(work), str(events), "w", "25"], False)
    return _read_all(work)


def _read_all(workdir: Path) -> dict[str, Any]:
    from spendstream.warehouse.reading import run_sql

    def q(sql: str) -> list[tuple[Any, ...]]:
        return run_sql(workdir, sql)[1]

    with Warehouse(workdir, writer="w") as wh:
        resume = wh.resume()
    return {**_tables(q), "positions": resume.positions, "state": resume.state}


@pytest.mark.parametrize("point", POINTS)
@pytest.mark.parametrize("nth", [1, 3])
def test_a_writer_killed_at_any_step_lands_everything_exactly_once(
    tmp_path: Path, events: Path, reference: dict[str, Any], point: str, nth: int
) -> None:
    args = ["--writer", str(tmp_path), str(events), "w", "25"]
    _run([point, str(nth), "--", *args], True)
    _run(["none", "0", "--", *args], False)
    got = _read_all(tmp_path)
    assert got == reference
    assert len(reference["facts"]) == len({r[0] for r in reference["facts"]}) > 0
    assert reference["alerts"] and reference["breakers"] and reference["dead"]


@pytest.mark.parametrize("point", ["after_facts_commit", "after_first_outbox"])
def test_ingest_killed_mid_commit_equals_an_uninterrupted_ingest(
    tmp_path: Path, events: Path, point: str
) -> None:
    from spendstream.warehouse.reading import run_sql

    ref, work = tmp_path / "ref", tmp_path / "work"
    mixed = tmp_path / "mixed.jsonl"
    lines = events.read_text().splitlines()
    lines[3:3] = ["{not json", '{"event_id": "x"}']  # two dead letters in the first batch
    mixed.write_text("\n".join(lines) + "\n")
    cmd = ["ingest", str(mixed), "--workdir"]
    _run(["none", "0", "--", *cmd, str(ref)], False)
    _run([point, "1", "--", *cmd, str(work)], True)
    _run(["none", "0", "--", *cmd, str(work)], False)

    def dump(w: Path) -> dict[str, list[tuple[Any, ...]]]:
        return _tables(lambda sql: run_sql(w, sql)[1])

    assert dump(work) == dump(ref)
    assert len(dump(ref)["dead"]) == 2


def test_the_same_breaker_event_from_two_writers_lands_once(workdir: Path, q: Query) -> None:
    """A manual reset: the CLI and the engine land the same closed event."""
    closed = breaker(state="closed")
    engine = Warehouse(workdir, writer="detect")
    engine.commit(alerts=[alert()], positions={"p": 1})  # loads its key set before the CLI
    with Warehouse(workdir, writer="breakers-cli") as cli:
        assert cli.commit(breaker_events=[closed]).breaker_events == 1
    r = engine.commit(breaker_events=[closed], positions={"p": 2})
    assert (r.breaker_events, r.duplicates) == (0, 1)
    engine.ensure_views()
    assert q("SELECT count(*) FROM breaker_events") == [(1,)]
    engine.close()


def test_re_reading_a_bad_input_adds_no_second_dead_letter(wh: Warehouse, q: Query) -> None:
    bad = dead_letter()
    wh.commit(dead_letters=[bad, bad])
    assert wh.commit(dead_letters=[bad]).dead_letters == 0
    assert q("SELECT count(*) FROM dead_letters") == [(1,)]


def test_a_bad_input_read_again_with_another_reason_keeps_its_first(
    wh: Warehouse, q: Query
) -> None:
    # An upgrade that words a reason differently re-read every bad line of a re-ingested
    # file as a second dead letter. The same line at another position is another one.
    bad = dead_letter()
    wh.commit(dead_letters=[bad])
    assert wh.commit(dead_letters=[replace(bad, error="worded anew")]).dead_letters == 0
    moved = replace(bad, source=bad.source + "0", error="worded anew")
    assert wh.commit(dead_letters=[moved]).dead_letters == 1
    assert q("SELECT source, error FROM dead_letters ORDER BY source") == [
        (bad.source, bad.error),
        (moved.source, "worded anew"),
    ]


def test_writers_keep_the_facts_history_short(workdir: Path) -> None:
    from spendstream.config import WarehouseConfig

    with Warehouse(workdir, config=WarehouseConfig(max_snapshots=20)) as wh:
        for n in range(48):
            wh.commit(facts=[fact()], positions={"p": n})
        assert len(wh.tables.load("usage_facts").metadata.snapshots) <= 20
        assert wh.resume().positions == {"p": 47}
    with Warehouse(workdir) as again:
        assert again.resume().positions == {"p": 47}
        assert len(again.tables.load("usage_facts").scan().to_arrow()) == 48


@pytest.mark.parametrize("point", POINTS)
def test_the_views_file_lists_show_what_a_crashed_writer_committed_once_it_resumes(
    workdir: Path, events: Path, q: Query, point: str
) -> None:
    """A plain DuckDB session reads spendstream.duckdb, whose views read published file
    lists. A writer killed after a commit but before publishing (or before landing its
    outbox, which resuming lands) left lists behind; no later commit may touch the table
    (breaker_events), so resuming publishes every list that records another version of its
    table's files than the head's. The writer that resumes may be another worker's, that
    never rebuilt the views."""
    from spendstream.warehouse.reading import run_sql

    with Warehouse(workdir, writer="views") as wh:
        wh.ensure_views()  # as a worker does when it starts
    args = ["--writer", str(workdir), str(events), "w", "25"]
    _run([point, "2", "--", *args], True)  # the second batch carries breaker events too
    with Warehouse(workdir, writer="w") as wh:  # the partition's next owner
        wh.resume()
    landed = _tables(lambda sql: run_sql(workdir, sql)[1])
    assert landed["facts"] and landed["breakers"]
    assert _tables(q) == landed


def test_a_list_written_from_an_older_snapshot_is_stale_until_published(wh: Warehouse) -> None:
    from spendstream.warehouse.maintenance import compact
    from spendstream.warehouse.views import publish_current_files, stale_current_files

    names = ["usage_facts", "alerts", "breaker_events"]
    current = wh.storage.local_root / "current"
    assert stale_current_files(wh, names) == []  # ensure_views published every list
    wh.commit(alerts=[alert()])
    assert stale_current_files(wh, names) == []  # the commit published what it touched
    older = (current / "alerts.parquet").read_bytes()
    wh.commit(alerts=[alert()])
    (current / "alerts.parquet").write_bytes(older)  # as a writer killed before publishing
    (current / "breaker_events.parquet").unlink()
    assert stale_current_files(wh, names) == ["alerts", "breaker_events"]
    publish_current_files(wh, ["alerts"])
    assert stale_current_files(wh, names) == ["breaker_events"]
    wh.publish_stale()
    assert stale_current_files(wh, names) == []
    # A compaction replaces files without adding rows: a list from before it is stale too.
    wh.commit(facts=[fact()], positions={"p": 1})
    wh.commit(facts=[fact()], positions={"p": 2})
    before = (current / "usage_facts.parquet").read_bytes()
    assert compact(wh).files_in >= 2
    (current / "usage_facts.parquet").write_bytes(before)
    assert stale_current_files(wh, names) == ["usage_facts"]


def test_a_list_is_stale_after_lost_commits_whose_snapshots_were_expired(wh: Warehouse) -> None:
    """Once the last snapshot that added files is expired, the version falls back to the
    head's: a list written then must not match a state reached after more commits (files
    landed, their list lost, their snapshot expired in turn)."""
    from spendstream.warehouse.maintenance import expire_oldest
    from spendstream.warehouse.views import publish_current_files, stale_current_files

    current = wh.storage.local_root / "current" / "usage_facts.parquet"
    wh.commit(facts=[fact()], positions={"p": 0})
    for n in range(1, 5):
        wh.commit(positions={"p": n})  # a position alone: no files
    assert expire_oldest(wh, "usage_facts", keep=2, above=2) > 0
    publish_current_files(wh, ["usage_facts"])  # written with the data snapshot expired
    assert stale_current_files(wh, ["usage_facts"]) == []
    listed = current.read_bytes()
    wh.commit(facts=[fact()], positions={"p": 5})
    current.write_bytes(listed)  # as a writer killed before publishing
    for n in range(6, 11):
        wh.commit(positions={"p": n})
    assert expire_oldest(wh, "usage_facts", keep=2, above=2) > 0
    assert stale_current_files(wh, ["usage_facts"]) == ["usage_facts"]


@pytest.mark.parametrize("damage", ["footer", "empty", "directory"])
def test_a_damaged_list_reads_as_stale(workdir: Path, q: Query, damage: str) -> None:
    """Whatever pyarrow raises for it (ArrowInvalid, or a plain OSError for a footer that
    does not parse or a directory), a damaged list is stale: resuming must not fail on it."""
    from spendstream.warehouse.views import stale_current_files

    with Warehouse(workdir) as wh:
        wh.ensure_views()
        wh.commit(facts=[fact()], positions={"p": 0})
    listing = workdir / "warehouse" / "current" / "usage_facts.parquet"
    good = listing.read_bytes()
    listing.unlink()
    if damage == "footer":  # the file as it was, its footer zeroed: thrift cannot read it
        footer = int.from_bytes(good[-8:-4], "little")
        listing.write_bytes(good[: -8 - footer] + b"\0" * footer + good[-8:])
    elif damage == "empty":
        listing.write_bytes(b"")
    else:
        listing.mkdir()
    with Warehouse(workdir) as wh:
        assert stale_current_files(wh, ["usage_facts"]) == ["usage_facts"]
        if damage != "directory":  # a file goes over a file; nothing goes over a directory
            wh.resume()
            assert stale_current_files(wh, ["usage_facts"]) == []
    if damage != "directory":
        assert q("SELECT count(*) FROM usage_facts") == [(1,)]


def test_a_writer_whose_last_seen_snapshot_was_expired_still_knows_every_landed_fact(
    workdir: Path,
) -> None:
    """Catching up from a snapshot an expiry removed, a writer reads the table anew: facts
    another writer landed in snapshots expired since are duplicates to it, not new."""
    from spendstream.warehouse.maintenance import expire_oldest
    from spendstream.warehouse.tables import TABLE_SCHEMAS

    ts_type = TABLE_SCHEMAS["usage_facts"].field("ts").type
    a = Warehouse(workdir, writer="usage/0")
    b = Warehouse(workdir, writer="usage/1")
    try:

        def classify(facts: list[Any]) -> list[int]:
            ids = pa.array([f.event.event_id for f in facts])
            return a.classify(ids, pa.array([f.event.ts for f in facts], ts_type)).tolist()

        a.commit(facts=[fact()], positions={"p0": 1})
        assert classify([fact()]) == [NEW]  # a has caught up with its own head
        by_b = [fact() for _ in range(3)]
        for i, f in enumerate(by_b):
            b.commit(facts=[f], positions={"p1": i})
        assert expire_oldest(b, "usage_facts", keep=2, above=2) > 0  # a's head among them
        assert classify([*by_b, fact()]) == [DUPLICATE] * len(by_b) + [NEW]
    finally:
        a.close()
        b.close()
