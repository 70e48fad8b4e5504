"""Client settings of every Kafka client the project runs, built from the ``[kafka]`` section.

``KafkaSettings`` is the resolved form (secrets read from their env var or file) of
``[kafka] bootstrap_servers`` and the security keys; ``client_config`` turns it into a
librdkafka configuration. A bare ``"host:port"`` string is accepted wherever settings are
(``as_settings``): PLAINTEXT, as before.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from spendstream.log_filters import RepeatFilter as _RepeatFilter
from spendstream.secrets import SecretStr, load_optional_secret, load_secret

if TYPE_CHECKING:
    from spendstream.config import KafkaConfig

__all__ = ["KafkaSettings", "answering_servers", "as_settings", "client_config", "client_logger"]

_CLIENT_LOG = "spendstream.kafka.client"


@dataclass(frozen=True, slots=True)
class KafkaSettings:
    """Where the brokers are and how to authenticate to them (secrets never in ``repr``)."""

    bootstrap_servers: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "SCRAM-SHA-512"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None
    ssl_key_password: SecretStr | None = None
    ssl_endpoint_identification: bool = True

    @classmethod
    def from_config(
        cls, kafka: KafkaConfig, environ: Mapping[str, str] | None = None
    ) -> KafkaSettings:
        """Resolve ``[kafka]``; a missing secret is a ConfigError naming its key."""
        password = None
        if kafka.security_protocol.startswith("SASL_"):
            password = load_secret(
                "kafka.sasl_password", kafka.sasl_password_env, kafka.sasl_password_file, environ
            )
        return cls(
            bootstrap_servers=kafka.bootstrap_servers,
            security_protocol=kafka.security_protocol,
            sasl_mechanism=kafka.sasl_mechanism,
            sasl_username=kafka.sasl_username,
            sasl_password=password,
            ssl_ca_location=kafka.ssl_ca_location,
            ssl_certificate_location=kafka.ssl_certificate_location,
            ssl_key_location=kafka.ssl_key_location,
            ssl_key_password=load_optional_secret(
                "kafka.ssl_key_password",
                kafka.ssl_key_password_env,
                kafka.ssl_key_password_file,
                environ,
            ),
            ssl_endpoint_identification=kafka.ssl_endpoint_identification,
        )

    def with_bootstrap(self, bootstrap_servers: str) -> KafkaSettings:
        return replace(self, bootstrap_servers=bootstrap_servers)

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol.endswith("SSL")

    def describe(self) -> str:
        """Whom we talk to and as whom, for messages: never a secret."""
        text = f"{self.bootstrap_servers}, {self.security_protocol}"
        if self.uses_sasl:
            text += f" {self.sasl_mechanism} as {self.sasl_username!r}"
        return text

    def librdkafka(self) -> dict[str, Any]:
        """The connection and security part of a librdkafka configuration."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol.lower(),
        }
        if self.uses_sasl:
            conf["sasl.mechanism"] = self.sasl_mechanism
            conf["sasl.username"] = self.sasl_username or ""
            if self.sasl_password is not None:
                conf["sasl.password"] = self.sasl_password.get_secret_value()
        if self.uses_tls:
            conf["ssl.endpoint.identification.algorithm"] = (
                "https" if self.ssl_endpoint_identification else "none"
            )
            optional = {
                "ssl.ca.location": self.ssl_ca_location,
                "ssl.certificate.location": self.ssl_certificate_location,
                "ssl.key.location": self.ssl_key_location,
            }
            conf.update({k: v for k, v in optional.items() if v})
            if self.ssl_key_password is not None:
                conf["ssl.key.password"] = self.ssl_key_password.get_secret_value()
        return conf


def as_settings(target: KafkaSettings | str | list[str]) -> KafkaSettings:
    """Settings as given, or PLAINTEXT settings for a bootstrap string (or list of them).
    An empty address is a ValueError: ``Meter.kafka(os.environ.get("KAFKA", ""))`` with the
    variable unset took it, spooled every event and said "cannot connect (, PLAINTEXT)"."""
    if isinstance(target, KafkaSettings):
        return target
    joined = ",".join(target) if isinstance(target, list) else target
    if not joined.strip(" ,"):
        raise ValueError(
            f"no Kafka bootstrap servers given ({joined!r}): name at least one, "
            "e.g. 'localhost:9092' (is the environment variable it came from set?)"
        )
    return KafkaSettings(joined)


# What librdkafka warns about while a broker that just started loads its coordinators, or
# while a transaction coordinator moves (a worker taking over another's partitions): it
# retries by itself within seconds, and every `spendstream run` on a fresh broker said so.
_TRANSIENT = (
    "Coordinator load in progress",
    "COORDINATOR_LOAD_IN_PROGRESS",
    "Not coordinator: retrying",
)


class _TransientFilter(logging.Filter):
    """Warnings of a state librdkafka waits out by itself are logged at info."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.WARNING and any(t in record.getMessage() for t in _TRANSIENT):
            record.levelno, record.levelname = logging.INFO, "INFO"
            return logging.getLogger(record.name).isEnabledFor(logging.INFO)
        return True


def client_logger() -> logging.Logger:
    """The logger librdkafka's own log lines go to (``spendstream.kafka.client``)."""
    logger = logging.getLogger(_CLIENT_LOG)
    for kind in (_TransientFilter, _RepeatFilter):
        if not any(isinstance(f, kind) for f in logger.filters):
            logger.addFilter(kind())
    return logger


def client_config(
    settings: KafkaSettings,
    client_id: str,
    defaults: Mapping[str, Any],
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``defaults`` < the settings' connection and security < ``overrides`` (librdkafka keys).

    Overrides win so that a caller (or a test) can tune anything, security included.
    """
    conf: dict[str, Any] = {
        "client.id": client_id,
        "logger": client_logger(),
        # Quieter than the defaults when a broker is away; librdkafka still reconnects alone.
        "reconnect.backoff.max.ms": 5000,
        **defaults,
        **settings.librdkafka(),
    }
    conf.update(overrides or {})
    return conf


def answering_servers(bootstrap: str, timeout_s: float) -> list[str]:
    """The bootstrap servers that accept a TCP connection within ``timeout_s`` (one deadline
    for all), so a dead address fails in seconds rather than after a Kafka client's own
    retries. A TCP answer is enough here: TLS and SASL come after it."""
    deadline = time.monotonic() + timeout_s
    alive = []
    for server in (s.strip() for s in bootstrap.split(",") if s.strip()):
        host, _, port = server.rpartition(":")
        if not port.isdigit():
            continue
        left = max(0.2, deadline - time.monotonic())
        try:
            with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), left):
                alive.append(server)
        except OSError:
            continue
    return alive
