from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from spendstream.alerts.delivery import HttpDeliverer, RetryPolicy
from spendstream.alerts.notification import Notification
from spendstream.alerts.sinks import build_sink
from spendstream.alerts.sinks.webhook import WebhookSink, sign, verify
from spendstream.config import WebhookSinkConfig

from ..conftest import ScriptedServer
from ..factories import T0, make_alert

SECRET = "s3cr3t-shared-with-the-receiver"


def note() -> Notification:
    return Notification(action="trigger", key="k1", route="r", alert=make_alert())


def test_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    body = b'{"a":1}'
    expected = hmac.new(SECRET.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign(SECRET.encode(), 1700000000, body) == "v1=" + expected


def test_a_receiver_verifies_what_the_sink_sent(http_server: Callable[..., ScriptedServer]) -> None:
    server = http_server()
    cfg = WebhookSinkConfig(name="hook", type="webhook", url=server.url, secret_env="HOOK_SECRET")
    sink = build_sink(cfg, environ={"HOOK_SECRET": SECRET})
    assert isinstance(sink, WebhookSink)
    assert sink.deliver(note(), HttpDeliverer(RetryPolicy(max_attempts=1))).delivered
    (got,) = server.accepted()
    ts, sig = got.headers["x-spendstream-timestamp"], got.headers["x-spendstream-signature"]
    now = float(ts)
    assert verify(SECRET.encode(), ts, got.body, sig, now)
    assert not verify(b"wrong", ts, got.body, sig, now)
    assert not verify(SECRET.encode(), ts, got.body + b" ", sig, now)
    assert not verify(SECRET.encode(), ts, got.body, sig, now + 3600)  # a replay, an hour later
    body = got.json()
    assert body["action"] == "trigger" and body["alert"]["scope"] == "session:s1"
    assert body["alert"]["value"] == "51.25"  # money stays a decimal string
    assert SECRET not in repr(sink)


def test_the_receiver_docs_alerts_md_shows_verifies_what_the_sink_sent(
    http_server: Callable[..., ScriptedServer],
) -> None:
    # The documented receiver, run as written: a user copies it.
    doc = (Path(__file__).resolve().parents[3] / "docs" / "alerts.md").read_text()
    block = next(b for b in doc.split("```python")[1:] if "def verify(" in b).split("```")[0]
    scope: dict[str, Any] = {}
    exec(block, scope)  # the repository's own documentation
    server = http_server()
    cfg = WebhookSinkConfig(name="hook", type="webhook", url=server.url, secret_env="HOOK_SECRET")
    sink = build_sink(cfg, environ={"HOOK_SECRET": SECRET})
    assert sink.deliver(note(), HttpDeliverer(RetryPolicy(max_attempts=1))).delivered
    (got,) = server.accepted()
    headers = {
        "X-Spendstream-Timestamp": got.headers["x-spendstream-timestamp"],
        "X-Spendstream-Signature": got.headers["x-spendstream-signature"],
    }
    assert scope["verify"](SECRET.encode(), headers, got.body)
    assert not scope["verify"](b"wrong", headers, got.body)
    # ... and the library's, called as the docs say.
    assert verify(
        SECRET.encode(),
        headers["X-Spendstream-Timestamp"],
        got.body,
        headers["X-Spendstream-Signature"],
        time.time(),
    )


def test_the_delivery_id_is_stable_so_receivers_can_dedupe(
    http_server: Callable[..., ScriptedServer],
) -> None:
    server = http_server()
    sink = WebhookSink(name="hook", url=server.url, secret=None)
    deliverer = HttpDeliverer(RetryPolicy(max_attempts=1))
    sink.deliver(note(), deliverer)
    sink.deliver(note(), deliverer)
    ids = {r.headers["x-spendstream-delivery"] for r in server.accepted()}
    assert len(ids) == 1
    assert "x-spendstream-signature" not in server.accepted()[0].headers


def test_the_delivery_id_survives_a_later_retry_and_differs_for_the_resolve(
    http_server: Callable[..., ScriptedServer],
) -> None:
    # Receivers dedupe on X-Spendstream-Delivery: a retry a minute later is the same delivery,
    # but the resolve of the incident is a different one (deduped away, it would never close).
    server = http_server()
    clock = iter([1_700_000_000.0, 1_700_000_060.0, 1_700_000_120.0])
    sink = WebhookSink(name="hook", url=server.url, secret=None, clock=lambda: next(clock))
    deliverer = HttpDeliverer(RetryPolicy(max_attempts=1))
    resolve = Notification("resolve", "k1", "r", make_alert(), opened_at=T0)
    for n in (note(), note(), resolve):
        assert sink.deliver(n, deliverer).delivered
    first, retry, over = (r.headers["x-spendstream-delivery"] for r in server.accepted())
    assert first == retry != over
    assert [r.headers["x-spendstream-timestamp"] for r in server.accepted()] == [
        "1700000000",
        "1700000060",
        "1700000120",
    ]
    assert server.accepted()[2].json()["opened_at"] == "2026-11-23T12:00:00+00:00"
    assert server.accepted()[0].json()["opened_at"] is None


def test_a_timestamp_from_the_future_is_refused_like_an_old_one() -> None:
    body = b'{"a":1}'
    sig = sign(SECRET.encode(), 1_700_000_000, body)
    assert verify(SECRET.encode(), "1700000000", body, sig, now=1_700_000_000 + 300)
    assert verify(SECRET.encode(), "1700000000", body, sig, now=1_700_000_000 - 300)
    assert not verify(SECRET.encode(), "1700000000", body, sig, now=1_700_000_000 - 301)
    assert not verify(SECRET.encode(), "1700000000", body, sig, now=1_700_000_000 + 301)
