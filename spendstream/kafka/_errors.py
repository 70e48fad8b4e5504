"""librdkafka errors -> the project's own (``spendstream.errors``), with a hint naming config keys.

librdkafka reports trouble in two ways: an error on the call (a failed future, a message
with ``error()``, a ``KafkaException``) and, for problems no call is waiting on (a broker
refusing our credentials, every broker down), the ``error_cb`` callback. ``ErrorLatch``
keeps what ``error_cb`` saw, so a call that merely timed out can say *why*: a timeout after
``_AUTHENTICATION`` is a ``KafkaAuthError``, not "the broker is slow".
"""

from __future__ import annotations

import threading
from typing import Protocol

from spendstream.errors import KafkaAuthError, KafkaClientError, KafkaUnavailable

__all__ = [
    "AUTH_ERRORS",
    "UNAVAILABLE_ERRORS",
    "ErrorLatch",
    "RdError",
    "translate",
]

# Error names (KafkaError.name()): local ones start with "_".
AUTH_ERRORS = frozenset(
    {
        "_AUTHENTICATION",
        "_SSL",
        "SASL_AUTHENTICATION_FAILED",
        "UNSUPPORTED_SASL_MECHANISM",
        "ILLEGAL_SASL_STATE",
        "TOPIC_AUTHORIZATION_FAILED",
        "GROUP_AUTHORIZATION_FAILED",
        "CLUSTER_AUTHORIZATION_FAILED",
        "TRANSACTIONAL_ID_AUTHORIZATION_FAILED",
    }
)
UNAVAILABLE_ERRORS = frozenset(
    {
        "_TRANSPORT",
        "_ALL_BROKERS_DOWN",
        "_TIMED_OUT",
        "_MSG_TIMED_OUT",
        "_RESOLVE",
        "_WAIT_COORD",
        "REQUEST_TIMED_OUT",
        "NETWORK_EXCEPTION",
        "NOT_COORDINATOR",
        "COORDINATOR_NOT_AVAILABLE",
        "COORDINATOR_LOAD_IN_PROGRESS",
        "LEADER_NOT_AVAILABLE",
        "NOT_LEADER_FOR_PARTITION",
        "BROKER_NOT_AVAILABLE",
    }
)
_AUTH_HINT = (
    "check [kafka] security_protocol, sasl_mechanism, sasl_username and the password in "
    "sasl_password_env / sasl_password_file (TLS: ssl_ca_location and the client certificate)"
)


class RdError(Protocol):
    """What the adapter reads of a ``confluent_kafka.KafkaError``."""

    def name(self) -> str: ...

    def str(self) -> str: ...

    def retriable(self) -> bool: ...

    def fatal(self) -> bool: ...

    def txn_requires_abort(self) -> bool: ...


def translate(err: RdError, context: str, where: str = "") -> KafkaClientError:
    """One project error for a librdkafka error; ``context`` says what we were doing and
    ``where`` (a description of the settings) whom we were talking to."""
    name = err.name()
    at = f" ({where})" if where else ""
    text = f"{context}{at}: {err.str()} [{name}]"
    error: KafkaClientError
    if name in AUTH_ERRORS:
        error = KafkaAuthError(f"{text}; {_AUTH_HINT}", code=name, retriable=False)
    elif name in UNAVAILABLE_ERRORS:
        error = KafkaUnavailable(
            f"{text}; is the broker up and [kafka] bootstrap_servers right?",
            code=name,
            retriable=True,
        )
    else:
        error = KafkaClientError(
            text, code=name, retriable=bool(err.retriable()) and not err.fatal()
        )
    # A failed transaction call that only needs an abort (then the work is redone), as
    # opposed to a fenced or fatal producer (another instance owns the work now).
    error.abortable = bool(err.txn_requires_abort()) and not err.fatal()
    return error


class ErrorLatch:
    """The errors ``error_cb`` reported, newest kept per kind (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._auth: RdError | None = None
        self._fatal: RdError | None = None
        self._down: RdError | None = None

    def __call__(self, err: RdError) -> None:  # the error_cb
        name = err.name()
        with self._lock:
            if name in AUTH_ERRORS:
                self._auth = err
            elif err.fatal():
                self._fatal = err
            elif name in ("_ALL_BROKERS_DOWN", "_TRANSPORT", "_RESOLVE"):
                self._down = err

    def clear(self) -> None:
        with self._lock:
            self._auth = self._fatal = self._down = None

    def blocking(self) -> RdError | None:
        """An error no retry can cure: refused credentials or a fatal client error."""
        with self._lock:
            return self._auth or self._fatal

    def reason(self) -> RdError | None:
        """The best explanation for a call that timed out, if one was reported."""
        with self._lock:
            return self._auth or self._fatal or self._down
