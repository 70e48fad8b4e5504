"""The producer client: ``Meter.record()`` cost in the caller's thread, and throughput to Kafka.

    .venv/bin/python -m bench.producer [--events 100000] [--calls 50000] [--bootstrap HOST:PORT]
    .venv/bin/python -m bench.producer --replay [--rate 2000] [--seconds 8]

Measured, in one process, on one broker (``--bootstrap``, else a LocalKafka started here):

* ``record_idle``: ``meter.record(**fields)`` timed one call at a time (perf_counter_ns)
  with the sender asleep (queue and batch larger than the run): validation + enqueue only.
* ``validate_only``: ``UsageEvent.model_validate(fields)`` alone, the floor of ``record``.
  These two alternate over three rounds; each reports its best round's median and p99.
* ``record_sending``: the same while the sender delivers to Kafka in the background (it
  shares the GIL with the caller: the cost a service sees under load).
* ``meter_throughput``: events/s from the first ``record`` to ``flush()`` returning, all
  acknowledged by the broker (``acks=all``, idempotent, lz4), default settings: a caller
  recording as fast as it can outruns Kafka, so most events overflow the 10 000-event
  queue into the spool and are replayed from disk (counted in ``spooled``).
* ``meter_queue_holds_run``: the same with a queue that holds the whole run (the transport
  path alone, no spool).
* ``bare_producer`` (the baseline): a bare ``confluent_kafka.Producer`` (the library under
  ``spendstream.kafka``) with the same settings sending the same events already serialised
  to JSON, then ``flush()``.

Goal: ``record`` median <= 20 us. Results: bench/results/producer.json and a line in
bench/RESULTS.md.

``--replay`` (no Kafka; ``producer_replay``) measures ``record()`` in the caller's thread at a
steady ``--rate`` while the Meter replays a large spool to a local HTTP endpoint that takes
``REPLAY_DELAY_S`` per request (a remote one): the replay outlasts the run, so every event
recorded meets a non-empty spool. Reported: median, p99, p99.9 and max of ``record()``, how
many calls took over 1 ms, and ``overflowed`` (events ``record()`` itself wrote to the spool).
Results: bench/results/producer_replay.json and its line in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench._common import kafka_for_run, record
from bench._common import machine as shared_machine
from spendstream.kafka.admin import Admin, TopicSpec
from spendstream.producers import Meter, UsageEvent
from spendstream.producers.transports import KafkaTransport
from spendstream.topics import partition_key

NAME = "producer"
REPLAY_NAME = "producer_replay"
GOAL_MEDIAN_US = 20.0
ROUNDS = 3
REPLAY_DELAY_S = 0.05  # per request of the endpoint the replay goes to


def machine() -> dict[str, Any]:
    return shared_machine(("spendstream", "pydantic", "pydantic-core", "confluent-kafka", "httpx"))


def fields(i: int) -> dict[str, Any]:
    """A typical call: tokens, cache, attribution tags, a session."""
    return {
        "provider": "anthropic",
        "model": "claude-sonnet-4-5",
        "input_tokens": 12_000 + i % 500,
        "output_tokens": 300 + i % 50,
        "cache_read_tokens": 10_000,
        "team": "search",
        "feature": "answer",
        "api_key_id": f"key-{i % 16}",
        "session_id": f"s-{i % 1000}",
        "latency_ms": 812.5,
    }


def percentiles(ns: list[int]) -> dict[str, float]:
    ns = sorted(ns)
    return {
        "median_us": round(statistics.median(ns) / 1000, 3),
        "p99_us": round(ns[int(len(ns) * 0.99) - 1] / 1000, 3),
        "mean_us": round(sum(ns) / len(ns) / 1000, 3),
    }


def time_calls(fn: Any, n: int) -> list[int]:
    out = []
    clock = time.perf_counter_ns
    for i in range(n):
        args = fields(i)
        t0 = clock()
        fn(args)
        out.append(clock() - t0)
    return out


def make_topic(bootstrap: str, partitions: int = 3) -> str:
    name = f"bench-producer-{os.urandom(4).hex()}"
    Admin(bootstrap, timeout_s=60).ensure_topics([TopicSpec(name, partitions, {}, 1)])
    return name


def bench_record_idle(calls: int, spool: Path) -> dict[str, Any]:
    # The sender never wakes: a batch bigger than the run and a linger longer than it.
    transport = KafkaTransport("127.0.0.1:1")  # never contacted during the timing
    meter = Meter(
        transport, spool_dir=spool, queue_size=calls + 1, batch_size=calls + 1, linger_s=3600
    )
    time_calls(lambda f: meter.record(**f), 2000)  # warm-up
    meter._queue.clear()
    gc.collect()
    ns = time_calls(lambda f: meter.record(**f), calls)
    meter._queue.clear()
    meter.close(timeout_s=0)
    return {"calls": calls, **percentiles(ns)}


def bench_validate(calls: int) -> dict[str, Any]:
    now = datetime.now(UTC)

    def build(f: dict[str, Any]) -> None:
        UsageEvent.model_validate({**f, "event_id": os.urandom(16).hex(), "ts": now})

    gc.collect()
    return {"calls": calls, **percentiles(time_calls(build, calls))}


def bench_meter(
    bootstrap: str, events: int, spool: Path, queue_size: int = 10_000
) -> tuple[dict[str, Any], dict[str, Any]]:
    topic = make_topic(bootstrap)
    meter = Meter.kafka(
        bootstrap, topic=topic, spool_dir=spool, batch_size=2000, queue_size=queue_size
    )
    meter.record(**fields(0))  # connect and fetch metadata outside the timing
    assert meter.flush(timeout_s=60)
    gc.collect()
    clock = time.perf_counter_ns
    ns = []
    t0 = time.perf_counter()
    for i in range(events):
        f = fields(i)
        s = clock()
        meter.record(**f)
        ns.append(clock() - s)
    recorded_s = time.perf_counter() - t0
    assert meter.flush(timeout_s=600), meter.metrics
    elapsed = time.perf_counter() - t0
    m = meter.metrics
    meter.close()
    assert m.dropped == 0 and m.sent == events + 1, m
    return (
        {"calls": events, **percentiles(ns)},
        {
            "events": events,
            "seconds": round(elapsed, 3),
            "events_per_s": round(events / elapsed),
            "record_loop_s": round(recorded_s, 3),
            "queue_size": queue_size,
            "spooled": m.spooled,
        },
    )


def bench_bare(bootstrap: str, events: int) -> dict[str, Any]:
    topic = make_topic(bootstrap)
    now = datetime.now(UTC)
    payload = []
    for i in range(events):
        ev = UsageEvent.model_validate({**fields(i), "event_id": os.urandom(16).hex(), "ts": now})
        key = partition_key(ev.api_key_id, ev.session_id, ev.request_id, ev.event_id)
        payload.append((key, ev.model_dump_json(exclude_none=True).encode()))
    import confluent_kafka  # the bare library: the baseline

    producer = confluent_kafka.Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "compression.type": "lz4",
            "linger.ms": 5,
            "batch.size": 256 << 10,
            "partitioner": "murmur2_random",
        }
    )
    failed = 0

    def done(err: Any, msg: Any) -> None:
        nonlocal failed
        failed += err is not None

    producer.produce(topic, b"{}", b"warm")
    producer.flush(60)
    gc.collect()
    t0 = time.perf_counter()
    for k, v in payload:
        while True:
            try:
                producer.produce(topic, v, k, on_delivery=done)
                break
            except BufferError:
                producer.poll(0.01)
    producer.flush(600)
    elapsed = time.perf_counter() - t0
    assert failed == 0
    return {"events": events, "seconds": round(elapsed, 3), "events_per_s": round(events / elapsed)}


class _SlowEndpoint:
    """``POST /v1/events`` answered as ``spendstream run`` does, after ``delay_s``."""

    def __init__(self, delay_s: float) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.lines = 0

        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                n = body.count(b"\n")
                time.sleep(delay_s)
                endpoint.lines += n
                answer = b'{"accepted": %d, "rejected": []}' % n
                self.send_response(200)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def bench_record_during_replay(rate: int, seconds: float, tmp: Path) -> dict[str, Any]:
    from spendstream.producers.spool import Spool
    from spendstream.producers.transports import HttpTransport

    endpoint = _SlowEndpoint(REPLAY_DELAY_S)
    transport = HttpTransport(endpoint.url, "bench")
    # Enough to outlast the run at the endpoint's pace (1 000-event batches).
    backlog = int(1000 / REPLAY_DELAY_S * (seconds + 4))
    now = datetime.now(UTC)
    lines = [
        UsageEvent.model_validate({**fields(i), "event_id": f"old-{i}", "ts": now})
        .model_dump_json(exclude_none=True)
        .encode()
        for i in range(min(backlog, 20_000))
    ]
    spool = Spool(tmp / "spool-replay", destination=transport.destination)
    for start in range(0, backlog, len(lines)):
        spool.append(lines[: backlog - start])
    spool.close()
    meter = Meter(transport, spool_dir=tmp / "spool-replay")
    gc.collect()
    clock = time.perf_counter_ns
    ns = []
    interval = 1 / rate
    t0 = time.perf_counter()
    for i in range(int(rate * seconds)):
        pause = t0 + i * interval - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        f = fields(i)
        s = clock()
        meter.record(**f)
        ns.append(clock() - s)
    m = meter.metrics
    meter.close(timeout_s=0)
    endpoint.stop()
    ordered = sorted(ns)
    return {
        "rate_per_s": rate,
        "seconds": seconds,
        "calls": len(ns),
        "backlog_events": backlog,
        "replayed_during_run": m.replayed,
        "replay_outlasted_run": m.spool_bytes > 0,
        **percentiles(ns),
        "p999_us": round(ordered[int(len(ordered) * 0.999) - 1] / 1000, 3),
        "max_us": round(ordered[-1] / 1000, 3),
        "calls_over_1ms": sum(1 for x in ns if x > 1_000_000),
        "overflowed": m.overflowed,
    }


def main_replay(rate: int, seconds: float) -> int:
    with tempfile.TemporaryDirectory(prefix="bench-producer-replay-") as tmp:
        result = bench_record_during_replay(rate, seconds, Path(tmp))
    report: dict[str, Any] = {
        "name": REPLAY_NAME,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "endpoint_delay_s": REPLAY_DELAY_S,
        "record_during_replay": result,
    }
    mach = report["machine"]
    cpu = str(mach["cpu_model"]).split(" ")[:2]
    r = result
    line = (
        f"- {REPLAY_NAME} ({report['at']}, {' '.join(cpu)}, {mach['cores']} cores, "
        f"{r['calls']} calls at {rate}/s during a spool replay to an HTTP endpoint taking "
        f"{REPLAY_DELAY_S * 1000:.0f} ms a request): record() median {r['median_us']} us "
        f"p99 {r['p99_us']} us p99.9 {r['p999_us']} us max {r['max_us']} us, "
        f"{r['calls_over_1ms']} calls over 1 ms, {r['overflowed']} written to the spool by "
        f"record() itself -> results/{REPLAY_NAME}.json"
    )
    record(REPLAY_NAME, report, line)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=100_000, help="events sent to Kafka per side")
    ap.add_argument("--calls", type=int, default=50_000, help="record() calls timed while idle")
    ap.add_argument("--bootstrap", help="an existing broker (default: start a LocalKafka)")
    ap.add_argument(
        "--replay", action="store_true", help="only record() during a spool replay (no Kafka)"
    )
    ap.add_argument("--rate", type=int, default=2_000, help="--replay: record() calls a second")
    ap.add_argument("--seconds", type=float, default=8.0, help="--replay: how long to record")
    args = ap.parse_args(argv)
    if args.replay:
        return main_replay(args.rate, args.seconds)

    with (
        tempfile.TemporaryDirectory(prefix="bench-producer-") as tmp,
        kafka_for_run(args.bootstrap, Path(tmp) / "kafka") as bootstrap,
    ):
        # Rounds alternate so both see the same background load (a shared machine):
        # each reports its best round, all rounds are kept.
        idle_rounds, validate_rounds = [], []
        for r in range(ROUNDS):
            idle_rounds.append(bench_record_idle(args.calls, Path(tmp) / f"spool-idle{r}"))
            validate_rounds.append(bench_validate(args.calls))
        idle = min(idle_rounds, key=lambda x: x["median_us"]) | {"rounds": idle_rounds}
        validate = min(validate_rounds, key=lambda x: x["median_us"]) | {"rounds": validate_rounds}
        bare = bench_bare(bootstrap, args.events)
        sending, meter = bench_meter(bootstrap, args.events, Path(tmp) / "spool")
        _, meter_big = bench_meter(
            bootstrap, args.events, Path(tmp) / "spool-big", queue_size=args.events + 2
        )

    report = {
        "name": NAME,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "broker": "given" if args.bootstrap else "LocalKafka started by the bench",
        "record_idle": idle,
        "validate_only": validate,
        "record_sending": sending,
        "meter_throughput": meter,
        "bare_producer": bare,
        "meter_queue_holds_run": meter_big,
        "meter_vs_bare": round(meter["events_per_s"] / bare["events_per_s"], 3),
        "meter_queue_holds_run_vs_bare": round(meter_big["events_per_s"] / bare["events_per_s"], 3),
        "goal_median_us": GOAL_MEDIAN_US,
        "goal_met": idle["median_us"] <= GOAL_MEDIAN_US,
    }
    mach = report["machine"]
    cpu = str(mach["cpu_model"]).split(" ")[:2]
    line = (
        f"- {NAME} ({report['at']}, {' '.join(cpu)}, {mach['cores']} cores, "
        f"{args.events} events): record() median {idle['median_us']} us p99 {idle['p99_us']} us "
        f"idle (goal <= {GOAL_MEDIAN_US} us; validation alone {validate['median_us']} us), "
        f"median {sending['median_us']} us p99 {sending['p99_us']} us while sending; "
        f"Meter to Kafka {meter['events_per_s']}/s ({meter['spooled']} overflowed to the "
        f"spool: the caller outran Kafka) and {meter_big['events_per_s']}/s with a queue "
        f"holding the run vs bare confluent_kafka.Producer {bare['events_per_s']}/s = "
        f"{report['meter_vs_bare']}x / {report['meter_queue_holds_run_vs_bare']}x "
        f"-> results/{NAME}.json"
    )
    record(NAME, report, line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
