"""Late and out-of-order events through the embedded pipeline and a real DuckDB warehouse.

A late event lands in the warehouse and counts toward its own hour; it never produces a
duplicate alert, within the allowed lateness or beyond it, in the same run or a later one.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

from spendstream.config import config_from_dict
from spendstream.runtime.embedded import EmbeddedRunner
from spendstream.warehouse.reading import connect
from tests.stream.detection_facts import at

CONFIG = config_from_dict(
    {
        "anomaly": {"scopes": ["global"], "min_baseline_usd": 0.01},
        "detection": {"allowed_lateness_s": 3600},
    }
)


def _line(event_id: str, ts: datetime, input_tokens: int) -> tuple[str, bytes]:
    event = {
        "event_id": event_id,
        "ts": ts.isoformat(),
        "provider": "anthropic",
        "model": "claude-sonnet-4-5",
        "input_tokens": input_tokens,
        "output_tokens": 0,
    }
    return "test", json.dumps(event).encode()


def _ingest(workdir: Path, lines: list[tuple[str, bytes]]) -> list[str]:
    summary = EmbeddedRunner(workdir, CONFIG).run(lines)
    return [a.dedup_key for a in summary.alerts]


def _query(workdir: Path, sql: str) -> list[tuple[object, ...]]:
    con = connect(workdir)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_late_events_land_in_their_own_hour_without_duplicate_alerts(tmp_path: Path) -> None:
    # 25 hours of one $0.003 call an hour (1000 input tokens at $3/MTok), then a spike.
    history = [_line(f"h{h}", at(hours=h, minutes=30), 1000) for h in range(-1, 24)]
    spike_hour = at(hours=24)
    spike = [_line("spike", spike_hour + timedelta(minutes=5), 10_000)]
    first = _ingest(tmp_path, history + spike)
    assert first == [f"hourly_anomaly|global|{spike_hour.isoformat()}"]

    # A later run: the watermark moves to 24:50, then calls for 24:xx arrive out of order.
    # Within the lateness they count toward hour 24; it already fired, so nothing fires again.
    late = [
        _line("next", spike_hour + timedelta(minutes=50), 1000),
        _line("late-1", spike_hour + timedelta(minutes=10), 10_000),
        _line("late-2", spike_hour + timedelta(minutes=1), 10_000),
    ]
    assert _ingest(tmp_path, late) == []

    # Far beyond the lateness: still landed, still no alert.
    very_late = [
        _line("hour-30", at(hours=30), 1000),
        _line("very-late", spike_hour + timedelta(minutes=20), 50_000),
    ]
    assert _ingest(tmp_path, very_late) == []

    rows = _query(
        tmp_path,
        "SELECT count(*), sum(cost_usd) FROM usage_facts "
        f"WHERE ts >= '{spike_hour.isoformat()}' AND ts < '{(spike_hour + timedelta(hours=1)).isoformat()}'",
    )
    # spike + next + late-1 + late-2 + very-late, each in hour 24: 81k tokens at $3/MTok.
    assert rows[0][0] == 5
    assert Decimal(rows[0][1]) == Decimal("0.243")
    alerts = _query(tmp_path, "SELECT kind, scope, ts FROM alerts WHERE kind = 'hourly_anomaly'")
    assert [(k, s) for k, s, _ in alerts] == [("hourly_anomaly", "global")]
    assert _query(tmp_path, "SELECT count(*) FROM usage_facts")[0][0] == len(history) + 6


def test_facts_past_their_minute_s_lateness_are_counted_late_to_the_microsecond(
    tmp_path: Path,
) -> None:
    # A backfill out of ts order lands every fact, and the per-minute rule cannot count those
    # that came after their minute's window closed (its end + the lateness behind a newer
    # event): ingest says how many (it said nothing). Coarser windows may still count them.
    newest = at(hours=5)
    lines = [
        _line("newest", newest, 10),
        # 03:59's window ends at 04:00 and takes facts until 05:00: not late.
        _line("window-open", at(hours=3, minutes=59), 10),
        _line("past", at(hours=3, minutes=59) - timedelta(microseconds=1), 10),  # 03:58's
        _line("far", at(0), 10),
    ]
    runner = EmbeddedRunner(tmp_path / "w", CONFIG)
    summary = runner.run(lines[:2])
    assert (summary.late, summary.lateness_s) == (0, 3600)
    assert runner.run(lines[2:]).late == 2  # the watermark carries over between batches
    assert _query(tmp_path / "w", "SELECT count(*) FROM usage_facts") == [(4,)]


def test_a_fact_whose_minute_closed_a_microsecond_before_the_newest_is_late(
    tmp_path: Path,
) -> None:
    # 03:59's window ends at 04:00 and takes facts until 05:00 exactly: a newer event one
    # microsecond past that has closed it.
    lines = [
        _line("newest", at(hours=5) + timedelta(microseconds=1), 10),
        _line("closed", at(hours=3, minutes=59), 10),
    ]
    assert EmbeddedRunner(tmp_path / "w", CONFIG).run(lines).late == 1
