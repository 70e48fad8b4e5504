"""The bearer-token check every HTTP endpoint but health runs (spendstream.http_auth)."""

from __future__ import annotations

from pathlib import Path

import pytest

from spendstream.config import config_from_dict
from spendstream.errors import ConfigError
from spendstream.http_auth import PUBLIC_PATHS, Refusal, authorize, read_token, token_ok


def test_health_is_the_only_open_path() -> None:
    assert {"/healthz"} == PUBLIC_PATHS
    assert authorize("/healthz", None, None) is None
    assert authorize("/healthz", None, "t") is None
    # Exactly that path: nothing under it or named like it is open.
    for path in ("/healthz/", "/healthzz", "/healthz/../metrics", "/HEALTHZ"):
        refusal = authorize(path, None, "t")
        assert refusal is not None and refusal.status == 401, path


@pytest.mark.parametrize("path", ["/metrics", "/v1/breakers", "/v1/events", "/", "/router/"])
def test_every_other_path_needs_the_token(path: str) -> None:
    assert authorize(path, "Bearer s3cret", "s3cret") is None
    for header in (None, "", "Bearer wrong", "s3cret", "Basic s3cret", "Bearer s3cret2"):
        refusal = authorize(path, header, "s3cret")
        assert refusal is not None and refusal.status == 401, header
        assert refusal.headers["WWW-Authenticate"].startswith("Bearer")


def test_no_token_configured_closes_the_endpoints_rather_than_opening_them() -> None:
    refusal = authorize("/metrics", "Bearer anything", None)
    assert refusal is not None and refusal.status == 503
    assert "[http] token_env" in refusal.error


def test_token_comparison() -> None:
    assert token_ok("Bearer s3cret", "s3cret")
    assert token_ok("Bearer  s3cret ", "s3cret")
    assert token_ok("bearer s3cret", "s3cret")  # the scheme is case-insensitive (RFC 7235)
    assert token_ok("BEARER s3cret", "s3cret")
    assert not token_ok("Basic s3cret", "s3cret")
    assert not token_ok("Bearers3cret", "s3cret")
    assert not token_ok("Bearer s3cre", "s3cret")
    assert not token_ok("Bearer S3CRET", "s3cret")  # the token itself is not
    assert not token_ok(None, "s3cret")


def test_the_token_comes_from_its_file_else_its_env_var(tmp_path: Path) -> None:
    http = config_from_dict({"http": {"token_env": "TOK"}}).http
    assert read_token(http, {"TOK": " t1 "}) == "t1"
    assert read_token(http, {}) is None
    (tmp_path / "tok").write_text("t2\n")
    from_file = config_from_dict({"http": {"token_file": str(tmp_path / "tok")}}).http
    assert read_token(from_file, {"SPENDSTREAM_INGEST_TOKEN": "ignored"}) == "t2"
    (tmp_path / "empty").write_text("")
    with pytest.raises(ConfigError, match=r"http\.token_file"):
        read_token(config_from_dict({"http": {"token_file": str(tmp_path / "empty")}}).http, {})
    with pytest.raises(ConfigError, match="token must not be written inline"):
        config_from_dict({"http": {"token": "x"}})


def test_the_token_given_another_way_counts_only_when_it_matches() -> None:
    """``spendstream serve``: a browser sends the token as a cookie or ``?token=``."""
    assert authorize("/", None, "s3cret", others=(None, "s3cret")) is None
    assert authorize("/", "Bearer wrong", "s3cret", others=("s3cret",)) is None
    for others in ((), (None,), ("wrong", None), ("s3cret2",), ("",)):
        refusal = authorize("/", None, "s3cret", others=others)
        assert refusal is not None and refusal.status == 401, others


def test_open_without_token_is_only_for_a_server_that_asks_for_it() -> None:
    assert authorize("/", None, None, open_without_token=True) is None
    refusal = authorize("/", None, "s3cret", open_without_token=True)
    assert refusal is not None and refusal.status == 401  # a configured token still holds
    assert authorize("/", None, None) == authorize("/", None, None, open_without_token=False)


def test_a_refusal_says_whether_a_token_was_given() -> None:
    """``spendstream serve`` tells a wrong token from a missing one by ``Refusal.wrong``."""
    for header, others in ((None, ()), ("", (None,)), (None, (None, ""))):
        refusal = authorize("/", header, "s3cret", others=others)
        assert refusal is not None and refusal.status == 401 and not refusal.wrong
    for header, others in (("Bearer nope", ()), (None, (None, "nope")), ("Basic s3cret", ())):
        refusal = authorize("/", header, "s3cret", others=others)
        assert refusal is not None and refusal.status == 401 and refusal.wrong
    # Either way the worker's JSON error stays the one it was.
    assert authorize("/metrics", "Bearer nope", "s3cret") == Refusal(
        401,
        "missing or wrong bearer token",
        {"WWW-Authenticate": 'Bearer realm="spendstream"'},
        wrong=True,
    )
