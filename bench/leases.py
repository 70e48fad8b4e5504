"""Budget leases: overshoot against today's breaker-only cap, reserve() and refill latency.

``python -m bench.leases`` (broker: ``$SPENDSTREAM_BENCH_KAFKA``, else a LocalKafka started
for the run). In one run, on one hard budget:

* ``overshoot``: 8 client processes x 16 threads (bench/lease_load.py) spend on the budget
  through leases (a real ``spendstream leases serve`` process, SIGKILLed and restarted
  mid-run unless ``--no-kill``) and, as the baseline, the breaker-only way of today:
  ``guard()`` on the real breakers topic, the breaker opened by a detector summing the
  usage topic every 0.2 s (``[pipeline] batch_within_s``) at the hard limit. Goal: leases 0
  overshoot; the baseline's overshoot measured alongside.
* ``reserve``: ``reserve()`` with a lease held, in the caller's thread (goal p99 <= 50 us):
  one thread, and 16 threads sharing one client.
* ``refill``: a lease request's round trip through the broker and the lease server's
  transaction (goal p99 <= 20 ms): sequential refills, and those of the overshoot run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from bench._common import machine, record
from bench.lease_load import Detector, LoadResult, run_load

NAME = "leases"
ROOT = Path(__file__).resolve().parent.parent


def bench_broker(work: Path) -> tuple[str, Any]:
    """``$SPENDSTREAM_BENCH_KAFKA``, else a LocalKafka started under ``work`` (returned too,
    to stop)."""
    bootstrap = os.environ.get("SPENDSTREAM_BENCH_KAFKA")
    if bootstrap:
        return bootstrap, None
    from spendstream.kafka_local import LocalKafka, find_free_ports

    port, cport = find_free_ports(2)
    broker = LocalKafka(work / "kafka", port=port, controller_port=cport, stop_with_parent=True)
    broker.start(timeout_s=180)
    return broker.bootstrap, broker


def pct(samples: list[float], q: float) -> float:
    if not samples:
        return float("nan")
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))]


def summary(samples: list[float], unit: str) -> dict[str, Any]:
    return {
        "n": len(samples),
        f"p50_{unit}": round(pct(samples, 0.50), 3),
        f"p99_{unit}": round(pct(samples, 0.99), 3),
        f"max_{unit}": round(max(samples), 3) if samples else None,
        f"mean_{unit}": round(statistics.fmean(samples), 3) if samples else None,
    }


def reserve_latency(calls: int = 200_000) -> dict[str, Any]:
    """reserve() from a held lease (in process: no network on this path by design)."""
    from spendstream.config import BudgetConfig
    from spendstream.producers import LeaseClient
    from spendstream.stream.leases import LeaseLedger, LeasePolicy, LocalLeaseService

    budgets = [BudgetConfig(scope="team:search", amount_usd=Decimal(10**9), hard_limit=Decimal(1))]
    ledger = LeaseLedger(budgets, LeasePolicy(ttl_s=3600))
    client = LeaseClient(LocalLeaseService(ledger), ledger.scopes, refill_calls=10**7)
    worst = Decimal("0.01")
    client.reserve(worst, team="search").settle(0)  # take the lease
    out: dict[str, Any] = {}
    single: list[float] = []
    clock = time.perf_counter_ns
    for _ in range(calls):
        t = clock()
        r = client.reserve(worst, team="search", feature="f", user_id="u")
        single.append((clock() - t) / 1000)
        r.settle(worst)
    out["one_thread"] = summary(single, "us")
    per_thread: list[list[float]] = [[] for _ in range(16)]

    def work(samples: list[float]) -> None:
        for _ in range(calls // 16):
            t = clock()
            r = client.reserve(worst, team="search", feature="f", user_id="u")
            samples.append((clock() - t) / 1000)
            r.settle(worst)

    workers = [threading.Thread(target=work, args=(s,)) for s in per_thread]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    out["16_threads"] = summary([x for s in per_thread for x in s], "us")
    out["requests"] = client.metrics.requests
    client.close()
    return out


def sequential_refills(config_path: Path, n: int = 300) -> dict[str, Any]:
    return summary(refill_samples(config_path, n), "ms")


def refill_samples(
    config_path: Path, n: int = 300, kafka_options: dict[str, Any] | None = None
) -> list[float]:
    """Each reserve() needs a new lease (refill_calls=1, the lease used up each time): the
    round trip of each, ms."""
    from bench.lease_load import _TimedService
    from spendstream.config import load_config
    from spendstream.kafka_leases import KafkaLeaseService, LeaseTopics
    from spendstream.producers import LeaseClient

    config = load_config(config_path)
    service = _TimedService(
        KafkaLeaseService(
            config.kafka.bootstrap_servers,
            client_id="bench-refills",
            names=LeaseTopics.with_prefix(config.kafka.topic_prefix),
            config=kafka_options,
        )
    )
    client = LeaseClient(service, ["team:refills"], client_id="bench-refills", refill_calls=1,
                         request_timeout_s=10)  # fmt: skip
    for _ in range(n + 20):
        client.reserve("0.01", team="refills").settle("0.01")
    client.close()
    return service.refill_ms[20:]  # the first ones wait for the group join


def bare_transactions(bootstrap: str, topic: str, n: int = 300) -> dict[str, Any]:
    """The floor under a refill: one record produced and committed in a Kafka transaction
    (through the adapter's transaction calls, thin wrappers of the client's)."""
    from spendstream.kafka import Producer

    producer = Producer(
        bootstrap, transactional_id=f"bench-{uuid.uuid4().hex[:6]}", config={"linger.ms": 0}
    )
    producer.init_transactions(30)
    took = []
    for _ in range(n + 20):
        t = time.perf_counter()
        producer.begin_transaction()
        producer.produce(topic, b"x", partition=0)
        producer.commit_transaction()
        took.append((time.perf_counter() - t) * 1000)
    producer.close()
    return summary(took[20:], "ms")


class Server:
    def __init__(self, config: Path, log: Path) -> None:
        self.config, self.log = config, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "spendstream", "leases", "serve", "--config", str(self.config),
             "--instance", "bench-0"],
            stdout=self.log.open("ab"), stderr=subprocess.STDOUT, cwd=ROOT,
        )  # fmt: skip

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)


def _wait_served(config_path: Path, scope_team: str = "search") -> None:
    from spendstream.config import load_config
    from spendstream.errors import LeaseUnavailable
    from spendstream.producers import LeaseClient

    config = load_config(config_path)
    with LeaseClient.kafka(config.kafka.bootstrap_servers, config, request_timeout_s=2) as c:
        deadline = time.monotonic() + 120
        while True:
            try:
                c.reserve("0.000001", team=scope_team).cancel()
                return
            except LeaseUnavailable:
                if time.monotonic() > deadline:
                    raise


def _result(r: LoadResult) -> dict[str, Any]:
    return {
        "spent_usd": str(r.spent_usd),
        "limit_usd": str(r.limit_usd),
        "overshoot_usd": str(r.overshoot_usd),
        "overshoot_pct": round(float(r.overshoot_usd / r.limit_usd * 100), 2),
        "calls": r.calls,
        "refused": r.refused,
        "unavailable": r.unavailable,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.leases", description=__doc__)
    parser.add_argument("--limit-usd", type=Decimal, default=Decimal(150))
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--duration-s", type=float, default=25.0)
    parser.add_argument("--no-kill", action="store_true", help="no SIGKILL of the lease server")
    parser.add_argument("--reserve-calls", type=int, default=200_000)
    args = parser.parse_args(argv)
    started = datetime.now(UTC)
    box = machine(("spendstream", "confluent-kafka"))

    tmp = tempfile.TemporaryDirectory(prefix="bench-leases-")
    work = Path(tmp.name)
    bootstrap, broker = bench_broker(work)
    report: dict[str, Any] = {"machine": box, "started": started.isoformat()}
    server: Server | None = None
    try:
        report["reserve"] = reserve_latency(args.reserve_calls)
        prefix = f"bench{uuid.uuid4().hex[:6]}."
        limit = args.limit_usd
        config_path = work / "spendstream.toml"
        config_path.write_text(
            f'[kafka]\nbootstrap_servers = "{bootstrap}"\ntopic_prefix = "{prefix}"\n'
            f'[[budget]]\nscope = "team:search"\namount_usd = {limit}\nhard_limit = 1.0\n'
            f'[[budget]]\nscope = "team:refills"\namount_usd = 1000000\nhard_limit = 1.0\n'
            "[leases]\nttl_s = 5.0\ngrace_s = 3.0\nidle_return_s = 1.0\nrequest_timeout_s = 1.0\n"
        )
        server = Server(config_path, work / "server.log")
        server.start()
        _wait_served(config_path)
        report["refill_sequential"] = sequential_refills(config_path)
        report["bare_transaction_commit"] = bare_transactions(
            bootstrap, prefix + "spendstream.lease-replies"
        )
        load = {
            "processes": args.processes,
            "threads": args.threads,
            "duration_s": args.duration_s,
            "worst_case_cents": [1, 10],
            "actual": "random share of the worst case",
            "call_latency_ms": [200, 400],
        }
        report["load"] = load
        kill: dict[str, float] = {}

        def kill_and_restart() -> None:
            if args.no_kill:
                return
            time.sleep(4)
            assert server is not None
            server.kill9()
            kill["killed"] = time.time()
            time.sleep(3)
            server.start()
            kill["restarted"] = time.time()

        leases = run_load(
            "leases", config_path, work / "load", limit_usd=limit, processes=args.processes,
            threads=args.threads, duration_s=args.duration_s, cents=(1, 10),
            latency_ms=(200, 400), during=kill_and_restart,
        )  # fmt: skip
        report["leases"] = _result(leases)
        report["leases"]["sigkill_of_lease_server"] = not args.no_kill
        report["leases"]["processes_calling_after_restart"] = sum(
            1 for p in leases.processes if p["last_call_wall"] > kill.get("restarted", 0)
        )
        report["reserve_under_load"] = summary(leases.reserve_us(), "us")
        report["refill_under_load"] = summary(leases.refill_ms(), "ms")

        from spendstream.kafka import Admin, TopicSpec

        usage, breakers = prefix + "bench-usage", prefix + "bench-breakers"
        Admin(bootstrap, timeout_s=30).ensure_topics(
            [TopicSpec(usage, 6), TopicSpec(breakers, 1, {"cleanup.policy": "compact"})]
        )
        detector = Detector(bootstrap, usage, breakers, limit).start()
        try:
            baseline = run_load(
                "breakers", config_path, work / "load", limit_usd=limit,
                processes=args.processes, threads=args.threads, duration_s=args.duration_s,
                cents=(1, 10), latency_ms=(200, 400), breakers_topic=breakers,
                usage_topic=usage,
            )  # fmt: skip
        finally:
            detector.stop()
        report["breaker_only"] = _result(baseline)
        report["breaker_only"]["detector_total_usd"] = str(detector.total)
    finally:
        if server is not None:
            server.stop()
        if broker is not None:
            broker.stop()
        tmp.cleanup()

    report["load_average_end"] = os.getloadavg()
    rs, ru = report["reserve"], report["refill_sequential"]
    line = (
        f"- {NAME} ({started.isoformat(timespec='seconds')}, {box['cpu_model'].split()[0]}, "
        f"{box['cores']} cores, load avg {box['load_average'][0]:.1f}, "
        f"{args.processes} processes x {args.threads} threads on a ${args.limit_usd} hard "
        f"budget): leases spent ${report['leases']['spent_usd']} = overshoot "
        f"${report['leases']['overshoot_usd']}"
        f"{' through a SIGKILL of the lease server' if not args.no_kill else ''} vs breaker-only "
        f"${report['breaker_only']['spent_usd']} = overshoot "
        f"${report['breaker_only']['overshoot_usd']} ({report['breaker_only']['overshoot_pct']}%); "
        f"reserve() p99 {rs['one_thread']['p99_us']} us (1 thread), "
        f"{rs['16_threads']['p99_us']} us (16 threads) (goal <= 50 us); refill p50 "
        f"{ru['p50_ms']} ms p99 {ru['p99_ms']} ms sequential (a bare one-record transaction "
        f"commit: p50 {report['bare_transaction_commit']['p50_ms']} ms p99 "
        f"{report['bare_transaction_commit']['p99_ms']} ms), p99 "
        f"{report['refill_under_load']['p99_ms']} ms under the load (answered ones; goal <= 20 ms) "
        f"-> results/{NAME}.json"
    )
    record(NAME, report, line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
