from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from spendstream import topics
from spendstream.errors import BreakerOpen
from spendstream.kafka.producer import OutRecord, Producer
from spendstream.producers.guard import (
    BREAKERS_TOPIC,
    BreakerView,
    RequestCeilingExceeded,
    RequestRate,
    aguard,
    call_scopes,
    guard,
    worst_case_usd,
)
from spendstream.records import BreakerEvent, breaker_to_wire
from spendstream.signing import RecordSigner
from tests.kafka_fixtures import produce

TS = datetime(2026, 3, 2, 12, tzinfo=UTC)


def _wire(scope: str, state: str, reason: str = "runaway_rate: too fast") -> bytes:
    return json.dumps(breaker_to_wire(BreakerEvent(scope, state, reason, TS))).encode()  # type: ignore[arg-type]


def _view(**kw: object) -> BreakerView:
    return BreakerView("127.0.0.1:1", **kw)  # type: ignore[arg-type]  # never started


def test_topic_name_matches_the_pipelines() -> None:
    assert BREAKERS_TOPIC == topics.BREAKERS


def test_open_breaker_on_any_scope_of_the_call_refuses_it_naming_scope_and_reason() -> None:
    view = _view()
    view.apply(b"session:s1", _wire("session:s1", "open", "runaway_session: 101 turns"))
    with pytest.raises(BreakerOpen) as err:
        guard(view, team="t", api_key_id="k", session_id="s1")
    assert (err.value.scope, err.value.reason) == ("session:s1", "runaway_session: 101 turns")
    guard(view, team="t", api_key_id="k", session_id="s2")  # another session: allowed


def test_global_and_user_breakers_cover_every_matching_call() -> None:
    view = _view()
    view.apply("user:u", _wire("user:u", "open"))
    with pytest.raises(BreakerOpen):
        guard(view, user_id="u")
    view.apply("global", _wire("global", "open"))
    with pytest.raises(BreakerOpen) as err:
        guard(view, environment="prod")
    assert err.value.scope == "global"


def test_a_record_nested_deeper_than_the_stack_is_ignored_and_the_next_applies() -> None:
    # A RecursionError (no ValueError) escaped apply: the view re-read it forever, frozen.
    view = _view()
    view.apply(b"session:s1", b"[" * 100_000)
    view.apply(b"session:s1", _wire("session:s1", "open"))
    with pytest.raises(BreakerOpen):
        guard(view, session_id="s1")


def test_half_open_lets_calls_through_and_closed_or_tombstone_forgets() -> None:
    view = _view()
    view.apply(b"api_key:k", _wire("api_key:k", "open"))
    view.apply(b"api_key:k", _wire("api_key:k", "half_open"))
    guard(view, api_key_id="k")
    view.apply(b"api_key:k", _wire("api_key:k", "open"))
    view.apply(b"api_key:k", None)
    guard(view, api_key_id="k")
    view.apply(b"team:t", _wire("team:t", "open"))
    view.apply(b"team:t", _wire("team:t", "closed"))
    assert view.snapshot() == {}


def test_keep_closed_remembers_closed_scopes_for_a_full_listing_and_guard_ignores_them() -> None:
    view = _view(keep_closed=True)
    view.apply(b"team:t", _wire("team:t", "open"))
    view.apply(b"team:t", _wire("team:t", "closed", "manual reset"))
    view.apply(b"api_key:k", _wire("api_key:k", "half_open"))
    view.apply(b"session:s", _wire("session:s", "closed"))
    view.apply(b"session:s", None)  # a tombstone forgets a closed scope too
    guard(view, team="t", api_key_id="k", session_id="s")
    assert view.snapshot() == view.latest() and set(view.latest()) == {"api_key:k"}
    latest = view.latest(include_closed=True)
    assert {s: (e.state, e.reason) for s, e in latest.items()} == {
        "team:t": ("closed", "manual reset"),
        "api_key:k": ("half_open", "runaway_rate: too fast"),
    }
    view.apply(b"team:t", _wire("team:t", "open"))  # re-opened: no longer listed as closed
    assert view.latest(include_closed=True)["team:t"].state == "open"
    with pytest.raises(ValueError, match="keep_closed"):
        _view().latest(include_closed=True)


def test_malformed_record_is_ignored() -> None:
    view = _view()
    view.apply(b"team:t", b"{not json")
    view.apply(b"team:t", b'{"scope": "team:t"}')
    assert view.snapshot() == {}


def test_a_record_applies_to_the_scope_its_event_names_even_without_a_key() -> None:
    view = _view()
    view.apply(None, _wire("team:t", "open", "runaway_rate: keyless"))
    with pytest.raises(BreakerOpen) as err:
        guard(view, team="t")
    assert (err.value.scope, err.value.reason) == ("team:t", "runaway_rate: keyless")
    view.apply(None, _wire("team:t", "closed"))
    guard(view, team="t")


KEY = "k" * 40


def _signed(scope: str, state: str, signer: RecordSigner) -> tuple[bytes, list[tuple[str, bytes]]]:
    value = _wire(scope, state)
    return value, signer.headers("breaker", scope.encode(), value)


def test_signed_view_applies_only_records_signed_with_its_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    signer = RecordSigner(KEY)
    view = _view(signer=signer)
    value, headers = _signed("api_key:k", "open", signer)
    view.apply(b"api_key:k", value, headers)
    with pytest.raises(BreakerOpen):
        guard(view, api_key_id="k")
    # A forged close: no signature, another key's signature, a signature of another record.
    view.apply(b"api_key:k", _wire("api_key:k", "closed"))
    view.apply(b"api_key:k", *_signed("api_key:k", "closed", RecordSigner("x" * 40)))
    view.apply(b"api_key:k", _wire("api_key:k", "closed"), headers)
    view.apply(b"api_key:k", None)  # an unsigned tombstone must not forget the scope either
    with pytest.raises(BreakerOpen):
        guard(view, api_key_id="k")
    assert view.unverified == 4
    warnings = [r for r in caplog.records if "not signed" in r.getMessage()]
    assert len(warnings) == 1  # logged once, counted always
    view.apply(b"api_key:k", *_signed("api_key:k", "closed", signer))
    guard(view, api_key_id="k")
    assert view.unverified == 4


def test_a_signature_binds_the_scope_key_too() -> None:
    signer = RecordSigner(KEY)
    view = _view(signer=signer)
    value, headers = _signed("team:a", "open", signer)
    view.apply(b"team:b", value, headers)  # the same bytes under another key
    assert view.unverified == 1 and view.snapshot() == {}


def test_unsigned_view_trusts_every_record() -> None:
    view = _view()
    view.apply(b"team:a", _wire("team:a", "open"))
    with pytest.raises(BreakerOpen):
        guard(view, team="a")
    assert view.unverified == 0


@pytest.mark.kafka
def test_a_forged_closed_record_from_a_plain_producer_does_not_reopen_calls(
    kafka_bootstrap: str,
    topic_factory,  # type: ignore[no-untyped-def]
) -> None:
    signer = RecordSigner(KEY)
    topic = topic_factory(configs={"cleanup.policy": "compact"}, prefix="breakers")
    value, headers = _signed("session:s", "open", signer)
    produce(kafka_bootstrap, topic, [(b"session:s", value)], headers)
    with BreakerView(kafka_bootstrap, topic, signer=signer) as view:
        assert view.wait_ready(60), view.error
        with pytest.raises(BreakerOpen):
            guard(view, session_id="s")
        produce(kafka_bootstrap, topic, [(b"session:s", _wire("session:s", "closed"))])
        produce(kafka_bootstrap, topic, [(b"team:t", _wire("team:t", "open"))])  # forged too
        produce(kafka_bootstrap, topic, [(b"team:u", _signed("team:u", "open", signer)[0])],
                _signed("team:u", "open", signer)[1])  # fmt: skip
        assert view.wait_for("team:u", "open", 30)  # read after the forged ones
        assert view.unverified == 2
        with pytest.raises(BreakerOpen):
            guard(view, session_id="s")
        guard(view, team="t")


def test_call_scopes_follow_the_contract_scope_forms() -> None:
    assert call_scopes({"team": "a", "api_key_id": "k", "user_id": "u", "cost_center": "x"}) == [
        "global",
        "team:a",
        "user:u",
        "api_key:k",
    ]


def test_fail_closed_view_refuses_until_it_has_caught_up() -> None:
    with pytest.raises(BreakerOpen):
        guard(_view(fail_closed=True), team="t")
    guard(_view(), team="t")


def test_a_view_that_never_catches_up_refuses_when_fail_closed_and_allows_otherwise(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from spendstream.local.kafka import find_free_port

    dead = f"127.0.0.1:{find_free_port()}"  # nothing listens: the view can never be ready
    with BreakerView(dead, fail_closed=True, ready_timeout_s=0.5) as closed:
        for _ in range(2):  # the first call waits its 0.5 s once; every call refuses
            with pytest.raises(BreakerOpen) as err:
                guard(closed, team="t")
            assert err.value.scope == "global" and "fail_closed" in err.value.reason
        assert not closed.ready
    with BreakerView(dead, ready_timeout_s=0.5) as open_view, caplog.at_level("WARNING"):
        guard(open_view, team="t")
        guard(open_view, team="t")
    said = [r.getMessage() for r in caplog.records if "not caught up" in r.getMessage()]
    assert len(said) == 1 and "lets calls through" in said[0]


def test_watching_a_dead_address_says_no_broker_answers_once(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    from spendstream.local.kafka import find_free_port
    from spendstream.producers import Meter

    dead = f"127.0.0.1:{find_free_port()}"
    meter = Meter.http("http://127.0.0.1:9", "t", spool_dir=tmp_path / "spool")
    try:
        with caplog.at_level("WARNING"):
            view = meter.watch_breakers(dead, wait_s=0.5)
            meter.guard(team="t")  # lets the call through, without a second warning
        view.close()
    finally:
        meter.close(timeout_s=0)
    said = [r.getMessage() for r in caplog.records if "not caught up" in r.getMessage()]
    assert len(said) == 1, said
    assert "(no broker answers there)" in said[0] and "still reading" not in said[0]


@pytest.mark.kafka
def test_guard_right_after_watch_breakers_refuses_an_already_open_breaker(
    kafka_bootstrap: str, topic_factory
) -> None:  # type: ignore[no-untyped-def]
    """A short-lived agent: watch, guard at once. The breaker opened before it started."""
    from spendstream.producers import Meter

    topic = topic_factory(configs={"cleanup.policy": "compact"}, prefix="breakers")
    history = [(f"team:t{n}".encode(), _wire(f"team:t{n}", "closed")) for n in range(50)]
    # 50 records of history to read through before the open breaker.
    produce(
        kafka_bootstrap, topic, [*history, (b"session:s1", _wire("session:s1", "open", "loop"))]
    )
    meter = Meter.kafka(kafka_bootstrap, spool_dir=None, topic=topic_factory(prefix="usage"))
    try:
        view = meter.watch_breakers(kafka_bootstrap, topic, wait_s=60)
        assert view.ready, view.error
        with pytest.raises(BreakerOpen) as err:
            meter.guard(session_id="s1")
        assert err.value.reason == "loop"
        meter.guard(session_id="s2")
        view.close()
    finally:
        meter.close()


@pytest.mark.kafka
def test_the_first_guard_on_a_fresh_view_waits_for_it_once(
    kafka_bootstrap: str, topic_factory
) -> None:  # type: ignore[no-untyped-def]
    topic = topic_factory(configs={"cleanup.policy": "compact"}, prefix="breakers")
    produce(kafka_bootstrap, topic, [(b"api_key:k", _wire("api_key:k", "open"))])
    # Started, never waited on: guard() itself waits for the view before answering.
    with BreakerView(kafka_bootstrap, topic, fail_closed=False, ready_timeout_s=60) as view:
        with pytest.raises(BreakerOpen) as err:
            guard(view, api_key_id="k")
        assert err.value.scope == "api_key:k" and view.ready


@pytest.mark.kafka
def test_a_breakers_topic_that_does_not_exist_yet_is_ready_and_empty(
    kafka_bootstrap: str,
) -> None:
    import uuid

    missing = f"breakers-never-{uuid.uuid4().hex[:8]}"
    with BreakerView(kafka_bootstrap, missing, fail_closed=True, ready_timeout_s=60) as view:
        guard(view, session_id="s1")  # no breaker ever moved: nothing to refuse
        assert view.ready and view.snapshot() == {}


def test_request_ceiling_uses_the_given_rate_table() -> None:
    rates = {("acme", "m1"): RequestRate(Decimal("3"), Decimal("15"))}
    # 100k input at $3 + 10k output at $15 per MTok = $0.45.
    assert worst_case_usd("acme", "m1", 100_000, 10_000, rates) == Decimal("0.45")
    guard(
        _view(),
        max_request_usd="0.45",
        provider="acme",
        model="m1",
        input_tokens=100_000,
        max_tokens=10_000,
        rates=rates,
    )
    with pytest.raises(RequestCeilingExceeded) as err:
        guard(
            _view(),
            max_request_usd="0.44",
            provider="acme",
            model="m1",
            input_tokens=100_000,
            max_tokens=10_000,
            rates=rates,
        )
    assert err.value.worst_case_usd == Decimal("0.45") and isinstance(err.value, BreakerOpen)
    # Caught as a BreakerOpen, but it says what refused it: no breaker is open.
    assert str(err.value).startswith("request refused: worst case $0.45")
    assert "circuit breaker" not in str(err.value)


def test_request_ceiling_falls_back_to_the_catalog_with_its_long_context_tier() -> None:
    # claude-sonnet-4-5 list price: $3/$15 per MTok, $6/$22.50 above 200k input tokens.
    assert worst_case_usd("anthropic", "claude-sonnet-4-5", 1000, 1000) == Decimal("0.018")
    assert worst_case_usd("anthropic", "claude-sonnet-4-5", 300_000, 64_000) == Decimal("3.24")
    with pytest.raises(RequestCeilingExceeded) as err:
        guard(
            _view(),
            max_request_usd=2,
            provider="anthropic",
            model="claude-sonnet-4-5",
            input_tokens=300_000,
            max_tokens=64_000,
        )
    # Exactly, as it compares with the ceiling (it said "$3.240000"; a ceiling of $0.0001
    # against "$0.002250" read as if rounded).
    assert "worst case $3.24 (300,000 input + 64,000 max output tokens of anthropic/" in str(
        err.value
    )


def test_request_ceiling_refuses_a_model_it_cannot_price_and_needs_the_token_counts() -> None:
    with pytest.raises(RequestCeilingExceeded) as err:
        guard(
            _view(),
            max_request_usd=100,
            provider="acme",
            model="secret-model",
            input_tokens=1,
            max_tokens=1,
        )
    assert err.value.worst_case_usd is None
    with pytest.raises(TypeError):
        guard(_view(), max_request_usd=1, model="m")


def test_async_guard_refuses_like_the_sync_one() -> None:
    view = _view()
    view.apply(b"feature:f", _wire("feature:f", "open"))
    with pytest.raises(BreakerOpen):
        asyncio.run(aguard(view, feature="f"))


@pytest.mark.kafka
def test_view_follows_the_compacted_topic_on_a_real_broker(
    kafka_bootstrap: str, topic_factory
) -> None:  # type: ignore[no-untyped-def]
    topic = topic_factory(configs={"cleanup.policy": "compact"}, prefix="breakers")
    # Published before the view starts: it must be read back from the beginning.
    produce(kafka_bootstrap, topic, [(b"team:old", _wire("team:old", "open"))])
    with BreakerView(kafka_bootstrap, topic) as view:
        assert view.wait_ready(60), view.error
        with pytest.raises(BreakerOpen):
            guard(view, team="old")
        produce(kafka_bootstrap, topic, [(b"session:s", _wire("session:s", "open", "loop"))])
        assert view.wait_for("session:s", "open", 30)
        with pytest.raises(BreakerOpen) as err:
            guard(view, session_id="s")
        assert err.value.reason == "loop"
        produce(kafka_bootstrap, topic, [(b"session:s", _wire("session:s", "closed"))])
        assert view.wait_for("session:s", "closed", 30)
        guard(view, session_id="s")


@pytest.mark.kafka
def test_agent_loop_is_stopped_by_guard_through_a_real_broker(
    kafka_bootstrap: str,
    topic_factory,  # type: ignore[no-untyped-def]
    record_property,  # type: ignore[no-untyped-def]
) -> None:
    """usage topic -> detection Engine -> compacted breakers topic -> BreakerView -> guard().

    The stream side here is a minimal consumer loop around the same engine the runtimes
    hold (no pricing: turn limits need none).
    """
    import threading

    from spendstream.config import config_from_dict
    from spendstream.producers.event import UsageEvent
    from spendstream.records import Fact
    from spendstream.stream.engine import Engine
    from spendstream.table_schemas import facts_table

    usage = topic_factory(prefix="usage")
    breakers = topic_factory(configs={"cleanup.policy": "compact"}, prefix="breakers")
    engine = Engine(config_from_dict({"runaway": {"max_session_turns": 100}}))
    stop = threading.Event()

    def stream_side() -> None:
        from spendstream.kafka.consumer import BEGINNING, Consumer

        consumer = Consumer(kafka_bootstrap)
        consumer.assign({(usage, 0): BEGINNING})
        out = Producer(kafka_bootstrap, config={"linger.ms": 0})
        try:
            while not stop.is_set():
                batch = consumer.consume(500, 0.1)
                if not batch:
                    continue
                now = datetime.now(UTC)
                facts = [Fact(UsageEvent.model_validate_json(r.value()), None, now) for r in batch]
                for ev in engine.process(facts_table(facts)).breaker_events:
                    out.produce(
                        breakers, json.dumps(breaker_to_wire(ev)).encode(), ev.scope.encode()
                    )
                out.flush(30)
        finally:
            consumer.close()
            out.close()

    processor = threading.Thread(target=stream_side, daemon=True)
    processor.start()
    try:
        with BreakerView(kafka_bootstrap, breakers) as view:
            assert view.wait_ready(60), view.error
            turns, refused, latency_ms = _agent_loop(kafka_bootstrap, usage, view, "agent-1")
    finally:
        stop.set()
        processor.join(10)
    assert refused is not None, f"the loop ran all {turns} turns"
    assert refused.scope == "session:agent-1" and refused.reason.startswith("runaway_session")
    assert turns >= 101  # the 101st turn trips it, so it was made
    record_property("trip_to_refusal_ms", round(latency_ms, 1))
    record_property("turns_after_trip", turns - 101)
    print(f"agent stopped after turn {turns}; 101st turn -> refusal {latency_ms:.1f} ms")


def _agent_loop(
    bootstrap: str, usage_topic: str, view: BreakerView, session: str
) -> tuple[int, BreakerOpen | None, float]:
    """A runaway agent: one call per turn, each preceded by guard(), until refused.

    Returns (turns made, the refusal, ms from sending the 101st turn to the refusal).
    """
    import time
    from datetime import timedelta

    from spendstream.producers.event import UsageEvent

    agent = Producer(bootstrap, config={"acks": 1, "enable.idempotence": False, "linger.ms": 0})
    sent_at: dict[int, int] = {}
    turns = 0
    try:
        for turn in range(1, 5001):
            try:
                guard(view, api_key_id=f"{session}-key", session_id=session, team="research")
            except BreakerOpen as exc:
                return turns, exc, (time.monotonic_ns() - sent_at[101]) / 1e6
            event = UsageEvent(
                event_id=f"{session}-{turn}",
                ts=TS + timedelta(seconds=turn),
                provider="anthropic",
                model="claude-sonnet-4-5",
                input_tokens=2000,
                output_tokens=200,
                api_key_id=f"{session}-key",
                session_id=session,
                team="research",
                turn=turn,
            )
            agent.send(
                [
                    OutRecord(
                        usage_topic, event.model_dump_json().encode(), f"{session}-key".encode()
                    )
                ],
                30,
            ).raise_first()
            sent_at[turn] = time.monotonic_ns()
            turns = turn
            time.sleep(0.005)  # the "LLM call"
    finally:
        agent.close()
    return turns, None, float("nan")


@pytest.mark.kafka
@pytest.mark.slow
def test_agent_loop_is_stopped_by_guard_with_spendstream_run(
    kafka_bootstrap: str,
    tmp_path,  # type: ignore[no-untyped-def]
    record_property,  # type: ignore[no-untyped-def]
    monkeypatch,  # type: ignore[no-untyped-def]
) -> None:
    """The whole product: usage topic -> ``spendstream run`` -> breakers topic -> guard(),
    with signed breaker records: a forged ``closed`` does not reopen calls, a reset does."""
    import os
    import subprocess
    import sys
    import time
    import uuid

    import httpx

    from spendstream.config import load_config
    from spendstream.local.kafka import find_free_ports
    from spendstream.runtime.kafka.breaker_control import publish_reset

    monkeypatch.setenv("E2E_BREAKER_KEY", KEY)

    prefix = f"e2e-{uuid.uuid4().hex[:8]}."
    (port,) = find_free_ports(1)
    cfg = tmp_path / "spendstream.toml"
    cfg.write_text(
        f"""
[kafka]
bootstrap_servers = "{kafka_bootstrap}"
topic_prefix = "{prefix}"
app_id = "{prefix}app"
usage_partitions = 1

[pipeline]
batch_within_s = 0.1

[runaway]
max_session_turns = 100

[breaker]
hmac_key_env = "E2E_BREAKER_KEY"
"""
    )
    log = (tmp_path / "run.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "spendstream",
            "run",
            "--config",
            str(cfg),
            "--workdir",
            str(tmp_path / "work"),
            "--http-port",
            str(port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (tmp_path / "run.log").read_text()
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).json()
                if any(a.startswith(prefix + "spendstream.usage") for a in health["assigned"]):
                    break
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            assert time.monotonic() < deadline, (tmp_path / "run.log").read_text()
            time.sleep(0.5)
        breakers = prefix + "spendstream.breakers"
        with BreakerView(kafka_bootstrap, breakers, signer=RecordSigner(KEY)) as view:
            assert view.wait_ready(60), view.error
            turns, refused, latency_ms = _agent_loop(
                kafka_bootstrap, prefix + "spendstream.usage", view, "agent-run"
            )
            # Anyone who can produce to the topic tries to lift the breaker: ignored.
            scope = "session:agent-run"
            produce(kafka_bootstrap, breakers, [(scope.encode(), _wire(scope, "closed"))])
            deadline = time.monotonic() + 60
            while view.unverified == 0:
                assert time.monotonic() < deadline, "the forged record never reached the view"
                time.sleep(0.05)
            with pytest.raises(BreakerOpen):
                guard(view, session_id="agent-run")
            # The operator's reset is signed: it closes the breaker.
            publish_reset(load_config(cfg), tmp_path / "work", scope, datetime.now(UTC))
            assert view.wait_for(scope, "closed", 60)
            guard(view, session_id="agent-run")
            assert view.unverified == 1
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()
    assert refused is not None, f"the loop ran all {turns} turns"
    assert refused.scope == "session:agent-run" and refused.reason.startswith("runaway_session")
    assert turns >= 101
    record_property("trip_to_refusal_ms", round(latency_ms, 1))
    record_property("turns_after_trip", turns - 101)
    print(
        f"spendstream run: agent stopped after turn {turns}; 101st turn -> refusal {latency_ms:.1f} ms"
    )


@pytest.mark.kafka
@pytest.mark.slow
def test_view_answers_locally_while_the_broker_is_down_and_catches_up_after(
    kafka_broker_factory,  # type: ignore[no-untyped-def]
) -> None:
    from spendstream.kafka.admin import Admin, TopicSpec

    broker = kafka_broker_factory(start=False)
    with BreakerView(broker.bootstrap, "breakers-outage") as view:
        # No broker yet: the view keeps retrying; guard lets calls through (fail-open).
        guard(view, team="t")
        assert not view.ready
        broker.start(timeout_s=180)
        Admin(broker.bootstrap, timeout_s=60).ensure_topics(
            [TopicSpec("breakers-outage", 1, {"cleanup.policy": "compact"}, 1)]
        )
        produce(broker.bootstrap, "breakers-outage", [(b"team:t", _wire("team:t", "open"))])
        assert view.wait_for("team:t", "open", 60), view.error
        broker.stop()
        # Every answer is local: the open breaker still refuses with the broker gone.
        with pytest.raises(BreakerOpen):
            guard(view, team="t")
        broker.start(timeout_s=180)
        produce(broker.bootstrap, "breakers-outage", [(b"team:t", _wire("team:t", "closed"))])
        assert view.wait_for("team:t", "closed", 60), view.error
        guard(view, team="t")


def test_meter_guard_delegates_with_the_meters_default_tags() -> None:
    from spendstream.errors import SpendstreamError
    from spendstream.producers.meter import Meter

    meter = Meter.http("http://127.0.0.1:9", "token", spool_dir=None, defaults={"team": "t"})
    try:
        with pytest.raises(SpendstreamError):
            meter.guard(session_id="s")
        meter.breakers = _view()
        meter.breakers.apply(b"team:t", _wire("team:t", "open", "budget_exceeded: team t"))
        with pytest.raises(BreakerOpen) as err:
            meter.guard(session_id="s")
        assert err.value.scope == "team:t"
        with pytest.raises(BreakerOpen):
            asyncio.run(meter.aguard())
        meter.guard(team="other")  # an explicit tag wins over the default
    finally:
        meter.close(timeout_s=1)
