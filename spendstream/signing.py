"""HMAC-SHA256 signatures that authenticate breaker records and manual breaker resets.

A record on the breakers topic carries a header ``spendstream-sig: v1:<64 hex digits>``:
HMAC-SHA256, keyed with ``[breaker] hmac_key_env``/``hmac_key_file``, over

    b"spendstream/<purpose>/v1" + 0x00 + len(key) as 4 bytes big-endian + key + value

where ``purpose`` is ``breaker`` (a breakers-topic record: key = scope, value = its JSON)
or ``reset`` (a reset command on the internal priced topic: no key). The record key and
value are signed as bytes on the wire, so no re-serialisation can break a signature, and the
length prefix keeps (key, value) pairs from being re-split. Bottom layer: producers import it.

A genuine record can be replayed by someone allowed to produce to the topic (the signature
proves who wrote it, not when): topic ACLs remain the first line (docs/kafka.md).
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Literal

from spendstream.errors import ConfigError
from spendstream.secrets import load_optional_secret

if TYPE_CHECKING:
    from spendstream.config import BreakerConfig

__all__ = [
    "MIN_KEY_CHARS",
    "SIGNATURE_HEADER",
    "Purpose",
    "RecordSigner",
    "load_breaker_signer",
]

SIGNATURE_HEADER = "spendstream-sig"
MIN_KEY_CHARS = 32
_VERSION = b"v1"
Purpose = Literal["breaker", "reset"]


class RecordSigner:
    """Signs and verifies records with one secret key."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes | str) -> None:
        raw = key.encode() if isinstance(key, str) else bytes(key)
        if len(raw) < MIN_KEY_CHARS:
            raise ConfigError(
                f"breaker.hmac_key: {len(raw)} characters; use at least {MIN_KEY_CHARS} "
                "(e.g. the output of `openssl rand -hex 32`)"
            )
        self._key = raw

    def __repr__(self) -> str:
        return "RecordSigner(<key hidden>)"

    def _mac(self, purpose: Purpose, key: bytes | None, value: bytes) -> str:
        k = key or b""
        message = b"spendstream/%s/%s\x00%s%s%s" % (
            purpose.encode(),
            _VERSION,
            struct.pack(">I", len(k)),
            k,
            value,
        )
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def signature(self, purpose: Purpose, key: bytes | None, value: bytes) -> bytes:
        """The header value: ``v1:<hex>``."""
        return _VERSION + b":" + self._mac(purpose, key, value).encode()

    def headers(self, purpose: Purpose, key: bytes | None, value: bytes) -> list[tuple[str, bytes]]:
        """Record headers carrying the signature."""
        return [(SIGNATURE_HEADER, self.signature(purpose, key, value))]

    def verify(self, purpose: Purpose, key: bytes | None, value: bytes, signature: bytes) -> bool:
        """True if ``signature`` (a header value) was made with this key for this record."""
        version, sep, digest = signature.partition(b":")
        if version != _VERSION or not sep:
            return False
        expected = self._mac(purpose, key, value).encode()
        return hmac.compare_digest(expected, digest)

    def verify_headers(
        self,
        purpose: Purpose,
        key: bytes | None,
        value: bytes,
        headers: Iterable[tuple[str, bytes | None]] | None,
    ) -> bool:
        """True if any ``spendstream-sig`` header verifies."""
        for name, sig in headers or ():
            if (
                name == SIGNATURE_HEADER
                and sig is not None
                and self.verify(purpose, key, value, sig)
            ):
                return True
        return False


def load_breaker_signer(
    breaker: BreakerConfig, environ: Mapping[str, str] | None = None
) -> RecordSigner | None:
    """The signer of ``[breaker] hmac_key_env``/``hmac_key_file``, or None when neither is set
    (records are then neither signed nor checked: today's behaviour, see docs/kafka.md)."""
    secret = load_optional_secret(
        "breaker.hmac_key", breaker.hmac_key_env, breaker.hmac_key_file, environ
    )
    return None if secret is None else RecordSigner(secret.get_secret_value())
