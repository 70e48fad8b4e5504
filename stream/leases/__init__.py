"""Budget leases: hard caps that hold under concurrency (docs/budget-leases.md).

``LeaseLedger`` (pure) grants leases from a hard budget's remaining amount;
``LocalLeaseService`` serves it in process; the Kafka server lives in
``spendstream.kafka_leases`` / ``spendstream.runtime.lease_server``.
"""

from __future__ import annotations

from spendstream.stream.leases.lease import Lease, Spend
from spendstream.stream.leases.ledger import LEASE_ID_CHARS, LeaseLedger, Standing
from spendstream.stream.leases.policy import HardCap, LeasePolicy, grant_size, hard_caps
from spendstream.stream.leases.service import LocalLeaseService
from spendstream.stream.leases.spends import landed_spends, on_scope

__all__ = [
    "LEASE_ID_CHARS",
    "HardCap",
    "Lease",
    "LeaseLedger",
    "LeasePolicy",
    "LocalLeaseService",
    "Spend",
    "Standing",
    "grant_size",
    "hard_caps",
    "landed_spends",
    "on_scope",
]
