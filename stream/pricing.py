"""Exact, batch pricing of usage events (shared/CONTRACT.md section 2).

For each event, with the rates in force at its ``ts`` (``stream.catalog``)::

    uncached = input_tokens - cache_read_tokens - cache_write_tokens
    input_cost_usd       = uncached           x input rate   (+ any flat per-request fee)
    cache_read_cost_usd  = cache_read_tokens  x cache read rate
    cache_write_cost_usd = cache_write_tokens x cache write rate
    output_cost_usd      = output_tokens      x output rate

Discounts are applied to each component, batch first, then the negotiated one, as
exact multiplications. Each component is then rounded once, half-even, to
``COST_SCALE`` (18) fractional digits -- a no-op unless a rate has more than 12
fractional digits per million tokens or a discount needs more digits -- and
``cost_usd`` is the exact sum of the four rounded components, so the columns always
add up. Components carry exponent -18, as the warehouse stores them.

Speed: events are grouped by price period and tier band, each group's rates are turned
once into integer numerators at 1e-18 USD per token, and each event costs four integer
multiplications: exact at any token count (Python ints do not overflow).

``price_source`` is ``<entry>[+tier>N][+batch|+batch:P%][+discount:P%]`` where
``<entry>`` is ``genai-prices:<provider id>/<model id>[@<period start>]`` (``@YYYY-MM-DD``
for a dated catalog price, ``@HH:MM-HH:MM`` UTC for a time-of-day price) or
``override:<provider>/<model>`` for a ``[[prices.model]]`` entry; ``+tier>N`` says a
long-context tier for requests above N input tokens applied; ``+batch`` says the catalog's
own batch prices applied, ``+batch:50%`` a batch discount taken off list price (the
override's ``batch_discount``, else the 50% default for anthropic, openai and google);
``+discount:20%`` a ``[[prices.discount]]`` row. E.g.
``genai-prices:anthropic/claude-sonnet-4-5+batch:50%+discount:20%``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Context, Decimal
from fractions import Fraction
from math import lcm

from genai_prices import data_snapshot

from spendstream.config import PricesConfig
from spendstream.producers.event import UsageEvent
from spendstream.stream.catalog import Band, Catalog, Period
from spendstream.stream.records import COST_SCALE, Cost

__all__ = ["Pricer", "cost_from_units"]

# Token counts go up to int64 and rates carry up to 18 digits: 28 digits are not enough.
_CTX = Context(prec=80)
_UNITS_PER_USD = 10**COST_SCALE
_UNITS_PER_MTOK_RATE = Fraction(_UNITS_PER_USD, 1_000_000)
_UNIT = Decimal(1).scaleb(-COST_SCALE, _CTX)
_ZERO = Decimal(0).scaleb(-COST_SCALE, _CTX)


@dataclass(slots=True, frozen=True)
class _Plan:
    """A band's rates as integer numerators over ``den``, in 1e-18 USD per token."""

    input: int
    cache_read: int
    cache_write: int
    output: int
    fee: int
    den: int
    source: str


def _plan(band: Band, multiplier: Decimal, source: str) -> _Plan:
    m = Fraction(multiplier)
    rates = [
        Fraction(r) * _UNITS_PER_MTOK_RATE * m
        for r in (
            band.input_per_mtok,
            band.cache_read_per_mtok,
            band.cache_write_per_mtok,
            band.output_per_mtok,
        )
    ]
    fee = Fraction(band.request_fee_usd) * _UNITS_PER_USD * m
    den = lcm(*(f.denominator for f in (*rates, fee)))
    nums = [int(f * den) for f in (*rates, fee)]
    return _Plan(nums[0], nums[1], nums[2], nums[3], nums[4], den, source)


def _round(numerator: int, den: int) -> int:
    """numerator / den rounded half-even to an integer (den > 0)."""
    q, r = divmod(numerator, den)
    twice = 2 * r
    if twice > den or (twice == den and q & 1):
        q += 1
    return q


def _usd(units: int) -> Decimal:
    return _ZERO if units == 0 else _CTX.multiply(Decimal(units), _UNIT)


def cost_from_units(
    input_units: int, read_units: int, write_units: int, output_units: int, source: str
) -> Cost:
    """A Cost from component amounts in 1e-18 USD; the total is their exact sum."""
    return Cost(
        _usd(input_units),
        _usd(read_units),
        _usd(write_units),
        _usd(output_units),
        _usd(input_units + read_units + write_units + output_units),
        source,
    )


class Pricer:
    """Prices batches of events; holds the catalog and the per-period integer plans."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._plans: dict[int, tuple[Period, list[_Plan]]] = {}

    @classmethod
    def from_config(
        cls,
        prices: PricesConfig | None = None,
        *,
        snapshot: data_snapshot.DataSnapshot | None = None,
    ) -> Pricer:
        """A pricer over the genai-prices snapshot (default: the bundled one) and the config."""
        return cls(Catalog(prices, snapshot))

    def source_of(self, provider: str, model: str) -> str | None:
        """What prices (provider, model) at all, or None when it is unpriced."""
        return self.catalog.describe(provider, model)

    def price(self, event: UsageEvent, *, at: datetime | None = None) -> Cost | None:
        return self.price_batch([event], at=at)[0]

    def price_batch(
        self, events: Sequence[UsageEvent], *, at: datetime | None = None
    ) -> list[Cost | None]:
        """One Cost per event, in order; None where nothing prices the event's model.

        ``at`` prices every event with the rates in force at that instant instead of at
        its own ``ts`` (repricing at current prices).
        """
        out: list[Cost | None] = [None] * len(events)
        period_of = self.catalog.period
        groups: dict[tuple[int, int], tuple[Period, list[int]]] = {}
        for i, e in enumerate(events):
            period = period_of(e.provider, e.model, at or e.ts, e.batch)
            if period is None:
                continue
            band = period.band_index(e.input_tokens) if period.thresholds else 0
            gkey = (id(period), band)
            group = groups.get(gkey)
            if group is None:
                groups[gkey] = (period, [i])
            else:
                group[1].append(i)
        for (_, band), (period, idxs) in groups.items():
            self._price_group(events, idxs, self._plans_for(period)[band], out)
        return out

    def _plans_for(self, period: Period) -> list[_Plan]:
        # Periods live as long as the catalog caches them, so their id is a stable key.
        held = self._plans.get(id(period))
        if held is None or held[0] is not period:
            labels = ("", *period.tier_labels)
            plans = [
                _plan(b, period.multiplier, _with_tier(period.source, label))
                for b, label in zip(period.bands, labels, strict=True)
            ]
            self._plans[id(period)] = held = (period, plans)
        return held[1]

    @staticmethod
    def _price_group(
        events: Sequence[UsageEvent], idxs: list[int], plan: _Plan, out: list[Cost | None]
    ) -> None:
        ni, nr, nw, no, fee, den, source = (
            plan.input,
            plan.cache_read,
            plan.cache_write,
            plan.output,
            plan.fee,
            plan.den,
            plan.source,
        )
        # Hot loop: Decimal(units) x 1E-18 in an 80-digit context is exact and the cheapest
        # way found to make a scale-18 Decimal (see bench/pricing.py).
        dec, mul, unit, zero = Decimal, _CTX.multiply, _UNIT, _ZERO
        exact = den == 1
        for i in idxs:
            e = events[i]
            r = e.cache_read_tokens
            w = e.cache_write_tokens
            a = (e.input_tokens - r - w) * ni + fee
            b = r * nr
            c = w * nw
            d = e.output_tokens * no
            if not exact:
                a, b, c, d = _round(a, den), _round(b, den), _round(c, den), _round(d, den)
            out[i] = Cost(
                mul(dec(a), unit) if a else zero,
                mul(dec(b), unit) if b else zero,
                mul(dec(c), unit) if c else zero,
                mul(dec(d), unit) if d else zero,
                mul(dec(a + b + c + d), unit),
                source,
            )


def _with_tier(source: str, label: str) -> str:
    if not label:
        return source
    # The tier belongs to the catalog entry, before any batch/discount suffix.
    head, plus, rest = source.partition("+")
    return f"{head}{label}{plus}{rest}"
