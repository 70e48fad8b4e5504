"""The local broker and its CLI, against real brokers: no mocks.

The round trips also pin the client compatibility the pinned Kafka 4.x needs (KIP-896 removed
old protocol versions): confluent-kafka (spendstream.kafka) and kcat
must produce, consume and commit group offsets.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest

from spendstream.kafka.settings import KafkaSettings
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
from tests.kafka_fixtures import BrokerFactory, SecureBroker, TopicFactory, produce, read_topic

pytestmark = pytest.mark.kafka


def test_the_old_import_path_still_gives_the_same_objects() -> None:
    """spendstream.kafka_local moved to spendstream.local.kafka; scripts importing the old
    path keep working (the shim re-exports the module's public names)."""
    import spendstream.kafka_local as old
    import spendstream.local.kafka as new

    assert old.__all__ == new.__all__
    for name in new.__all__:
        assert getattr(old, name) is getattr(new, name), name


def _committed_total(bootstrap: str, group: str, topic: str, timeout_s: float = 30.0) -> int:
    """Sum of a group's committed offsets on ``topic``, read back.

    Right after a (re)start the broker answers before its group coordinator has loaded
    __consumer_offsets, and says NOT_COORDINATOR / COORDINATOR_LOAD_IN_PROGRESS: retry.
    """
    from spendstream.errors import KafkaClientError
    from spendstream.kafka.admin import Admin

    admin = Admin(bootstrap, timeout_s=timeout_s)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return sum(admin.group_offsets(group, [topic]).values())
        except KafkaClientError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _consume_values(
    bootstrap: str | KafkaSettings, topic: str, group: str, count: int
) -> set[bytes]:
    from spendstream.kafka.consumer import Consumer

    consumer = Consumer(bootstrap, group_id=group)
    consumer.subscribe([topic])
    values: set[bytes] = set()
    deadline = time.monotonic() + 60
    try:
        while len(values) < count:
            assert time.monotonic() < deadline, f"read {len(values)} of {count}"
            values.update(m.value() or b"" for m in consumer.consume(100, 0.5))
        consumer.commit()
    finally:
        consumer.close()
    return values


def _roundtrip(bootstrap: str | KafkaSettings, topic: str, group: str, count: int) -> None:
    produce(bootstrap, topic, [(f"k{i % 5}".encode(), f"v{i}".encode()) for i in range(count)])
    assert _consume_values(bootstrap, topic, group, count) == {
        f"v{i}".encode() for i in range(count)
    }


def test_confluent_kafka_produce_consume_commit(
    kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    topic = topic_factory(3, prefix="ck")
    _roundtrip(kafka_bootstrap, topic, f"g-{topic}", count=25)
    assert _committed_total(kafka_bootstrap, f"g-{topic}", topic) == 25


def test_kcat_produces_to_the_broker(kafka_bootstrap: str, topic_factory: TopicFactory) -> None:
    kcat = shutil.which("kcat")
    if kcat is None:
        pytest.fail("kcat is not installed: `make system-deps` or `apt-get install kcat`")
    from tests.kafka_fixtures import read_topic

    topic = topic_factory(1, prefix="kcat")
    subprocess.run(
        [kcat, "-b", kafka_bootstrap, "-t", topic, "-P", "-K:"],
        input=b"a:1\nb:2\nc:3\n",
        check=True,
        timeout=60,
    )
    got = [(m.key(), m.value()) for m in read_topic(kafka_bootstrap, topic)]
    assert got == [(b"a", b"1"), (b"b", b"2"), (b"c", b"3")]


def test_data_and_offsets_survive_restart(kafka_broker_factory: BrokerFactory) -> None:
    from spendstream.kafka.admin import Admin, TopicSpec

    broker = kafka_broker_factory()
    Admin(broker.bootstrap, timeout_s=60).ensure_topics([TopicSpec("durable", 2, {}, 1)])
    _roundtrip(broker.bootstrap, "durable", "g-durable", count=10)
    assert _committed_total(broker.bootstrap, "g-durable", "durable") == 10
    pid = broker.status().pid

    assert broker.stop() is True
    status = broker.status()
    assert not status.running and status.pid is None
    assert not api_versions_ok("127.0.0.1", broker.port, timeout_s=1.0)
    assert broker.stop() is False  # stopping twice is harmless

    assert broker.start() == broker.bootstrap
    assert broker.status().running and broker.status().pid != pid
    # The topic, its records and the group's committed offsets are all still there.
    assert _committed_total(broker.bootstrap, "g-durable", "durable") == 10
    values = {m.value() for m in read_topic(broker.bootstrap, "durable")}
    assert values == {f"v{i}".encode() for i in range(10)}
    assert "Kafka Server started" in broker.log_path.read_text()


def test_start_refuses_a_taken_port(kafka_broker_factory: BrokerFactory) -> None:
    broker = kafka_broker_factory(start=False)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", broker.port))
        squatter.listen()
        with pytest.raises(PortInUseError, match=f"port {broker.port} .* with --port N"):
            broker.start(timeout_s=30)
    assert not broker.status().running


# --------------------------------------------------------------------------- SASL and TLS


def test_scram_users_work_on_sasl_plaintext_and_sasl_ssl_with_both_mechanisms(
    secure_kafka: SecureBroker,
) -> None:
    from spendstream.kafka.admin import Admin, TopicSpec

    for tls in (False, True):
        for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
            settings = secure_kafka.settings(tls=tls, mechanism=mechanism)
            topic = f"sec-{int(tls)}-{mechanism.lower()}-{os.getpid()}"
            Admin(settings, timeout_s=60).ensure_topics([TopicSpec(topic, 2, {}, 1)])
            _roundtrip(settings, topic, f"g-{topic}", count=12)


def test_a_wrong_password_is_a_kafka_auth_error_naming_the_keys_to_check(
    secure_kafka: SecureBroker,
) -> None:
    from spendstream.errors import KafkaAuthError
    from spendstream.kafka.admin import Admin

    for tls in (False, True):
        settings = secure_kafka.settings(password="not-the-password", tls=tls)
        with pytest.raises(KafkaAuthError) as err:
            Admin(settings, timeout_s=60).topics()
        text = str(err.value)
        assert "SASL authentication" in text and "sasl_password_env" in text
        assert "not-the-password" not in text and secure_kafka.password not in text
        assert err.value.code == "_AUTHENTICATION" and not err.value.retriable


def test_tls_needs_the_ca_and_accepts_a_client_certificate(secure_kafka: SecureBroker) -> None:
    from dataclasses import replace

    from pydantic import SecretStr

    from spendstream.errors import KafkaAuthError, KafkaClientError
    from spendstream.kafka.admin import Admin, TopicSpec

    tls = secure_kafka.broker.tls
    good = secure_kafka.settings(tls=True)
    # The system's CAs do not know the throwaway one: the handshake fails, and says so.
    with pytest.raises(KafkaAuthError, match="certificate verify failed"):
        Admin(replace(good, ssl_ca_location=None), timeout_s=30).topics()
    # Mutual TLS: the client certificate with its encrypted key and the key's password.
    password = tls.client_key_password.read_text().strip()
    mtls = replace(
        good,
        ssl_certificate_location=str(tls.client_certificate),
        ssl_key_location=str(tls.client_key),
        ssl_key_password=SecretStr(password),
    )
    mtls_topic = f"mtls-{os.getpid()}"
    created = Admin(mtls, timeout_s=60).ensure_topics([TopicSpec(mtls_topic, 1, {}, 1)])
    assert created == {mtls_topic: 1}
    with pytest.raises(KafkaClientError, match=r"ssl\.key"):
        Admin(replace(mtls, ssl_key_password=SecretStr("wrong")), timeout_s=30)


def test_a_formatted_dir_refuses_scram_users_it_was_not_formatted_with(
    secure_kafka: SecureBroker,
) -> None:
    again = LocalKafka(
        secure_kafka.broker.data_dir,
        port=secure_kafka.broker.port,
        controller_port=secure_kafka.broker.controller_port,
        scram_users={"newcomer": "pw"},
    )
    with pytest.raises(KafkaLocalError, match="newcomer"):
        again.start(timeout_s=30)  # it runs already: the answer comes before any restart


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


def test_cli_starts_a_sasl_broker_and_prints_the_client_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import tomllib

    from spendstream.config import config_from_dict
    from spendstream.kafka.admin import Admin, TopicSpec

    port, controller_port, sasl_port = find_free_ports(3)
    data_dir = tmp_path / "sasl"
    args = ["--dir", str(data_dir), "--port", str(port), "--controller-port", str(controller_port)]
    monkeypatch.delenv("CLI_KAFKA_PW", raising=False)
    assert (
        main(["start", *args, "--sasl-port", str(sasl_port), "--sasl-password-env", "CLI_KAFKA_PW"])
        == 2
    )
    assert "set $CLI_KAFKA_PW" in capsys.readouterr().err
    monkeypatch.setenv("CLI_KAFKA_PW", "cli-secret")
    try:
        code = main(
            ["start", *args, "--sasl-port", str(sasl_port), "--sasl-user", "ops",
             "--sasl-password-env", "CLI_KAFKA_PW"]
        )  # fmt: skip
        assert code == 0
        out, err = capsys.readouterr()
        assert out.strip() == f"127.0.0.1:{port}"
        assert "cli-secret" not in out + err
        # The printed section is a working [kafka] configuration.
        kafka = tomllib.loads(err[err.index("# SASL_PLAINTEXT listener") :])
        config = config_from_dict(kafka)
        settings = KafkaSettings.from_config(config.kafka, {"CLI_KAFKA_PW": "cli-secret"})
        assert settings.bootstrap_servers == f"127.0.0.1:{sasl_port}"
        assert Admin(settings, timeout_s=60).ensure_topics([TopicSpec("cli", 1, {}, 1)]) == {
            "cli": 1
        }
        assert main(["status", "--dir", str(data_dir)]) == 0
        assert f"SASL_PLAINTEXT: 127.0.0.1:{sasl_port}" in capsys.readouterr().out
    finally:
        LocalKafka.from_dir(data_dir).stop()


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
