"""The revenue table users load for unit economics (``spendstream warehouse load-revenue``).

CSV columns: ``month`` (``YYYY-MM`` or a date in it), ``revenue_usd`` (a decimal), and at
most one of ``plan`` (matched to facts' ``tags['plan']``) or ``user_id``; neither means
the month's total revenue. Loading merges by (month, plan, user_id): a row replaces the
stored row with the same key. The ``revenue`` Iceberg table is replaced in one snapshot.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from spendstream.errors import ConfigError
from spendstream.money import MAX_MONEY_USD
from spendstream.table_schemas import to_money
from spendstream.warehouse.tables import REVENUE

if TYPE_CHECKING:
    from spendstream.warehouse.landing import Warehouse

__all__ = ["REVENUE", "RevenueRow", "load_revenue", "parse_revenue_csv"]


@dataclass(frozen=True, slots=True)
class RevenueRow:
    month: date
    plan: str | None
    user_id: str | None
    revenue_usd: Decimal


def _month(text: str, where: str) -> date:
    t = text.strip()
    try:
        if len(t) == 7:
            return date.fromisoformat(t + "-01")
        return date.fromisoformat(t).replace(day=1)
    except ValueError:
        raise ConfigError(f"{where}: month {text!r} is not YYYY-MM") from None


def parse_revenue_csv(path: Path) -> list[RevenueRow]:
    """Rows of a revenue CSV; every problem is a ConfigError naming the line and column."""
    try:
        fh = open(path, newline="", encoding="utf-8")  # noqa: SIM115 (closed below)
    except OSError as exc:
        raise ConfigError(f"cannot read revenue file {path}: {exc.strerror}") from None
    with fh:
        reader = csv.DictReader(fh)
        fields = set(reader.fieldnames or [])
        missing = {"month", "revenue_usd"} - fields
        if missing:
            raise ConfigError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        unknown = fields - {"month", "revenue_usd", "plan", "user_id"}
        if unknown:
            raise ConfigError(f"{path}: unknown column(s) {', '.join(sorted(unknown))}")
        rows = []
        for i, rec in enumerate(reader, start=2):
            where = f"{path}:{i}"
            try:
                amount = Decimal((rec.get("revenue_usd") or "").strip())
            except InvalidOperation:
                raise ConfigError(
                    f"{where}: revenue_usd {rec.get('revenue_usd')!r} is not a decimal"
                ) from None
            if not amount.is_finite() or amount < 0:
                raise ConfigError(f"{where}: revenue_usd must be a non-negative number")
            if amount >= MAX_MONEY_USD:
                raise ConfigError(
                    f"{where}: revenue_usd {amount} is not below 1e20 (what the warehouse's "
                    "DECIMAL(38,18) holds)"
                )
            plan = (rec.get("plan") or "").strip() or None
            user = (rec.get("user_id") or "").strip() or None
            if plan and user:
                raise ConfigError(f"{where}: give plan or user_id, not both")
            rows.append(RevenueRow(_month(rec.get("month") or "", where), plan, user, amount))
    return rows


def _stored(wh: Warehouse) -> tuple[list[RevenueRow], list]:  # type: ignore[type-arg]
    from spendstream.warehouse.maintenance import _read

    files = wh.manifests.live_files(wh.tables.load("revenue"))
    rows = _read(wh, files, "revenue").to_pylist()
    return [RevenueRow(r["month"], r["plan"], r["user_id"], r["revenue_usd"]) for r in rows], files


def load_revenue(wh: Warehouse, path: Path) -> int:
    """Merge a revenue CSV into the stored table; returns the number of rows loaded."""
    from spendstream.warehouse.maintenance import CompactionSummary, _replace

    new = parse_revenue_csv(path)
    for _ in range(10):
        stored, files = _stored(wh)
        merged = {(r.month, r.plan, r.user_id): r for r in stored}
        merged.update({(r.month, r.plan, r.user_id): r for r in new})
        rows = sorted(merged.values(), key=lambda r: (r.month, r.plan or "", r.user_id or ""))
        table = pa.table(
            {
                "month": [r.month for r in rows],
                "plan": [r.plan for r in rows],
                "user_id": [r.user_id for r in rows],
                "revenue_usd": [to_money(r.revenue_usd) for r in rows],
            },
            schema=REVENUE,
        )
        if _replace(wh, "revenue", files, table, CompactionSummary()):
            wh.publish_current(["revenue"])
            return len(new)
    raise ConfigError("the revenue table kept changing while loading; run again")
