"""``KafkaBackend`` on a real broker, beside the server: where dead letters land, and what a
landing that fails means for the client."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from spendstream.errors import ConfigError, WarehouseError
from spendstream.records import DeadLetter
from spendstream.runtime.http import KafkaBackend, ServerThread
from spendstream.topics import DEAD_LETTERS, USAGE
from tests.kafka_fixtures import read_topic
from tests.runtime.http_served import TOKEN, make_config, served

pytestmark = pytest.mark.kafka

NOW = datetime(2026, 11, 1, tzinfo=UTC)


def test_a_backend_needs_somewhere_to_land_dead_letters(tmp_path: Path) -> None:
    config = make_config("127.0.0.1:1", tmp_path)
    with pytest.raises(ConfigError, match="land_dead_letters or a workdir"):
        KafkaBackend(config)


def test_dead_letters_land_through_the_runtimes_callable_after_the_topic_has_them(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    config = make_config(kafka_bootstrap, tmp_path)
    landed: list[DeadLetter] = []
    with served(config, tmp_path / "unused") as s:  # creates the topics
        seen_on_topic: list[int] = []

        def land(dead: Sequence[DeadLetter]) -> None:
            # The topic already has them when the runtime is asked to land them.
            seen_on_topic.append(len(read_topic(kafka_bootstrap, s.topic(DEAD_LETTERS))))
            landed.extend(dead)

        backend = KafkaBackend(config, land_dead_letters=land).start()
        try:
            backend.publish([(b"k", b'{"x": 1}')], [DeadLetter("raw", "why", "http:r#2", NOW)])
            backend.publish([], [])  # nothing to do: no landing call
        finally:
            backend.close()
    assert landed == [DeadLetter("raw", "why", "http:r#2", NOW)]
    assert seen_on_topic == [1]
    assert not (tmp_path / "unused").exists()


def test_a_landing_that_fails_is_a_503_and_counts_nothing(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    config = make_config(kafka_bootstrap, tmp_path)

    def land(dead: Sequence[DeadLetter]) -> None:
        raise WarehouseError("the catalog is unreachable")

    with served(config, tmp_path / "unused") as s:
        backend = KafkaBackend(config, land_dead_letters=land).start()
        try:
            with ServerThread(backend, config, TOKEN, host="127.0.0.1", port=0) as server:
                s.server = server  # the same client, against this server
                status, answer = s.post_lines(b'{"event_id": "only-id"}', request_id="r1")
                assert status == 503
                assert answer["error"] == "not accepted, send again: the catalog is unreachable"
                assert answer["request_id"] == "r1"
                assert 'spendstream_http_records_total{result="rejected"}' not in s.metrics()
                assert "spendstream_dead_letters_total{" not in s.metrics()
        finally:
            backend.close()
        dead = [json.loads(m.value()) for m in read_topic(kafka_bootstrap, s.topic(DEAD_LETTERS))]
        assert [d["source"] for d in dead] == ["http:r1#1"]  # on the topic; re-sent, again
        assert read_topic(kafka_bootstrap, s.topic(USAGE)) == []
