"""The Kafka runtime's batch logic without a broker: stages over a real warehouse in tmp_path,
the priced-topic wire format, event-time alignment, and HTTP body checks."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from spendstream.config import Config, config_from_dict
from spendstream.http_auth import token_ok
from spendstream.runtime.embedded import EmbeddedRunner
from spendstream.runtime.http.events import check_body, request_id
from spendstream.signing import RecordSigner
from spendstream.stream.kafka.alignment import Aligner
from spendstream.stream.kafka.stages import DetectStage, UsageRecord, UsageStage
from spendstream.stream.kafka.wire import (
    PricedFact,
    decode_priced,
    encode_idle,
    encode_priced_facts,
    encode_reset,
)
from tests.runtime.kafka_workers import (
    ALERT_SQL,
    BREAKER_SQL,
    FACT_SQL,
    event_lines,
    key_calls,
    query,
)

CONFIG = Config()
T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _records(lines: list[bytes]) -> list[UsageRecord]:
    return [UsageRecord(0, i, line) for i, line in enumerate(lines)]


def _priced(stage: UsageStage, records: list[UsageRecord]) -> list[tuple[int, bytes]]:
    out = stage.prepare(records)
    stage.land(out)
    return list(enumerate(out.priced))


def test_usage_stage_lands_each_event_once_and_dead_letters_bad_records(tmp_path: Path) -> None:
    lines = event_lines(1000, seed=1)[:300]
    stage = UsageStage(CONFIG, tmp_path, "usage", "w")
    first = stage.prepare(_records([*lines[:200], b"{oops", lines[5]]))
    assert len(first.facts) == 200  # the in-batch repeat counts once
    assert sum(len(decode_priced(r)) for r in first.priced) == 200  # type: ignore[arg-type]
    assert first.duplicates == 1
    assert [d.source for d in first.dead_letters] == ["kafka:usage/0@200"]
    stage.land(first)
    # A replay of the same records (crash before the offset commit) lands nothing new.
    again = stage.prepare(_records([*lines[:200], b"{oops"]))
    assert again.facts == [] and again.duplicates == 200
    assert len(stage.prepare(_records(lines)).facts) == 100


def test_usage_stage_dead_letters_a_reused_id_with_other_content_at_its_offset(
    tmp_path: Path,
) -> None:
    lines = event_lines(1000, seed=1)[:3]
    stage = UsageStage(CONFIG, tmp_path, "usage", "w")
    stage.land(stage.prepare(_records(lines)))
    changed = json.loads(lines[1])
    changed["output_tokens"] += 1
    out = stage.prepare(
        [UsageRecord(4, 77, json.dumps(changed).encode()), UsageRecord(4, 78, None)]
    )
    assert out.facts == [] and out.duplicates == 0
    conflict, tombstone = sorted(out.dead_letters, key=lambda d: d.source)
    assert conflict.source == "kafka:usage/4@77"
    assert conflict.error.startswith(f"conflicting_duplicate: event_id {changed['event_id']!r}")
    assert tombstone.source == "kafka:usage/4@78" and tombstone.raw == ""


def test_priced_records_round_trip_facts_exactly_and_stay_small(tmp_path: Path) -> None:
    stage = UsageStage(CONFIG, tmp_path, "usage", "w")
    lines = event_lines(3000, seed=2)
    out = stage.prepare([UsageRecord(3, 41 + i, line) for i, line in enumerate(lines)])
    records = encode_priced_facts(
        [
            PricedFact(3, 41 + i, f, line)
            for i, (f, line) in enumerate(zip(out.facts, lines, strict=True))
        ]
    )
    assert len(records) > 1 and all(len(r) < 1024 * 1024 for r in records)
    decoded = [pf for r in records for pf in decode_priced(r)]  # type: ignore[union-attr]
    assert [(pf.partition, pf.offset) for pf in decoded] == [(3, 41 + i) for i in range(len(lines))]
    assert [pf.fact for pf in decoded] == out.facts


def test_kafka_stages_equal_the_embedded_runner_and_replays_change_nothing(tmp_path: Path) -> None:
    lines = event_lines(3000, seed=4)
    EmbeddedRunner(tmp_path / "ref", CONFIG).run(("f", line) for line in lines)
    usage = UsageStage(CONFIG, tmp_path / "k", "usage", "u")
    priced = _priced(usage, _records(lines))
    detect = DetectStage(CONFIG, tmp_path / "k", "d")
    assert len(priced) > 2
    half = len(priced) // 2
    first = detect.process(priced[:half])
    detect.land(first)
    # A restarted stage continues from the landed state; the replayed records are dropped.
    restarted = DetectStage(CONFIG, tmp_path / "k", "d")
    out = restarted.process(priced)
    assert out.replayed == half and first.facts + out.facts == len(lines)
    restarted.land(out)
    for sql in (FACT_SQL, ALERT_SQL, BREAKER_SQL):
        assert query(tmp_path / "k", sql) == query(tmp_path / "ref", sql)


def test_facts_republished_after_a_stage1_crash_are_dropped_by_usage_position(
    tmp_path: Path,
) -> None:
    lines = event_lines(1000, seed=5)[:50]
    usage = UsageStage(CONFIG, tmp_path, "usage", "u")
    out = usage.prepare(_records(lines))
    detect = DetectStage(CONFIG, tmp_path, "d")
    judged = detect.process(list(enumerate(out.priced)))
    # Stage 1 died before landing: it re-publishes the same facts at new priced offsets.
    again = detect.process([(len(out.priced) + i, v) for i, v in enumerate(out.priced)])
    assert (judged.facts, again.facts, again.replayed) == (50, 0, 50)


def test_manual_reset_closes_an_open_breaker_once(tmp_path: Path) -> None:
    usage = UsageStage(CONFIG, tmp_path, "usage", "u")
    priced = _priced(usage, _records(event_lines(3000, seed=4)))
    detect = DetectStage(CONFIG, tmp_path, "d")
    out = detect.process(priced)
    opened = next(b.scope for b in out.breaker_events if b.state == "open")
    assert opened in detect.pipeline.engine.breakers()
    ts = T0 + timedelta(days=30)
    n = len(priced)
    first = detect.process([(n, encode_reset(opened, ts))])
    second = detect.process([(n + 1, encode_reset(opened, ts))])
    assert [(b.scope, b.state, b.reason) for b in first.breaker_events] == [
        (opened, "closed", "manual reset")
    ]
    assert second.breaker_events == [] and opened not in detect.pipeline.engine.breakers()


def test_with_a_key_only_a_signed_reset_closes_a_breaker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STAGE_BREAKER_KEY", "r" * 40)
    config = config_from_dict({"breaker": {"hmac_key_env": "STAGE_BREAKER_KEY"}})
    usage = UsageStage(config, tmp_path, "usage", "u")
    priced = _priced(usage, _records(event_lines(3000, seed=4)))
    detect = DetectStage(config, tmp_path, "d")
    opened = next(b.scope for b in detect.process(priced).breaker_events if b.state == "open")
    ts, n = T0 + timedelta(days=30), len(priced)
    forged = [
        encode_reset(opened, ts),  # unsigned
        encode_reset(opened, ts, RecordSigner("x" * 40)),  # signed with another key
        encode_reset(opened, ts, RecordSigner("r" * 40)).replace(b'"reset"', b'"reset" ', 1),
    ]
    out = detect.process([(n + i, v) for i, v in enumerate(forged)])
    assert (out.unverified_resets, out.breaker_events) == (3, [])
    assert opened in detect.pipeline.engine.breakers()
    signed = detect.process([(n + 3, encode_reset(opened, ts, RecordSigner("r" * 40)))])
    assert [(b.scope, b.state) for b in signed.breaker_events] == [(opened, "closed")]


def test_aligner_holds_the_partition_ahead_until_the_other_catches_up() -> None:
    clock = Clock()
    al: Aligner[str] = Aligner(5.0, clock, partitions=2)
    al.add(0, T0, "a0")
    al.add(0, T0 + timedelta(hours=3), "a1")
    assert al.release() == []  # partition 1 has not shown up yet
    al.add(1, T0 + timedelta(hours=1), "b0")
    assert al.release() == ["a0", "b0"]
    al.add(1, T0 + timedelta(hours=4), "b1")
    assert al.release() == ["a1"]
    clock.now += 5.0  # both silent: nothing holds back any more
    assert al.release() == ["b1"]


def test_aligner_stops_waiting_for_a_silent_partition() -> None:
    clock = Clock()
    al: Aligner[str] = Aligner(2.0, clock, partitions=3)
    al.add(0, T0, "a0")
    assert al.release() == []
    clock.now += 1.0
    al.add(0, T0 + timedelta(minutes=1), "a1")
    clock.now += 1.5  # partitions 1 and 2 silent for 2.5 s
    assert al.release() == ["a0", "a1"]


def test_a_caught_up_marker_releases_without_waiting_for_the_silent_partition(
    tmp_path: Path,
) -> None:
    usage = UsageStage(CONFIG, tmp_path, "usage", "u")
    lines = event_lines(1000, seed=3)[:30]
    out = usage.prepare([UsageRecord(0, i, line) for i, line in enumerate(lines)])
    detect = DetectStage(CONFIG, tmp_path, "d", partitions=2, clock=Clock())
    assert detect.process(list(enumerate(out.priced))).facts == 0  # partition 1 unheard
    # Partition 1's reader is caught up (no clock advanced): partition 0 alone sets the pace.
    assert detect.process([(len(out.priced), encode_idle(1, 0))]).facts == 30
    assert detect.aligner.pending() == 0


def test_held_facts_survive_a_restart(tmp_path: Path) -> None:
    usage = UsageStage(CONFIG, tmp_path, "usage", "u")
    out = usage.prepare(
        [UsageRecord(i % 2, i, line) for i, line in enumerate(event_lines(1000, seed=3)[:40])]
    )
    clock = Clock()
    detect = DetectStage(CONFIG, tmp_path, "d", partitions=3, clock=clock)
    first = detect.process(list(enumerate(out.priced)))
    assert first.facts == 0 and detect.aligner.pending() == 40  # partition 2 never spoke
    detect.land(first)
    restarted = DetectStage(CONFIG, tmp_path, "d", partitions=3, clock=clock)
    assert restarted.aligner.pending() == 40
    clock.now += CONFIG.pipeline.align_idle_s
    assert restarted.tick().facts == 40


def test_http_body_is_checked_line_by_line() -> None:
    good = event_lines(1000, seed=9)[:2]
    body = (
        good[0] + b"\n\n" + b'{"event_id": "x", "ts": "2026-03-02T00:00:00Z"}\n' + good[1] + b"\n"
    )
    now = datetime.now(UTC)  # the synthetic events end in the recent past
    checked = check_body(body, "application/x-ndjson", now, "req-7")
    assert [raw for _, raw in checked.accepted] == good
    assert [r["line"] for r in checked.rejected] == [3]
    assert "provider: required field is missing" in str(checked.rejected[0]["error"])
    assert [d.source for d in checked.dead_letters] == ["http:req-7#3"]
    single = check_body(b'{\n "event_id": "x"\n}', "application/json; charset=utf-8", now)
    assert single.accepted == [] and [r["line"] for r in single.rejected] == [1]
    assert single.dead_letters[0].source == f"http:{single.request_id}#1"


def test_request_id_is_the_clients_plain_token_or_a_fresh_one() -> None:
    assert request_id("abc-123_x.y:z") == "abc-123_x.y:z"
    fresh = {request_id(None), request_id('a"; rm -rf /'), request_id("x" * 65)}
    assert len(fresh) == 3 and all(len(r) == 32 and r.isalnum() for r in fresh)


def test_http_fills_event_id_and_ts_like_the_python_client() -> None:
    from spendstream.producers.event import UsageEvent

    minimal = b'{"provider": "openai", "model": "gpt-5-mini", "input_tokens": 10, "output_tokens": 2, "reported_cost_usd": 0.12345678901234567890}'
    checked = check_body(minimal + b"\n" + minimal + b"\n{ }\n[1]", "application/x-ndjson", T0)
    assert len(checked.accepted) == 2 and [r["line"] for r in checked.rejected] == [3, 4]
    first, second = (UsageEvent.model_validate_json(raw) for _, raw in checked.accepted)
    assert first.ts == T0 and second.ts == T0  # receipt time
    assert first.event_id != second.event_id and len(first.event_id) == 36  # fresh UUIDs
    # The caller's bytes are kept: the number is not re-rounded through a float.
    assert checked.accepted[0][1].endswith(minimal[1:])
    # Given ones are kept as sent.
    own = b'{"event_id": "mine", "ts": "2026-01-01T00:00:00Z", ' + minimal[1:]
    (only,) = check_body(own, "application/json", T0).accepted
    assert only[1] == own
    # `{ }` gets both fields and is then judged on the rest (provider missing, ...); its dead
    # letter keeps the record as it was sent.
    assert "provider" in str(checked.rejected[0]["error"])
    assert [d.raw for d in checked.dead_letters] == ["{ }", "[1]"]


def test_bearer_token_must_match_exactly() -> None:
    assert token_ok("Bearer s3cret", "s3cret")
    assert not token_ok("Bearer s3cret2", "s3cret")
    assert not token_ok("s3cret", "s3cret")
    assert not token_ok(None, "s3cret")


def test_a_quiet_stream_still_moves_a_tripped_key_breaker_on(tmp_path: Path) -> None:
    # A key loops, its rate breaker opens, guard() stops its calls: no event will ever carry
    # event time past the cool-down. The worker's idle advance does, by processing time.
    from spendstream.config import config_from_dict

    cfg = config_from_dict(
        {"runaway": {"max_calls_per_minute": 5}, "breaker": {"rate_cooldown_s": 300}}
    )
    lines = key_calls("key-loop", 8, T0, timedelta(seconds=1))
    usage = UsageStage(cfg, tmp_path, "usage", "u")
    clock = Clock()
    detect = DetectStage(cfg, tmp_path, "d", clock=clock)
    tripped = detect.process(_priced(usage, _records(lines)))
    assert [(b.scope, b.state) for b in tripped.breaker_events] == [("api_key:key-loop", "open")]
    detect.land(tripped)

    clock.now += 30  # quiet, but not for idle_advance_s yet
    assert detect.advance_idle().breaker_events == []
    clock.now += 300  # quiet for 330 s: past the 300 s cool-down
    half = detect.advance_idle()
    assert [(b.scope, b.state) for b in half.breaker_events] == [("api_key:key-loop", "half_open")]
    detect.land(half)
    # A restarted worker continues from the landed state: nothing is emitted twice.
    restarted = DetectStage(cfg, tmp_path, "d", clock=clock)
    clock.now += 61
    closed = restarted.advance_idle()
    assert [(b.scope, b.state) for b in closed.breaker_events] == [("api_key:key-loop", "closed")]
    assert restarted.pipeline.engine.breakers() == {}


def test_idle_advance_can_be_turned_off(tmp_path: Path) -> None:
    from spendstream.config import config_from_dict

    cfg = config_from_dict(
        {"runaway": {"max_calls_per_minute": 5}, "breaker": {"idle_advance_s": 0}}
    )
    usage = UsageStage(cfg, tmp_path, "usage", "u")
    clock = Clock()
    detect = DetectStage(cfg, tmp_path, "d", clock=clock)
    out = detect.process(_priced(usage, _records(event_lines(3000, seed=4))))
    assert any(b.state == "open" for b in out.breaker_events)
    clock.now += 10 * 86400
    assert detect.advance_idle().breaker_events == []
