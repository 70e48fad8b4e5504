"""Landed spend from a batch of priced facts: what the lease ledger's ``land`` takes.

Every runtime that lands facts feeds its ledger the same way (the embedded runner after its
warehouse commit, the Kafka lease server from the ``spendstream.facts`` topic), so the rule
lives here once: a priced fact on a hard budget's scope is spend on it, leased or not.
"""

from __future__ import annotations

from collections.abc import Iterable

import pyarrow as pa
import pyarrow.compute as pc

from spendstream.scopes import scope_fields
from spendstream.stream.leases.lease import Spend
from spendstream.table_schemas import WIDE_MONEY

__all__ = ["landed_spends", "on_scope"]


def landed_spends(facts: pa.Table, scopes: Iterable[str]) -> list[Spend]:
    """The ``Spend`` of ``facts`` on each of ``scopes``.

    ``facts`` needs the ``priced``, ``cost_usd``, ``ts`` and ``lease_id`` columns and the
    scopes' fields (``table_schemas.FACTS`` has them). A fact under a lease is one ``Spend``
    of its own: the ledger tells a call that ended after its lease by its ``ts``. Unleased
    facts are summed exactly (decimal) per hour, which lies within every budget period.
    """
    if not facts.num_rows:
        return []
    priced = facts.filter(pc.fill_null(facts.column("priced"), False))
    spends: list[Spend] = []
    for scope in sorted(set(scopes)):
        rows = on_scope(priced, scope)
        if not rows.num_rows:
            continue
        lease = rows.column("lease_id")
        leased = pc.fill_null(pc.not_equal(lease, ""), False)  # null or "": unleased
        held = rows.filter(leased)
        spends.extend(
            Spend.of(scope, ts, usd, lease_id)
            for ts, usd, lease_id in zip(
                held.column("ts").to_pylist(),
                held.column("cost_usd").to_pylist(),
                held.column("lease_id").to_pylist(),
                strict=True,
            )
        )
        free = rows.filter(pc.invert(leased))
        if not free.num_rows:
            continue
        hourly = (
            pa.table(
                {
                    "hour": pc.floor_temporal(free.column("ts"), unit="hour"),
                    "usd": free.column("cost_usd").cast(WIDE_MONEY),
                }
            )
            .group_by("hour", use_threads=False)
            .aggregate([("usd", "sum")])
        )
        spends.extend(
            Spend(scope, hour, usd)
            for hour, usd in zip(
                hourly.column("hour").to_pylist(), hourly.column("usd_sum").to_pylist(), strict=True
            )
            if usd is not None
        )
    return spends


def on_scope(facts: pa.Table, scope: str) -> pa.Table:
    """The rows of ``facts`` on ``scope`` (``global``: all of them)."""
    mask: pa.ChunkedArray | None = None
    for column, value in scope_fields(scope).items():
        match = pc.fill_null(pc.equal(facts.column(column), value), False)
        mask = match if mask is None else pc.and_(mask, match)
    return facts if mask is None else facts.filter(mask)
