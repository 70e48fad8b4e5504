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

Speed: rates are looked up once per (provider, model, batch flag, UTC day) in a batch
(the catalog caches periods across batches), each price period's bands are turned once
into integer numerators at 1e-18 USD per token, and each event then costs four integer
products -- exact at any token count, since Python ints do not overflow. A numpy int64
variant over groups of events sharing a price was measured slower (bench/pricing.py):
moving tokens into arrays and results out costs more than the products themselves.

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

import gc
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Context, Decimal, localcontext
from fractions import Fraction
from math import lcm
from typing import Any, NamedTuple

from genai_prices import data_snapshot

from spendstream.config import PricesConfig
from spendstream.producers.event import UsageEvent
from spendstream.records import COST_SCALE, Cost
from spendstream.stream.ratecard import Band, PricePeriod, RateCard

__all__ = ["Pricer", "cost_from_units"]

# Token counts go up to int64 and rates carry up to 18 digits: 28 digits are not enough.
_CTX = Context(prec=80)
_UNITS_PER_USD = 10**COST_SCALE
_UNITS_PER_MTOK_RATE = Fraction(_UNITS_PER_USD, 1_000_000)
_UNIT = Decimal(1).scaleb(-COST_SCALE, _CTX)
_ZERO = Decimal(0).scaleb(-COST_SCALE, _CTX)


class _Plan(NamedTuple):
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


# A frozen dataclass's __init__ goes through object.__setattr__ once per field; setting the
# slots directly builds the same Cost in about half the time, which matters per event.
_new = object.__new__
_set_input, _set_read, _set_write, _set_output, _set_total, _set_source = (
    Cost.__dict__[name].__set__
    for name in (
        "input_cost_usd",
        "cache_read_cost_usd",
        "cache_write_cost_usd",
        "output_cost_usd",
        "cost_usd",
        "price_source",
    )
)


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


_Resolved = tuple[tuple[int, ...], list[_Plan]]
_MISSING: Any = object()


class _Within(NamedTuple):
    """Memo entry for a day whose rates change at these minutes (None: at any instant)."""

    bounds: tuple[int, ...] | None


_MEMO_MAX = 200_000


class Pricer:
    """Prices batches of events; holds the catalog and the per-period integer plans."""

    def __init__(self, catalog: RateCard) -> None:
        self.catalog = catalog
        self._plans: dict[int, tuple[PricePeriod, list[_Plan]]] = {}
        self._memo: dict[Any, Any] = {}

    @classmethod
    def from_config(
        cls,
        prices: PricesConfig | None = None,
        *,
        snapshot: data_snapshot.DataSnapshot | None = None,
    ) -> Pricer:
        """A pricer over the genai-prices snapshot (default: the bundled one) and the config."""
        return cls(RateCard(prices, snapshot))

    def source_of(self, provider: str, model: str) -> str | None:
        """What prices (provider, model) at all, or None when it is unpriced."""
        return self.catalog.describe(provider, model)

    def price(self, event: UsageEvent, *, at: datetime | None = None) -> Cost | None:
        return self.price_batch([event], at=at)[0]

    def resolve(self, provider: str, model: str, ts: datetime, batch: bool) -> _Resolved | None:
        """The tier thresholds and one integer plan per band for an event, or None."""
        period = self.catalog.period(provider, model, ts, batch)
        if period is None:
            return None
        held = self._plans.get(id(period))
        # Keyed by id; holding the period keeps the id from being reused while cached.
        if held is None or held[0] is not period:
            if len(self._plans) >= _MEMO_MAX:
                self._plans.clear()
            labels = ("", *period.tier_labels)
            plans = [
                _plan(b, period.multiplier, _with_tier(period.source, label))
                for b, label in zip(period.bands, labels, strict=True)
            ]
            self._plans[id(period)] = held = (period, plans)
        return period.thresholds, held[1]

    def price_batch(
        self, events: Sequence[UsageEvent], *, at: datetime | None = None
    ) -> list[Cost | None]:
        """One Cost per event, in order; None where nothing prices the event's model.

        ``at`` prices every event with the rates in force at that instant instead of at
        its own ``ts`` (repricing at current prices).
        """
        out: list[Cost | None] = []
        # The collector is paused while the
        # batch's Costs are built: they hold no cycles, and collections triggered by their
        # allocation only re-scan the live heap (measured ~20% of the batch's time).
        paused = gc.isenabled()
        if paused:
            gc.disable()
        try:
            self._price_into(events, at, out)
        finally:
            if paused:
                gc.enable()
        return out

    def _price_into(
        self, events: Sequence[UsageEvent], at: datetime | None, out: list[Cost | None]
    ) -> None:
        append = out.append
        # (provider, model, batch, UTC day) -> rates, kept across batches: a stream repeats
        # few of these, so the catalog is asked once per key and each event then costs a
        # dict lookup and four integer products. Time-of-day prices also key by the span
        # of the day between their switching minutes.
        memo = self._memo
        if len(memo) > _MEMO_MAX:
            memo.clear()
        resolve = self.resolve
        boundaries = self.catalog.day_boundaries
        unit, zero = _UNIT, _ZERO
        if at is not None:
            at = at.astimezone(UTC) if at.tzinfo is not None else at.replace(tzinfo=UTC)
        # unit * int under an 80-digit context: exact, and the cheapest scale-18 Decimal
        # found (no intermediate Decimal(int) object).
        with localcontext(_CTX):
            for e in events:
                ts = at or e.ts
                if ts.tzinfo is not UTC:  # validated events are UTC already; others not
                    ts = ts.astimezone(UTC)
                key = (e.provider, e.model, e.batch, ts.date())
                found = memo.get(key, _MISSING)
                if found is _MISSING:
                    bounds = boundaries(e.provider, e.model)
                    if bounds == ():
                        found = memo[key] = resolve(e.provider, e.model, ts, e.batch)
                    else:
                        memo[key] = found = _Within(bounds)
                if type(found) is _Within:
                    if found.bounds is None:
                        found = resolve(e.provider, e.model, ts, e.batch)
                    else:
                        mkey = (key, bisect_right(found.bounds, ts.hour * 60 + ts.minute))
                        found = memo.get(mkey, _MISSING)
                        if found is _MISSING:
                            found = memo[mkey] = resolve(e.provider, e.model, ts, e.batch)
                if found is None:
                    append(None)
                    continue
                thresholds, plans = found
                ni, nr, nw, no, fee, den, source = (
                    plans[bisect_left(thresholds, e.input_tokens)] if thresholds else plans[0]
                )
                r = e.cache_read_tokens
                w = e.cache_write_tokens
                a = (e.input_tokens - r - w) * ni + fee
                b = r * nr
                c = w * nw
                d = e.output_tokens * no
                if den != 1:
                    a, b, c, d = _round(a, den), _round(b, den), _round(c, den), _round(d, den)
                cost = _new(Cost)
                _set_input(cost, unit * a if a else zero)
                _set_read(cost, unit * b if b else zero)
                _set_write(cost, unit * c if c else zero)
                _set_output(cost, unit * d if d else zero)
                _set_total(cost, unit * (a + b + c + d))
                _set_source(cost, source)
                append(cost)


def _with_tier(source: str, label: str) -> str:
    if not label:
        return source
    # The tier belongs to the catalog entry, before any batch/discount suffix.
    head, plus, rest = source.partition("+")
    return f"{head}{label}{plus}{rest}"
