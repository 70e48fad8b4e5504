"""How a scope owner learns whether a usage partition (lane) has records it has not seen:
the partition's end offset, read from the broker, trusted while it says "behind" for
``_BEHIND_TTL_S`` (an end only grows) and read again after that."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from spendstream.config import load_config
from spendstream.kafka.settings import KafkaSettings
from spendstream.runtime.http.metrics import WorkerMetrics
from spendstream.runtime.kafka.facts_reader import FactsReader
from spendstream.runtime.kafka.scope_loop import _BEHIND_TTL_S, ScopeLoop, scope_writer
from spendstream.runtime.kafka.topology import ensure_topics, topic_names
from spendstream.warehouse import Warehouse
from tests.kafka_fixtures import produce
from tests.runtime.kafka_workers import write_config

pytestmark = pytest.mark.kafka

NOW = 1000.0


def test_an_end_read_as_behind_is_trusted_for_a_while_then_read_again(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    path, _ = write_config(tmp_path / "c.toml", kafka_bootstrap, partitions=1)
    config = load_config(path)
    settings = KafkaSettings.from_config(config.kafka)
    ensure_topics(settings, config.kafka)
    names = topic_names(config.kafka)
    produce(kafka_bootstrap, names.usage, [(None, b"{}")] * 10)  # the lane's end: 10
    loop = ScopeLoop(
        config, tmp_path, settings, names, 1, WorkerMetrics(), threading.Event(), lambda: NOW
    )
    loop.facts = FactsReader(settings, names.facts)
    try:
        wh = Warehouse(tmp_path / "wd", writer=scope_writer(0), config=config.warehouse)
        owner = loop._state(0, wh)
        # An end read as 20 says the lane is behind (all 10 records are seen): believed
        # without asking while fresh enough, so the reading stands; a stale one is asked
        # again (20 cannot happen, an end only grows: it shows whether the broker was asked).
        loop._ends = {0: (20, NOW - _BEHIND_TTL_S + 0.1)}
        assert not loop._caught_up(0, 9, NOW, owner)
        assert loop._ends[0] == (20, NOW - _BEHIND_TTL_S + 0.1)
        loop._ends = {0: (20, NOW - _BEHIND_TTL_S - 0.1)}
        assert loop._caught_up(0, 9, NOW, owner)  # asked again: the end is 10
        assert loop._ends[0] == (10, NOW)
        assert not loop._caught_up(0, 8, NOW, owner)  # one record not seen yet
    finally:
        loop.facts.consumer.close()
