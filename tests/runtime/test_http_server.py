"""A worker's HTTP server (``spendstream.runtime.http``) over a real socket, with its Kafka
backend on a real broker: what each endpoint answers, what reaches the topics and the
warehouse, the token on every path but /healthz, body limits, and 503 when Kafka cannot
take the records."""

from __future__ import annotations

import http.client
import json
import time
import urllib.request
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spendstream.kafka.producer import OutRecord, Producer
from spendstream.local.kafka import find_free_ports
from spendstream.producers.event import UsageEvent
from spendstream.records import BreakerEvent, breaker_to_wire
from spendstream.runtime.http import MAX_BODY_BYTES, ServerThread
from spendstream.signing import load_breaker_signer
from spendstream.synthetic import generate
from spendstream.topics import BREAKERS, DEAD_LETTERS, USAGE, partition_key
from spendstream.warehouse.reading import run_sql
from tests.kafka_fixtures import end_offsets, read_topic
from tests.runtime.http_served import TOKEN, Served, make_config, served, wait_for
from tests.stream.event_strategies import arbitrary_lines, near_valid_lines

pytestmark = pytest.mark.kafka


def _lines(n: int, seed: int) -> list[bytes]:
    return [json.dumps(e, separators=(",", ":")).encode() for e in generate(n, seed=seed)]


def _usage(s: Served) -> list[tuple[int, bytes, bytes]]:
    """(partition, key, value) of every usage record, in offset order per partition."""
    return [
        (m.partition(), m.key(), m.value())
        for m in read_topic(s.config.kafka.bootstrap_servers, s.topic(USAGE))
    ]


def _dead_on_topic(s: Served) -> list[dict[str, Any]]:
    return [
        json.loads(m.value())
        for m in read_topic(s.config.kafka.bootstrap_servers, s.topic(DEAD_LETTERS))
    ]


def _sql(s: Served, sql: str) -> list[tuple[Any, ...]]:
    return run_sql(s.workdir, sql, config=s.config.warehouse)[1]


def _metric(text: str, line_start: str) -> float:
    found = [ln for ln in text.splitlines() if ln.startswith(line_start + " ")]
    assert len(found) == 1, (line_start, found)
    return float(found[0].rsplit(" ", 1)[1])


@pytest.fixture
def worker(kafka_bootstrap: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    config = make_config(kafka_bootstrap, tmp_path)
    with served(config, tmp_path / "wd") as s:
        yield s


def test_posted_lines_reach_the_usage_topic_keyed_and_bad_lines_are_dead_lettered_by_line(
    worker: Served, tmp_path: Path
) -> None:
    s = worker
    lines = _lines(1200, seed=8)
    body = b"\n".join([*lines[:600], b'{"event_id": "x"}', b"", *lines[600:]])
    assert s.post_lines(body, token="wrong")[0] == 401
    status, answer = s.post_lines(body, request_id="batch-7")
    assert status == 200, answer
    assert answer["accepted"] == len(lines) and answer["request_id"] == "batch-7"
    assert [r["line"] for r in answer["rejected"]] == [601]  # the blank line 602 is counted
    assert "provider: required field is missing" in answer["rejected"][0]["error"]

    # Every accepted line, byte for byte, once; keyed by partition_key; a key in one partition.
    on_topic = _usage(s)
    assert sorted(v for _, _, v in on_topic) == sorted(lines)
    partitions_of: dict[bytes, set[int]] = defaultdict(set)
    for partition, key, value in on_topic:
        e = UsageEvent.model_validate_json(value)
        assert key == partition_key(e.api_key_id, e.session_id, e.request_id, e.event_id)
        partitions_of[key].add(partition)
    assert all(len(p) == 1 for p in partitions_of.values())
    assert len({p for ps in partitions_of.values() for p in ps}) > 1  # spread over partitions
    # Within a key, the body's order is kept.
    for key in list(partitions_of)[:20]:
        assert [v for _, k, v in on_topic if k == key] == [
            ln for ln in lines if ln in {v for _, k, v in on_topic if k == key}
        ]

    # The rejected line: a dead letter on the topic and in the warehouse, named by line.
    [dead] = _dead_on_topic(s)
    assert dead["raw"] == '{"event_id": "x"}' and dead["source"] == "http:batch-7#601"
    assert dead["error"] == answer["rejected"][0]["error"]
    assert datetime.fromisoformat(dead["received_at"]) == s.now
    assert _sql(s, "SELECT source, raw, error FROM dead_letters") == [
        ("http:batch-7#601", '{"event_id": "x"}', answer["rejected"][0]["error"])
    ]

    metrics = s.metrics()
    assert _metric(metrics, 'spendstream_http_records_total{result="accepted"}') == len(lines)
    assert _metric(metrics, 'spendstream_http_records_total{result="rejected"}') == 1
    assert _metric(metrics, 'spendstream_dead_letters_total{stage="http"}') == 1
    out = f'spendstream_events_out_total{{topic="{s.topic(USAGE)}"}}'
    assert _metric(metrics, out) == len(lines)


def test_missing_event_id_and_ts_are_filled_and_request_ids_are_kept_only_when_plain(
    worker: Served, tmp_path: Path
) -> None:
    s = worker
    given = {"provider": "openai", "model": "gpt-5-mini", "input_tokens": 7, "output_tokens": 1}
    status, answer = s.post_lines(json.dumps(given).encode(), ctype="application/json")
    assert status == 200 and answer["accepted"] == 1 and answer["rejected"] == []
    assert len(answer["request_id"]) == 32  # none given: a fresh one
    status, again = s.post_lines(json.dumps(given).encode(), request_id="has space")
    assert status == 200 and again["request_id"] != "has space" and len(again["request_id"]) == 32
    status, long_id = s.post_lines(json.dumps(given).encode(), request_id="r" * 65)
    assert long_id["request_id"] != "r" * 65
    status, kept = s.post_lines(json.dumps(given).encode(), request_id="a.b_c:d-1")
    assert kept["request_id"] == "a.b_c:d-1"

    # application/json is one event even when it spans lines.
    pretty = json.dumps({**given, "event_id": "pretty-1"}, indent=2).encode()
    assert b"\n" in pretty
    status, one = s.post_lines(pretty, ctype="application/json; charset=utf-8")
    assert status == 200 and one["accepted"] == 1, one

    events = [UsageEvent.model_validate_json(v) for _, _, v in _usage(s)]
    assert len(events) == 5
    filled = [e for e in events if e.event_id != "pretty-1"]
    assert len({e.event_id for e in filled}) == 4  # a new id per request
    assert all(uuid.UUID(e.event_id) for e in filled)
    assert {e.ts for e in filled} == {s.now}  # the time the request was received
    assert all(e.input_tokens == 7 for e in events)

    # The producer library's HTTP transport speaks to the same endpoint.
    from spendstream.producers.meter import Meter

    meter = Meter.http(s.url, TOKEN, spool_dir=tmp_path / "spool", team="meter-team")
    ids = [
        meter.record(provider="openai", model="gpt-5-mini", input_tokens=100, output_tokens=10)
        for _ in range(5)
    ]
    assert meter.flush(timeout_s=60)
    meter.close()
    by_id = {e.event_id: e for e in (UsageEvent.model_validate_json(v) for _, _, v in _usage(s))}
    assert all(by_id[i].team == "meter-team" for i in ids)


def test_issue_12_poison_lines_are_refused_by_line_with_their_reason_and_the_rest_goes_on(
    worker: Served,
) -> None:
    """Each was answered ``accepted`` and then made the Faust worker exit on every restart."""
    s = worker
    good = _lines(12, seed=21)
    ahead = (s.now + timedelta(hours=2)).replace(microsecond=0)

    def poison(event_id: str, ts: str, **extra: str) -> bytes:
        event = {"event_id": event_id, "ts": ts, "provider": "openai", "model": "gpt-5-mini"}
        return json.dumps({**event, "input_tokens": 10, "output_tokens": 1, **extra}).encode()

    good_ts = str(json.loads(good[0])["ts"])
    bad = {
        3: poison("p-9999", "9999-12-31T23:59:59Z"),
        7: poison("p-cost", good_ts, reported_cost_usd="1e400"),
        11: poison("p-ahead", ahead.isoformat(), api_key_id="k"),
        13: poison("p-tokens", good_ts).replace(
            b'"input_tokens": 10', b'"input_tokens": 9223372036854775807'
        ),
        14: poison("p-old", "0001-01-01T00:00:00Z"),
    }
    body_lines = list(good)
    for line_no in sorted(bad):
        body_lines.insert(line_no - 1, bad[line_no])
    assert [body_lines.index(raw) + 1 for raw in bad.values()] == list(bad)
    status, answer = s.post_lines(b"\n".join(body_lines), request_id="poison-1")
    assert status == 200, answer
    assert answer["accepted"] == len(good)
    reasons = {r["line"]: r["error"] for r in answer["rejected"]}
    assert sorted(reasons) == sorted(bad)
    skew = "is more than [detection] max_future_skew_s (300 s) after the pipeline received"
    assert reasons[3].startswith(f"ts: 9999-12-31T23:59:59+00:00 {skew}"), reasons[3]
    assert reasons[7] == "reported_cost_usd: Input should be less than or equal to 1000000"
    assert reasons[11].startswith(f"ts: {ahead.isoformat()} {skew}"), reasons[11]
    assert reasons[13].startswith("input_tokens:"), reasons[13]
    assert reasons[14].startswith("ts:"), reasons[14]
    assert sorted(v for _, _, v in _usage(s)) == sorted(good)
    dead = sorted((d["source"], d["raw"], d["error"]) for d in _dead_on_topic(s))
    assert dead == sorted((f"http:poison-1#{n}", bad[n].decode(), reasons[n]) for n in bad)
    assert sorted(_sql(s, "SELECT source, raw, error FROM dead_letters")) == dead
    # The server goes on.
    later = _lines(13, seed=22)[-1]
    status, answer = s.post_lines(later, request_id="after-poison")
    assert (status, answer) == (200, {"accepted": 1, "rejected": [], "request_id": "after-poison"})


def test_every_path_but_healthz_needs_the_token(worker: Served) -> None:
    s = worker
    s.assignment[:] = [s.topic(USAGE) + "/2", s.topic(USAGE) + "/0"]
    status, _, body = s.request("/healthz", token=None)
    assert status == 200 and json.loads(body) == {
        "status": "ok",
        "app_id": s.config.kafka.app_id,
        "assigned": sorted(s.assignment),
    }
    for path in ("/metrics", "/v1/breakers", "/", "/router/", "/nothing"):
        # "\xff\xfe": header bytes that are not UTF-8 made the refusal a 500.
        for token in (None, "wrong", TOKEN[:-1], TOKEN + "x", "\xff\xfe"):
            status, headers, body = s.request(path, token=token)
            assert status == 401, (path, token)
            assert headers["WWW-Authenticate"] == 'Bearer realm="spendstream"'
            assert json.loads(body) == {"error": "missing or wrong bearer token"}
    for path in ("/v1/events", "/v1/traces"):
        assert s.request(path, b"{}", token=None)[0] == 401
    status, _, body = s.request("/nothing")
    assert status == 404
    assert json.loads(body) == {
        "error": "no such path: /nothing (paths: /v1/events, /v1/traces, /v1/breakers, "
        "/metrics, /healthz)"
    }
    status, headers, body = s.request("/v1/events")  # GET
    assert (status, headers["Allow"]) == (405, "POST")
    assert json.loads(body) == {"error": "GET is not allowed on /v1/events: use POST"}
    assert s.request("/v1/traces")[0] == 405
    for path in ("/metrics", "/v1/breakers", "/healthz"):  # read-only: POST is 405
        status, headers, body = s.request(path, b"{}", method="POST")
        assert status == 405, path
        assert json.loads(body)["error"].startswith(f"POST is not allowed on {path}: use GET")
    assert s.request("/metrics")[0] == 200
    assert s.request("/v1/breakers")[0] == 200
    # A body that is not what its Content-Encoding says was a plain-text 500.
    for path in ("/v1/events", "/v1/traces"):
        status, _, body = s.request(
            path,
            b"not gzip",
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        )
        assert status == 400, (path, body)
        assert json.loads(body)["error"].startswith("the body is not valid gzip data ("), body
    assert _usage(s) == []  # nothing refused was published


def test_a_server_on_every_interface_names_a_reachable_url(worker: Served) -> None:
    s = worker
    with ServerThread(s.backend, s.config, TOKEN, host="0.0.0.0", port=0) as everywhere:
        assert everywhere.url == f"http://127.0.0.1:{everywhere.port}"
        with urllib.request.urlopen(everywhere.url + "/healthz", timeout=60) as resp:
            assert resp.status == 200


def test_without_a_configured_token_everything_but_healthz_answers_503(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    config = make_config(kafka_bootstrap, tmp_path)
    with served(config, tmp_path / "wd", token=None) as s:
        assert s.request("/healthz", token=None)[0] == 200
        for path, body in (("/metrics", None), ("/v1/breakers", None), ("/v1/events", b"{}")):
            for token in (None, "anything"):
                status, _, answer = s.request(path, body, token=token)
                assert status == 503, (path, token)
                assert "no token configured" in json.loads(answer)["error"]


def test_bodies_over_the_limit_are_refused_with_413_before_and_while_reading(
    worker: Served,
) -> None:
    s = worker
    host, port = "127.0.0.1", s.server.port
    # Declared too large: refused before a byte of the body is read.
    conn = http.client.HTTPConnection(host, port, timeout=60)
    conn.putrequest("POST", "/v1/events")
    conn.putheader("Authorization", f"Bearer {TOKEN}")
    conn.putheader("Content-Length", str(MAX_BODY_BYTES + 1))
    conn.endheaders()
    resp = conn.getresponse()
    assert resp.status == 413
    assert json.loads(resp.read()) == {"error": f"body over {MAX_BODY_BYTES} bytes"}
    conn.close()
    # Chunked, no length given: refused once the limit is passed while reading.
    chunk = b'{"x": 1}\n' * (1 << 16)
    chunks = MAX_BODY_BYTES // len(chunk) + 2
    conn = http.client.HTTPConnection(host, port, timeout=60)
    try:
        conn.request(
            "POST",
            "/v1/traces",
            body=(chunk for _ in range(chunks)),
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
            encode_chunked=True,
        )
        resp = conn.getresponse()
        assert resp.status == 413
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server may close before the client has written everything
    finally:
        conn.close()
    # Exactly at the limit is read (and judged: these are not events).
    at_limit = b" " * (MAX_BODY_BYTES - 3) + b"\n{}"
    assert len(at_limit) == MAX_BODY_BYTES
    status, answer = s.post_lines(at_limit)
    assert status == 200 and answer["accepted"] == 0
    assert [r["line"] for r in answer["rejected"]] == [2]
    assert _usage(s) == []


def test_breakers_list_what_the_signed_topic_says_closed_ones_on_request(
    worker: Served,
) -> None:
    s = worker
    signer = load_breaker_signer(s.config.breaker)
    assert signer is not None
    t = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)

    def record(scope: str, state: str, at: datetime, *, signed: bool = True) -> OutRecord:
        value = orjson.dumps(
            breaker_to_wire(BreakerEvent(scope, state, f"{state} for a test", at))  # type: ignore[arg-type]
        )
        key = scope.encode()
        headers = signer.headers("breaker", key, value) if signed else None
        return OutRecord(s.topic(BREAKERS), value, key, headers)

    producer = Producer(s.config.kafka.bootstrap_servers)
    try:
        producer.send(
            [
                record("team:a", "open", t),
                record("api_key:k", "open", t),
                record("api_key:k", "half_open", t + timedelta(minutes=5)),
                record("session:s", "open", t),
                record("session:s", "closed", t + timedelta(minutes=1)),
                # Forged (unsigned): a close of team:a and an open of team:z; both ignored.
                record("team:a", "closed", t + timedelta(minutes=9), signed=False),
                record("team:z", "open", t, signed=False),
            ],
            timeout_s=30,
        ).raise_first()
        expect_open = [
            {"scope": "api_key:k", "state": "half_open", "reason": "half_open for a test",
             "ts": (t + timedelta(minutes=5)).isoformat()},
            {"scope": "team:a", "state": "open", "reason": "open for a test", "ts": t.isoformat()},
        ]  # fmt: skip
        closed = {"scope": "session:s", "state": "closed", "reason": "closed for a test",
                  "ts": (t + timedelta(minutes=1)).isoformat()}  # fmt: skip
        wait_for(
            lambda: s.get_json("/v1/breakers")["breakers"] == expect_open,
            f"/v1/breakers never showed {expect_open}: {s.get_json('/v1/breakers')}",
        )
        assert s.get_json("/v1/breakers?all=1")["breakers"] == sorted(
            [*expect_open, closed], key=lambda b: str(b["scope"])
        )
        assert s.get_json("/v1/breakers?all=true") == s.get_json("/v1/breakers?all=1")
        assert s.get_json("/v1/breakers?all=0")["breakers"] == expect_open
        # A signed close (what `spendstream breakers reset` publishes) shows at once.
        producer.send([record("team:a", "closed", t + timedelta(minutes=10))], 30).raise_first()
        wait_for(
            lambda: [b["scope"] for b in s.get_json("/v1/breakers")["breakers"]] == ["api_key:k"],
            "the signed close of team:a never showed",
        )
        assert "team:a" in {b["scope"] for b in s.get_json("/v1/breakers?all=1")["breakers"]}
    finally:
        producer.close()


def test_100k_teams_keep_metrics_small_and_the_spend_total_exact(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Prometheus labels came straight from data: 100k teams made /metrics 52 MB."""
    import pyarrow as pa

    from spendstream.runtime.http.metrics import OTHER

    config = make_config(kafka_bootstrap, tmp_path, http={"metrics_label_values": 100})
    with served(config, tmp_path / "wd") as s:
        cost = pa.array([Decimal("0.5")] * 10_000, pa.decimal128(38, 18))
        for start in range(0, 100_000, 10_000):
            teams = pa.array([f"team-{i}" for i in range(start, start + 10_000)])
            s.backend.metrics.observe_facts(pa.table({"team": teams, "cost_usd": cost}))
        text = s.metrics()
    spend = {
        ln.split('"')[1]: float(ln.rsplit(" ", 1)[1])
        for ln in text.splitlines()
        if ln.startswith("spendstream_spend_usd_total{")
    }
    assert len(spend) == 101  # 100 teams of their own, and "other"
    assert spend[OTHER] == 0.5 * 99_900
    assert sum(spend.values()) == 0.5 * 100_000  # nothing lost in the folding
    assert _metric(text, "spendstream_facts_landed_total") == 100_000
    assert len(text) < 40_000  # was ~52 MB with one series per team


def test_when_kafka_cannot_take_the_records_the_answer_is_503_and_nothing_is_landed(
    tmp_path: Path,
) -> None:
    """A broker that never answers: the client is told to re-send, not that it was accepted."""
    [port] = find_free_ports(1)
    config = make_config(f"127.0.0.1:{port}", tmp_path)
    with served(
        config, tmp_path / "wd", send_timeout_s=4.0, ready_timeout_s=2.0, create=False
    ) as s:
        body = b"\n".join([*_lines(3, seed=3), b"not json"])

        def post() -> tuple[int, dict[str, str], bytes]:
            ctype = {"Content-Type": "application/x-ndjson", "X-Request-Id": "down-1"}
            return s.request("/v1/events", body, headers=ctype)

        # More posts than ingest threads, all waiting on the broker: health still answers.
        with ThreadPoolExecutor(6) as pool:
            posts = [pool.submit(post) for _ in range(6)]
            time.sleep(1.0)  # all of them sent and waiting (each waits 4 s for the broker)
            s.assignment.append("t/0")
            status, _, health = s.request("/healthz", token=None)
            assert status == 200 and json.loads(health)["assigned"] == ["t/0"]
            assert not any(p.done() for p in posts)
            answers = [p.result() for p in posts]
        for status, headers, answer in answers:
            assert status == 503 and headers["Retry-After"] == "1"
            assert json.loads(answer)["error"].startswith("not accepted, send again: ")
            assert json.loads(answer)["request_id"] == "down-1"  # which body to send again
        status, headers, answer = s.request("/v1/breakers")
        assert status == 503 and headers["Retry-After"] == "1"  # states unknown, not "none open"
        assert json.loads(answer)["error"]
        metrics = s.metrics()
        assert 'spendstream_http_records_total{result="accepted"}' not in metrics
        assert 'spendstream_dead_letters_total{stage="http"}' not in metrics
    assert not (tmp_path / "wd").exists()  # no dead letter landed without its topic record


def test_breakers_waiting_for_their_view_do_not_hold_up_health_or_metrics(
    tmp_path: Path,
) -> None:
    """With the broker away, each GET /v1/breakers waits for the breaker view (up to its
    ready timeout). It shared the two probe threads with /healthz: a few such calls made
    liveness probes wait, and an orchestrator restart a healthy worker."""
    [port] = find_free_ports(1)
    config = make_config(f"127.0.0.1:{port}", tmp_path)
    with (
        served(config, tmp_path / "wd", ready_timeout_s=10.0, create=False) as s,
        ThreadPoolExecutor(3) as pool,
    ):
        views = [pool.submit(s.request, "/v1/breakers") for _ in range(3)]
        time.sleep(1.0)  # all three sent and waiting (each waits 10 s for the view)
        assert s.request("/healthz", token=None)[0] == 200
        assert s.request("/metrics")[0] == 200
        assert not any(v.done() for v in views)  # answered while they still wait
        assert all(v.result()[0] == 503 for v in views)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(lines=st.lists(st.one_of(arbitrary_lines(), near_valid_lines()), max_size=8))
def test_fuzzed_bodies_through_the_server_account_for_every_line(
    worker: Served, lines: list[bytes]
) -> None:
    """Issue 12's fuzz, over the network: every non-blank line is accepted (on the usage topic)
    or rejected (a dead letter on its topic naming its line); the server never fails."""
    s = worker
    body = b"\n".join(line.replace(b"\n", b" ") for line in lines)
    bootstrap = s.config.kafka.bootstrap_servers
    before = (end_offsets(bootstrap, s.topic(USAGE)), end_offsets(bootstrap, s.topic(DEAD_LETTERS)))
    rid = uuid.uuid4().hex
    status, answer = s.post_lines(body, request_id=rid)
    assert status == 200, answer
    # A body's leading byte-order mark is not part of its first line (as in an ingest file).
    text = body.removeprefix(b"\xef\xbb\xbf")
    nonblank = [n for n, line in enumerate(text.split(b"\n"), start=1) if line.strip()]
    assert answer["accepted"] + len(answer["rejected"]) == len(nonblank)
    assert {r["line"] for r in answer["rejected"]} <= set(nonblank)
    after = (end_offsets(bootstrap, s.topic(USAGE)), end_offsets(bootstrap, s.topic(DEAD_LETTERS)))
    assert sum(after[0].values()) - sum(before[0].values()) == answer["accepted"]
    assert sum(after[1].values()) - sum(before[1].values()) == len(answer["rejected"])


def test_concurrent_posts_are_each_answered_once_their_own_records_are_on_the_topic(
    worker: Served,
) -> None:
    s = worker
    bodies = [_lines(150, seed=100 + i) for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(lambda i: s.post_lines(b"\n".join(bodies[i]), request_id=f"c{i}"), range(8))
        )
    assert [(st, a["accepted"], a["request_id"]) for st, a in answers] == [
        (200, len(bodies[i]), f"c{i}") for i in range(8)
    ]
    assert sorted(v for _, _, v in _usage(s)) == sorted(ln for b in bodies for ln in b)
