"""A scope owner's slices across a restart: a batch merged in part is replayed from the
partials topic, and only its slices not merged yet are held again (scope_loop.py).

The owner's rounds are driven here without a broker: each usage partition's end offset is
given (``ScopeLoop._ends``, read at a clock that does not move), the warehouse is real."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from spendstream.config import Config
from spendstream.kafka.settings import KafkaSettings
from spendstream.records import Alert, BreakerEvent
from spendstream.runtime.http.metrics import WorkerMetrics
from spendstream.runtime.kafka.scope_loop import (
    COMMIT_QUIET_S,
    ScopeLoop,
    _Owner,
    lands_now,
    scope_writer,
)
from spendstream.runtime.kafka.topology import topic_names
from spendstream.runtime.kafka.wire import encode_partials
from spendstream.stream.engine import LocalEngine, route
from spendstream.stream.windows import to_us
from spendstream.warehouse import Warehouse
from tests.stream.detection_facts import rows_table

T0 = datetime(2026, 3, 31, 0, 0, tzinfo=UTC)
NOW = 1000.0


def _record(
    engine: LocalEngine, lane: int, hours: float, first: int, n: int, at: datetime | None = None
) -> bytes:
    """A partials record of lane's usage offsets first..first+n-1: n quiet facts spread over
    ``hours`` from ``at``, else from where the lane's time stands."""
    start = T0
    if at is not None:
        start = at
    elif engine.watermark_us is not None:
        start = datetime.fromtimestamp(engine.watermark_us / 1e6, UTC) + timedelta(seconds=1)
    rows = [
        {
            "ts": start + timedelta(hours=hours * i / n),
            "api_key_id": f"k{lane}",
            "team": "t",
            "cost": "0.001",
        }
        for i in range(n)
    ]
    out = engine.process(rows_table(rows), f"{lane}@{first}")
    (table,) = route(out.partials, 1)
    return encode_partials(lane, first, first + n - 1, table)


def _loop(
    tmp: Path, cfg: Config, lanes: int = 2, clock: Callable[[], float] = lambda: NOW
) -> ScopeLoop:
    return ScopeLoop(
        cfg,
        tmp,
        KafkaSettings("127.0.0.1:9"),  # never dialled: the usage ends are given
        topic_names(cfg.kafka),
        lanes,
        WorkerMetrics(),
        threading.Event(),
        clock=clock,
    )


def _merge(loop: ScopeLoop, owner: _Owner) -> None:
    alerts: list[Alert] = []
    breakers: list[BreakerEvent] = []
    loop._round(owner, alerts, breakers)
    assert alerts == [] and breakers == []  # quiet facts: no crossing to read back


def _ends(loop: ScopeLoop, **ends: int) -> None:
    loop._ends = {int(k[1:]): (v, NOW) for k, v in ends.items()}


def test_a_batch_merged_in_part_is_replayed_from_its_first_slice_not_merged(
    tmp_path: Path,
) -> None:
    cfg = Config()
    loop = _loop(tmp_path, cfg)
    lanes = [LocalEngine(cfg, 0), LocalEngine(cfg, 1)]
    r0 = _record(lanes[0], 0, 8, 0, 40)  # lane 0: 8 h of facts, several slices
    r1 = _record(lanes[1], 1, 3, 0, 40)  # lane 1: 3 h, and more to come
    wh = Warehouse(tmp_path, writer=scope_writer(0), config=cfg.warehouse)
    owner = loop._state(0, wh)
    loop._hold(owner, 0, loop._partials(r0), NOW)
    loop._hold(owner, 1, loop._partials(r1), NOW)
    lane0 = [h for h in owner.held if h.batch.usage_partition == 0]
    count = len(lane0)
    assert count > 2 and [h.index for h in lane0] == list(range(count))
    assert [h.last for h in lane0] == [False] * (count - 1) + [True]
    _ends(loop, p0=1000, p1=1000)  # both partitions have records still to come
    _merge(loop, owner)
    assert 0 not in owner.merged  # lane 0's batch only in part: up to lane 1's time
    last, done = owner.partly[0]
    assert last == 39 and 0 <= done < count - 1
    held_after = sorted((h.batch.usage_partition, h.index) for h in owner.held)
    assert [i for lane, i in held_after if lane == 0] == list(range(done + 1, count))
    # Lane 1's last slice ends at its clock, which bounds the round: it waits too.
    assert [i for lane, i in held_after if lane == 1] == [owner.held[-1].index]
    assert owner.held[-1].batch.usage_partition == 1 and owner.held[-1].last
    partly = dict(owner.partly)

    # Land (the position stays before the partly merged record), then restart.
    position = owner.held[0].offset - 1
    wh.commit(positions={loop.position_key(0): position}, state=loop._snapshot(owner))
    wh.close()
    again = _loop(tmp_path, cfg)
    wh2 = Warehouse(tmp_path, writer=scope_writer(0), config=cfg.warehouse)
    restored = again._state(0, wh2)
    assert restored.partly == partly and restored.landed == -1
    # Both records are read again; lane 0's merged slices are not held twice.
    again._hold(restored, 0, again._partials(r0), NOW)
    again._hold(restored, 1, again._partials(r1), NOW)
    assert sorted((h.batch.usage_partition, h.index) for h in restored.held) == held_after
    # Lane 1's clock is what its merged slices reached, then what its held one says.
    assert restored.clocks[1] >= restored.merged_clocks.get(1, -1)
    _ends(again, p0=40, p1=40)  # everything read: one round takes the rest
    _merge(again, restored)
    assert restored.held == [] and restored.partly == {}
    assert restored.merged == {0: 39, 1: 39}
    # A replay of a batch merged whole is dropped.
    again._hold(restored, 0, again._partials(r0), NOW)
    assert restored.held == []
    wh2.close()


def test_the_clock_a_scope_owner_keeps_is_that_of_merged_slices(tmp_path: Path) -> None:
    cfg = Config()
    loop = _loop(tmp_path, cfg)
    lanes = [LocalEngine(cfg, 0), LocalEngine(cfg, 1)]
    wh = Warehouse(tmp_path, writer=scope_writer(0), config=cfg.warehouse)
    owner = loop._state(0, wh)
    loop._hold(owner, 0, loop._partials(_record(lanes[0], 0, 8, 0, 40)), NOW)
    loop._hold(owner, 1, loop._partials(_record(lanes[1], 1, 3, 0, 40)), NOW)
    _ends(loop, p0=1000, p1=1000)
    _merge(loop, owner)
    state: dict[str, Any] = orjson.loads(loop._snapshot(owner))
    kept = {int(k): v for k, v in state["clocks"].items()}
    # Lane 0's batch reaches 8 h, but only its slices up to lane 1's time were merged.
    assert kept[0] < owner.clocks[0]
    assert kept[0] == owner.merged_clocks[0]
    wh.close()


def test_output_lands_at_once_and_merged_state_alone_at_most_every_quiet_interval() -> None:
    landed_at = 500.0
    # Alerts or breaker events: at once, even right after the last commit.
    assert lands_now(True, False, landed_at, landed_at)
    assert lands_now(True, True, landed_at + 0.001, landed_at)
    # Merged state or a moved position alone waits for the quiet interval, to the boundary.
    assert not lands_now(False, True, landed_at + COMMIT_QUIET_S - 1e-6, landed_at)
    assert lands_now(False, True, landed_at + COMMIT_QUIET_S, landed_at)
    # Nothing changed: nothing to land, however long it has been.
    assert not lands_now(False, False, landed_at + 1e6, landed_at)


def test_merged_state_alone_lands_at_most_every_fifteen_seconds() -> None:
    # docs/kafka.md promises it: a restart merges again at most this much.
    assert COMMIT_QUIET_S == 15.0


def test_a_lane_known_to_be_behind_is_not_asked_for_its_end_again_at_once(
    tmp_path: Path,
) -> None:
    """An end offset only grows: one read 1 s ago that says records are still to come is
    still true, so the owner does not query the broker again (this loop has no consumer:
    a query would fail the test); read 0.05 s ago, a caught-up lane needs no query either."""
    cfg = Config()
    loop = _loop(tmp_path, cfg)
    owner = loop._state(0, Warehouse(tmp_path, writer=scope_writer(0), config=cfg.warehouse))
    loop._ends = {0: (100, NOW - 1.0), 1: (11, NOW - 0.05)}
    assert not loop._caught_up(0, 50, NOW, owner)
    assert loop._caught_up(1, 10, NOW, owner)


def test_no_idle_advance_while_slices_wait_for_alignment(tmp_path: Path) -> None:
    """The idle advance moves breakers on by processing time for a quiet stream; an owner
    holding slices for alignment is not quiet (their facts are still to merge, in event
    time), so its breakers' time stays where merged facts left it."""
    cfg = Config.model_validate({"breaker": {"idle_advance_s": 30}})
    now = [NOW]
    loop = _loop(tmp_path, cfg, 2, clock=lambda: now[0])
    lanes = [LocalEngine(cfg, 0), LocalEngine(cfg, 1)]
    wh = Warehouse(tmp_path, writer=scope_writer(0), config=cfg.warehouse)
    owner = loop._state(0, wh)
    loop._hold(owner, 0, loop._partials(_record(lanes[0], 0, 8, 0, 40)), NOW)
    loop._hold(owner, 1, loop._partials(_record(lanes[1], 1, 3, 0, 40)), NOW)
    loop._ends = {0: (1000, NOW), 1: (1000, NOW)}  # both lanes have more to come
    _merge(loop, owner)  # lane 0 in part, up to lane 1's time; the rest held
    assert owner.held
    merged_time = owner.engine.breaker_time
    assert merged_time is not None
    now[0] = NOW + 31  # past idle_advance_s with nothing merged (ends trusted meanwhile)
    loop._ends = {0: (1000, now[0]), 1: (1000, now[0])}
    loop._step(owner, [])
    assert owner.held and owner.engine.breaker_time == merged_time
    wh.close()


def test_a_lane_behind_that_has_sent_nothing_yet_holds_every_round(tmp_path: Path) -> None:
    """A usage partition with records still to come and no batch here yet has no clock: no
    slice of another lane may be merged before its first batch's time is known."""
    cfg = Config()
    loop = _loop(tmp_path, cfg)
    wh = Warehouse(tmp_path, writer=scope_writer(0), config=cfg.warehouse)
    owner = loop._state(0, wh)
    loop._hold(owner, 0, loop._partials(_record(LocalEngine(cfg, 0), 0, 1, 0, 10)), NOW)
    held = list(owner.held)
    _ends(loop, p0=10, p1=5)  # lane 0 all here; lane 1 has five records, none seen
    assert loop._bound(owner) == (True, None)
    assert loop._round(owner, [], []) is False
    assert owner.held == held and owner.merged == {}
    wh.close()


def test_merged_facts_restart_the_idle_clock(tmp_path: Path) -> None:
    """Facts merged after a quiet spell are news: the breakers do not move on by processing
    time right after them, as if the quiet had gone on."""
    cfg = Config.model_validate({"breaker": {"idle_advance_s": 30}})
    now = [NOW]
    loop = _loop(tmp_path, cfg, 1, clock=lambda: now[0])
    wh = Warehouse(tmp_path, writer=scope_writer(0), config=cfg.warehouse)
    owner = loop._state(0, wh)
    now[0] = NOW + 31  # quiet since the owner started, then a batch comes
    loop._hold(owner, 0, loop._partials(_record(LocalEngine(cfg, 0), 0, 1, 0, 10)), now[0])
    loop._ends = {0: (10, now[0])}  # all of lane 0 is here
    _merge(loop, owner)
    assert owner.held == [] and owner.merged == {0: 9}
    merged_time = owner.engine.breaker_time
    loop._step(owner, [])
    assert owner.engine.breaker_time == merged_time
    wh.close()


def test_a_lane_whose_end_cannot_be_read_holds_until_align_idle_s(tmp_path: Path) -> None:
    """With the usage topic's end unreadable (the broker down), a lane stops holding the
    others back only once it has been silent for [pipeline] align_idle_s."""
    from spendstream.runtime.kafka.facts_reader import FactsReader

    cfg = Config()
    loop = _loop(tmp_path, cfg)  # its settings name an address where no broker listens
    loop.facts = FactsReader(loop.settings, loop.names.facts)
    owner = loop._state(0, Warehouse(tmp_path, writer=scope_writer(0), config=cfg.warehouse))
    try:
        assert not loop._caught_up(1, -1, NOW, owner)
        assert loop._caught_up(1, -1, NOW + cfg.pipeline.align_idle_s, owner)
    finally:
        loop.facts.close()
        owner.warehouse.close()


def test_a_lane_with_records_unread_holds_a_burst_days_ahead_however_long_it_is_silent(
    tmp_path: Path,
) -> None:
    """tests/test_equivalence.py's burst: lane 1 lands its last batch, calls dated days
    after the workload, while lane 0 still has records unread and says nothing for far
    longer than ``[pipeline] align_idle_s`` (its worker is slow, or died). Merged then, the
    burst would move the owner's time days past lane 0's next facts. It waits for them
    (the runtime before this one stopped waiting for a lane silent that long, and a Kafka
    run with the burst lost an alert of the workload's first day)."""
    # No hourly anomaly on wide scopes: the burst's hour would be read back from its facts
    # (this loop has no facts topic), and this test is about when slices merge.
    cfg = Config.model_validate({"anomaly": {"scopes": ["api_key"]}})
    now = [NOW]
    loop = _loop(tmp_path, cfg, 2, clock=lambda: now[0])
    lanes = [LocalEngine(cfg, 0), LocalEngine(cfg, 1)]
    owner = loop._state(0, Warehouse(tmp_path, writer=scope_writer(0), config=cfg.warehouse))
    burst_at = T0 + timedelta(days=3)
    loop._hold(owner, 0, loop._partials(_record(lanes[0], 0, 8, 0, 40)), now[0])
    loop._hold(owner, 1, loop._partials(_record(lanes[1], 1, 3, 0, 40)), now[0])
    loop._hold(owner, 2, loop._partials(_record(lanes[1], 1, 1 / 60, 40, 20, burst_at)), now[0])

    now[0] += 100 * cfg.pipeline.align_idle_s  # lane 0 silent ever since
    loop._ends = {0: (1000, now[0]), 1: (60, now[0])}  # lane 1 all read, lane 0 not
    _merge(loop, owner)
    burst = [h for h in owner.held if h.batch.usage_partition == 1]
    # The burst's slices wait, all of them, and nothing else of lane 1 does.
    assert burst and {h.batch.first_offset for h in burst} == {40}
    assert [h.index for h in burst] == list(range(len(burst))) and burst[-1].last
    assert owner.merged.get(1) == 39
    assert owner.engine.watermark_us is not None
    assert owner.engine.watermark_us < to_us(T0 + timedelta(hours=8))  # lane 0's time

    # Lane 0's last records come: everything is read, and one round takes the rest.
    loop._hold(owner, 3, loop._partials(_record(lanes[0], 0, 8, 40, 40)), now[0])
    loop._ends = {0: (80, now[0]), 1: (60, now[0])}
    _merge(loop, owner)
    assert owner.held == [] and owner.merged == {0: 79, 1: 59}
    assert owner.engine.watermark_us == to_us(burst_at + timedelta(minutes=1) * 19 / 20)


def test_a_batch_whose_facts_cannot_be_read_is_set_aside_and_its_lane_still_moves_on(
    tmp_path: Path,
) -> None:
    # Lane 1's batch (usage offsets 0..39) names a facts record the topic's retention
    # deleted: its partials record is a dead letter. Left out whole, lane 1 seemed to have
    # records unread (its end is 40) for as long as it got no new traffic, and held lane
    # 0's rounds back with it; held without its rows, it says how far lane 1 was read.
    cfg = Config()
    loop = _loop(tmp_path, cfg)
    r0 = _record(LocalEngine(cfg, 0), 0, 1, 0, 40)
    r1 = _record(LocalEngine(cfg, 1), 1, 1, 0, 40)
    wh = Warehouse(tmp_path, writer=scope_writer(0), config=cfg.warehouse)
    owner = loop._state(0, wh)
    loop._unreadable["1@0"] = "before the first record the topic keeps (41)"
    _ends(loop, p0=40, p1=40)
    loop._take(owner, 0, r0, NOW)
    loop._take(owner, 1, r1, NOW)
    assert [d.source for d in owner.dead] == [f"kafka:{loop.names.partials}/0@1"]
    assert owner.dead[0].error.startswith(
        f"the facts of its batch, {loop.names.facts} record 1@0, cannot be read: before the "
        "first record the topic keeps (41); wide-scope detection"
    )
    _merge(loop, owner)
    assert owner.merged == {0: 39, 1: 39} and owner.held == []
    wh.close()
