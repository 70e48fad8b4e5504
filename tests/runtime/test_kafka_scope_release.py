"""A scope owner lands merged state alone at most every ``COMMIT_QUIET_S``; when its
partition leaves it (a graceful stop, a revoke) it lands what it merged since, so the next
owner does not merge those partials again.

The worker runs in this process (its loops are threads), so the test can see when every
owner has read and merged all its partials before stopping it."""

from __future__ import annotations

from pathlib import Path

import pytest

from spendstream.config import load_config
from spendstream.kafka.settings import KafkaSettings
from spendstream.runtime.kafka.topology import ensure_topics
from spendstream.runtime.kafka.worker import Worker
from tests.kafka_fixtures import end_offsets
from tests.runtime.kafka_workers import (
    all_judged,
    event_lines,
    kcat_produce,
    wait_for,
    write_config,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def test_a_stopped_worker_lands_what_its_scope_owners_merged(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    path, prefix = write_config(tmp_path / "c.toml", kafka_bootstrap, partitions=2, batch_size=100)
    config = load_config(path)
    settings = KafkaSettings.from_config(config.kafka)
    counts = ensure_topics(settings, config.kafka)
    usage, partials = prefix + "spendstream.usage", prefix + "spendstream.partials"
    wd = tmp_path / "wd"
    worker = Worker(config, wd, settings, counts, http=None).start()
    try:
        kcat_produce(kafka_bootstrap, usage, event_lines(600, seed=3), keyed=True)
        # Everything judged: the owners' last quiet-interval commit has just happened.
        wait_for(lambda: all_judged(wd, kafka_bootstrap, prefix), "first wave never judged")
        kcat_produce(kafka_bootstrap, usage, event_lines(300, seed=4), keyed=True)
        wait_for(
            lambda: all_judged(wd, kafka_bootstrap, prefix, loops=("usage",)),
            "second wave never landed",
        )
        scopes = worker.scopes
        assert scopes is not None

        def merged_everything() -> bool:
            ends = end_offsets(kafka_bootstrap, partials)
            owners = dict(scopes.parts)
            return set(owners) == set(ends) and all(
                owner.read >= ends[q] - 1 and not owner.held for q, owner in owners.items()
            )

        # Within the quiet interval of their last commit (typically), the owners hold the
        # second wave's merged state unlanded: only leaving lands it.
        wait_for(merged_everything, "the scope owners never merged the second wave")
        # /metrics' consumer lag covers the partials topic too: nothing left to merge.
        wait_for(
            lambda: (
                {(t, q) for t, q, n in worker.lag() if t == partials and n == 0}
                == {(partials, q) for q in end_offsets(kafka_bootstrap, partials)}
            ),
            "the partials topic's lag never reached 0",
        )
    finally:
        worker.stop()
    assert all_judged(wd, kafka_bootstrap, prefix)
