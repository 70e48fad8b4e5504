"""SASL/SCRAM users and a throwaway TLS CA for ``spendstream kafka-local`` (no third-party code).

SCRAM users are written into the KRaft metadata log when the storage is formatted
(``kafka-storage format --add-scram``, KIP-900). The salted form is passed
(``SCRAM-SHA-512=[name=alice,iterations=8192,salt="...",saltedpassword="..."]``), computed
here with PBKDF2 exactly as the broker would, so no password appears on a command line.

TLS material is made with ``openssl`` in ``<data dir>/tls``: a CA, a broker certificate for
``127.0.0.1``/``localhost`` (a PEM keystore Kafka reads directly) and a client certificate
whose private key is encrypted with a random password (for mutual TLS). It is for tests and
local development only: the CA key sits next to the certificates.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from spendstream.errors import KafkaLocalError, ToolMissingError

__all__ = [
    "SCRAM_ITERATIONS",
    "SCRAM_MECHANISMS",
    "TlsFiles",
    "ensure_tls",
    "scram_format_args",
    "security_props",
]

SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
SCRAM_ITERATIONS = 8192
_HASHES = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}


def scram_format_args(users: Mapping[str, str]) -> list[str]:
    """``--add-scram`` arguments for every user under both SCRAM mechanisms (salted form)."""
    args: list[str] = []
    for name, password in sorted(users.items()):
        if not name or any(c in name for c in ',=[]"'):
            raise KafkaLocalError(f'SCRAM user name {name!r} must be non-empty without , = [ ] "')
        for mechanism in SCRAM_MECHANISMS:
            salt = secrets.token_bytes(16)
            salted = hashlib.pbkdf2_hmac(
                _HASHES[mechanism], password.encode(), salt, SCRAM_ITERATIONS
            )
            args += [
                "--add-scram",
                f"{mechanism}=[name={name},iterations={SCRAM_ITERATIONS},"
                f'salt="{base64.b64encode(salt).decode()}",'
                f'saltedpassword="{base64.b64encode(salted).decode()}"]',
            ]
    return args


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """Where ``ensure_tls`` put things; the client side needs ``ca`` (and the client pair)."""

    directory: Path

    @property
    def ca(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def broker_keystore(self) -> Path:
        return self.directory / "broker-keystore.pem"  # private key, then the chain

    @property
    def client_certificate(self) -> Path:
        return self.directory / "client.pem"

    @property
    def client_key(self) -> Path:
        return self.directory / "client.key"  # PKCS#8, encrypted with client_key_password

    @property
    def client_key_password(self) -> Path:
        return self.directory / "client-key-password"


def _openssl() -> str:
    found = shutil.which("openssl")
    if found is None:
        raise ToolMissingError(
            "openssl not found: kafka-local needs it to make a TLS certificate "
            "(e.g. `apt-get install openssl`)"
        )
    return found


def _run(cmd: list[str], cwd: Path) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise KafkaLocalError(f"{' '.join(cmd[:3])} failed: {proc.stderr.strip()[-1500:]}")


def ensure_tls(directory: Path, days: int = 825) -> TlsFiles:
    """Make the CA, broker and client certificates once; later calls reuse them."""
    files = TlsFiles(directory)
    if all(
        p.exists()
        for p in (files.ca, files.broker_keystore, files.client_certificate, files.client_key)
    ):
        return files
    ossl = _openssl()
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    d = str(days)
    _run([ossl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
          "-out", "ca.pem", "-days", d, "-subj", "/CN=spendstream kafka-local CA",
          "-addext", "basicConstraints=critical,CA:TRUE",
          "-addext", "keyUsage=critical,keyCertSign,cRLSign"], directory)  # fmt: skip
    for name, cn, ext in (
        ("broker", "localhost", "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                                "extendedKeyUsage=serverAuth\n"),
        ("client", "spendstream-client", "extendedKeyUsage=clientAuth\n"),
    ):  # fmt: skip
        (directory / f"{name}.ext").write_text(ext)
        _run([ossl, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}-plain.key",
              "-out", f"{name}.csr", "-subj", f"/CN={cn}"], directory)  # fmt: skip
        _run([ossl, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
              "-CAcreateserial", "-out", f"{name}.pem", "-days", d,
              "-extfile", f"{name}.ext"], directory)  # fmt: skip
    # Kafka's PEM keystore: an unencrypted PKCS#8 key followed by the certificate chain.
    files.broker_keystore.write_text(
        (directory / "broker-plain.key").read_text()
        + (directory / "broker.pem").read_text()
        + files.ca.read_text()
    )
    password = secrets.token_hex(16)
    files.client_key_password.write_text(password + "\n")
    _run([ossl, "pkcs8", "-topk8", "-v2", "aes-256-cbc", "-in", "client-plain.key",
          "-out", "client.key", "-passout", f"file:{files.client_key_password}"],
         directory)  # fmt: skip
    for leftover in ("client-plain.key", "broker.csr", "client.csr"):
        (directory / leftover).unlink(missing_ok=True)
    for p in directory.iterdir():
        os.chmod(p, 0o600)
    return files


def security_props(
    sasl_port: int | None, ssl_port: int | None, tls: TlsFiles | None
) -> tuple[list[str], list[str], dict[str, str]]:
    """(listeners, protocol map entries, extra server properties) for the SASL listeners.

    Clients authenticate with SCRAM on ``SASL_PLAINTEXT`` (``sasl_port``) and, over TLS,
    ``SASL_SSL`` (``ssl_port``, a client certificate is verified when one is presented).
    """
    listeners: list[str] = []
    protocols: list[str] = []
    props: dict[str, str] = {}
    jaas = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    for name, port in (("SASL_PLAINTEXT", sasl_port), ("SASL_SSL", ssl_port)):
        if port is None:
            continue
        listeners.append(f"{name}://127.0.0.1:{port}")
        protocols.append(f"{name}:{name}")
        for mechanism in SCRAM_MECHANISMS:
            props[f"listener.name.{name.lower()}.{mechanism.lower()}.sasl.jaas.config"] = jaas
    if listeners:
        props["sasl.enabled.mechanisms"] = ",".join(SCRAM_MECHANISMS)
    if ssl_port is not None:
        if tls is None:
            raise KafkaLocalError("a SASL_SSL listener needs TLS files")
        prefix = "listener.name.sasl_ssl."
        props.update(
            {
                prefix + "ssl.keystore.type": "PEM",
                prefix + "ssl.keystore.location": str(tls.broker_keystore),
                prefix + "ssl.truststore.type": "PEM",
                prefix + "ssl.truststore.location": str(tls.ca),
                prefix + "ssl.client.auth": "requested",
            }
        )
    return listeners, protocols, props
