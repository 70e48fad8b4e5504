"""Real Kafka brokers for tests (a pytest plugin: ``pytest_plugins = ["tests.kafka_fixtures"]``).

- ``kafka_bootstrap`` (session): ``$SPENDSTREAM_TEST_KAFKA`` if set (a shared broker), else a
  testcontainers KRaft container if a Docker engine answers, else a ``LocalKafka`` from the
  Maven jars. No broker at all is a test *failure*, never a skip.
- ``kafka_broker_factory`` (function): dedicated ``LocalKafka`` brokers a test may stop and
  restart (broker-outage tests); all stopped at teardown.
- ``topic_factory`` (function): a fresh, uniquely named topic on the session broker (or on
  a given bootstrap); deleted at teardown.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from spendstream.local.kafka import (
    DEFAULT_VERSION,
    KafkaLocalError,
    LocalKafka,
    PortInUseError,
    api_versions_ok,
    find_free_ports,
)

ENV_BOOTSTRAP = "SPENDSTREAM_TEST_KAFKA"
ENV_IMAGE = "SPENDSTREAM_TEST_KAFKA_IMAGE"  # optional image for the testcontainers path
START_TIMEOUT_S = 180.0  # two cores shared with other brokers and test workers


class BrokerFactory(Protocol):
    def __call__(self, *, start: bool = True, version: str = DEFAULT_VERSION) -> LocalKafka: ...


class TopicFactory(Protocol):
    def __call__(
        self,
        partitions: int = 1,
        *,
        prefix: str = "test",
        configs: dict[str, str] | None = None,
        bootstrap: str | None = None,
    ) -> str: ...


def _answers(bootstrap: str) -> bool:
    host, _, port = bootstrap.rpartition(":")
    return port.isdigit() and api_versions_ok(host or "127.0.0.1", int(port), timeout_s=5.0)


def start_local_kafka(
    data_dir: Path, version: str = DEFAULT_VERSION, attempts: int = 3
) -> LocalKafka:
    """Start a LocalKafka on fresh free ports, retrying if another process takes one first."""
    last: KafkaLocalError | None = None
    for attempt in range(attempts):
        port, controller_port = find_free_ports(2)
        broker = LocalKafka(
            data_dir / f"try{attempt}",
            port=port,
            controller_port=controller_port,
            version=version,
            stop_with_parent=True,  # a killed pytest must not leave brokers running
        )
        try:
            broker.start(timeout_s=START_TIMEOUT_S)
        except PortInUseError as exc:
            last = exc
            continue
        return broker
    assert last is not None
    raise last


def _docker_engine() -> str | None:
    """None if a Docker engine answers, else why not."""
    try:
        import docker

        docker.from_env(timeout=5).ping()
    except Exception as exc:  # DockerException, ImportError, connection errors alike
        return f"no Docker engine ({type(exc).__name__}: {exc})"
    return None


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap address of a real broker shared by the whole test session."""
    shared = os.environ.get(ENV_BOOTSTRAP)
    if shared:
        if not _answers(shared):
            pytest.fail(f"${ENV_BOOTSTRAP}={shared} does not answer a Kafka request", pytrace=False)
        yield shared
        return

    reasons: list[str] = []
    why_not_docker = _docker_engine()
    if why_not_docker is None:
        from testcontainers.community.kafka import KafkaContainer

        image = os.environ.get(ENV_IMAGE)
        container = (KafkaContainer(image) if image else KafkaContainer()).with_kraft()
        try:
            container.start()
        except Exception as exc:  # e.g. the image cannot be pulled: fall back to LocalKafka
            reasons.append(f"testcontainers Kafka did not start ({exc})")
        else:
            try:
                yield container.get_bootstrap_server()
            finally:
                container.stop()
            return
    else:
        reasons.append(why_not_docker)

    try:
        broker = start_local_kafka(tmp_path_factory.mktemp("kafka-session"))
    except KafkaLocalError as exc:
        reasons.append(f"LocalKafka: {exc}")
        pytest.fail("no Kafka broker for the tests:\n" + "\n".join(reasons), pytrace=False)
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture
def kafka_broker_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerFactory]:
    """Make dedicated LocalKafka brokers (own ports, own dir) a test may stop and restart."""
    brokers: list[LocalKafka] = []

    def make(*, start: bool = True, version: str = DEFAULT_VERSION) -> LocalKafka:
        data_dir = tmp_path_factory.mktemp("kafka-dedicated")
        if start:
            try:
                broker = start_local_kafka(data_dir, version=version)
            except KafkaLocalError as exc:
                pytest.fail(f"could not start a dedicated LocalKafka: {exc}", pytrace=False)
        else:
            port, controller_port = find_free_ports(2)
            broker = LocalKafka(
                data_dir, port=port, controller_port=controller_port, stop_with_parent=True
            )
        brokers.append(broker)
        return broker

    yield make
    for broker in brokers:
        broker.stop(timeout_s=30)


@pytest.fixture
def topic_factory(kafka_bootstrap: str) -> Iterator[TopicFactory]:
    """Create uniquely named topics (on the session broker unless ``bootstrap`` is given)."""
    from kafka import KafkaAdminClient

    admins: dict[str, Any] = {}
    created: dict[str, list[str]] = {}

    def admin_for(bootstrap: str) -> Any:
        if bootstrap not in admins:
            admins[bootstrap] = KafkaAdminClient(
                bootstrap_servers=bootstrap, client_id="spendstream-tests"
            )
        return admins[bootstrap]

    def make(
        partitions: int = 1,
        *,
        prefix: str = "test",
        configs: dict[str, str] | None = None,
        bootstrap: str | None = None,
    ) -> str:
        target = bootstrap or kafka_bootstrap
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        spec = {"num_partitions": partitions, "replication_factor": 1, "configs": configs or {}}
        # wait_for_metadata: the create response comes before every partition has a leader.
        admin_for(target).create_topics({name: spec}, wait_for_metadata=True)
        created.setdefault(target, []).append(name)
        return name

    yield make
    # Keep the shared broker tidy; dedicated brokers' data dirs are thrown away anyway (and
    # the broker may be down, where a delete would only wait for its timeout).
    names = created.get(kafka_bootstrap)
    if names:
        with contextlib.suppress(Exception):
            admin_for(kafka_bootstrap).delete_topics(names)
    for admin in admins.values():
        admin.close()
