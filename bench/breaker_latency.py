"""How fast does a tripped breaker stop calls? (issue 5 goal: p99 <= 1 s on a local broker)

    .venv/bin/python -m bench.breaker_latency [--samples 200] [--bootstrap HOST:PORT]

Three measurements, in one run, on one broker (``--bootstrap``, else
``$SPENDSTREAM_BENCH_KAFKA``, else a LocalKafka started for the run and stopped after):

* ``bare_consumer`` (the baseline): produce -> a bare ``spendstream.kafka`` consumer receives it,
  the floor any Kafka-fed client can reach on this broker;
* ``publish_to_refusal``: a breaker event is published to a compacted topic -> the
  ``BreakerView`` has applied it and ``guard()`` raises ``BreakerOpen``;
* ``trip_to_refusal``: the fact that trips a breaker enters ``Engine.process``
  -> its breaker event is published -> ``guard()`` raises. This is the whole path minus
  the usage topic hop and the stream runtime's batching (``[pipeline] batch_within_s``);
* ``run_trip_to_refusal`` (the issue's goal, p99 <= 1 s): the 101st turn of a session is
  sent to the usage topic -> ``spendstream run`` (a real worker, ``batch_within_s`` as
  given by ``--batch-within-s``) judges it and publishes the breaker -> ``guard()`` raises.

Plus the cost of one ``guard()`` call that passes (six scopes checked, nothing open).
Results: bench/results/breaker_latency.json and a line in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import functools
import json
import operator
import os
import statistics
import tempfile
import threading
import time
import timeit
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from bench._common import kafka_for_run, record
from bench._common import machine as shared_machine
from spendstream.config import config_from_dict
from spendstream.errors import BreakerOpen
from spendstream.kafka.admin import Admin, TopicSpec
from spendstream.kafka.consumer import Consumer
from spendstream.kafka.producer import Producer
from spendstream.producers.event import UsageEvent
from spendstream.producers.guard import BreakerView, guard
from spendstream.records import BreakerEvent, Cost, Fact, breaker_to_wire
from spendstream.stream.engine import Engine
from spendstream.table_schemas import facts_table

NAME = "breaker_latency"


def machine() -> dict[str, Any]:
    return shared_machine(("spendstream", "confluent-kafka", "genai-prices"))


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    s = sorted(samples_ms)
    q = statistics.quantiles(s, n=100, method="inclusive") if len(s) > 1 else s * 99
    return {
        "n": len(s),
        "min_ms": round(s[0], 3),
        "p50_ms": round(q[49], 3),
        "p90_ms": round(q[89], 3),
        "p99_ms": round(q[98], 3),
        "max_ms": round(s[-1], 3),
    }


def _topic(admin: Admin, name: str) -> str:
    admin.ensure_topics([TopicSpec(name, 1, {"cleanup.policy": "compact"}, 1)])
    return name


def _producer(bootstrap: str) -> Producer:
    """Latency, not throughput: no batching wait, leader acknowledgement only."""
    return Producer(bootstrap, config={"acks": 1, "enable.idempotence": False, "linger.ms": 0})


def _wire(scope: str, state: str, ts: datetime) -> bytes:
    return json.dumps(breaker_to_wire(BreakerEvent(scope, state, "bench", ts))).encode()  # type: ignore[arg-type]


def bare_consumer(bootstrap: str, topic: str, samples: int, gap_s: float) -> list[float]:
    received: dict[bytes, int] = {}
    got = threading.Condition()
    stop = threading.Event()
    consumer = Consumer(bootstrap)
    # From the end as it is now (END would be resolved lazily, after the first send).
    consumer.assign({(topic, 0): consumer.watermarks((topic, 0))[1]})

    def loop() -> None:
        while not stop.is_set():
            for rec in consumer.consume(500, 0.2):
                with got:
                    received[rec.key() or b""] = time.monotonic_ns()
                    got.notify_all()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    producer = _producer(bootstrap)
    out = []
    ts = datetime.now(UTC)
    for i in range(samples):
        key = f"session:bare-{i}".encode()
        t0 = time.monotonic_ns()
        producer.produce(topic, _wire(key.decode(), "open", ts), key)
        producer.flush(30)
        with got:
            got.wait_for(functools.partial(operator.contains, received, key), timeout=30)
        out.append((received[key] - t0) / 1e6)
        time.sleep(gap_s)
    stop.set()
    thread.join(5)
    consumer.close()
    producer.close()
    return out


def _until_refused(view: BreakerView, call: Callable[[], None], scope: str) -> int:
    if not view.wait_for(scope, "open", 30):
        raise RuntimeError(f"{scope} never opened in the view")
    try:
        call()
    except BreakerOpen:
        return time.monotonic_ns()
    raise RuntimeError(f"guard let a call through for {scope}")


def publish_to_refusal(bootstrap: str, topic: str, samples: int, gap_s: float) -> list[float]:
    producer = _producer(bootstrap)
    out = []
    with BreakerView(bootstrap, topic) as view:
        if not view.wait_ready(60):
            raise RuntimeError(f"breaker view not ready: {view.error}")
        ts = datetime.now(UTC)
        for i in range(samples):
            scope = f"session:pub-{i}"
            t0 = time.monotonic_ns()
            producer.produce(topic, _wire(scope, "open", ts), scope.encode())
            producer.flush(30)
            t1 = _until_refused(view, functools.partial(guard, view, session_id=f"pub-{i}"), scope)
            out.append((t1 - t0) / 1e6)
            time.sleep(gap_s)
    producer.close()
    return out


def trip_to_refusal(bootstrap: str, topic: str, samples: int, gap_s: float) -> list[float]:
    cfg = config_from_dict({"runaway": {"max_session_turns": 3}})
    engine = Engine(cfg)
    producer = _producer(bootstrap)
    base = datetime(2026, 1, 1, tzinfo=UTC)
    out = []
    with BreakerView(bootstrap, topic) as view:
        if not view.wait_ready(60):
            raise RuntimeError(f"breaker view not ready: {view.error}")
        for i in range(samples):
            sid = f"trip-{i}"
            facts = [
                _fact(f"{sid}-{t}", base + timedelta(minutes=i, seconds=t), sid) for t in range(4)
            ]
            engine.process(facts_table(facts[:3]))
            trip = facts_table(facts[3:])
            t0 = time.monotonic_ns()
            for ev in engine.process(trip).breaker_events:
                producer.produce(topic, json.dumps(breaker_to_wire(ev)).encode(), ev.scope.encode())
            producer.flush(30)
            t1 = _until_refused(
                view, functools.partial(guard, view, session_id=sid), f"session:{sid}"
            )
            out.append((t1 - t0) / 1e6)
            time.sleep(gap_s)
    producer.close()
    return out


def _fact(event_id: str, ts: datetime, session_id: str) -> Fact:
    event = UsageEvent(
        event_id=event_id,
        ts=ts,
        provider="anthropic",
        model="claude-sonnet-4-5",
        input_tokens=1000,
        output_tokens=100,
        session_id=session_id,
        api_key_id="bench",
    )
    d = Decimal("0.0045")
    return Fact(event, Cost(d, Decimal(0), Decimal(0), Decimal(0), d, "bench"), ts)


def run_trip_to_refusal(
    bootstrap: str, samples: int, gap_s: float, batch_within_s: float
) -> list[float]:
    """Time from sending a session's 101st turn until guard() refuses, via ``spendstream run``."""
    import subprocess
    import sys
    import urllib.request
    import uuid

    from spendstream.local.kafka import find_free_ports

    prefix = f"bench-{uuid.uuid4().hex[:8]}."
    (port,) = find_free_ports(1)
    tmp = tempfile.TemporaryDirectory(prefix="bench-run-")
    cfg = Path(tmp.name) / "spendstream.toml"
    cfg.write_text(
        f'[kafka]\nbootstrap_servers = "{bootstrap}"\ntopic_prefix = "{prefix}"\n'
        f'app_id = "{prefix}app"\nusage_partitions = 1\n'
        f"[pipeline]\nbatch_within_s = {batch_within_s}\n[runaway]\nmax_session_turns = 100\n"
    )
    log = (Path(tmp.name) / "run.log").open("wb")
    cmd = [sys.executable, "-m", "spendstream", "run", "--config", str(cfg)]
    cmd += ["--workdir", str(Path(tmp.name) / "work"), "--http-port", str(port)]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    out: list[float] = []
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((Path(tmp.name) / "run.log").read_text())
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    if any(a.startswith(prefix) for a in json.loads(r.read())["assigned"]):
                        break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.5)
        usage = prefix + "spendstream.usage"
        producer = _producer(bootstrap)
        base = datetime(2026, 1, 1, tzinfo=UTC)
        with BreakerView(bootstrap, prefix + "spendstream.breakers") as view:
            if not view.wait_ready(120):
                raise RuntimeError(f"breaker view not ready: {view.error}")
            for i in range(samples):
                sid = f"run-{i}"
                for turn in range(1, 102):
                    ev = _fact(f"{sid}-{turn}", base + timedelta(minutes=i, seconds=turn / 10), sid)
                    value = ev.event.model_copy(update={"turn": turn}).model_dump_json().encode()
                    if turn == 101:
                        producer.flush(30)
                        t0 = time.monotonic_ns()
                    producer.produce(usage, value, b"bench")
                producer.flush(30)
                t1 = _until_refused(
                    view, functools.partial(guard, view, session_id=sid), f"session:{sid}"
                )
                out.append((t1 - t0) / 1e6)
                time.sleep(gap_s)
        producer.close()
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()
        tmp.cleanup()
    return out


def guard_call_us() -> dict[str, float]:
    view = BreakerView("127.0.0.1:1")  # never started: a populated local dict is all guard reads
    for i in range(1000):
        view.apply(
            f"session:other-{i}".encode(), _wire(f"session:other-{i}", "open", datetime.now(UTC))
        )
    tags = {
        "team": "t",
        "feature": "f",
        "project": "p",
        "user_id": "u",
        "api_key_id": "k",
        "session_id": "s",
    }
    n = 100_000
    passing = min(timeit.repeat(lambda: guard(view, **tags), number=n, repeat=3)) / n * 1e6
    baseline = min(timeit.repeat(lambda: view.get("session:s"), number=n, repeat=3)) / n * 1e6
    return {"guard_pass_us": round(passing, 3), "single_dict_lookup_us": round(baseline, 3)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--gap-ms", type=float, default=20.0, help="pause between samples")
    ap.add_argument("--bootstrap", default=os.environ.get("SPENDSTREAM_BENCH_KAFKA"))
    ap.add_argument("--run-samples", type=int, default=40, help="samples through spendstream run")
    ap.add_argument(
        "--batch-within-s",
        type=float,
        nargs="+",
        default=[0.5, 0.2, 0.1],
        help="[pipeline] batch_within_s of the runs (one run per value; 0.2 is the default)",
    )
    args = ap.parse_args(argv)
    gap_s = args.gap_ms / 1000
    with (
        tempfile.TemporaryDirectory(prefix="bench-kafka-") as tmp,
        kafka_for_run(args.bootstrap, Path(tmp)) as bootstrap,
    ):
        admin = Admin(bootstrap, timeout_s=60)
        stamp = int(time.time())
        results: dict[str, Any] = {
            "bare_consumer": percentiles(
                bare_consumer(bootstrap, _topic(admin, f"bench-bare-{stamp}"), args.samples, gap_s)
            ),
            "publish_to_refusal": percentiles(
                publish_to_refusal(
                    bootstrap, _topic(admin, f"bench-breakers-{stamp}"), args.samples, gap_s
                )
            ),
            "trip_to_refusal": percentiles(
                trip_to_refusal(
                    bootstrap, _topic(admin, f"bench-trip-{stamp}"), args.samples, gap_s
                )
            ),
        }
        for within in args.batch_within_s if args.run_samples else ():
            results[f"run_trip_to_refusal@batch_within_s={within}"] = percentiles(
                run_trip_to_refusal(bootstrap, args.run_samples, 0.2, within)
            )
    report = {
        "name": NAME,
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "broker": "external " + bootstrap
        if args.bootstrap
        else "LocalKafka (single node, this machine)",
        "samples": args.samples,
        "latency": results,
        "guard_call": guard_call_us(),
        "goal": "run_trip_to_refusal p99 <= 1000 ms",
    }
    lat = results
    run_part = "".join(
        f"spendstream run (batch_within_s {w}) 101st turn->refusal p50 {r['p50_ms']} ms "
        f"p99 {r['p99_ms']} ms; "
        for w in args.batch_within_s
        if (r := lat.get(f"run_trip_to_refusal@batch_within_s={w}"))
    )
    line = (
        f"- {NAME} ({report['when']}, {report['machine']['cpu_model']}, "
        f"{report['machine']['cores']} cores): {run_part}"
        f"engine trip->refusal p50 {lat['trip_to_refusal']['p50_ms']} ms "
        f"p99 {lat['trip_to_refusal']['p99_ms']} ms; publish->refusal p99 "
        f"{lat['publish_to_refusal']['p99_ms']} ms vs bare consumer p99 "
        f"{lat['bare_consumer']['p99_ms']} ms; guard() {report['guard_call']['guard_pass_us']} us "
        f"-> results/{NAME}.json"
    )
    record(NAME, report, line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
