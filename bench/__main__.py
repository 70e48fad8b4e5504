"""Run the benchmarks: ``python -m bench [NAME ...]`` (all of them by default, in order).

Each benchmark compares against a baseline measured in the same run, records the machine
it ran on, writes ``bench/results/<name>.json`` and its line in ``bench/RESULTS.md``. Run
one alone for its options: ``python -m bench.<name> --help``.
"""

from __future__ import annotations

import subprocess
import sys
import time

BENCHMARKS = (
    "pricing",  # Pricer.price_batch vs a per-event genai_prices.calc_price loop
    "detection",  # the columnar detection engine vs the per-event reference engine
    "decode",  # columnar decode + validate (stream/batch.py) vs per-event pydantic
    "producer",  # Meter.record() latency; Meter to Kafka vs a bare KafkaProducer
    "ingest",  # embedded spendstream ingest of 1M events vs a per-event calc_price loop
    "ingest_scale",  # ingest with 1% bad records, and 10M events streamed through a pipe
    "warehouse_queries",  # named queries at 10M facts (local and S3) vs bare read_parquet; landing
    "dedupe",  # dedupe store probe+insert per key: empty vs 10M landed keys
    "writers",  # 3 writers committing at once with maintenance: lost/doubled, retries
    "kafka_pipeline",  # spendstream run vs embedded ingest, 1 vs 2 workers, alert latency, RSS
    "breaker_latency",  # runaway crossing -> guard() refusal, through spendstream run
    "facts_readback",  # a scope owner reading a facts record back vs librdkafka's fetch defaults
    "leases",  # hard-budget overshoot: leases vs breaker-only; reserve() and refill latency
    "alert_routing",  # router vs bare httpx posts
    "report",  # write_report and whatif at 10M facts
)


def main(argv: list[str]) -> int:
    names = argv or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
        return 2
    failed = []
    for name in names:
        t0 = time.monotonic()
        print(f"== bench.{name}", flush=True)
        rc = subprocess.call([sys.executable, "-m", f"bench.{name}"])
        print(f"== bench.{name}: exit {rc} after {time.monotonic() - t0:.0f} s", flush=True)
        if rc:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
