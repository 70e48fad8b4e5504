"""Throughput and latency of the Kafka path (issue 7 goal: >= 0.5x a bare aiokafka consumer).

    .venv/bin/python -m bench.kafka_pipeline [--events 200000] [--partitions 6] [--bootstrap HOST:PORT]

In one run, on one broker (``--bootstrap``, else ``$SPENDSTREAM_BENCH_KAFKA``, else a
LocalKafka started for the run and stopped after):

* ``bare_aiokafka`` (the baseline): an aiokafka consumer reads the usage topic's N records
  and does nothing else; the floor of reading them at all on this machine;
* ``pipeline``: one ``spendstream run`` worker (a subprocess) consumes the same N records:
  parse, dedupe, price, land as Parquet, forward to detection. Sustained events/s counts
  from the first landed batch to the last fact landed (worker start-up excluded), read off
  the worker's own /metrics; ``detection_done_s`` is when stage 2 had judged them all;
* ``profile``: where the worker's time went (its ``spendstream_step_seconds`` counters);
  the rest of the wall time is Faust, aiokafka and the event loop;
* ``latency``: events produced one at a time to the running worker -> the fact is
  visible to a DuckDB query of ``usage_facts``, as an analyst would see it.

Results: bench/results/kafka_pipeline.json and a line in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench._common import machine as shared_machine
from bench._common import record
from spendstream.local.kafka import find_free_port
from spendstream.synthetic import generate
from spendstream.topics import partition_key

NAME = "kafka_pipeline"


def machine() -> dict[str, Any]:
    return shared_machine(
        ("spendstream", "faust-streaming", "aiokafka", "duckdb", "pyarrow", "pydantic")
    )


def _key(event: dict[str, Any]) -> bytes:
    return partition_key(
        event.get("api_key_id"), event.get("session_id"), event.get("request_id"), event["event_id"]
    )


async def produce(bootstrap: str, topic: str, events: list[dict[str, Any]]) -> float:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20)
    await producer.start()
    t0 = time.perf_counter()
    try:
        futures = [
            await producer.send(topic, json.dumps(e, separators=(",", ":")).encode(), key=_key(e))
            for e in events
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return time.perf_counter() - t0


async def bare_consume(bootstrap: str, topic: str, n: int) -> dict[str, Any]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"bench-bare-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    seen = 0
    t_first = None
    try:
        while seen < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
            for records in batch.values():
                if t_first is None and records:
                    t_first = time.perf_counter()
                seen += len(records)
        t_end = time.perf_counter()
    finally:
        await consumer.stop()
    assert t_first is not None
    elapsed = t_end - t_first
    return {"events": seen, "seconds": round(elapsed, 3), "events_per_s": round(seen / elapsed)}


async def bare_stage1(
    bootstrap: str, topic: str, n: int, workdir: Path, batch: int
) -> dict[str, Any]:
    """The same stage-1 work (parse, dedupe, price, land) on a bare aiokafka loop: no Faust,
    no priced topic, no detection. What the pipeline's stage 1 costs without its runtime."""
    from aiokafka import AIOKafkaConsumer

    from spendstream.config import Config
    from spendstream.stream.kafka.stages import UsageRecord, UsageStage

    stage = UsageStage(Config(), workdir, topic, "bench-bare")
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"bench-bare-stage1-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    seen = 0
    t_first = None
    try:
        while seen < n:
            got = await consumer.getmany(timeout_ms=1000, max_records=batch)
            records = [
                UsageRecord(r.partition, r.offset, r.value) for rs in got.values() for r in rs
            ]
            if not records:
                continue
            if t_first is None:
                t_first = time.perf_counter()
            stage.land(stage.prepare(records))
            await consumer.commit()
            seen += len(records)
        t_end = time.perf_counter()
    finally:
        await consumer.stop()
        stage.warehouse.close()
    assert t_first is not None
    return {
        "events": seen,
        "seconds": round(t_end - t_first, 3),
        "events_per_s": round(seen / (t_end - t_first)),
    }


def bare_faust(bootstrap: str, topic: str, n: int, batch: int, datadir: Path) -> dict[str, Any]:
    """Faust alone: an agent that only counts take_events() batches (bench/_faust_take.py)."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench._faust_take",
            bootstrap,
            topic,
            str(n),
            str(batch),
            str(datadir),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    # The worker redirects stdout into its log, so the line may arrive prefixed on stderr.
    for line in (out.stdout + out.stderr).splitlines():
        if '{"events"' in line:
            return dict(json.loads(line[line.index('{"events"') :].strip()))
    raise SystemExit(f"bench._faust_take failed: {out.stderr[-2000:]}")


def metric_values(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def held_and_judged(workdir: Path, app_id: str) -> dict[str, Any]:
    import json

    from spendstream.warehouse import Warehouse

    with Warehouse(workdir, writer=f"{app_id}-detect") as wh:
        raw = wh.resume().state
    return dict(json.loads(raw)) if raw else {}


def end_offset(bootstrap: str, topic: str) -> int:
    from spendstream.kafka.consumer import Consumer

    consumer = Consumer(bootstrap)
    try:
        return consumer.watermarks((topic, 0))[1]
    finally:
        consumer.close()


def query_ids(workdir: Path, prefix: str) -> set[str]:
    import duckdb

    con = duckdb.connect(str(workdir / "warehouse" / "spendstream.duckdb"), read_only=True)
    try:
        rows = con.execute(
            "SELECT event_id FROM usage_facts WHERE starts_with(event_id, ?)", [prefix]
        ).fetchall()
    finally:
        con.close()
    return {r[0] for r in rows}


def _start_worker(
    workdir: Path, config: Path, stage: str, log_path: Path
) -> tuple[subprocess.Popen[bytes], int]:
    port = find_free_port()
    log = open(log_path, "wb")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "spendstream",
            "run",
            "--workdir",
            str(workdir),
            "--config",
            str(config),
            "--http-port",
            str(port),
            "--stage",
            stage,
            "--log-level",
            "warning",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    return proc, port


def run_pipeline(
    bootstrap: str, prefix: str, workdir: Path, n: int, partitions: int, batch: int, layout: str
) -> tuple[dict[str, Any], list[subprocess.Popen[bytes]]]:
    """layout "one": one worker runs both stages; "split": one usage + one detect process."""
    config = workdir.parent / f"bench-{layout}.toml"
    app_id = prefix.rstrip(".")
    config.write_text(
        f'[kafka]\nbootstrap_servers = "{bootstrap}"\ntopic_prefix = "{prefix}"\n'
        f'app_id = "{app_id}"\nusage_partitions = {partitions}\n'
        f"[pipeline]\nbatch_size = {batch}\nbatch_within_s = 0.2\n"
    )
    stages = ["all"] if layout == "one" else ["usage", "detect"]
    t_start = time.perf_counter()
    workers = [
        _start_worker(workdir, config, st, workdir.parent / f"worker-{layout}-{st}.log")
        for st in stages
    ]
    procs = [proc for proc, _ in workers]
    t_first = t_done = None
    first_landed = 0.0
    while True:
        time.sleep(0.25)
        for proc in procs:
            if proc.poll() is not None:
                raise SystemExit(f"worker exited with {proc.returncode}; see {workdir.parent}")
        try:
            landed = metric_values(workers[0][1]).get("spendstream_facts_landed_total", 0.0)
        except OSError:
            continue
        now = time.perf_counter()
        if t_first is None and landed > 0:
            t_first, first_landed = now, landed
        if landed >= n:
            t_done = now
            break
    last_priced = end_offset(bootstrap, prefix + "spendstream.priced") - 1
    while True:  # stage 2 done: every priced record judged, nothing held
        st = held_and_judged(workdir, app_id)
        held = sum(1 for lane in st.get("held", []) for _ in lane["items"])
        if st.get("positions", {}).get("priced", -1) >= last_priced and held == 0:
            t_detect = time.perf_counter()
            break
        time.sleep(0.25)
    assert t_first is not None and t_done is not None
    steps: dict[str, float] = {}
    alerts = 0
    for _, port in workers:
        m = metric_values(port)
        for k, v in m.items():
            if k.startswith("spendstream_step_seconds_total{"):
                step = k.split('"')[1]
                steps[step] = round(steps.get(step, 0.0) + v, 3)
            if k.startswith("spendstream_batches_total{"):
                steps[f"batches_{k.split(chr(34))[1]}"] = v
            if k.startswith("spendstream_alerts_total{"):
                alerts += int(v)
    return {
        "layout": layout,
        "processes": stages,
        "events": n,
        "startup_to_first_landed_s": round(t_first - t_start, 3),
        "sustained_seconds": round(t_done - t_first, 3),
        "events_per_s": round((n - first_landed) / (t_done - t_first)),
        "all_landed_s": round(t_done - t_start, 3),
        "detection_done_s": round(t_detect - t_start, 3),
        "alerts": alerts,
        "profile_seconds": steps,
    }, procs


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def latency(
    bootstrap: str, topic: str, workdir: Path, samples: int, gap_s: float
) -> dict[str, Any]:
    from spendstream.kafka.producer import OutRecord, Producer

    producer = Producer(bootstrap, config={"linger.ms": 0})
    tag = f"lat-{uuid.uuid4().hex[:8]}-"
    sent: dict[str, float] = {}
    seen: dict[str, float] = {}
    now_iso = datetime.now(UTC).isoformat()
    for i in range(samples):
        eid = f"{tag}{i:05d}"
        event = {
            "event_id": eid,
            "ts": now_iso,
            "provider": "openai",
            "model": "gpt-5-mini",
            "input_tokens": 1000,
            "output_tokens": 100,
            "api_key_id": f"k-{i % 7}",
        }
        producer.send([OutRecord(topic, json.dumps(event).encode(), _key(event))], 30).raise_first()
        sent[eid] = time.perf_counter()
        # Poll DuckDB between sends: the fact is "queryable" when a read-only query returns it.
        deadline = time.perf_counter() + gap_s
        while time.perf_counter() < deadline:
            t = time.perf_counter()
            for e in query_ids(workdir, tag) - seen.keys():
                seen[e] = t
            time.sleep(0.02)
    producer.close()
    end = time.perf_counter() + 60
    while len(seen) < samples and time.perf_counter() < end:
        t = time.perf_counter()
        for e in query_ids(workdir, tag) - seen.keys():
            seen[e] = t
        time.sleep(0.02)
    lat = sorted((seen[e] - sent[e]) * 1000 for e in seen)
    if not lat:
        return {"samples": 0}
    q = statistics.quantiles(lat, n=100) if len(lat) > 1 else [lat[0]] * 99
    return {
        "samples": len(lat),
        "p50_ms": round(q[49], 1),
        "p90_ms": round(q[89], 1),
        "p99_ms": round(q[98], 1),
        "max_ms": round(lat[-1], 1),
        "note": "includes the DuckDB poll (every ~20 ms) over the warehouse's Parquet files",
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=2000)
    ap.add_argument("--latency-samples", type=int, default=100)
    ap.add_argument("--bootstrap", default=os.environ.get("SPENDSTREAM_BENCH_KAFKA"))
    args = ap.parse_args()
    report: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
    }
    tmp = tempfile.TemporaryDirectory(prefix="bench-kafka-pipeline-")
    broker = None
    bootstrap = args.bootstrap
    if not bootstrap:
        from spendstream.local.kafka import LocalKafka, find_free_ports

        port, cport = find_free_ports(2)
        broker = LocalKafka(Path(tmp.name) / "broker", port=port, controller_port=cport)
        bootstrap = broker.start(timeout_s=180)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        from spendstream.kafka.admin import Admin, TopicSpec

        events = generate(args.events, seed=17)
        n = len(events)
        runs = {}
        for layout in ("one", "split"):
            prefix = f"bench{uuid.uuid4().hex[:8]}."
            topic = prefix + "spendstream.usage"
            Admin(bootstrap, timeout_s=60).ensure_topics([TopicSpec(topic, args.partitions, {}, 1)])
            produce_s = asyncio.run(produce(bootstrap, topic, events))
            report.setdefault(
                "produce",
                {"events": n, "seconds": round(produce_s, 3), "events_per_s": round(n / produce_s)},
            )
            if layout == "one":
                report["bare_aiokafka"] = asyncio.run(bare_consume(bootstrap, topic, n))
                report["bare_faust_take"] = bare_faust(
                    bootstrap, topic, n, args.batch_size, Path(tmp.name) / "faust-take"
                )
                report["bare_aiokafka_stage1"] = asyncio.run(
                    bare_stage1(
                        bootstrap, topic, n, Path(tmp.name) / "bare-stage1", args.batch_size
                    )
                )
            workdir = Path(tmp.name) / layout / "wd"
            workdir.parent.mkdir(parents=True)
            runs[layout], procs = run_pipeline(
                bootstrap, prefix, workdir, n, args.partitions, args.batch_size, layout
            )
            if layout == "one":
                report["latency"] = latency(bootstrap, topic, workdir, args.latency_samples, 0.25)
            _stop(procs)
            procs = []
        del events
        report["pipeline"] = runs
        bare = report["bare_aiokafka"]["events_per_s"]
        bare1 = report["bare_aiokafka_stage1"]["events_per_s"]
        report["ratio_vs_bare"] = {k: round(r["events_per_s"] / bare, 3) for k, r in runs.items()}
        report["ratio_vs_bare_stage1"] = {
            k: round(r["events_per_s"] / bare1, 3) for k, r in runs.items()
        }
        report["goal"] = "pipeline >= 0.5x the bare aiokafka consumer"
        report["config"] = {"partitions": args.partitions, "batch_size": args.batch_size}
        report["profile_note"] = (
            "profile_seconds: wall seconds summed per step (a thread waiting for the GIL counts); "
            "the rest of a worker's time is Faust, aiokafka and the event loop"
        )
    finally:
        _stop(procs)
        if broker is not None:
            broker.stop()
        tmp.cleanup()
    one, split, lat = report["pipeline"]["one"], report["pipeline"]["split"], report["latency"]
    line = (
        f"- {NAME} ({report['when']}, {report['machine']['cpu_model']}, {report['machine']['cores']} cores, "
        f"load avg {report['machine']['load_average'][0]:.1f}, {n} events, {args.partitions} partitions): "
        f"spendstream run sustained {one['events_per_s']}/s (1 worker) and {split['events_per_s']}/s "
        f"(usage + detect processes) vs bare aiokafka consume {report['bare_aiokafka']['events_per_s']}/s = "
        f"{report['ratio_vs_bare']['one']}x / {report['ratio_vs_bare']['split']}x (goal >= 0.5x: not met); "
        f"vs the same stage-1 work on bare aiokafka {report['bare_aiokafka_stage1']['events_per_s']}/s = "
        f"{report['ratio_vs_bare_stage1']['one']}x / {report['ratio_vs_bare_stage1']['split']}x; "
        f"Faust alone (take_events, no work) {report['bare_faust_take']['events_per_s']}/s; "
        f"produce -> queryable fact p50 {lat.get('p50_ms')} ms p99 {lat.get('p99_ms')} ms -> results/{NAME}.json"
    )
    record(NAME, report, line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
