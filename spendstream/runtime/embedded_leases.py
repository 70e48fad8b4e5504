"""The lease service the embedded runtime hosts, fed with the spend it lands.

``EmbeddedLeases`` keeps a ``LocalLeaseService`` on the configured hard budgets (those with
``hard_limit``, as ``spendstream leases serve`` picks them) for clients in the same process
(``LeaseClient(runner.leases.service, ...)`` or ``runner.leases.client()``). After each
landed batch the runner calls ``land(facts)`` with the batch's facts table: every priced
fact on a hard-budget scope is ``Spend`` for the ledger, leased or not, so spend that did
not reserve shrinks what is granted next.

The ledger lives in memory. When the runner starts, the spend the warehouse already holds
for the hard budgets' current periods (and what may still land late in the previous ones)
is landed first, as unleased: the leases of an earlier process ended with it, and what
they spent is in the warehouse.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from spendstream.config import Config, WarehouseConfig
from spendstream.scopes import scope_fields
from spendstream.stream.leases import (
    LeaseLedger,
    LeasePolicy,
    LocalLeaseService,
    Spend,
    landed_spends,
)
from spendstream.stream.windows import period_bounds

if TYPE_CHECKING:
    from spendstream.producers.leases import LeaseClient

__all__ = ["EmbeddedLeases"]

# The ledger skips a batch whose position it has applied: one source, counted up per batch.
SOURCE = "embedded"


def _utcnow() -> datetime:
    return datetime.now(UTC)


class EmbeddedLeases:
    """A ``LocalLeaseService`` for ``config``'s hard budgets, fed with landed spend."""

    def __init__(self, config: Config, clock: Callable[[], datetime] | None = None) -> None:
        clock = clock or _utcnow
        self.config = config
        self.policy = LeasePolicy.from_config(config)
        self.service = LocalLeaseService(LeaseLedger(config.budget, self.policy), clock)
        self._clock = clock
        self._position = 0

    @property
    def scopes(self) -> frozenset[str]:
        """The scopes with a hard budget."""
        return self.service.ledger.scopes

    def client(self, **kwargs: Any) -> LeaseClient:
        """A ``LeaseClient`` on this service with the ``[leases]`` client settings."""
        from spendstream.producers.leases import LeaseClient

        return LeaseClient.from_config(self.service, self.config, **kwargs)

    def land(self, facts: pa.Table) -> int:
        """One landed batch: its priced facts on hard-budget scopes; returns spends applied.

        ``facts`` is the batch's facts table (``table_schemas.FACTS``), or at least its
        ``priced``, ``cost_usd``, ``ts`` and ``lease_id`` columns and the hard budgets'
        scope fields.
        """
        spends = landed_spends(facts, self.scopes)
        return self._land(spends)

    def _land(self, spends: list[Spend]) -> int:
        self._position += 1
        return self.service.land(SOURCE, self._position, spends) if spends else 0

    def seed(self, workdir: Path, warehouse: WarehouseConfig | None = None) -> int:
        """Land what the warehouse holds for the hard budgets' periods the ledger still keeps."""
        caps = [cap for scope in self.scopes for cap in self.service.ledger.caps(scope)]
        if not caps:
            return 0
        from spendstream.warehouse.reading import connect

        now = self._clock()
        # A period's account takes late landings for retain_s after it ends (LeasePolicy).
        oldest = now - timedelta(seconds=max(self.policy.retain_s, self.policy.grace_s))
        since = min(period_bounds(oldest, cap.period)[0] for cap in caps)
        spends: list[Spend] = []
        con = connect(workdir, warehouse)
        try:
            for scope in sorted(self.scopes):
                fields = scope_fields(scope)
                where = "".join(f" AND {column} = ?" for column in fields)
                rows = con.execute(
                    "SELECT date_trunc('hour', ts), sum(cost_usd) FROM usage_facts "
                    f"WHERE ts >= ? AND cost_usd IS NOT NULL{where} GROUP BY 1",
                    [since, *fields.values()],
                ).fetchall()
                for hour, usd in rows:
                    hour = hour.replace(tzinfo=UTC) if hour.tzinfo is None else hour
                    spends.append(Spend(scope, hour.astimezone(UTC), Decimal(usd)))
        finally:
            con.close()
        return self._land(spends)
