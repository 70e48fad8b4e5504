"""Client settings from [kafka]: what librdkafka is told, and what is refused."""

from __future__ import annotations

import logging
import re

import pytest
from pydantic import SecretStr

from spendstream.config import config_from_dict
from spendstream.errors import ConfigError
from spendstream.kafka.settings import KafkaSettings, as_settings, client_config, client_logger


def _settings(kafka: dict[str, object], environ: dict[str, str] | None = None) -> KafkaSettings:
    return KafkaSettings.from_config(config_from_dict({"kafka": kafka}).kafka, environ or {})


def test_plaintext_by_default_and_a_bare_address_means_plaintext() -> None:
    s = _settings({})
    assert s.librdkafka() == {
        "bootstrap.servers": "localhost:9092",
        "security.protocol": "plaintext",
    }
    assert as_settings("h:1") == KafkaSettings("h:1")
    assert as_settings(["a:1", "b:2"]).bootstrap_servers == "a:1,b:2"


@pytest.mark.parametrize("empty", ["", " ", ",", []])
def test_an_empty_bootstrap_address_is_refused_where_it_is_given(empty: str | list[str]) -> None:
    # Meter.kafka(os.environ.get("KAFKA", "")) with the variable unset was taken: every
    # event went to the spool, and the log said "cannot connect (, PLAINTEXT)".
    from spendstream.producers import Meter

    with pytest.raises(ValueError, match="no Kafka bootstrap servers given"):
        as_settings(empty)
    with pytest.raises(ValueError, match="is the environment variable it came from set"):
        Meter.kafka(empty, spool_dir=None)


def test_sasl_ssl_gives_every_librdkafka_key(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "pw").write_text("from-file\n")
    s = _settings(
        {
            "bootstrap_servers": "b:9093",
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-256",
            "sasl_username": "svc",
            "sasl_password_file": str(tmp_path / "pw"),
            "ssl_ca_location": "/ca.pem",
            "ssl_certificate_location": "/c.pem",
            "ssl_key_location": "/c.key",
            "ssl_key_password_env": "KEYPW",
            "ssl_endpoint_identification": False,
        },
        {"KEYPW": "k"},
    )
    assert s.librdkafka() == {
        "bootstrap.servers": "b:9093",
        "security.protocol": "sasl_ssl",
        "sasl.mechanism": "SCRAM-SHA-256",
        "sasl.username": "svc",
        "sasl.password": "from-file",
        "ssl.endpoint.identification.algorithm": "none",
        "ssl.ca.location": "/ca.pem",
        "ssl.certificate.location": "/c.pem",
        "ssl.key.location": "/c.key",
        "ssl.key.password": "k",
    }
    assert "from-file" not in repr(s) and "from-file" not in s.describe()
    assert s.describe() == "b:9093, SASL_SSL SCRAM-SHA-256 as 'svc'"


def test_sasl_plaintext_sends_no_tls_keys_and_ssl_sends_no_sasl_keys() -> None:
    sasl = _settings(
        {"security_protocol": "SASL_PLAINTEXT", "sasl_username": "u", "sasl_password_env": "P"},
        {"P": "p"},
    ).librdkafka()
    assert not any(k.startswith("ssl.") for k in sasl) and sasl["sasl.password"] == "p"
    tls = _settings({"security_protocol": "SSL", "ssl_ca_location": "/ca"}).librdkafka()
    assert not any(k.startswith("sasl.") for k in tls)
    assert tls["ssl.endpoint.identification.algorithm"] == "https"


@pytest.mark.parametrize(
    ("kafka", "message"),
    [
        ({"sasl_password": "x"}, "sasl_password must not be written inline"),
        ({"ssl_key_password": "x"}, "ssl_key_password must not be written inline"),
        ({"security_protocol": "SASL_SSL", "sasl_password_env": "P"}, "needs sasl_username"),
        ({"security_protocol": "SASL_SSL", "sasl_username": "u"}, "needs sasl_password_env"),
        ({"sasl_username": "u"}, "sasl_* keys are set but security_protocol is PLAINTEXT"),
        ({"sasl_password_file": "/p"}, "sasl_* keys are set but security_protocol is PLAINTEXT"),
        ({"ssl_ca_location": "/ca"}, "ssl_ca_location set but security_protocol is PLAINTEXT"),
        (
            {"security_protocol": "SSL", "ssl_certificate_location": "/c"},
            "ssl_certificate_location and ssl_key_location go together",
        ),
        (
            {"security_protocol": "SSL", "ssl_key_location": "/k"},
            "ssl_certificate_location and ssl_key_location go together",
        ),
        ({"security_protocol": "SASL_SSL_PLUS"}, "kafka.security_protocol"),
        ({"sasl_mechanism": "GSSAPI"}, "kafka.sasl_mechanism"),
    ],
)
def test_inconsistent_security_keys_are_config_errors(kafka: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        config_from_dict({"kafka": kafka})


def test_a_named_secret_that_is_missing_is_an_error_naming_its_key() -> None:
    cfg = {"security_protocol": "SASL_PLAINTEXT", "sasl_username": "u", "sasl_password_env": "NOPE"}
    with pytest.raises(ConfigError, match=r"kafka\.sasl_password_env: environment variable NOPE"):
        _settings(cfg)
    with pytest.raises(ConfigError, match=r"kafka\.ssl_key_password_env"):
        _settings({"security_protocol": "SSL", "ssl_key_password_env": "NOPE"})


def test_overrides_win_over_security_and_security_over_defaults() -> None:
    s = KafkaSettings("h:1", "SASL_PLAINTEXT", "PLAIN", "u", SecretStr("p"))
    conf = client_config(
        s, "cid", {"security.protocol": "plaintext", "acks": "1"}, {"sasl.username": "other"}
    )
    assert conf["security.protocol"] == "sasl_plaintext"  # settings beat defaults
    assert conf["sasl.username"] == "other"  # explicit overrides beat settings
    assert conf["acks"] == "1" and conf["client.id"] == "cid"


def test_librdkafka_log_lines_repeat_at_most_once_a_minute() -> None:
    logger = client_logger()
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    handler = Keep()
    logger.addHandler(handler)
    try:
        for ms in (321, 318, 330):  # the same failure, only the timing differs
            logger.error("FAIL auth failed (after %dms in state AUTH_REQ)", ms)
        logger.error("another line")
    finally:
        logger.removeHandler(handler)
    assert seen == ["FAIL auth failed (after 321ms in state AUTH_REQ)", "another line"]


def test_a_coordinator_still_loading_is_logged_at_info_not_as_a_warning() -> None:
    # A broker that just started answers COORDINATOR_LOAD_IN_PROGRESS for a few seconds and
    # librdkafka retries by itself: not a warning on every start of a worker.
    logger = client_logger()
    seen: list[tuple[int, str]] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append((record.levelno, record.getMessage()))

    handler = Keep()
    logger.addHandler(handler)
    level = logger.level
    line = "TXNPID Failed to acquire idempotence PID: Coordinator load in progress: retrying"
    moved = (
        "TXNPID Failed to acquire transactional PID from broker TxnCoordinator/1: Broker: "
        "Not coordinator: retrying"
    )
    try:
        logger.setLevel(logging.WARNING)
        logger.warning(line)
        logger.warning(moved)
        logger.warning("FAIL broker down")
        logger.setLevel(logging.INFO)
        logger.warning(line + " again")
        logger.warning(moved + " again")
    finally:
        logger.setLevel(level)
        logger.removeHandler(handler)
    assert seen == [
        (logging.WARNING, "FAIL broker down"),
        (logging.INFO, line + " again"),
        (logging.INFO, moved + " again"),
    ]
