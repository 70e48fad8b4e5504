"""Where a lease refill's time goes (``python -m bench.lease_refill``).

Sequential refills (each ``reserve()`` needs a new lease) against a lease server running on
a thread of this process, with the server's per-transaction phases recorded
(``LeaseServer.timings``): how old the request was when the server consumed it, answering
(ledger + produce calls), ``send_offsets_to_transaction``, ``commit_transaction``. Beside
them, in the same run: a bare one-record transaction commit. Broker:
``$SPENDSTREAM_BENCH_KAFKA``, else a LocalKafka started for the run.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench._common import machine, record
from bench.leases import bare_transactions, bench_broker, refill_samples, summary

NAME = "lease_refill"


def served_refills(
    bootstrap: str, work: Path, n: int, **server_options: Any
) -> dict[str, list[float]]:
    from spendstream.config import load_config
    from spendstream.runtime.lease_server import lease_server

    prefix = f"bench{uuid.uuid4().hex[:6]}."
    path = work / f"{prefix}toml"
    path.write_text(
        f'[kafka]\nbootstrap_servers = "{bootstrap}"\ntopic_prefix = "{prefix}"\n'
        '[[budget]]\nscope = "team:refills"\namount_usd = 1000000\nhard_limit = 1.0\n'
        "[leases]\nttl_s = 30.0\n"
    )
    kafka_options = server_options.pop("kafka_options", None)
    server = lease_server(load_config(path), "bench-refill", kafka_options)
    for key, value in server_options.items():
        setattr(server, key, value)
    timings: list[tuple[int, float, float, float, float]] = []
    server.timings = timings
    stop = threading.Event()
    thread = threading.Thread(target=server.run, args=(stop,), daemon=True)
    thread.start()
    try:
        out = {"refill": refill_samples(path, n, kafka_options)}
    finally:
        stop.set()
        thread.join(30)
    answered = [t for t in timings if t[0]][-n:]
    out["server_transactions"] = [float(len(timings))]
    for i, phase in enumerate(("consume_age", "answer", "send_offsets", "commit"), start=1):
        out[f"server_{phase}"] = [t[i] for t in answered]
    return out


VARIANTS: dict[str, dict[str, Any]] = {
    # A transaction for every batch consumed (the release before a refill's request too).
    "txn_per_batch": {"defer_untold": False},
    # Settlements and releases ride with the next request's transaction.
    "deferred_releases": {"defer_untold": True},
    # ...and Nagle off on the server's and the client's sockets (librdkafka leaves it on).
    "deferred_no_nagle": {"defer_untold": True, "kafka_options": {"socket.nagle.disable": True}},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.lease_refill", description=__doc__)
    parser.add_argument("--refills", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    started = datetime.now(UTC)
    box = machine(("spendstream", "confluent-kafka"))
    tmp = tempfile.TemporaryDirectory(prefix="bench-refill-")
    work = Path(tmp.name)
    bootstrap, broker = bench_broker(work)
    report: dict[str, Any] = {"machine": box, "started": started.isoformat()}
    try:
        raw: dict[str, dict[str, list[float]]] = {v: {} for v in VARIANTS}
        for _ in range(args.rounds):  # alternated, so both see the same machine
            for variant, options in VARIANTS.items():
                got = served_refills(bootstrap, work, args.refills, **options)
                for key, samples in got.items():
                    raw[variant].setdefault(key, []).extend(samples)
        for variant, samples_of in raw.items():
            report[variant] = {
                key: (summary(v, "ms") if key != "server_transactions" else sum(v))
                for key, v in samples_of.items()
            }
        report["bare_transaction_commit"] = bare_transactions(
            bootstrap, f"bench{uuid.uuid4().hex[:6]}.bare"
        )
    finally:
        if broker is not None:
            broker.stop()
        tmp.cleanup()
    report["load_average_end"] = os.getloadavg()
    parts = []
    for variant in VARIANTS:
        r = report[variant]
        parts.append(
            f"{variant}: refill p50 {r['refill']['p50_ms']} p99 {r['refill']['p99_ms']} ms "
            f"(server: newest request age at transaction start p50 {r['server_consume_age']['p50_ms']} p99 "
            f"{r['server_consume_age']['p99_ms']}, send_offsets p50 "
            f"{r['server_send_offsets']['p50_ms']} p99 {r['server_send_offsets']['p99_ms']}, "
            f"commit p50 {r['server_commit']['p50_ms']} p99 {r['server_commit']['p99_ms']} ms; "
            f"{r['server_transactions']:.0f} transactions)"
        )
    bare = report["bare_transaction_commit"]
    line = (
        f"- {NAME} ({started.isoformat(timespec='seconds')}, {box['cpu_model'].split()[0]}, "
        f"{box['cores']} cores, load avg {box['load_average'][0]:.1f}, {args.rounds} rounds "
        f"x {args.refills} sequential refills per variant, alternated): "
        + "; ".join(parts)
        + f"; bare one-record transaction p50 {bare['p50_ms']} p99 {bare['p99_ms']} ms"
    )
    record(NAME, report, line)
    print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
