"""``IdleClock`` (runtime/idle_clock.py): a quiet engine's breakers move on by the quiet
time, once ``[breaker] idle_advance_s`` has passed without a judged fact. Driven with a
clock the test moves and a real ``LocalEngine`` (its breaker time is what an advance moved)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from spendstream.config import Config
from spendstream.runtime.idle_clock import IdleClock
from spendstream.stream.engine import LocalEngine
from tests.stream.detection_facts import rows_table

T0 = datetime(2026, 3, 31, 0, 0, tzinfo=UTC)


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _engine() -> LocalEngine:
    engine = LocalEngine(Config(), 0)
    engine.process(rows_table([{"ts": T0, "api_key_id": "k", "cost": "0.001"}]), "0@0")
    assert engine.breaker_time == T0
    return engine


def test_nothing_moves_before_the_quiet_time_and_it_moves_at_it() -> None:
    clock, engine = _Clock(), _engine()
    idle = IdleClock(30.0, clock)
    clock.now += 30.0 - 1e-3
    assert idle.advance(engine) == [] and engine.breaker_time == T0
    clock.now += 1e-3  # exactly the quiet time: due
    idle.advance(engine)
    assert engine.breaker_time == T0 + timedelta(seconds=30)


def test_each_advance_adds_only_the_time_since_the_last_one() -> None:
    # Counting from the last judged fact every time would move breakers on by the same
    # quiet time again and again: a breaker would close minutes early on a quiet stream.
    clock, engine = _Clock(), _engine()
    idle = IdleClock(30.0, clock)
    clock.now += 30.0
    idle.advance(engine)
    clock.now += 5.0
    idle.advance(engine)
    assert engine.breaker_time == T0 + timedelta(seconds=35)


def test_a_judged_fact_restarts_the_quiet_time() -> None:
    clock, engine = _Clock(), _engine()
    idle = IdleClock(30.0, clock)
    clock.now += 20.0
    idle.judged()
    clock.now += 20.0  # 40 s since the start, 20 s since the fact
    assert idle.advance(engine) == [] and engine.breaker_time == T0


def test_no_idle_advance_when_it_is_off() -> None:
    clock, engine = _Clock(), _engine()
    idle = IdleClock(0.0, clock)
    clock.now += 1e6
    assert idle.advance(engine) == [] and engine.breaker_time == T0
