"""Prometheus metrics of the Faust runtime: the worker's registry
(``spendstream.runtime.http.metrics``, bounded labels and all), fed with ``Fact`` objects,
as the Faust stages hold them. Leaves with Faust."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from spendstream.records import Fact
from spendstream.runtime.http.metrics import OTHER, LabelBudget, LagSource
from spendstream.runtime.http.metrics import WorkerMetrics as _WorkerMetrics

__all__ = ["OTHER", "LabelBudget", "LagSource", "WorkerMetrics"]


class WorkerMetrics(_WorkerMetrics):
    def observe_facts(self, facts: Iterable[Fact]) -> None:  # type: ignore[override]
        by_team: dict[str, Decimal] = {}
        n = 0
        for f in facts:
            n += 1
            if f.cost is not None:
                team = f.event.team or ""
                by_team[team] = by_team.get(team, Decimal(0)) + f.cost.cost_usd
        self.facts.inc(n)
        for team, usd in by_team.items():
            self.spend.labels(self.team_label(team)).inc(float(usd))
