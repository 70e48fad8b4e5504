"""The Kafka shell on a real broker: pages once, commits after delivery, survives restarts."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from spendstream.alerts.consumer import AlertConsumer, ConsumeSummary
from spendstream.alerts.delivery import HttpDeliverer, RetryPolicy
from spendstream.alerts.router import AlertRouter
from spendstream.config import config_from_dict
from spendstream.records import (
    Alert,
    BreakerEvent,
    alert_from_wire,
    alert_to_wire,
    breaker_from_wire,
    breaker_to_wire,
)
from spendstream.signing import RecordSigner
from tests.kafka_fixtures import produce

from .conftest import ScriptedServer, check_pagerduty, check_slack
from .factories import PD_KEY, breaker, make_alert
from .test_delivery import FakeTime

pytestmark = pytest.mark.kafka

MAX_POLLS = 240  # a bound on the loops, not a speed limit: each poll waits at most 0.5 s


class Rig:
    """Topics, a producer, the two servers and a way to (re)start the router process."""

    def __init__(
        self,
        bootstrap: str,
        topic_factory: Any,
        http_server: Callable[..., ScriptedServer],
        workdir: Path,
        *,
        slack_up: bool = True,
        signer: RecordSigner | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.signer = signer
        self.alerts_topic = topic_factory(prefix="alerts", bootstrap=bootstrap)
        self.breakers_topic = topic_factory(
            prefix="breakers", configs={"cleanup.policy": "compact"}, bootstrap=bootstrap
        )
        self.group = f"alerts-{uuid.uuid4().hex[:8]}"
        self.pd = http_server(check=check_pagerduty)
        self.slack = http_server(check=check_slack, start=slack_up)
        self.workdir = workdir
        self.time = FakeTime()
        self.consumers: list[AlertConsumer] = []

    def start_router(self, *, auto_resolve_s: float | None = None) -> AlertConsumer:
        route: dict[str, Any] = {
            "name": "page",
            "sinks": ["pd", "slack"],
            "group_by": ["kind", "api_key_id"],
        }
        if auto_resolve_s is not None:
            route["auto_resolve_s"] = auto_resolve_s
        cfg = config_from_dict(
            {
                "alerts": {
                    "sink": [
                        {
                            "name": "pd",
                            "type": "pagerduty",
                            "url": self.pd.url,
                            "routing_key_env": "PD",
                        },
                        {"name": "slack", "type": "slack", "webhook_url_env": "SLACK"},
                    ],
                    "route": [route],
                }
            }
        ).alerts
        policy = RetryPolicy(max_attempts=10, backoff_initial_s=1, retry_budget_s=600)
        deliverer = HttpDeliverer(
            policy, sleep=self.time.sleep, monotonic=self.time.monotonic, rng=random.Random(5)
        )
        router = AlertRouter.from_config(
            cfg, self.workdir, environ={"PD": PD_KEY, "SLACK": self.slack.url}, deliverer=deliverer
        )
        consumer = AlertConsumer(
            router,
            self.bootstrap,
            group_id=self.group,
            alerts_topic=self.alerts_topic,
            breakers_topic=self.breakers_topic,
            signer=self.signer,
        )
        self.consumers.append(consumer)
        return consumer

    def publish(self, alerts: Sequence[Alert] = (), breakers: Sequence[BreakerEvent] = ()) -> None:
        if alerts:
            produce(
                self.bootstrap,
                self.alerts_topic,
                [(a.scope.encode(), json.dumps(alert_to_wire(a)).encode()) for a in alerts],
            )
        for b in breakers:
            key, value = b.scope.encode(), json.dumps(breaker_to_wire(b)).encode()
            headers = self.signer.headers("breaker", key, value) if self.signer else None
            produce(self.bootstrap, self.breakers_topic, [(key, value)], headers)

    def committed(self, consumer: AlertConsumer, topic: str) -> int | None:
        return consumer.consumer.committed([(topic, 0)])[(topic, 0)]

    def pd_actions(self) -> list[str]:
        return [r.json()["event_action"] for r in self.pd.accepted()]

    def close(self) -> None:
        for c in self.consumers:
            c.close()
            c.router.close()


def poll_until(consumer: AlertConsumer, done: Callable[[], bool], what: str) -> ConsumeSummary:
    total = ConsumeSummary()
    for _ in range(MAX_POLLS):
        s = consumer.poll_once(timeout_s=0.5)
        total.records += s.records
        total.triggered += s.triggered
        total.resolved += s.resolved
        total.commits += s.commits
        total.bad_records += s.bad_records
        if done():
            return total
    pytest.fail(f"gave up waiting for {what} after {MAX_POLLS} polls")


@pytest.fixture
def rig(
    kafka_bootstrap: str,
    topic_factory: Any,
    http_server: Callable[..., ScriptedServer],
    tmp_path: Path,
) -> Iterator[Rig]:
    r = Rig(kafka_bootstrap, topic_factory, http_server, tmp_path / "work", slack_up=False)
    yield r
    r.close()


def test_one_page_and_one_resolve_across_a_slack_outage_with_offsets_committed_after(
    rig: Rig,
) -> None:
    rig.time.on_sleep[3] = rig.slack.start  # Slack is down until the third backoff wait
    consumer = rig.start_router()
    during: list[int | None] = []  # the committed offset while Slack is being retried
    rig.time.on_sleep[1] = lambda: during.append(rig.committed(consumer, rig.alerts_topic))
    storm = [make_alert(f"session:loop-{i}", n=i) for i in range(50)]
    rig.publish(storm)
    poll_until(consumer, lambda: len(rig.slack.accepted()) == 1, "the Slack message")
    assert rig.pd_actions() == ["trigger"]
    assert rig.pd.accepted()[0].json()["payload"]["custom_details"]["count"] == 50
    assert during == [None]  # nothing committed while a page was still undelivered
    assert rig.committed(consumer, rig.alerts_topic) == 50  # only after delivery

    rig.publish(breakers=[breaker(f"session:loop-{i}") for i in range(50)])
    poll_until(consumer, lambda: rig.pd_actions() == ["trigger", "resolve"], "the resolve")
    assert len(rig.slack.accepted()) == 2
    assert rig.committed(consumer, rig.breakers_topic) == 50


def test_a_restart_before_the_commit_pages_no_one_twice(rig: Rig) -> None:
    rig.slack.start()
    first = rig.start_router()
    rig.publish([make_alert("session:a"), make_alert("session:b", details={"api_key_id": "other"})])
    # The first process delivers, then dies before committing its offsets.
    records: list[Any] = []
    for _ in range(MAX_POLLS):
        records.extend(first.consumer.consume(100, 0.5))
        if len(records) == 2:
            break
    alerts = [alert_from_wire(json.loads(r.value())) for r in records]
    first.router.handle(alerts)
    assert rig.pd_actions() == ["trigger", "trigger"]
    first.close()
    first.router.close()
    rig.consumers.remove(first)

    second = rig.start_router()
    poll_until(
        second, lambda: rig.committed(second, rig.alerts_topic) == 2, "the re-read and commit"
    )
    assert rig.pd_actions() == ["trigger", "trigger"]
    assert len(rig.slack.accepted()) == 2


def test_records_that_are_not_alerts_are_kept_and_skipped(rig: Rig) -> None:
    rig.slack.start()
    consumer = rig.start_router()
    produce(rig.bootstrap, rig.alerts_topic, [(None, b"{not json")])
    produce(rig.bootstrap, rig.alerts_topic, [(None, b'{"kind": "runaway_session"}')])
    # Whole alerts but for one field each: a value that is no decimal stopped the router
    # (decimal.InvalidOperation is no ValueError) at every re-read; the others reached it.
    good = alert_to_wire(make_alert())
    for wrong in ({"value": "lots"}, {"ts": "2026-03-02T10:00:00"}, {"kind": "vibes"}):
        produce(rig.bootstrap, rig.alerts_topic, [(None, json.dumps({**good, **wrong}).encode())])
    rig.publish([make_alert()])
    # A tombstone on the compacted breaker topic is compaction at work, not a bad record.
    produce(rig.bootstrap, rig.breakers_topic, [(b"session:gone", None)])
    produce(
        rig.bootstrap,
        rig.breakers_topic,
        [
            (
                b"session:x",
                json.dumps({**breaker_to_wire(breaker("session:x")), "state": "ajar"}).encode(),
            )
        ],
    )
    total = poll_until(
        consumer,
        lambda: (
            rig.committed(consumer, rig.alerts_topic) == 6
            and rig.committed(consumer, rig.breakers_topic) == 2
        ),
        "the commits",
    )
    assert total.bad_records == 6
    bad = consumer.router.state.bad_records()
    alerts_bad = [b for b in bad if b[0] == rig.alerts_topic]
    assert [b[2] for b in alerts_bad] == [0, 1, 2, 3, 4]
    assert "KeyError" in alerts_bad[1][4]
    assert "'lots' is not a decimal" in alerts_bad[2][4]
    assert "lacks its UTC offset" in alerts_bad[3][4]
    assert "kind 'vibes' is not one of" in alerts_bad[4][4]
    ((_, _, offset, _, error),) = [b for b in bad if b[0] == rig.breakers_topic]
    assert offset == 1 and "state 'ajar' is not one of open, closed, half_open" in error
    assert rig.pd_actions() == ["trigger"]


def test_forged_records_neither_stop_the_router_nor_silence_a_scope(rig: Rig) -> None:
    """Records no pipeline writes: nesting deeper than Python's stack (a RecursionError,
    no ValueError, stopped the router at every re-read), times outside UTC's years (an
    open breaker dated 9999-12-31T23:59:59-05:00 was stored, then failed every later
    alert of its scope), before any metered call, or past the skew a record may run
    ahead (a ``closed`` dated in year 9000 made every later alert of its scope stale)."""
    rig.slack.start()
    consumer = rig.start_router()
    scope = "session:s1"
    forged = [
        {**breaker_to_wire(breaker(scope, "open")), "ts": "9999-12-31T23:59:59-05:00"},
        {**breaker_to_wire(breaker(scope, "closed")), "ts": "9000-01-01T00:00:00+00:00"},
    ]
    for value in forged:
        produce(rig.bootstrap, rig.breakers_topic, [(scope.encode(), json.dumps(value).encode())])
    good = alert_to_wire(make_alert(scope))
    produce(rig.bootstrap, rig.alerts_topic, [(None, b"[" * 100_000)])
    for ts in ("0001-01-01T00:00:00+05:00", "2014-12-31T23:59:59+00:00"):
        produce(rig.bootstrap, rig.alerts_topic, [(None, json.dumps({**good, "ts": ts}).encode())])
    # A lone surrogate (JSON's "\ud800" escape) is no text UTF-8 can carry: stored, it
    # raised UnicodeEncodeError in the router's state, outside its decoding, at every re-read.
    lone = json.dumps({**good, "scope": "session:\ud800"}).encode()
    assert b"\\ud800" in lone
    produce(rig.bootstrap, rig.alerts_topic, [(None, lone)])
    poll_until(
        consumer,
        lambda: (
            rig.committed(consumer, rig.alerts_topic) == 4
            and rig.committed(consumer, rig.breakers_topic) == 2
        ),
        "the forged records",
    )
    rig.publish([make_alert(scope)])
    poll_until(consumer, lambda: rig.committed(consumer, rig.alerts_topic) == 5, "the alert")
    bad = consumer.router.state.bad_records()
    errors = {(b[0], b[2]): b[4] for b in bad}
    assert len(errors) == 6
    assert "a string holds \\ud800, a lone surrogate" in errors[(rig.alerts_topic, 3)]
    assert "nested too deeply" in errors[(rig.alerts_topic, 0)]
    assert "out of range in UTC" in errors[(rig.alerts_topic, 1)]
    assert "is before 2015" in errors[(rig.alerts_topic, 2)]
    assert "out of range in UTC" in errors[(rig.breakers_topic, 0)]
    assert "max_future_skew_s" in errors[(rig.breakers_topic, 1)]
    assert rig.pd_actions() == ["trigger"]  # the real alert pages: its scope is not silenced


def test_auto_resolve_happens_while_no_records_arrive(rig: Rig) -> None:
    rig.slack.start()
    consumer = rig.start_router(auto_resolve_s=1)
    rig.publish([make_alert("session:s1")])
    poll_until(consumer, lambda: rig.pd_actions() == ["trigger"], "the page")
    # No breaker closes it and nothing more is published: the idle polls resolve it.
    poll_until(consumer, lambda: rig.pd_actions() == ["trigger", "resolve"], "the auto-resolve")
    assert len(rig.slack.accepted()) == 2


def test_a_broker_restart_in_the_middle_loses_no_resolve(
    kafka_broker_factory: Any,
    topic_factory: Any,
    http_server: Callable[..., ScriptedServer],
    tmp_path: Path,
) -> None:
    broker = kafka_broker_factory()
    rig = Rig(broker.bootstrap, topic_factory, http_server, tmp_path / "work")
    try:
        consumer = rig.start_router()
        rig.publish([make_alert()])
        poll_until(consumer, lambda: rig.pd_actions() == ["trigger"], "the page")

        broker.stop(timeout_s=60)
        for _ in range(4):  # the router keeps polling a broker that is not there
            consumer.poll_once(timeout_s=0.5)
        broker.start(timeout_s=180)

        rig.publish(breakers=[breaker("session:s1")])
        poll_until(consumer, lambda: rig.pd_actions() == ["trigger", "resolve"], "the resolve")
        poll_until(consumer, lambda: rig.committed(consumer, rig.breakers_topic) == 1, "the commit")
        assert len(rig.slack.accepted()) == 2
    finally:
        rig.close()


def test_with_a_key_an_unsigned_breaker_record_resolves_nothing(
    kafka_bootstrap: str,
    topic_factory: Any,
    http_server: Callable[..., ScriptedServer],
    tmp_path: Path,
) -> None:
    signer = RecordSigner("s" * 40)
    rig = Rig(kafka_bootstrap, topic_factory, http_server, tmp_path / "work", signer=signer)
    try:
        consumer = rig.start_router()
        rig.publish([make_alert("session:s1")])
        poll_until(consumer, lambda: rig.pd_actions() == ["trigger"], "the page")
        # A forged close from a plain producer: kept as a bad record, resolves nothing.
        forged = breaker("session:s1")
        produce(
            rig.bootstrap,
            rig.breakers_topic,
            [(b"session:s1", json.dumps(breaker_to_wire(forged)).encode())],
        )
        poll_until(consumer, lambda: rig.committed(consumer, rig.breakers_topic) == 1, "a commit")
        assert rig.pd_actions() == ["trigger"]
        bad = consumer.router.state.bad_records()
        assert len(bad) == 1 and "not signed" in bad[0][4]
        rig.publish(breakers=[breaker("session:s1")])  # signed by the rig
        poll_until(consumer, lambda: rig.pd_actions() == ["trigger", "resolve"], "the resolve")
    finally:
        rig.close()


@pytest.mark.parametrize(
    "alert",
    [
        make_alert(),
        make_alert("team:a", "budget_exceeded", value="200.000000000000000001", threshold="200.0"),
    ],
)
def test_an_alert_comes_back_from_its_json_wire_form_equal(alert: Alert) -> None:
    # What the stream publishes is what the consumer reads: every field, money exact.
    assert alert_from_wire(json.loads(json.dumps(alert_to_wire(alert)))) == alert


def test_a_breaker_event_comes_back_from_its_json_wire_form_equal() -> None:
    event = breaker("team:a", "open")
    assert breaker_from_wire(json.loads(json.dumps(breaker_to_wire(event)))) == event


def test_a_record_may_run_ahead_of_the_routers_clock_by_the_skew_and_the_margin() -> None:
    # A worker dates an alert up to max_future_skew_s after it received the event, on its
    # own clock: the router allows that and RECORD_CLOCK_MARGIN_S more, not a second more.
    from datetime import UTC, datetime, timedelta

    from spendstream.records import RECORD_CLOCK_MARGIN_S, ts_bound_error

    now = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
    limit = now + timedelta(seconds=300 + RECORD_CLOCK_MARGIN_S)
    assert RECORD_CLOCK_MARGIN_S == 300
    assert ts_bound_error(limit, now, 300) is None
    assert ts_bound_error(limit + timedelta(seconds=1), now, 300) is not None
    assert ts_bound_error(datetime(2015, 1, 1, tzinfo=UTC), now, 300) is None
    assert ts_bound_error(datetime(2014, 12, 31, 23, 59, 59, tzinfo=UTC), now, 300) == (
        "ts 2014-12-31T23:59:59+00:00 is before 2015"
    )
