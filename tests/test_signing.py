"""HMAC-SHA256 signatures of breaker records (spendstream.signing)."""

from __future__ import annotations

import hashlib
import hmac
import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spendstream.config import config_from_dict
from spendstream.errors import ConfigError
from spendstream.signing import SIGNATURE_HEADER, RecordSigner, load_breaker_signer

KEY = "0123456789abcdef" * 4


def test_the_signature_is_the_documented_hmac() -> None:
    key, value = b"team:t", b'{"state":"open"}'
    message = b"spendstream/breaker/v1\x00" + struct.pack(">I", len(key)) + key + value
    expected = hmac.new(KEY.encode(), message, hashlib.sha256).hexdigest()
    assert RecordSigner(KEY).signature("breaker", key, value) == b"v1:" + expected.encode()
    assert RecordSigner(KEY).headers("breaker", key, value) == [
        (SIGNATURE_HEADER, b"v1:" + expected.encode())
    ]


@given(key=st.binary(max_size=40), value=st.binary(max_size=200), other=st.binary(max_size=40))
def test_a_signature_verifies_its_record_only(key: bytes, value: bytes, other: bytes) -> None:
    signer = RecordSigner(KEY)
    sig = signer.signature("breaker", key, value)
    assert signer.verify("breaker", key, value, sig)
    assert not signer.verify("reset", key, value, sig)  # purposes do not mix
    assert not RecordSigner(KEY + "x").verify("breaker", key, value, sig)
    if (other, value) != (key, value):
        assert not signer.verify("breaker", other, value, sig)
    # Moving bytes between key and value changes the record: the length prefix sees it.
    if key:
        assert not signer.verify("breaker", key[:-1], key[-1:] + value, sig)


def test_malformed_or_missing_signature_headers_do_not_verify() -> None:
    signer = RecordSigner(KEY)
    good = signer.signature("breaker", b"k", b"v")
    for headers in (
        None,
        [],
        [("other", good)],
        [(SIGNATURE_HEADER, None)],
        [(SIGNATURE_HEADER, good.replace(b"v1:", b"v2:"))],
        [(SIGNATURE_HEADER, good[3:])],
        [(SIGNATURE_HEADER, good[:-1])],
    ):
        assert not signer.verify_headers("breaker", b"k", b"v", headers), headers
    assert signer.verify_headers("breaker", b"k", b"v", [("x", b"y"), (SIGNATURE_HEADER, good)])


def test_short_keys_are_refused_and_the_key_never_shows() -> None:
    with pytest.raises(ConfigError, match="at least 32"):
        RecordSigner("short")
    assert KEY not in repr(RecordSigner(KEY))


def test_the_key_comes_from_env_or_file_and_none_means_unsigned(tmp_path: Path) -> None:
    assert load_breaker_signer(config_from_dict({}).breaker) is None
    env_cfg = config_from_dict({"breaker": {"hmac_key_env": "BK"}}).breaker
    assert load_breaker_signer(env_cfg, {"BK": KEY}) is not None
    with pytest.raises(ConfigError, match=r"breaker\.hmac_key_env: environment variable BK"):
        load_breaker_signer(env_cfg, {})  # named but missing: never silently unsigned
    (tmp_path / "key").write_text(KEY + "\n")
    file_cfg = config_from_dict({"breaker": {"hmac_key_file": str(tmp_path / "key")}}).breaker
    signer = load_breaker_signer(file_cfg, {})
    assert signer is not None
    assert signer.verify("breaker", b"k", b"v", RecordSigner(KEY).signature("breaker", b"k", b"v"))
    with pytest.raises(ConfigError, match="hmac_key must not be written inline"):
        config_from_dict({"breaker": {"hmac_key": KEY}})
