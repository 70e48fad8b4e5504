"""The HTTP side of a ``spendstream run`` worker, over a real socket and a real broker:
ingest, breakers (list and manual reset), health and metrics."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.runtime.kafka_workers import (
    TOKEN,
    Worker,
    event_lines,
    fact_count,
    landed_breakers,
    query,
    read_topic,
    running_worker,
    wait_all_judged,
    wait_for,
    write_config,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def _post(
    w: Worker,
    body: bytes,
    token: str = TOKEN,
    ctype: str = "application/x-ndjson",
    request_id: str | None = None,
) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": ctype}
    if request_id is not None:
        headers["X-Request-Id"] = request_id
    req = urllib.request.Request(w.url("/v1/events"), data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_posted_events_land_bad_lines_are_rejected_and_breakers_can_be_reset(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    config, prefix = write_config(tmp_path / "c.toml", kafka_bootstrap, partitions=2)
    lines = event_lines(3000, seed=8)
    wd = tmp_path / "wd"
    with running_worker(wd, config, prefix, tmp_path) as w:
        assert _post(w, lines[0], token="wrong")[0] == 401
        body = b"\n".join([*lines[:1500], b'{"event_id": "x"}', *lines[1500:]])
        status, answer = _post(w, body, request_id="batch-7")
        assert status == 200
        assert answer["accepted"] == len(lines) and answer["request_id"] == "batch-7"
        assert [r["line"] for r in answer["rejected"]] == [1501]
        status, answer = _post(w, lines[0], ctype="application/json")  # a re-sent event
        assert status == 200 and answer["accepted"] == 1 and answer["rejected"] == []
        assert len(answer["request_id"]) == 32  # none given: a fresh one
        # The producer library's HTTP transport speaks to the same endpoint.
        from spendstream.producers.meter import Meter

        meter = Meter.http(w.url(""), TOKEN, spool_dir=tmp_path / "spool", team="meter-team")
        ids = [
            meter.record(provider="openai", model="gpt-5-mini", input_tokens=100, output_tokens=10)
            for _ in range(5)
        ]
        assert meter.flush(timeout_s=60)
        meter.close()
        wait_all_judged(wd, kafka_bootstrap, prefix, len(lines) + len(ids), w)
        assert query(wd, "SELECT count(*) FROM usage_facts WHERE team = 'meter-team'") == [(5,)]

        assert query(wd, "SELECT count(*), count(DISTINCT event_id) FROM usage_facts") == [
            (len(lines) + 5, len(lines) + 5)
        ]
        assert query(wd, "SELECT source FROM dead_letters") == [("http:batch-7#1501",)]
        # Every record read off the usage topic is one fact, duplicate or dead letter once.
        records = len(lines) + 1 + len(ids)

        def counted() -> tuple[float, float, float]:
            text = w.get_text("/metrics")

            def value(name: str) -> float:
                found = re.search(rf"^{name} (\S+)$", text, re.M)
                return float(found.group(1)) if found else 0.0

            return (
                value("spendstream_events_in_total"),
                value("spendstream_facts_landed_total"),
                value("spendstream_duplicates_total"),
            )

        wait_for(lambda: counted() == (records, records - 1, 1), f"metrics: {counted()}", w)
        dead_on_topic = read_topic(kafka_bootstrap, prefix + "spendstream.dead-letters")
        assert [json.loads(v)["raw"] for _, v in dead_on_topic] == ['{"event_id": "x"}']

        open_now = w.get_json("/v1/breakers")["breakers"]
        assert open_now and {b["state"] for b in open_now} <= {"open", "half_open"}
        scope = open_now[0]["scope"]
        reset = subprocess.run(
            [
                sys.executable,
                "-m",
                "spendstream",
                "breakers",
                "reset",
                scope,
                "--workdir",
                str(wd),
                "--config",
                str(config),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert reset.returncode == 0, reset.stderr
        # The running engine hears of it (no breaker for the scope in its landed state) ...
        wait_for(
            lambda: scope not in json.dumps(landed_breakers(wd)),
            "the running engine never forgot the reset breaker",
            w,
        )
        # ... clients see it closed, on HTTP and on the compacted topic.
        assert scope not in {b["scope"] for b in w.get_json("/v1/breakers")["breakers"]}
        on_topic = [
            json.loads(v)
            for k, v in read_topic(kafka_bootstrap, prefix + "spendstream.breakers")
            if k == scope.encode()
        ]
        assert on_topic[-1]["state"] == "closed" and on_topic[-1]["reason"] == "manual reset"
        assert query(
            wd, f"SELECT count(*) FROM breaker_events WHERE scope = '{scope}' AND state = 'closed'"
        ) == [(1,)]

        health = w.get_json("/healthz", token=None)  # health needs no token
        assert health["status"] == "ok" and prefix + "spendstream.usage/0" in health["assigned"]
        # Everything else does, unknown paths included.
        for path in ("/metrics", "/v1/breakers", "/", "/router/", "/table/", "/graph/"):
            assert w.status(path) == 401, path
            assert w.status(path, token="wrong") == 401, path
        assert w.status("/router/", token=TOKEN) == 404
        assert w.status("/metrics", token=TOKEN) == 200
        metrics = w.get_text("/metrics")
        assert (
            'spendstream_http_records_total{result="accepted"} %.1f' % (len(lines) + 6) in metrics
        )
        assert 'spendstream_http_records_total{result="rejected"} 1.0' in metrics
        assert f"spendstream_facts_landed_total {float(len(lines) + 5)}" in metrics
        assert "spendstream_duplicates_total 1.0" in metrics
        assert 'spendstream_spend_usd_total{team="' in metrics
        assert "spendstream_consumer_lag{" in metrics
        assert "spendstream_late_facts_total 0.0" in metrics  # every event came in ts order
        # A backfilled call older than the lateness behind its partition's newest event lands
        # and is counted late (detection's closed windows do not count it).
        first = json.loads(lines[0])
        old_ts = datetime.fromisoformat(first["ts"]) - timedelta(days=1)
        late = json.dumps(first | {"event_id": "late-1", "ts": old_ts.isoformat()}).encode()
        assert _post(w, late)[1]["accepted"] == 1
        wait_for(
            lambda: "spendstream_late_facts_total 1.0" in w.get_text("/metrics"),
            "the late fact was never counted",
            w,
        )
        assert query(wd, "SELECT count(*) FROM usage_facts WHERE event_id = 'late-1'") == [(1,)]


def test_posted_poison_lines_are_rejected_by_line_the_rest_lands_and_the_worker_goes_on(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Issue 12's poison pills over HTTP: each was answered ``accepted`` and then made the
    worker exit (75) on every restart. Each is now refused with its line and reason."""
    config, prefix = write_config(tmp_path / "c.toml", kafka_bootstrap)
    good = event_lines(12, seed=21)
    ahead = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)

    def poison(event_id: str, ts: str, **extra: str) -> bytes:
        event = {"event_id": event_id, "ts": ts, "provider": "openai", "model": "gpt-5-mini"}
        return json.dumps({**event, "input_tokens": 10, "output_tokens": 1, **extra}).encode()

    bad = {
        3: poison("p-9999", "9999-12-31T23:59:59Z"),
        7: poison("p-cost", good_ts(good[0]), reported_cost_usd="1e400"),
        11: poison("p-ahead", ahead.isoformat(), api_key_id="k"),
    }
    body_lines = list(good)
    for line_no in sorted(bad):
        body_lines.insert(line_no - 1, bad[line_no])
    assert [body_lines.index(raw) + 1 for raw in bad.values()] == sorted(bad)
    wd = tmp_path / "wd"
    with running_worker(wd, config, prefix, tmp_path) as w:
        status, answer = _post(w, b"\n".join(body_lines), request_id="poison-1")
        assert status == 200, answer
        assert answer["accepted"] == len(good)
        reasons = {r["line"]: r["error"] for r in answer["rejected"]}
        assert sorted(reasons) == sorted(bad)
        skew = "is more than [detection] max_future_skew_s (300 s) after the pipeline received"
        assert reasons[3].startswith(f"ts: 9999-12-31T23:59:59+00:00 {skew}"), reasons[3]
        assert reasons[7] == "reported_cost_usd: Input should be less than or equal to 1000000"
        assert reasons[11].startswith(f"ts: {ahead.isoformat()} {skew}"), reasons[11]
        good_ids = sorted(json.loads(line)["event_id"] for line in good)

        def landed() -> bool:
            dead = query(wd, "SELECT count(*) FROM dead_letters")
            return fact_count(wd) >= len(good) and dead == [(len(bad),)]

        wait_for(landed, "the good lines and the dead letters never landed", w)
        assert [r[0] for r in query(wd, "SELECT event_id FROM usage_facts ORDER BY 1")] == good_ids
        dead = query(wd, "SELECT source, raw, error FROM dead_letters ORDER BY source")
        assert dead == [
            (f"http:poison-1#{n}", bad[n].decode(), reasons[n]) for n in sorted(bad, key=str)
        ]
        # The worker is still there and still lands what it is sent.
        assert w.alive()
        later = event_lines(13, seed=22)[-1]
        status, answer = _post(w, later, request_id="after-poison")
        assert status == 200 and answer == {
            "accepted": 1,
            "rejected": [],
            "request_id": "after-poison",
        }
        wait_for(lambda: fact_count(wd) == len(good) + 1, "a later post never landed", w)
        later_id = json.loads(later)["event_id"]
        assert query(wd, f"SELECT count(*) FROM usage_facts WHERE event_id = '{later_id}'") == [
            (1,)
        ]
        assert w.alive()


def good_ts(line: bytes) -> str:
    """A good line's ts: a poison record that breaks no bound but its own."""
    return str(json.loads(line)["ts"])


def _runaway_of_key_loop() -> bytes:
    """121 calls of api key key-loop in this minute: one over the default limit."""
    at = datetime.now(UTC).replace(second=0, microsecond=0)
    return "\n".join(
        json.dumps(
            {
                "provider": "openai",
                "model": "gpt-5-mini",
                "input_tokens": 100,
                "output_tokens": 10,
                "api_key_id": "key-loop",
                "ts": (at + timedelta(milliseconds=i)).isoformat(),
            }
        )
        for i in range(121)
    ).encode()


def _metric(text: str, name: str) -> float:
    """A Prometheus sample's value in a /metrics text (0 when it is not there yet)."""
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def test_a_keys_runaway_counts_its_alert_and_breaker_as_records_published(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    # runaway_rate on an api key is found where the key's partition is read (the usage loop),
    # which published the alert and the breaker without counting them in events_out.
    config, prefix = write_config(tmp_path / "c.toml", kafka_bootstrap)
    with running_worker(tmp_path / "wd", config, prefix, tmp_path) as w:
        assert _post(w, _runaway_of_key_loop())[1]["accepted"] == 121

        opened = 'spendstream_breaker_events_total{state="open"}'
        wait_for(lambda: _metric(w.get_text("/metrics"), opened) >= 1, "no breaker opened", w)
        metrics = w.get_text("/metrics")
        assert _metric(metrics, 'spendstream_alerts_total{kind="runaway_rate"}') == 1
        out = 'spendstream_events_out_total{topic="%s"}'
        assert _metric(metrics, out % (prefix + "spendstream.breakers")) == _metric(metrics, opened)
        assert _metric(metrics, out % (prefix + "spendstream.alerts")) == 1


def test_a_breaker_reset_read_off_the_usage_topic_is_not_counted_as_an_event_in(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    # The reset's control record was counted in events_in, which then exceeded facts +
    # duplicates + dead letters: 'N events in, N-1 facts landed, 0 duplicates, 0 dead letters'.
    config, prefix = write_config(tmp_path / "c.toml", kafka_bootstrap)
    wd = tmp_path / "wd"
    with running_worker(wd, config, prefix, tmp_path) as w:
        assert _post(w, _runaway_of_key_loop())[1]["accepted"] == 121

        def value(name: str) -> float:
            return _metric(w.get_text("/metrics"), name)

        opened = 'spendstream_breaker_events_total{state="open"}'
        wait_for(lambda: value(opened) == 1, "no breaker opened", w)
        reset = subprocess.run(
            [sys.executable, "-m", "spendstream", "breakers", "reset", "api_key:key-loop",
             "--workdir", str(wd), "--config", str(config)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert reset.returncode == 0, reset.stderr
        closed = 'spendstream_breaker_events_total{state="closed"}'
        wait_for(lambda: value(closed) == 1, "the reset was never applied", w)
        landed = (
            value("spendstream_facts_landed_total")
            + value("spendstream_duplicates_total")
            + value('spendstream_dead_letters_total{stage="usage"}')
        )
        assert (value("spendstream_events_in_total"), landed) == (121, 121)
