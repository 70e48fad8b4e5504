"""Every rate the pricer will use for one (provider, model, time, tier, region): ``prices show``.

Pure: a ``RateCard`` in, rows and notes out. One row per billable dimension and price
band, with the list rate (the catalog's or the override's), what is charged for a
standard call (premium and negotiated discount applied) and for a batch call (the batch
price or discount too), and the unit. Dimensions without a rate of their own show the
rate they fall back to, marked so.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from spendstream.stream.ratecard import RateCard
from spendstream.stream.rates import UNITS, Band, PricePeriod

__all__ = ["RATE_COLUMNS", "RateSheet", "rate_sheet"]

RATE_COLUMNS = [
    "dimension",
    "applies_when",
    "unit",
    "list_rate_usd",
    "rate_usd",
    "batch_rate_usd",
    "note",
]


@dataclass(frozen=True, slots=True)
class RateSheet:
    rows: list[tuple[object, ...]]
    source: str
    batch_source: str
    data_source: str
    data_as_of: datetime | None
    newest_price_change: date | None


def _bounds(period: PricePeriod) -> list[str]:
    t = period.thresholds
    if not t:
        return ["always"]
    out = [f"input_tokens <= {t[0]}"]
    out += [f"{a} < input_tokens <= {b}" for a, b in itertools.pairwise(t)]
    out.append(f"input_tokens > {t[-1]}")
    return out


def _fallback_note(band: Band, unit: str) -> str:
    if unit in band.own or unit in ("input", "output"):
        return ""
    return "no own rate: billed as the tokens it is part of"


def rate_sheet(
    card: RateCard,
    provider: str,
    model: str,
    at: datetime,
    *,
    service_tier: str | None = None,
    region: str | None = None,
) -> RateSheet | None:
    """The rates for (provider, model) at ``at``, or None when nothing prices it."""
    standard = card.period(provider, model, at, False, service_tier, region)
    batch = card.period(provider, model, at, True, service_tier, region)
    if standard is None or batch is None:
        return None
    rows: list[tuple[object, ...]] = []
    # A catalog's own batch prices may differ in bands; rows follow the standard bands
    # and read the batch band for the same input size.
    for i, (when, band) in enumerate(zip(_bounds(standard), standard.bands, strict=True)):
        probe = 0 if i == 0 else standard.thresholds[i - 1] + 1
        bband = batch.bands[batch.band_index(probe)]
        rates, brates = band.rates, bband.rates
        for unit, rate, brate in zip(UNITS, rates, brates, strict=True):
            rows.append(
                (
                    f"{unit}_tokens",
                    when,
                    "USD / 1M tokens",
                    rate,
                    _norm(rate * standard.multiplier),
                    _norm(brate * batch.multiplier),
                    _fallback_note(band, unit),
                )
            )
        if band.request_fee_usd or bband.request_fee_usd:
            rows.append(
                (
                    "request",
                    when,
                    "USD / request",
                    band.request_fee_usd,
                    _norm(band.request_fee_usd * standard.multiplier),
                    _norm(bband.request_fee_usd * batch.multiplier),
                    "",
                )
            )
        for tool in sorted(set(band.tool_per_k) | set(bband.tool_per_k)):
            list_rate = band.tool_per_k.get(tool, Decimal(0))
            rows.append(
                (
                    f"tool:{tool}",
                    when,
                    "USD / 1K requests",
                    list_rate,
                    _norm(list_rate * standard.multiplier),
                    _norm(bband.tool_per_k.get(tool, Decimal(0)) * batch.multiplier),
                    "",
                )
            )
    return RateSheet(
        rows,
        standard.source,
        batch.source,
        card.data_source,
        card.data_as_of,
        _newest_change(card, at),
    )


def _norm(value: Decimal) -> Decimal:
    # 3.000 -> 3, without scientific notation for whole numbers.
    out = value.normalize()
    return out.quantize(Decimal(1)) if out == out.to_integral() else out


def _newest_change(card: RateCard, at: datetime) -> date | None:
    """The newest dated price change of the data up to ``at``: how current the data is."""
    newest: date | None = None
    day = at.date()
    for p in card.snapshot.providers:
        for m in p.models:
            constraints = [] if not isinstance(m.prices, list) else [c.constraint for c in m.prices]
            constraints += [v.constraint for v in m.price_variants or ()]
            for c in constraints:
                start = getattr(c, "start_date", None)
                if start is not None and start <= day and (newest is None or start > newest):
                    newest = start
    return newest
