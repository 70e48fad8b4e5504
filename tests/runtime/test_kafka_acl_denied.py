"""A worker on a broker that enforces ACLs (a managed service's, an operator's) without the
right to alter the partials topic's configs: `run` cannot raise the topic's
`max.message.bytes`, so it says at start, as a WARNING, what to run; a batch whose partials
record the topic then refuses is an ERROR naming the same command, the batch is replayed
(not lost, not landed in part), and it lands once an operator raises the limit."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from spendstream.config import load_config
from spendstream.kafka.admin import Admin, TopicSpec
from spendstream.kafka.producer import OutRecord, Producer
from spendstream.kafka.settings import KafkaSettings
from spendstream.runtime.kafka.topology import MAX_RECORD_BYTES, ensure_topics
from spendstream.runtime.kafka.worker import Worker
from tests.kafka_fixtures import SecureBroker
from tests.runtime.kafka_workers import event_lines, fact_count, wait_for, write_config

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

PASSWORD_ENV = "ACL_TEST_KAFKA_PASSWORD"


def _grant_all_but_alter_configs(broker: SecureBroker, prefix: str) -> None:
    """What a worker needs on its topics, groups and transactions: everything but
    ALTER_CONFIGS (and ALTER, which would imply it), granted by the super user."""
    principal = f"User:{broker.user}"
    allow = AclPermissionType.ALLOW
    app = prefix.rstrip(".")

    def acl(
        kind: ResourceType, name: str, op: AclOperation, pattern: ResourcePatternType
    ) -> AclBinding:
        return AclBinding(kind, name, pattern, principal, "*", op, allow)

    prefixed, literal = ResourcePatternType.PREFIXED, ResourcePatternType.LITERAL
    bindings = [
        acl(ResourceType.TOPIC, prefix, op, prefixed)
        for op in (
            AclOperation.READ,
            AclOperation.WRITE,
            AclOperation.CREATE,
            AclOperation.DESCRIBE,
            AclOperation.DESCRIBE_CONFIGS,
        )
    ]
    bindings += [
        acl(ResourceType.GROUP, app, op, prefixed)
        for op in (AclOperation.READ, AclOperation.DESCRIBE)
    ]
    bindings += [
        acl(ResourceType.TRANSACTIONAL_ID, app, op, prefixed)
        for op in (AclOperation.WRITE, AclOperation.DESCRIBE)
    ]
    bindings += [
        acl(ResourceType.BROKER, "kafka-cluster", op, literal)
        for op in (AclOperation.IDEMPOTENT_WRITE, AclOperation.DESCRIBE)
    ]
    client = AdminClient({"bootstrap.servers": broker.broker.bootstrap})
    for future in client.create_acls(bindings, request_timeout=30).values():
        future.result()


def _record_limit(admin: Admin, topic: str) -> int:
    return int(admin.topic_configs(topic)["max.message.bytes"])


def test_a_worker_not_allowed_to_alter_the_partials_topic_says_what_to_run_and_waits(
    acl_kafka: SecureBroker,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.INFO)
    monkeypatch.setenv(PASSWORD_ENV, acl_kafka.password)
    worker_settings = acl_kafka.settings()
    path, prefix = write_config(tmp_path / "c.toml", worker_settings.bootstrap_servers)
    text = path.read_text().replace(
        "[kafka]\n",
        "[kafka]\n"
        'security_protocol = "SASL_PLAINTEXT"\n'
        'sasl_mechanism = "SCRAM-SHA-512"\n'
        f'sasl_username = "{acl_kafka.user}"\n'
        f'sasl_password_env = "{PASSWORD_ENV}"\n',
        1,
    )
    path.write_text(text)
    config = load_config(path)
    settings = KafkaSettings.from_config(config.kafka)
    assert settings.sasl_username == acl_kafka.user  # the worker is the restricted user
    _grant_all_but_alter_configs(acl_kafka, prefix)
    usage, partials = prefix + "spendstream.usage", prefix + "spendstream.partials"
    operator = Admin(acl_kafka.broker.bootstrap, timeout_s=60)
    # Less than any partials record (its Arrow schema alone is more).
    operator.ensure_topics([TopicSpec(partials, 1, {"max.message.bytes": "512"})])
    command = (
        f"kafka-configs.sh --alter --entity-type topics --entity-name {partials} "
        f"--add-config max.message.bytes={MAX_RECORD_BYTES}"
    )

    counts = ensure_topics(settings, config.kafka)
    assert _record_limit(operator, partials) == 512  # denied, as the broker's ACLs say
    said = [r for r in caplog.records if command in r.getMessage()]
    assert [r.levelno for r in said] == [logging.WARNING]  # at start: nothing failed yet

    wd = tmp_path / "wd"
    worker = Worker(config, wd, settings, counts, http=None).start()
    lines = event_lines(300, seed=11)
    producer = Producer(settings)
    try:
        producer.send([OutRecord(usage, line, partition=0) for line in lines], 60).raise_first()
        wait_for(
            lambda: any(
                command in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records
            ),
            "a refused partials record never said what to run",
        )
        assert fact_count(wd) == 0  # the batch is replayed, not landed without its partials
        operator.set_topic_config(partials, "max.message.bytes", str(MAX_RECORD_BYTES))
        wait_for(lambda: fact_count(wd) == len(lines), "the batch never landed once allowed")
    finally:
        producer.close()
        worker.stop()
