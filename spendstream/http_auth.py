"""Bearer tokens on the HTTP endpoints: every path answers only with the token, but health.

``authorize(path, authorization_header, token)`` is the one check every HTTP server of the
project runs before its handler (a worker's server, ``spendstream.runtime.http``, and the
live report of ``spendstream serve``): ``None`` lets the request through, a ``Refusal`` says
what to answer. No token configured means no access (503), not open access: an operator who
forgot the token finds out at once, not after a leak. The one exception is ``spendstream
serve``, a read-only page on localhost by default, which passes ``open_without_token`` (it
says so when it starts) and also takes the token from a cookie or ``?token=`` (``others``),
as a browser cannot send a header.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from spendstream.config import HttpConfig
from spendstream.secrets import load_secret

__all__ = ["PUBLIC_PATHS", "Refusal", "authorize", "read_token", "token_ok"]

# Liveness probes (load balancers, Kubernetes) carry no credentials; /healthz says nothing
# beyond "up" and which partitions this worker holds.
PUBLIC_PATHS = frozenset({"/healthz"})


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int  # 401 wrong or missing token, 503 no token configured
    error: str
    headers: dict[str, str] = field(default_factory=dict)
    # 401 only: a token was given (header, cookie or query) but none matched; False: none given.
    wrong: bool = False


def token_ok(header: str | None, token: str) -> bool:
    """A ``Bearer <token>`` Authorization header, compared in constant time.

    The scheme is case-insensitive (RFC 7235 section 2.1): ``bearer <token>``, which some
    clients send, is the same credential."""
    if not header or header[: len("Bearer ")].lower() != "bearer ":
        return False
    return _same(header[len("Bearer ") :].strip(), token)


def _same(given: str, token: str) -> bool:
    # A header's bytes that are not UTF-8 reach here as lone surrogates: encoded as they
    # are (they never match a token), where a plain encode() raised and made the refusal
    # a 500 that any caller without the token could cause.
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), token.encode())


def authorize(
    path: str,
    header: str | None,
    token: str | None,
    *,
    others: Iterable[str | None] = (),
    open_without_token: bool = False,
) -> Refusal | None:
    """None if the request may proceed; otherwise the refusal to send.

    ``others``: the token as given some other way than the header (a cookie, a query
    parameter), each compared in constant time; ``open_without_token``: no token configured
    lets every request through instead of answering 503."""
    if path in PUBLIC_PATHS:
        return None
    if token is None:
        if open_without_token:
            return None
        return Refusal(
            503, f"{path} is disabled: no token configured ([http] token_env / token_file)"
        )
    others = list(others)
    if not token_ok(header, token) and not any(
        given is not None and _same(given, token) for given in others
    ):
        return Refusal(
            401,
            "missing or wrong bearer token",
            {"WWW-Authenticate": 'Bearer realm="spendstream"'},
            wrong=bool(header) or any(others),
        )
    return None


def read_token(http: HttpConfig, environ: Mapping[str, str] | None = None) -> str | None:
    """The bearer token from ``[http] token_file``, else the ``[http] token_env`` variable;
    None when neither holds one (a named file that is missing or empty is a ConfigError)."""
    if http.token_file:
        return load_secret("http.token", None, http.token_file, environ).get_secret_value()
    env = os.environ if environ is None else environ
    return env.get(http.token_env, "").strip() or None
