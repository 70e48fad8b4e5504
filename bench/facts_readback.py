"""A scope owner reading a batch's facts record back: the read-after-seek latency.

    .venv/bin/python -m bench.facts_readback [--records 48] [--events 20000] [--bootstrap HOST:PORT]

A scope owner that must locate a crossing in a wide scope reads the facts record of the
batch it came from (``FactsReader.facts_of``: seek to the record, fetch it, decode it), at
random offsets across the facts topic's partitions, while the alert waits. Measured on one
broker (``--bootstrap``, else ``$SPENDSTREAM_BENCH_KAFKA``, else a LocalKafka for the run),
``--records`` facts records of ``--events`` priced events each (~1.7 MB for 20k), read once
each in a shuffled order:

* ``reader``: ``FactsReader`` as the worker runs it (``READ_CONFIG``);
* ``librdkafka_defaults`` (the baseline): the same reader with librdkafka's fetch defaults
  (``fetch.queue.backoff.ms`` 1000, ``fetch.wait.max.ms`` 500), as it ran before.

Results: bench/results/facts_readback.json and a line in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from bench._common import kafka_for_run, machine, record
from spendstream import facts_topic
from spendstream.config import Config
from spendstream.kafka.admin import Admin, TopicSpec
from spendstream.kafka.producer import OutRecord, Producer
from spendstream.kafka.settings import as_settings
from spendstream.runtime.kafka.facts_reader import FactsReader, batch_ref
from spendstream.runtime.kafka.topology import MAX_RECORD_BYTES
from spendstream.stream.batch import decode_lines
from spendstream.stream.pipeline import Pipeline
from spendstream.synthetic import generate

NAME = "facts_readback"
PARTITIONS = 6
DEFAULTS = {"fetch.queue.backoff.ms": 1000, "fetch.wait.max.ms": 500}


def _facts_record(events: int) -> bytes:
    lines = [json.dumps(e, separators=(",", ":")).encode() for e in generate(events, seed=18)]
    now = datetime.now(UTC)
    decoded = decode_lines(lines, now, lambda i: f"bench:{i}")
    facts = Pipeline(Config()).price_table(decoded.events, now)
    offsets = pa.array(range(facts.num_rows), pa.int64())
    return facts_topic.encode(0, facts, offsets, (0, facts.num_rows - 1))


def _reads(bootstrap: str, topic: str, refs: list[str], config: dict[str, Any]) -> list[float]:
    reader = FactsReader(as_settings(bootstrap), topic, config)
    try:
        out = []
        for ref in refs:
            t0 = time.perf_counter()
            reader.facts_of(ref)
            out.append((time.perf_counter() - t0) * 1000)
        return out
    finally:
        reader.close()


def _summary(ms: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(ms, n=100, method="inclusive")
    return {
        "p50_ms": round(statistics.median(ms), 1),
        "p99_ms": round(cuts[98], 1),
        "max_ms": round(max(ms), 1),
        "total_s": round(sum(ms) / 1000, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=48)
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--bootstrap", default=os.environ.get("SPENDSTREAM_BENCH_KAFKA"))
    args = ap.parse_args()
    value = _facts_record(args.events)
    with (
        tempfile.TemporaryDirectory(prefix="bench-readback-") as tmp,
        kafka_for_run(args.bootstrap, Path(tmp)) as bootstrap,
    ):
        topic = f"bench-facts-{int(time.time())}"
        Admin(bootstrap, timeout_s=60).ensure_topics(
            [TopicSpec(topic, PARTITIONS, {"max.message.bytes": str(MAX_RECORD_BYTES)})]
        )
        producer = Producer(bootstrap, config={"message.max.bytes": MAX_RECORD_BYTES + 65536})
        records = [OutRecord(topic, value, partition=i % PARTITIONS) for i in range(args.records)]
        report = producer.send(records, 120)
        report.raise_first()
        producer.close(timeout_s=10)
        refs = [
            batch_ref(r.partition or 0, o or 0)
            for r, o in zip(records, report.offsets, strict=True)
        ]
        random.Random(18).shuffle(refs)
        # Alternated halves, so neither reader has the broker's warm cache to itself.
        half = len(refs) // 2
        base = _reads(bootstrap, topic, refs[:half], DEFAULTS)
        new = _reads(bootstrap, topic, refs[half:], {})
        base += _reads(bootstrap, topic, refs[half:], DEFAULTS)
        new += _reads(bootstrap, topic, refs[:half], {})
    result = {
        "machine": machine(("spendstream", "confluent-kafka", "pyarrow")),
        "records": args.records,
        "record_bytes": len(value),
        "events_per_record": args.events,
        "reader": _summary(new),
        "librdkafka_defaults": _summary(base),
    }
    m = result["machine"]
    r, b = result["reader"], result["librdkafka_defaults"]
    line = (
        f"- {NAME} ({datetime.now(UTC).isoformat(timespec='seconds')}, {m.get('cpu_model', '?')}, "
        f"{m.get('cores', '?')} cores, {args.records} facts records of {args.events} events, "
        f"{len(value)} bytes each, read once each in a shuffled order): FactsReader p50 "
        f"{r['p50_ms']} ms p99 {r['p99_ms']} ms max {r['max_ms']} ms vs librdkafka's fetch "
        f"defaults (as before) p50 {b['p50_ms']} ms p99 {b['p99_ms']} ms max {b['max_ms']} ms"
    )
    record(NAME, result, line)


if __name__ == "__main__":
    main()
