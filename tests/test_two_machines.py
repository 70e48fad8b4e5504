"""Two machines: two ``spendstream run`` workers with separate workdirs and no shared local
files, one Kafka, one PostgreSQL catalog, one S3 bucket (issue 13's "done when").

The worker holding scope partition 0 is killed with SIGKILL mid-stream, after the scope
owners landed their state in the catalog, and replaced by a worker on a fresh, empty workdir:
everything its partitions need (each usage partition's engine state and position, each scope
owner's state, the dedupe of every landed event_id) comes from the catalog and the bucket. The
tables then equal an embedded ``spendstream ingest`` of the same events into a default local
workdir: facts by event_id with every cost exact, dead letters, alerts by identity and the
breaker transitions each scope went through (with four usage partitions, alert ts/value may
depend on the order in which keys meet: see tests/test_equivalence.py).

Pricing is the same everywhere because no workdir holds a fetched price data file
(``spendstream prices update``): every pricer, in each worker and in ``ingest``, uses the
snapshot bundled with the installed genai-prices, and the rate card comes from the one
config. The test checks that no workdir has such a file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spendstream.config import WarehouseConfig
from spendstream.pricedata import price_data_paths
from tests.runtime.kafka_workers import (
    ALERT_IDENTITY_SQL,
    BAD_LINES,
    DEAD_SQL,
    FACT_SQL,
    Worker,
    event_file,
    fact_count,
    ingest,
    kcat_produce,
    query,
    scope_state,
    wait_all_judged,
    wait_for,
    write_config,
)
from tests.service_fixtures import cluster_toml

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

PARTITIONS = 4
SCOPE_STATES = "SELECT DISTINCT scope, state FROM breaker_events ORDER BY ALL"


def _files(workdir: Path) -> list[str]:
    return sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*") if p.is_file())


def test_two_machines_one_killed_mid_stream_equal_embedded_ingest(
    kafka_bootstrap: str, cluster_config: WarehouseConfig, tmp_path: Path
) -> None:
    # The same settings twice: the cluster's ([warehouse] on PostgreSQL + S3) and the
    # reference's (no [warehouse]: the embedded default under its workdir).
    reference_config, prefix = write_config(
        tmp_path / "reference.toml", kafka_bootstrap, partitions=PARTITIONS, batch_size=200
    )
    config, _ = write_config(
        tmp_path / "cluster.toml",
        kafka_bootstrap,
        partitions=PARTITIONS,
        batch_size=200,
        prefix=prefix,
        extra=cluster_toml(cluster_config),
    )
    path, lines = event_file(tmp_path, 3000, seed=13)
    embedded = tmp_path / "embedded"
    ingest(path, reference_config, embedded)
    expected = query(embedded, FACT_SQL)
    assert len(expected) == len(lines) - len(BAD_LINES) - 1  # one line is a re-sent event

    reader = tmp_path / "reader"  # a third machine, reading the cluster's tables
    machines = {name: tmp_path / f"machine-{name}" for name in ("a", "b", "c")}
    usage = prefix + "spendstream.usage"
    workers = {n: Worker(machines[n], config, tmp_path, name=n).start() for n in ("a", "b")}
    try:
        partials = prefix + "spendstream.partials"

        def split() -> bool:
            # Both groups: the scope loop's rebalances on its own, after the usage loop's
            # (its partition 0 was held by no one for a moment in a CI run).
            for topic in (usage, partials):
                held = [
                    {a for a in w.assigned() if a.startswith(topic + "/")} for w in workers.values()
                ]
                if not (all(held) and not held[0] & held[1]):
                    return False
                if len(held[0] | held[1]) != PARTITIONS:
                    return False
            return True

        wait_for(split, "the two workers never split the partitions", *workers.values())
        # The victim: the worker holding scope partition 0 (the global scope's owner with
        # the default partition count is whichever holds owner_of("global")).
        victim = next(n for n, w in workers.items() if f"{partials}/0" in w.assigned())
        survivor = "b" if victim == "a" else "a"

        half = len(lines) // 2
        kcat_produce(kafka_bootstrap, usage, lines[:half], keyed=True)
        # Killed once scope owners landed their state in the catalog: a successor must take
        # it from there, not start over.
        wait_for(
            lambda: any(s[1].get("merged") for s in scope_state(reader, cluster_config).values()),
            "no scope owner landed its state in the cluster",
            *workers.values(),
        )
        assert fact_count(reader, cluster_config) < len(expected)
        # Mid-stream: the first half is being landed and judged, the second not yet sent.
        workers[victim].kill9()
        kcat_produce(kafka_bootstrap, usage, lines[half:], keyed=True)
        # The replacement machine starts from nothing on disk.
        workers["c"] = Worker(machines["c"], config, tmp_path, name="c").start()
        live = (workers[survivor], workers["c"])
        wait_all_judged(
            reader, kafka_bootstrap, prefix, len(expected), *live, config=cluster_config
        )
        metrics = [w.get_text("/metrics") for w in live]
    finally:
        for w in workers.values():
            w.stop()

    def landed(text: str) -> float:
        rows = [r for r in text.splitlines() if r.startswith("spendstream_facts_landed_total")]
        return float(rows[0].split()[-1]) if rows else 0.0

    assert all(landed(m) > 0 for m in metrics), "both live machines land part of the facts"

    facts = query(reader, FACT_SQL, cluster_config)
    assert len(facts) == len({f[0] for f in facts})  # no event_id twice
    assert facts == expected  # every cost column exact (DECIMAL(38,18) both sides)
    alerts = query(reader, ALERT_IDENTITY_SQL, cluster_config)
    assert alerts, "the workload is meant to raise alerts"
    assert alerts == query(embedded, ALERT_IDENTITY_SQL)
    assert query(reader, SCOPE_STATES, cluster_config) == query(embedded, SCOPE_STATES)
    dead = query(reader, DEAD_SQL, cluster_config)
    assert len(dead) == len(BAD_LINES)
    assert json.dumps(dead, default=str) == json.dumps(query(embedded, DEAD_SQL), default=str)

    # No machine keeps a file: the catalog is in PostgreSQL,
    # the data on S3; nor a price data file, so every pricer used the bundled snapshot.
    for workdir in (*machines.values(), reader):
        assert _files(workdir) == [], workdir
    assert not price_data_paths(embedded)[0].exists()
    # The embedded reference did keep its warehouse locally.
    assert any(f.startswith("warehouse/") for f in _files(embedded))
