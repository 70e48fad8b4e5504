"""Every Kafka client spendstream runs, against a broker that demands SCRAM (and TLS): the
Meter's transport, the breaker view, the alert router, ``breakers reset``/``list`` and the
``spendstream run`` worker work with the right credentials and fail with a clear
``KafkaAuthError``-style message, naming the keys to check, with wrong ones."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from spendstream.errors import BreakerOpen, KafkaAuthError
from spendstream.kafka.admin import Admin, TopicSpec
from spendstream.kafka.settings import KafkaSettings
from spendstream.producers import Meter
from spendstream.producers.guard import BreakerView, guard
from spendstream.records import BreakerEvent, alert_to_wire, breaker_to_wire
from spendstream.signing import RecordSigner
from tests.kafka_fixtures import SecureBroker, produce, read_topic

pytestmark = pytest.mark.kafka

PASSWORD_ENV = "SEC_TEST_KAFKA_PASSWORD"
KEY_ENV = "SEC_TEST_BREAKER_KEY"
KEY = "hmac-" + "k" * 40
WRONG = "definitely-not-the-password"


@dataclass
class Setup:
    broker: SecureBroker
    tmp: Path
    prefix: str

    def config(self, *, tls: bool = True) -> Path:
        """A spendstream.toml naming the secure listener; the password comes from the env."""
        s = self.broker.settings(tls=tls)
        lines = [
            "[kafka]",
            f'bootstrap_servers = "{s.bootstrap_servers}"',
            f'security_protocol = "{s.security_protocol}"',
            'sasl_mechanism = "SCRAM-SHA-512"',
            f'sasl_username = "{s.sasl_username}"',
            f'sasl_password_env = "{PASSWORD_ENV}"',
            f'topic_prefix = "{self.prefix}"',
            f'app_id = "{self.prefix.rstrip(".")}"',
            "usage_partitions = 1",
            "session_timeout_s = 10",
        ]
        if tls:
            lines.append(f'ssl_ca_location = "{s.ssl_ca_location}"')
        lines += ["[breaker]", f'hmac_key_env = "{KEY_ENV}"', "idle_advance_s = 0"]
        lines += ["[pipeline]", "batch_within_s = 0.1"]
        path = self.tmp / f"spendstream-{int(tls)}.toml"
        path.write_text("\n".join(lines) + "\n")
        return path

    def env(self, password: str | None = None) -> dict[str, str]:
        return {**os.environ, PASSWORD_ENV: password or self.broker.password, KEY_ENV: KEY}

    def cli(self, *args: str, password: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "spendstream", *args],
            env=self.env(password),
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )


@pytest.fixture
def setup(secure_kafka: SecureBroker, tmp_path: Path) -> Iterator[Setup]:
    yield Setup(secure_kafka, tmp_path, f"sec{uuid.uuid4().hex[:8]}.")


def _topic(settings: KafkaSettings, name: str, configs: dict[str, str] | None = None) -> str:
    Admin(settings, timeout_s=60).ensure_topics([TopicSpec(name, 1, configs or {}, 1)])
    return name


def _assert_clear(text: str, secret: str) -> None:
    assert "SASL authentication" in text, text
    assert "sasl_password_env" in text, text  # says which key to check
    assert secret not in text


def test_settings_come_from_the_kafka_section_with_the_secret_from_the_env(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    from spendstream.config import load_config

    monkeypatch.setenv(PASSWORD_ENV, setup.broker.password)
    settings = KafkaSettings.from_config(load_config(setup.config()).kafka)
    assert settings == setup.broker.settings(tls=True)
    assert setup.broker.password not in repr(settings)  # secrets never in a repr
    monkeypatch.delenv(PASSWORD_ENV)
    from spendstream.errors import ConfigError

    with pytest.raises(
        ConfigError, match=f"kafka.sasl_password_env: environment variable {PASSWORD_ENV}"
    ):
        KafkaSettings.from_config(load_config(setup.config()).kafka)


@pytest.mark.parametrize("tls", [False, True], ids=["sasl_plaintext", "sasl_ssl"])
def test_the_meter_transport_sends_with_scram_and_keeps_events_when_refused(
    setup: Setup, tls: bool, caplog: pytest.LogCaptureFixture
) -> None:
    good = setup.broker.settings(tls=tls)
    topic = _topic(good, setup.prefix + "usage")
    with Meter.kafka(good, topic=topic, spool_dir=None) as meter:
        for i in range(50):
            meter.record(
                event_id=f"m{i}", provider="openai", model="m", input_tokens=1, output_tokens=1
            )
        assert meter.flush(timeout_s=60), meter.metrics
    assert sorted(json.loads(m.value())["event_id"] for m in read_topic(good, topic)) == sorted(
        f"m{i}" for i in range(50)
    )

    bad = setup.broker.settings(tls=tls, password=WRONG)
    caplog.set_level(logging.ERROR, "spendstream.producers")
    meter = Meter.kafka(bad, topic=topic, spool_dir=None)
    try:
        meter.record(provider="openai", model="m", input_tokens=1, output_tokens=1)
        assert not meter.flush(timeout_s=5)
        m = meter.metrics
        assert m.send_failures >= 1 and m.queued == 1 and m.dropped == 0  # kept, not lost
    finally:
        meter.close(timeout_s=0)
    errors = [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.ERROR and r.name == "spendstream.producers"
    ]
    assert errors, "a refused credential must be logged as an error"
    _assert_clear(errors[0], WRONG)


def test_the_breaker_view_follows_the_topic_with_scram_and_says_why_it_cannot(
    setup: Setup,
) -> None:
    good = setup.broker.settings(tls=True)
    topic = _topic(good, setup.prefix + "breakers", {"cleanup.policy": "compact"})
    signer = RecordSigner(KEY)
    value = json.dumps(
        breaker_to_wire(BreakerEvent("team:t", "open", "budget_exceeded", datetime.now(UTC)))
    ).encode()
    produce(good, topic, [(b"team:t", value)], signer.headers("breaker", b"team:t", value))
    with BreakerView(good, topic, signer=signer) as view:
        assert view.wait_ready(60), view.error
        with pytest.raises(BreakerOpen):
            guard(view, team="t")

    bad = setup.broker.settings(tls=True, password=WRONG)
    with BreakerView(bad, topic, fail_closed=True) as view:
        deadline = time.monotonic() + 60
        while not isinstance(view.error, KafkaAuthError):
            assert time.monotonic() < deadline, f"no auth error reported: {view.error!r}"
            time.sleep(0.1)
        assert not view.ready
        _assert_clear(str(view.error), WRONG)
        with pytest.raises(BreakerOpen):  # fail_closed: not caught up, so no call goes
            guard(view, team="other")


def test_the_alert_router_consumes_with_scram_and_stops_on_refused_credentials(
    setup: Setup, tmp_path: Path
) -> None:
    from spendstream.alerts.consumer import AlertConsumer
    from spendstream.alerts.router import AlertRouter
    from spendstream.config import config_from_dict
    from tests.alerts.factories import make_alert

    good = setup.broker.settings(tls=True)
    alerts_topic = _topic(good, setup.prefix + "alerts")
    breakers_topic = _topic(good, setup.prefix + "breakers", {"cleanup.policy": "compact"})
    produce(good, alerts_topic, [(None, json.dumps(alert_to_wire(make_alert())).encode())])
    cfg = config_from_dict(
        {"alerts": {"sink": [{"name": "log", "type": "console", "stream": "log"}]}}
    )

    def consumer(settings: KafkaSettings, work: str) -> AlertConsumer:
        router = AlertRouter.from_config(cfg.alerts, tmp_path / work)
        return AlertConsumer(
            router,
            settings,
            group_id=f"g-{uuid.uuid4().hex[:6]}",
            alerts_topic=alerts_topic,
            breakers_topic=breakers_topic,
        )

    ok = consumer(good, "good")
    try:
        seen = 0
        for _ in range(120):
            s = ok.poll_once(timeout_s=0.5)
            seen += s.alerts
            if seen:
                break
        assert seen == 1 and s.triggered == 1 and s.commits == 1
    finally:
        ok.close()
        ok.router.close()

    refused = consumer(setup.broker.settings(tls=True, password=WRONG), "bad")
    try:
        with pytest.raises(KafkaAuthError) as err:
            for _ in range(120):
                refused.poll_once(timeout_s=0.5)
        _assert_clear(str(err.value), WRONG)
    finally:
        refused.close()
        refused.router.close()


def test_alerts_command_exits_1_naming_the_credentials_at_fault(setup: Setup) -> None:
    config = setup.config()
    cfg = config.read_text() + '[[alerts.sink]]\nname = "log"\ntype = "console"\n'
    config.write_text(cfg)
    done = setup.cli(
        "alerts", "--config", str(config), "--workdir", str(setup.tmp / "w"), password=WRONG
    )
    assert done.returncode == 1, done.stderr
    _assert_clear(done.stderr, WRONG)


def test_breakers_reset_and_list_over_sasl_ssl_sign_and_check_records(setup: Setup) -> None:
    config = setup.config()
    work = str(setup.tmp / "w")
    done = setup.cli(
        "breakers", "reset", "session:s9", "--force", "--config", str(config), "--workdir", work
    )
    assert done.returncode == 0, done.stderr
    good = setup.broker.settings(tls=True)
    topic = setup.prefix + "spendstream.breakers"
    [msg] = read_topic(good, topic)
    assert (msg.key(), json.loads(msg.value())["state"]) == (b"session:s9", "closed")
    assert RecordSigner(KEY).verify_headers("breaker", msg.key(), msg.value(), msg.headers())

    # What clients see: a signed open breaker is listed, a forged one is ignored and counted.
    signer = RecordSigner(KEY)
    value = json.dumps(
        breaker_to_wire(BreakerEvent("api_key:k1", "open", "runaway_rate", datetime.now(UTC)))
    ).encode()
    produce(good, topic, [(b"api_key:k1", value)], signer.headers("breaker", b"api_key:k1", value))
    produce(good, topic, [(b"api_key:k2", value.replace(b"k1", b"k2"))])
    listed = setup.cli(
        "breakers", "list", "--from-kafka", "--config", str(config), "--format", "json"
    )
    assert listed.returncode == 0, listed.stderr
    assert [row["scope"] for row in json.loads(listed.stdout)] == ["api_key:k1"]
    assert "1 record ignored" in listed.stderr
    # A time, written as the warehouse's listing writes one (not the record's text).
    table = setup.cli("breakers", "list", "--from-kafka", "--config", str(config))
    [row] = [line for line in table.stdout.splitlines() if line.startswith("api_key:k1")]
    opened = datetime.fromisoformat(json.loads(listed.stdout)[0]["ts"])
    assert row.split()[-2:] == opened.isoformat(sep=" ").split(), table.stdout

    refused = setup.cli(
        "breakers",
        "reset",
        "session:s9",
        "--force",
        "--config",
        str(config),
        "--workdir",
        work,
        password=WRONG,
    )
    assert refused.returncode == 1
    _assert_clear(refused.stderr, WRONG)


@pytest.mark.slow
def test_spendstream_run_works_over_sasl_ssl_and_refuses_to_start_with_a_wrong_password(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.runtime.kafka_workers import Worker, fact_count, wait_for

    config = setup.config(tls=True)
    refused = setup.cli(
        "run", "--config", str(config), "--workdir", str(setup.tmp / "x"), password=WRONG
    )
    assert refused.returncode == 1
    _assert_clear(refused.stderr, WRONG)

    for name, value in setup.env().items():
        if name in (PASSWORD_ENV, KEY_ENV):
            monkeypatch.setenv(name, value)
    work = setup.tmp / "work"
    worker = Worker(work, config, setup.tmp).start()
    try:
        worker.wait_ready(setup.prefix)
        good = setup.broker.settings(tls=True)
        events = [
            {"event_id": f"r{i}", "ts": datetime.now(UTC).isoformat(), "provider": "openai",
             "model": "gpt-5-mini", "input_tokens": 10, "output_tokens": 1, "session_id": "s"}
            for i in range(20)
        ]  # fmt: skip
        produce(
            good,
            setup.prefix + "spendstream.usage",
            [(b"s", json.dumps(e).encode()) for e in events],
        )
        wait_for(lambda: fact_count(work) == 20, "facts never landed over SASL_SSL", worker)
    finally:
        assert worker.stop() == 0, worker.log_tail()


def test_leases_are_granted_over_sasl_ssl_behind_the_signed_breaker_view(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lease server and client take [kafka]'s SCRAM/TLS settings from the config; a
    signed open breaker refuses ``guard(reserve=True)`` before any lease is taken, a forged
    one does not; a wrong password is named, not a bare timeout."""
    import threading

    from spendstream.config import load_config
    from spendstream.errors import LeaseUnavailable
    from spendstream.producers import LeaseClient
    from spendstream.runtime.lease_server import lease_server

    path = setup.config(tls=True)
    path.write_text(
        path.read_text()
        + '[[budget]]\nscope = "team:search"\nperiod = "day"\namount_usd = 10\nhard_limit = 1.0\n'
        + "[leases]\npartitions = 2\nreply_partitions = 2\n"
    )
    monkeypatch.setenv(PASSWORD_ENV, setup.broker.password)
    monkeypatch.setenv(KEY_ENV, KEY)
    config = load_config(path)
    server = lease_server(config, "sec")
    stop = threading.Event()
    thread = threading.Thread(target=server.run, args=(stop,), daemon=True)
    thread.start()
    good = setup.broker.settings(tls=True)
    meter = Meter.kafka(good, team="search")
    meter.breakers = BreakerView.from_config(config).start()
    leases = meter.use_leases(LeaseClient.kafka(config=config, request_timeout_s=5))
    try:
        assert meter.breakers.wait_ready(60), meter.breakers.error
        deadline = time.monotonic() + 90
        while True:  # the server joins its group first
            try:
                r = meter.guard(reserve=True, max_usd="1")
                break
            except LeaseUnavailable:
                assert time.monotonic() < deadline
        assert r is not None and r.lease_id
        r.cancel()

        topic = setup.prefix + "spendstream.breakers"
        value = json.dumps(
            breaker_to_wire(
                BreakerEvent("team:search", "open", "budget_exceeded", datetime.now(UTC))
            )
        ).encode()
        produce(good, topic, [(b"team:search", value)])  # forged: no signature
        deadline = time.monotonic() + 60
        while meter.breakers.unverified < 1:
            assert time.monotonic() < deadline, "the forged record never reached the view"
            time.sleep(0.1)
        forged_through = meter.guard(reserve=True, max_usd="1")
        assert forged_through is not None and forged_through.lease_id
        forged_through.cancel()

        signer = RecordSigner(KEY)
        produce(
            good, topic, [(b"team:search", value)], signer.headers("breaker", b"team:search", value)
        )
        assert meter.breakers.wait_for("team:search", "open", 60)
        reserved = leases.metrics.reserved
        with pytest.raises(BreakerOpen) as refused:
            meter.guard(reserve=True, max_usd="1")
        assert type(refused.value) is BreakerOpen  # the breaker, not the budget
        assert leases.metrics.reserved == reserved  # refused before a lease was drawn on
    finally:
        leases.close()
        meter.breakers.close()
        meter.close()
        stop.set()
        thread.join(30)

    monkeypatch.setenv(PASSWORD_ENV, WRONG)
    with pytest.raises(LeaseUnavailable) as unavailable:
        LeaseClient.kafka(config=load_config(path))
    _assert_clear(str(unavailable.value), WRONG)
    served = setup.cli("leases", "serve", "--config", str(path), password=WRONG)
    assert served.returncode == 1, served.stderr
    _assert_clear(served.stderr, WRONG)
