"""Real Kafka brokers for tests (a pytest plugin: ``pytest_plugins = ["tests.kafka_fixtures"]``).

- ``kafka_bootstrap`` (session): ``$SPENDSTREAM_TEST_KAFKA`` if set (a shared broker), else a
  testcontainers KRaft container if a Docker engine answers, else a ``LocalKafka`` from the
  Maven jars. No broker at all is a test *failure*, never a skip.
- ``kafka_broker_factory`` (function): dedicated ``LocalKafka`` brokers a test may stop and
  restart (broker-outage tests); all stopped at teardown.
- ``topic_factory`` (function): a fresh, uniquely named topic on the session broker (or on
  a given bootstrap); deleted at teardown.
- ``secure_kafka`` (session): a ``LocalKafka`` with SCRAM users on SASL_PLAINTEXT and
  SASL_SSL listeners; ``.settings(...)`` gives client settings, right or wrong.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest

from spendstream.kafka.settings import KafkaSettings
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
    from spendstream.kafka.admin import Admin, TopicSpec

    admins: dict[str, Any] = {}
    created: dict[str, list[str]] = {}

    def admin_for(bootstrap: str) -> Admin:
        if bootstrap not in admins:
            admins[bootstrap] = Admin(bootstrap, client_id="spendstream-tests", timeout_s=60)
        return admins[bootstrap]  # type: ignore[no-any-return]

    def make(
        partitions: int = 1,
        *,
        prefix: str = "test",
        configs: dict[str, str] | None = None,
        bootstrap: str | None = None,
    ) -> str:
        target = bootstrap or kafka_bootstrap
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        # ensure_topics waits until every partition has a leader.
        admin_for(target).ensure_topics([TopicSpec(name, partitions, dict(configs or {}), 1)])
        created.setdefault(target, []).append(name)
        return name

    yield make
    # Keep the shared broker tidy; dedicated brokers' data dirs are thrown away anyway (and
    # the broker may be down, where a delete would only wait for its timeout).
    names = created.get(kafka_bootstrap)
    if names:
        with contextlib.suppress(Exception):
            admin_for(kafka_bootstrap).delete_topics(names)


@dataclass(frozen=True)
class SecureBroker:
    """A broker with SCRAM users on SASL_PLAINTEXT and SASL_SSL listeners (and PLAINTEXT)."""

    broker: LocalKafka
    user: str
    password: str

    def settings(
        self, *, password: str | None = None, tls: bool = False, mechanism: str = "SCRAM-SHA-512"
    ) -> KafkaSettings:
        """Client settings as [kafka] would give them (``password``: a wrong one, say)."""
        from pydantic import SecretStr

        if tls:
            assert self.broker.ssl_bootstrap is not None
            return KafkaSettings(
                self.broker.ssl_bootstrap,
                "SASL_SSL",
                mechanism,
                self.user,
                SecretStr(password or self.password),
                ssl_ca_location=str(self.broker.tls.ca),
            )
        assert self.broker.sasl_bootstrap is not None
        return KafkaSettings(
            self.broker.sasl_bootstrap,
            "SASL_PLAINTEXT",
            mechanism,
            self.user,
            SecretStr(password or self.password),
        )


def _start_secure(
    data_dir: Path, user: str, password: str, *, acls: bool
) -> Iterator[SecureBroker]:
    last: Exception | None = None
    for attempt in range(3):
        port, controller, sasl, ssl = find_free_ports(4)
        broker = LocalKafka(
            data_dir / f"try{attempt}",
            port=port,
            controller_port=controller,
            sasl_port=sasl,
            ssl_port=ssl,
            scram_users={user: password},
            acls=acls,
            stop_with_parent=True,
        )
        try:
            broker.start(timeout_s=START_TIMEOUT_S)
        except PortInUseError as exc:
            last = exc
            continue
        except KafkaLocalError as exc:
            pytest.fail(f"could not start a SASL LocalKafka: {exc}", pytrace=False)
        try:
            yield SecureBroker(broker, user, password)
        finally:
            broker.stop()
        return
    pytest.fail(f"could not start a SASL LocalKafka: {last}", pytrace=False)


@pytest.fixture(scope="session")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    """One LocalKafka for the session with SCRAM-SHA-256/512 on SASL_PLAINTEXT and SASL_SSL
    (a throwaway CA): the security tests' broker. Fails, never skips, if it cannot start."""
    user, password = "spendstream", secrets.token_urlsafe(16)
    yield from _start_secure(tmp_path_factory.mktemp("kafka-secure"), user, password, acls=False)


@pytest.fixture(scope="module")
def acl_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    """A SCRAM broker with Kafka's authorizer: its user may do only what ACLs grant it, and
    the PLAINTEXT listener (``broker.bootstrap``) is the super user that grants them, as a
    managed service's operator would."""
    user, password = "worker", secrets.token_urlsafe(16)
    yield from _start_secure(tmp_path_factory.mktemp("kafka-acl"), user, password, acls=True)


# Reading and writing topics in tests, through the project's adapter.


def produce(
    target: str | KafkaSettings,
    topic: str,
    records: list[tuple[bytes | None, bytes | None]],
    headers: list[tuple[str, bytes]] | None = None,
) -> None:
    """Produce (key, value) records and wait until the broker has every one."""
    from spendstream.kafka.producer import OutRecord, Producer

    producer = Producer(target, client_id="spendstream-tests")
    try:
        report = producer.send([OutRecord(topic, v, k, headers) for k, v in records], 60)
        report.raise_first()
    finally:
        producer.close(timeout_s=10)


def end_offsets(target: str | KafkaSettings, topic: str) -> dict[int, int]:
    """Each partition's high watermark (next offset to be written)."""
    from spendstream.kafka.consumer import Consumer

    consumer = Consumer(target, client_id="spendstream-tests")
    try:
        parts = consumer.partitions_for(topic, timeout_s=30) or []
        return {p: consumer.watermarks((topic, p), timeout_s=30)[1] for p in parts}
    finally:
        consumer.close()


def read_topic(target: str | KafkaSettings, topic: str, timeout_s: float = 120.0) -> list[Any]:
    """Every record of the topic, from the beginning to the end offsets at call time."""
    import time

    from spendstream.kafka.consumer import BEGINNING, Consumer

    consumer = Consumer(target, client_id="spendstream-tests")
    try:
        parts = consumer.partitions_for(topic, timeout_s=30) or []
        ends = {(topic, p): consumer.watermarks((topic, p), timeout_s=30)[1] for p in parts}
        consumer.assign({tp: BEGINNING for tp in ends})
        seen: dict[tuple[str, int], int] = {}
        out: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while any(seen.get(tp, 0) < end for tp, end in ends.items()):
            assert time.monotonic() < deadline, f"could not read {topic} back"
            for msg in consumer.consume(10_000, 1.0):
                tp = (topic, msg.partition())
                if msg.offset() < ends[tp]:
                    out.append(msg)
                seen[tp] = msg.offset() + 1
        return out
    finally:
        consumer.close()
