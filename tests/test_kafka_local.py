"""The local broker and its CLI, against real brokers: no mocks.

The round trips also pin the client compatibility the pinned Kafka 4.x needs (KIP-896 removed
old protocol versions): kafka-python, aiokafka (under Faust) and kcat must produce, consume
and commit group offsets.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest

from spendstream.local.kafka import (
    DEFAULT_VERSION,
    KafkaLocalError,
    LocalKafka,
    PortInUseError,
    ToolUnavailableError,
    api_versions_ok,
    find_free_ports,
    main,
)
from tests.kafka_fixtures import BrokerFactory, TopicFactory

pytestmark = pytest.mark.kafka


def _committed_total(bootstrap: str, group: str, timeout_s: float = 30.0) -> int:
    """Sum of a group's committed offsets, read back through the admin API.

    Right after a (re)start the broker answers before its group coordinator has loaded
    __consumer_offsets, and says NOT_COORDINATOR / COORDINATOR_LOAD_IN_PROGRESS: retry.
    """
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                offsets = admin.list_group_offsets({group: None})[group]
                return sum(meta.offset for meta in offsets.values())
            except KafkaError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    finally:
        admin.close()


def _kafka_python_roundtrip(bootstrap: str, topic: str, group: str, count: int) -> None:
    from kafka import KafkaConsumer, KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for i in range(count):
        producer.send(topic, key=f"k{i % 5}".encode(), value=f"v{i}".encode())
    producer.flush()
    producer.close()

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=20_000,
    )
    values = set()
    for record in consumer:
        values.add(record.value)
        if len(values) == count:
            break
    consumer.commit()
    consumer.close()
    assert values == {f"v{i}".encode() for i in range(count)}

    assert _committed_total(bootstrap, group) == count


def test_kafka_python_produce_consume_commit(
    kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    topic = topic_factory(3, prefix="kp")
    _kafka_python_roundtrip(kafka_bootstrap, topic, f"g-{topic}", count=25)


def test_aiokafka_produce_consume_commit(kafka_bootstrap: str, topic_factory: TopicFactory) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    async def scenario() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            # Faust creates its topics through aiokafka's CreateTopics: it must negotiate.
            own = f"aio-admin-{os.getpid()}-{id(admin)}"
            await admin.create_topics([NewTopic(own, 2, 1)])
            await admin.delete_topics([own])
        finally:
            await admin.close()

        topic = topic_factory(2, prefix="aio")
        producer = AIOKafkaProducer(
            bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=True
        )
        await producer.start()
        try:
            for i in range(20):
                await producer.send_and_wait(topic, f"v{i}".encode(), key=f"k{i % 4}".encode())
        finally:
            await producer.stop()

        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=kafka_bootstrap,
            group_id=f"g-{topic}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            values: set[bytes] = set()
            async with asyncio.timeout(30):
                async for record in consumer:
                    assert record.value is not None
                    values.add(record.value)
                    if len(values) == 20:
                        break
            await consumer.commit()
            committed = [await consumer.committed(TopicPartition(topic, p)) for p in (0, 1)]
        finally:
            await consumer.stop()
        assert values == {f"v{i}".encode() for i in range(20)}
        assert sum(c or 0 for c in committed) == 20

    asyncio.run(scenario())


def test_kcat_produces_to_the_broker(kafka_bootstrap: str, topic_factory: TopicFactory) -> None:
    kcat = shutil.which("kcat")
    if kcat is None:
        pytest.fail("kcat is not installed: `make system-deps` or `apt-get install kcat`")
    from kafka import KafkaConsumer

    topic = topic_factory(1, prefix="kcat")
    subprocess.run(
        [kcat, "-b", kafka_bootstrap, "-t", topic, "-P", "-K:"],
        input=b"a:1\nb:2\nc:3\n",
        check=True,
        timeout=60,
    )
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=15_000,
    )
    got = []
    for record in consumer:
        got.append((record.key, record.value))
        if len(got) == 3:
            break
    consumer.close()
    assert got == [(b"a", b"1"), (b"b", b"2"), (b"c", b"3")]


def test_data_and_offsets_survive_restart(kafka_broker_factory: BrokerFactory) -> None:
    from kafka import KafkaAdminClient, KafkaConsumer

    broker = kafka_broker_factory()
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    admin.create_topics(
        {"durable": {"num_partitions": 2, "replication_factor": 1}}, wait_for_metadata=True
    )
    admin.close()
    _kafka_python_roundtrip(broker.bootstrap, "durable", "g-durable", count=10)
    pid = broker.status().pid

    assert broker.stop() is True
    status = broker.status()
    assert not status.running and status.pid is None
    assert not api_versions_ok("127.0.0.1", broker.port, timeout_s=1.0)
    assert broker.stop() is False  # stopping twice is harmless

    assert broker.start() == broker.bootstrap
    assert broker.status().running and broker.status().pid != pid
    # The topic, its records and the group's committed offsets are all still there.
    assert _committed_total(broker.bootstrap, "g-durable") == 10
    consumer = KafkaConsumer(
        "durable",
        bootstrap_servers=broker.bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=15_000,
    )
    values = set()
    for record in consumer:
        values.add(record.value)
        if len(values) == 10:
            break
    consumer.close()
    assert values == {f"v{i}".encode() for i in range(10)}
    assert "Kafka Server started" in broker.log_path.read_text()


def test_start_refuses_a_taken_port(kafka_broker_factory: BrokerFactory) -> None:
    broker = kafka_broker_factory(start=False)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", broker.port))
        squatter.listen()
        with pytest.raises(PortInUseError, match=str(broker.port)):
            broker.start(timeout_s=30)
    assert not broker.status().running


# --------------------------------------------------------------------------- CLI


def test_cli_status_when_nothing_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "not running" in out and str(tmp_path) in out and DEFAULT_VERSION in out


def test_cli_stop_when_nothing_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stop", "--dir", str(tmp_path)]) == 0
    assert "no Kafka running" in capsys.readouterr().out


def test_cli_status_of_a_running_broker(
    kafka_broker_factory: BrokerFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    broker = kafka_broker_factory()
    assert main(["status", "--dir", str(broker.data_dir)]) == 0
    out = capsys.readouterr().out
    assert f"running (pid {broker.status().pid}) at {broker.bootstrap}" in out
    assert str(broker.log_path) in out


def test_cli_start_status_stop(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port, controller_port = find_free_ports(2)
    data_dir = tmp_path / "cli"
    args = ["--dir", str(data_dir)]
    try:
        code = main(
            ["start", *args, "--port", str(port), "--controller-port", str(controller_port)]
        )
        assert code == 0
        assert capsys.readouterr().out.strip() == f"127.0.0.1:{port}"
        # Starting again is idempotent: same address, same process.
        pid = LocalKafka.from_dir(data_dir).status().pid
        assert main(["start", *args]) == 0
        assert capsys.readouterr().out.strip() == f"127.0.0.1:{port}"
        assert LocalKafka.from_dir(data_dir).status().pid == pid

        assert main(["status", *args]) == 0
        assert f"127.0.0.1:{port}" in capsys.readouterr().out
        assert main(["stop", *args]) == 0
        assert "stopped" in capsys.readouterr().out
        assert main(["status", *args]) == 1
    finally:
        LocalKafka.from_dir(data_dir).stop()  # never leak a detached broker


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["start", "--port", "abc"],
        ["start", "--port", "70000"],
        ["status", "--bogus"],
    ],
)
def test_cli_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "usage:" in capsys.readouterr().err


# --------------------------------------------------------------------------- preconditions


def _script(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_missing_java_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(ToolUnavailableError, match="openjdk-17-jre-headless"):
        LocalKafka(tmp_path / "k").start()
    assert main(["start", "--dir", str(tmp_path / "k"), "--port", "1"]) == 2
    assert "java not found" in capsys.readouterr().err


def test_old_java_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A stand-in JDK 11 (prints what a real one prints): Kafka 4 needs 17.
    _script(
        tmp_path / "jdk11" / "bin" / "java",
        "#!/bin/sh\necho 'openjdk version \"11.0.22\" 2024-01-16' >&2\n",
    )
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk11"))
    assert main(["start", "--dir", str(tmp_path / "k")]) == 2
    err = capsys.readouterr().err
    assert "Java 11" in err and "17" in err


def test_missing_mvn_is_a_usage_error_when_jars_are_not_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    java = shutil.which("java")
    assert java is not None, "the test machine needs java"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "java").symlink_to(java)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    with pytest.raises(KafkaLocalError, match="apt-get install maven"):
        LocalKafka(tmp_path / "k").start()
    assert main(["start", "--dir", str(tmp_path / "k")]) == 2
    assert "mvn not found" in capsys.readouterr().err
