"""Where a breaker reset falls among a scope owner's slices (scope_loop.py): a reset read by
the owner applies after the slices read before it that alignment releases, and once only,
whatever the owner re-reads after a restart.

The owner's records are handed to ``ScopeLoop._step`` as consumed (its usage ends are given,
read at a clock that does not move); the facts it reads back, its outputs and its warehouse
are real (a broker of the test session)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from spendstream import facts_topic
from spendstream.config import Config, load_config
from spendstream.kafka.producer import OutRecord, Producer
from spendstream.kafka.settings import KafkaSettings
from spendstream.runtime.http.metrics import WorkerMetrics
from spendstream.runtime.kafka.facts_reader import FactsReader, batch_ref
from spendstream.runtime.kafka.outputs import Outputs
from spendstream.runtime.kafka.scope_loop import ScopeLoop, _Owner, scope_writer
from spendstream.runtime.kafka.topology import TopicNames, ensure_topics, topic_names
from spendstream.runtime.kafka.wire import (
    KIND_HEADER,
    PARTIALS_KIND,
    encode_partials,
    encode_reset,
)
from spendstream.stream.engine import LocalEngine, route
from spendstream.warehouse import Warehouse
from spendstream.warehouse.reading import run_sql
from tests.runtime.kafka_workers import write_config
from tests.stream.detection_facts import rows_table

pytestmark = pytest.mark.kafka

T0 = datetime(2026, 3, 31, 0, 0, tzinfo=UTC)
NOW = 1000.0
SCOPE = "team:t"
# A day budget of $0.02 with a hard limit: five facts of $0.01 open the team's breaker.
BUDGET = f'[[budget]]\nscope = "{SCOPE}"\nperiod = "day"\namount_usd = "0.02"\nhard_limit = "1.0"\n'


@dataclass(frozen=True)
class _Rec:
    """A partials-topic record as the loop consumes it (``kafka.consumer.Message``)."""

    _offset: int
    _key: bytes | None
    _value: bytes
    _headers: list[tuple[str, bytes]]

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes:
        return self._value

    def headers(self) -> list[tuple[str, bytes]]:
        return self._headers


class _Pipeline:
    """Topics on the session broker, a producer, and what a lane's worker publishes."""

    def __init__(self, tmp: Path, bootstrap: str, lanes: int) -> None:
        path, _ = write_config(tmp / "c.toml", bootstrap, partitions=lanes, extra=BUDGET)
        self.config: Config = load_config(path)
        self.settings = KafkaSettings.from_config(self.config.kafka)
        ensure_topics(self.settings, self.config.kafka)
        self.names: TopicNames = topic_names(self.config.kafka)
        self.producer = Producer(self.settings)
        self.workdir = tmp / "wd"
        self.lanes = lanes

    def partials(
        self, lane: int, team: str, start: datetime, cost: str, n: int, apart: timedelta
    ) -> bytes:
        """Lane's batch of usage offsets 0..n-1 (n facts ``apart`` from ``start``): its
        facts record published where a scope owner reads it back, its partials record."""
        rows = rows_table(
            [
                {"ts": start + i * apart, "api_key_id": f"k{lane}", "team": team,
                 "cost": cost}
                for i in range(n)
            ]
        )  # fmt: skip
        record = facts_topic.encode(lane, rows, pa.array(range(n), pa.int64()), (0, n - 1))
        out = OutRecord(self.names.facts, record, partition=lane)
        (offset,) = self.producer.send([out], 30).offsets
        assert offset is not None
        local = LocalEngine(self.config, lane).process(rows, batch_ref(lane, offset))
        (table,) = route(local.partials, 1)
        return encode_partials(lane, 0, n - 1, table)

    def loop(self) -> ScopeLoop:
        loop = ScopeLoop(
            self.config, self.workdir, self.settings, self.names, self.lanes, WorkerMetrics(),
            threading.Event(), clock=lambda: NOW,
        )  # fmt: skip
        loop.facts = FactsReader(self.settings, self.names.facts)
        loop.out = Outputs(self.producer, self.names, loop.signer)
        return loop

    def owner(self, loop: ScopeLoop) -> _Owner:
        wh = Warehouse(self.workdir, writer=scope_writer(0), config=self.config.warehouse)
        return loop._state(0, wh)

    def landed_states(self) -> list[str]:
        sql = f"SELECT state FROM breaker_events WHERE scope = '{SCOPE}' ORDER BY ts"
        return [s for (s,) in run_sql(self.workdir, sql)[1]]


def _partials_rec(offset: int, value: bytes) -> _Rec:
    return _Rec(offset, None, value, [(KIND_HEADER, PARTIALS_KIND)])


def _reset_rec(offset: int) -> _Rec:
    value, headers = encode_reset(SCOPE, T0 + timedelta(hours=6), SCOPE.encode(), None)
    return _Rec(offset, SCOPE.encode(), value, headers)


def test_a_reset_applies_after_the_slices_read_before_it(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    """The team's hard budget is crossed in a batch read before the reset, with nothing to
    wait for: that batch is merged first (the breaker opens), then the reset closes it.
    Applied the other way round the reset finds nothing open, and the breaker the batch
    opens stays open after it."""
    pipe = _Pipeline(tmp_path, kafka_bootstrap, lanes=1)
    crossing = pipe.partials(0, "t", T0, "0.01", 5, timedelta(minutes=1))
    loop = pipe.loop()
    owner = pipe.owner(loop)
    try:
        loop._ends = {0: (5, NOW)}  # the lane is all here: nothing holds its slices back
        loop._step(owner, [_partials_rec(0, crossing), _reset_rec(1)])
        assert owner.held == [] and owner.merged == {0: 4}
        assert SCOPE not in owner.engine.breakers()
        assert pipe.landed_states() == ["open", "closed"]
    finally:
        assert loop.facts is not None
        loop.facts.close()
        owner.warehouse.close()
        pipe.producer.close()


def test_a_reset_is_not_applied_again_when_slices_held_before_it_are_read_again(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    """Lane 0's batch, which crosses the team's hard budget, is held for alignment (lane 1
    is behind) when the reset comes: the reset finds nothing open, and the batch, merged
    later, opens the breaker for good. The owner leaves with the batch still held: its
    position stays before the batch, so after a restart both the batch and the reset are
    read again; the reset was applied already and must not close what the batch opens."""
    pipe = _Pipeline(tmp_path, kafka_bootstrap, lanes=2)
    # Lane 1: another team's facts over the first hours; lane 0 crosses after them.
    early = pipe.partials(1, "u", T0, "0.001", 3, timedelta(hours=1))
    crossing = pipe.partials(0, "t", T0 + timedelta(hours=5), "0.01", 5, timedelta(minutes=1))
    records = [_partials_rec(0, early), _partials_rec(1, crossing), _reset_rec(2)]
    loop = pipe.loop()
    owner = pipe.owner(loop)
    try:
        loop._ends = {0: (5, NOW), 1: (100, NOW)}  # lane 1 has records still to come
        loop._step(owner, records)
        # Lane 1's slices before its clock were merged; all of lane 0's wait for it.
        assert 1 in owner.partly and owner.resets_upto == 2
        assert any(h.batch.usage_partition == 0 for h in owner.held)
        assert SCOPE not in owner.engine.breakers()
        loop._release(0, owner)  # leaves in good order: lands what it merged
    finally:
        assert loop.facts is not None
        loop.facts.close()
    assert pipe.landed_states() == []

    again = pipe.loop()
    restored = pipe.owner(again)
    try:
        assert restored.read == -1 and restored.resets_upto == 2
        again._ends = {0: (5, NOW), 1: (3, NOW)}  # lane 1 has sent everything now
        again._step(restored, records)  # read again from past the position
        assert restored.held == [] and restored.merged == {0: 4, 1: 2}
        assert restored.engine.breakers()[SCOPE].state == "open"
        assert pipe.landed_states() == ["open"]
    finally:
        assert again.facts is not None
        again.facts.close()
        restored.warehouse.close()
        pipe.producer.close()
