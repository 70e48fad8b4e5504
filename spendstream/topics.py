"""The one place that knows Kafka topic names and how records are keyed."""

from __future__ import annotations

__all__ = [
    "ALERTS",
    "BREAKERS",
    "DEAD_LETTERS",
    "FACTS",
    "LEASE_LEDGER",
    "LEASE_REPLIES",
    "LEASE_REQUESTS",
    "PARTIALS",
    "USAGE",
    "USAGE_PARTITIONS",
    "partition_key",
]

# Public names (docs/kafka.md lists them): other clients depend on them, never rename.
USAGE = "spendstream.usage"
ALERTS = "spendstream.alerts"
BREAKERS = "spendstream.breakers"  # compacted, keyed by scope
DEAD_LETTERS = "spendstream.dead-letters"
# Priced facts of each usage batch as one Arrow IPC record (spendstream.facts_topic): partition
# p holds the batches of usage partition p. Read by scope owners that need a batch's rows and
# by the lease service, which counts landed spend from it.
FACTS = "spendstream.facts"
# Per-batch partial aggregates of wide scopes (stream.partials.PARTIALS as Arrow IPC), for the
# scope owners of `spendstream run`: partition q holds what scope owner q merges (scopes with
# stream.engine.owner_of(scope, partitions) == q, and every batch's clock row).
PARTIALS = "spendstream.partials"

# Budget leases (docs/budget-leases.md): requests keyed by budget scope, so every request for
# a scope reaches the one server that owns that partition; replies to the partition the
# client named; the ledger's changelog (compacted, partitioned like the requests).
LEASE_REQUESTS = "spendstream.lease-requests"
LEASE_REPLIES = "spendstream.lease-replies"
LEASE_LEDGER = "spendstream.lease-ledger"

# Default partition count when spendstream creates the usage topic itself.
USAGE_PARTITIONS = 6


def partition_key(
    api_key_id: str | None, session_id: str | None, request_id: str | None, event_id: str
) -> bytes:
    """The usage topic's record key: the api key, else the session, else the request, else
    the event id.

    Keying by credential keeps one key's calls (and, as sessions run on one key, its
    sessions) in one partition, so the per-key detectors (rate, sessions, retries, and
    anomaly/budgets on api_key and session scopes) see all of them, in order, where that
    partition is read (``stream.engine.LocalEngine``). A call with neither is keyed by its
    request, so a request's retries meet in one partition too; a re-sent event gets the same
    key, so duplicates meet in the same partition.
    """
    return (api_key_id or session_id or request_id or event_id).encode()
