"""A burst of concurrent agents on one hard budget, through a real broker (bench and tests).

``python -m bench.lease_load client ...`` is one client process: ``--threads`` threads each
make calls whose worst case is random in [``--min-usd``, ``--max-usd``] and whose actual
cost is a random share of it (``--actual max``: all of it); a call "runs" for a random
``--latency-ms`` span. Two modes:

- ``leases``: ``meter.reserve`` semantics through ``LeaseClient.kafka`` (refused calls are
  not made; the thread retries a little later, as an agent would);
- ``breakers``: today's way: ``guard()`` against the real ``BreakerView`` of a breakers
  topic, then the call, then its cost produced to a usage topic; ``Detector`` below sums
  that topic in batches every ``batch_within_s`` (the pipeline's ``[pipeline]`` default)
  and opens the budget's breaker at the hard limit, as ``budget_exceeded`` does.

Each process writes what it spent (exact decimals), call counts and latencies as JSON.
``run_load`` starts the processes and gathers them.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

SCOPE_TEAM = "search"  # the budget's scope is team:search

__all__ = ["Detector", "LoadResult", "run_load"]


class _TimedService:
    """Wraps a LeaseService to time refills (the request round trip) as the client sees it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.refill_ms: list[float] = []
        self._lock = threading.Lock()

    def request(self, request: Any, timeout_s: float) -> Any:
        """Answered requests only: one that timed out counts as ``unavailable`` instead."""
        t = time.perf_counter()
        reply = self.inner.request(request, timeout_s)
        with self._lock:
            self.refill_ms.append((time.perf_counter() - t) * 1000)
        return reply

    def settle(self, settle: Any) -> None:
        self.inner.settle(settle)

    def release(self, release: Any) -> None:
        self.inner.release(release)

    def close(self) -> None:
        self.inner.close()


def _client(args: argparse.Namespace) -> int:
    from spendstream.config import load_config
    from spendstream.errors import BreakerOpen, BudgetExhausted, LeaseUnavailable

    config = load_config(args.config)
    rng_master = random.Random(args.seed)
    stop_at = time.monotonic() + args.duration_s
    lock = threading.Lock()
    spent: list[Decimal] = []
    counts = {"calls": 0, "refused": 0, "unavailable": 0}
    reserve_us: list[float] = []
    last_call_wall = [0.0]
    calls_after: list[float] = []
    client: Any = None
    service: _TimedService | None = None
    view: Any = None
    producer: Any = None
    if args.mode == "leases":
        from spendstream.kafka_leases import KafkaLeaseService, LeaseTopics
        from spendstream.producers import LeaseClient

        client_id = f"load-{args.seed}"
        service = _TimedService(
            KafkaLeaseService(
                config.kafka.bootstrap_servers,
                client_id=client_id,
                names=LeaseTopics.with_prefix(config.kafka.topic_prefix),
            )
        )
        client = LeaseClient.from_config(service, config, client_id=client_id)
    else:
        from spendstream.kafka import Producer
        from spendstream.producers import BreakerView

        view = BreakerView(config.kafka.bootstrap_servers, args.breakers_topic).start()
        view.wait_ready(30)
        producer = Producer(config.kafka.bootstrap_servers, client_id="bench-lease-load")

    def agent(seed: int) -> None:
        from spendstream.producers.guard import guard

        rng = random.Random(seed)
        while time.monotonic() < stop_at:
            cents = rng.randint(args.min_cents, args.max_cents)
            worst = Decimal(cents) / 100
            share = 100 if args.actual == "max" else rng.randint(0, 100)
            actual = worst * share / 100
            latency = rng.uniform(args.latency_min_ms, args.latency_max_ms) / 1000
            if args.mode == "leases":
                t = time.perf_counter()
                try:
                    r = client.reserve(worst, team=SCOPE_TEAM)
                except BudgetExhausted:
                    with lock:
                        counts["refused"] += 1
                    time.sleep(0.05)
                    continue
                except LeaseUnavailable:
                    with lock:
                        counts["unavailable"] += 1
                    time.sleep(0.05)
                    continue
                took = (time.perf_counter() - t) * 1e6
                time.sleep(latency)  # the LLM call
                r.settle(actual)
            else:
                try:
                    guard(view, team=SCOPE_TEAM)
                except BreakerOpen:
                    with lock:
                        counts["refused"] += 1
                    time.sleep(0.05)
                    continue
                took = 0.0
                time.sleep(latency)
                producer.produce(args.usage_topic, str(actual).encode())
                producer.poll(0)
            now = time.time()
            with lock:
                spent.append(actual)
                counts["calls"] += 1
                if took:
                    reserve_us.append(took)
                last_call_wall[0] = max(last_call_wall[0], now)
                if args.mark_after and now > args.mark_after:
                    calls_after.append(now)

    threads = [
        threading.Thread(target=agent, args=(rng_master.randrange(1 << 30),))
        for _ in range(args.threads)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out: dict[str, Any] = {
        "spent_usd": str(sum(spent, Decimal(0))),
        **counts,
        "calls_after_mark": len(calls_after),
        "last_call_wall": last_call_wall[0],
        "reserve_us": sorted(reserve_us),
        "refill_ms": sorted(service.refill_ms) if service is not None else [],
    }
    if client is not None:
        metrics = client.metrics
        out["lease_requests"] = metrics.requests
        out["overspent"] = metrics.overspent
        client.close()
    if producer is not None:
        producer.flush(10)
        view.close()
    Path(args.out).write_text(json.dumps(out))
    return 0


class Detector:
    """The breaker-only pipeline, reduced to the budget path: sum the usage topic in batches
    every ``batch_within_s`` and open the budget's breaker once the sum reaches the limit."""

    def __init__(
        self,
        bootstrap: str,
        usage_topic: str,
        breakers_topic: str,
        limit_usd: Decimal,
        batch_within_s: float = 0.2,
    ) -> None:
        self.bootstrap = bootstrap
        self.usage_topic = usage_topic
        self.breakers_topic = breakers_topic
        self.limit = limit_usd
        self.batch_within_s = batch_within_s
        self.total = Decimal(0)
        self.opened_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Detector:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        from spendstream.kafka import Consumer, Producer

        consumer = Consumer(self.bootstrap, group_id=f"detector-{self.usage_topic}")
        producer = Producer(self.bootstrap, client_id="bench-detector")
        consumer.subscribe([self.usage_topic])
        try:
            while not self._stop.is_set():
                # One pipeline batch: whatever arrived within batch_within_s.
                window_end = time.monotonic() + self.batch_within_s
                while (left := window_end - time.monotonic()) > 0:
                    for msg in consumer.consume(100_000, left):
                        self.total += Decimal((msg.value() or b"0").decode())
                if self.opened_at is None and self.total >= self.limit:
                    self.opened_at = time.time()
                    scope = f"team:{SCOPE_TEAM}"
                    event = {
                        "scope": scope,
                        "state": "open",
                        "reason": "budget_exceeded",
                        "ts": datetime.now(UTC).isoformat(),
                    }
                    producer.produce(
                        self.breakers_topic, json.dumps(event).encode(), scope.encode()
                    )
                    producer.flush(10)
        finally:
            consumer.close()
            producer.close()


@dataclass
class LoadResult:
    mode: str
    limit_usd: Decimal
    spent_usd: Decimal
    calls: int
    refused: int
    unavailable: int
    processes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def overshoot_usd(self) -> Decimal:
        return max(self.spent_usd - self.limit_usd, Decimal(0))

    def reserve_us(self) -> list[float]:
        return sorted(x for p in self.processes for x in p["reserve_us"])

    def refill_ms(self) -> list[float]:
        return sorted(x for p in self.processes for x in p["refill_ms"])


def run_load(
    mode: str,
    config_path: Path,
    out_dir: Path,
    *,
    limit_usd: Decimal,
    processes: int = 8,
    threads: int = 16,
    duration_s: float = 10.0,
    cents: tuple[int, int] = (1, 10),
    latency_ms: tuple[float, float] = (20.0, 80.0),
    actual: str = "random",
    breakers_topic: str = "",
    usage_topic: str = "",
    mark_after: float = 0.0,
    during: Any = None,
) -> LoadResult:
    """Run ``processes`` client processes to completion; ``during()`` runs meanwhile."""
    out_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    for i in range(processes):
        cmd = [
            sys.executable, "-m", "bench.lease_load", "client",
            "--mode", mode, "--config", str(config_path), "--seed", str(1000 + i),
            "--threads", str(threads), "--duration-s", str(duration_s),
            "--min-cents", str(cents[0]), "--max-cents", str(cents[1]),
            "--latency-min-ms", str(latency_ms[0]), "--latency-max-ms", str(latency_ms[1]),
            "--actual", actual, "--out", str(out_dir / f"{mode}-{i}.json"),
            "--breakers-topic", breakers_topic, "--usage-topic", usage_topic,
            "--mark-after", str(mark_after),
        ]  # fmt: skip
        procs.append(subprocess.Popen(cmd, cwd=Path(__file__).resolve().parent.parent))
    try:
        if during is not None:
            during()
        for p in procs:
            rc = p.wait(timeout=duration_s + 180)
            if rc != 0:
                raise RuntimeError(f"a {mode} client process exited {rc}")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    results = [json.loads((out_dir / f"{mode}-{i}.json").read_text()) for i in range(processes)]
    return LoadResult(
        mode=mode,
        limit_usd=limit_usd,
        spent_usd=sum((Decimal(r["spent_usd"]) for r in results), Decimal(0)),
        calls=sum(r["calls"] for r in results),
        refused=sum(r["refused"] for r in results),
        unavailable=sum(r["unavailable"] for r in results),
        processes=results,
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.lease_load")
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("client", help="one client process")
    c.add_argument("--mode", choices=["leases", "breakers"], required=True)
    c.add_argument("--config", required=True)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--threads", type=int, default=16)
    c.add_argument("--duration-s", type=float, default=10.0)
    c.add_argument("--min-cents", type=int, default=1)
    c.add_argument("--max-cents", type=int, default=10)
    c.add_argument("--latency-min-ms", type=float, default=20.0)
    c.add_argument("--latency-max-ms", type=float, default=80.0)
    c.add_argument("--actual", choices=["random", "max"], default="random")
    c.add_argument("--breakers-topic", default="")
    c.add_argument("--usage-topic", default="")
    c.add_argument("--mark-after", type=float, default=0.0, help="count calls after this wall time")
    c.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    return _client(args)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
