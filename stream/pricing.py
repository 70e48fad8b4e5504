"""Exact, columnar pricing of usage events (docs/ARCHITECTURE.md, "Pricing").

For each event, with the rates in force at its ``ts`` for its (provider, model, batch,
service tier, region) -- ``stream.ratecard`` -- and its tokens split so that each is
billed once at its most specific rate (``stream.rates.leaf_counts``)::

    uncached_text = input - cache_read - cache_write
                    - (input_audio - cache_audio_read) - (input_image - cache_image_read)
    input_cost_usd       = uncached_text x input + (input_audio - cache_audio_read) x input_audio
                         + (input_image - cache_image_read) x input_image + request fee
    cache_read_cost_usd  = (cache_read - cache_audio_read - cache_image_read) x cache_read
                         + cache_audio_read x cache_audio_read + cache_image_read x cache_image_read
    cache_write_cost_usd = (cache_write - cache_write_1h) x cache_write
                         + cache_write_1h x cache_write_1h
    output_cost_usd      = (output - output_audio - output_image) x output
                         + output_audio x output_audio + output_image x output_image
    tool_cost_usd        = sum over tools of requests x (USD per thousand) / 1000

With the new dimensions at 0 this is the contract's formula. A rate the price list does
not have falls back to the rate of the tokens it is part of (``stream.rates.FALLBACK``).
Premiums, the batch discount and the negotiated discount multiply each component, as
exact multiplications. Each component is then rounded once, half-even, to
``COST_SCALE`` (18) fractional digits -- a no-op unless a rate has more than 12
fractional digits per million tokens or a factor needs more digits -- and ``cost_usd``
is the exact sum of the five rounded components, so the columns always add up.

``Pricer.price_table`` prices an Arrow table of events: rates are resolved once per
(provider, model, batch, service tier, region, UTC day) group -- per span between
switching minutes for time-of-day prices, and between the instants dated ``[[prices.*]]``
rows start and stop -- each band becomes integer numerators at
1e-18 USD per token, and the products run as numpy int64 where a float estimate proves
they cannot overflow (2**62), else as exact Python ints (big token counts, rates with
many digits, server-tool rows). Results are written straight into decimal128(38, 18)
buffers.

``price_source`` is ``<entry>[+tier>N][+service_tier:T][+premium:P%[@D]][+batch|+batch:P%]
[+discount:P%[@D]][+unpriced_tool:NAME,...]`` where ``<entry>`` is
``genai-prices:<provider id>/<model id>[@<period start>]`` (``@YYYY-MM-DD`` for a dated
catalog price, ``@HH:MM-HH:MM`` UTC for a time-of-day price) or
``override:<provider>/<model>[tier=T,region=R][@D]`` for a ``[[prices.model]]`` entry;
``@D`` is a dated row's ``effective_from..effective_until`` (``@2026-03-01``,
``@2026-03-01..2026-04-01``, ``@..2026-04-01``);
``+tier>N`` says a long-context tier for requests above N input tokens applied;
``+service_tier:flex`` that the catalog's prices for that service tier applied;
``+premium:10%`` a ``[[prices.premium]]`` row; ``+batch`` says the catalog's own batch
prices applied, ``+batch:50%`` a batch discount taken off list price (the override's
``batch_discount``, else the 50% default for anthropic, openai and google);
``+discount:20%`` a ``[[prices.discount]]`` row; ``+unpriced_tool:x`` names server
tools the event used that nothing prices (billed 0). E.g.
``genai-prices:anthropic/claude-sonnet-4-5+batch:50%+discount:20%``.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Context, Decimal, localcontext
from fractions import Fraction
from math import lcm
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from genai_prices import data_snapshot

from spendstream.config import PricesConfig
from spendstream.log_filters import OncePer
from spendstream.money import MAX_CALL_COST_USD
from spendstream.producers.event import TOKEN_FIELDS
from spendstream.records import COST_SCALE, Cost
from spendstream.sorting import stable_order
from spendstream.stream.pricing_columns import (
    COMPONENTS,
    PRICE_COLUMNS,
    ToolColumn,
    codes,
    column,
    costs_from_table,
    group,
    money,
    pricing_table,
)
from spendstream.stream.ratecard import RateCard
from spendstream.stream.rates import COMPONENT_OF, UNITS, Band, PricePeriod, leaf_counts

if TYPE_CHECKING:
    from spendstream.pricedata import PriceData
    from spendstream.producers.event import UsageEvent

__all__ = ["COMPONENTS", "PRICE_COLUMNS", "Pricer", "costs_from_table", "pricing_table"]

_UNITS_PER_USD = 10**COST_SCALE
_UNITS_PER_MTOK_RATE = Fraction(_UNITS_PER_USD, 1_000_000)
_UNIT_COMPONENT = tuple(COMPONENTS.index(COMPONENT_OF[u]) for u in UNITS)
_log = logging.getLogger(__name__)
_SAFE = float(2**62)  # int64 arithmetic below this bound cannot overflow
# No call costs $1e9 (spendstream.money): a cost of this many units or more is a wrong rate.
_UNITS_BEYOND = int(MAX_CALL_COST_USD) * _UNITS_PER_USD
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US_PER_DAY = 86_400_000_000
_US_PER_MINUTE = 60_000_000
_MEMO_MAX = 200_000
_TOKEN_COLUMNS = TOKEN_FIELDS


class _Plan(NamedTuple):
    """A band's rates as integer numerators over ``den``, in 1e-18 USD per token/request."""

    units: tuple[int, ...]  # one per UNITS entry
    fee: int
    tools: Mapping[str, int]
    den: int
    source: str


def _plan(band: Band, multiplier: Decimal, source: str) -> _Plan:
    m = Fraction(multiplier)
    rates = [Fraction(r) * _UNITS_PER_MTOK_RATE * m for r in band.rates]
    fee = Fraction(band.request_fee_usd) * _UNITS_PER_USD * m
    tools = {t: Fraction(r) * _UNITS_PER_USD / 1000 * m for t, r in band.tool_per_k.items()}
    den = lcm(*(f.denominator for f in (*rates, fee, *tools.values())))
    return _Plan(
        tuple(int(f * den) for f in rates),
        int(fee * den),
        {t: int(f * den) for t, f in tools.items()},
        den,
        source,
    )


def _round(numerator: int, den: int) -> int:
    """numerator / den rounded half-even to an integer (den > 0)."""
    q, r = divmod(numerator, den)
    twice = 2 * r
    if twice > den or (twice == den and q & 1):
        q += 1
    return q


def _with_tier(source: str, label: str) -> str:
    if not label:
        return source
    # The tier belongs to the catalog entry, before any other suffix.
    head, plus, rest = source.partition("+")
    return f"{head}{label}{plus}{rest}"


class _Priced(NamedTuple):
    units: np.ndarray  # (components + total, rows) in 1e-18 USD, int64
    big: list[dict[int, int]]  # exact values of the rows int64 could not hold
    priced: np.ndarray
    source_names: list[str]
    source_of: np.ndarray  # index into source_names per row


_CTX = Context(prec=80)
_UNIT = Decimal(1).scaleb(-COST_SCALE, _CTX)
_ZERO = Decimal(0).scaleb(-COST_SCALE, _CTX)
# A frozen dataclass's __init__ goes through object.__setattr__ once per field; setting the
# slots directly builds the same Cost in about half the time.
_new = object.__new__
_SETTERS = tuple(
    Cost.__dict__[name].__set__
    for name in (
        "input_cost_usd",
        "cache_read_cost_usd",
        "cache_write_cost_usd",
        "output_cost_usd",
        "tool_cost_usd",
        "cost_usd",
    )
)
_set_source = Cost.__dict__["price_source"].__set__


_S0, _S1, _S2, _S3, _S4, _S5 = _SETTERS


def _cost(units: list[int], source: str) -> Cost:
    """A Cost from (components..., total) in 1e-18 USD; call under ``_CTX``."""
    cost = _new(Cost)
    unit, zero = _UNIT, _ZERO
    a, b, c, d, t, total = units
    _S0(cost, unit * a if a else zero)
    _S1(cost, unit * b if b else zero)
    _S2(cost, unit * c if c else zero)
    _S3(cost, unit * d if d else zero)
    _S4(cost, unit * t if t else zero)
    _S5(cost, unit * total)
    _set_source(cost, source)
    return cost


class _Row:
    """One row's token counts, for the exact per-row path."""

    __slots__ = _TOKEN_COLUMNS

    def __init__(self, values: Sequence[int]) -> None:
        for name, v in zip(_TOKEN_COLUMNS, values, strict=True):
            setattr(self, name, v)


def _exact_units(plan: _Plan, row: _Row, tools: Mapping[str, int] | None) -> tuple[list[int], str]:
    """Each component in 1e-18 USD, exact (Python ints), and the row's price source."""
    parts = [0, 0, 0, 0, 0]
    for comp, n, num in zip(_UNIT_COMPONENT, leaf_counts(row), plan.units, strict=True):
        parts[comp] += n * num
    parts[0] += plan.fee
    source = plan.source
    if tools:
        unpriced = sorted(t for t, n in tools.items() if n and t not in plan.tools)
        parts[4] = sum(n * plan.tools.get(t, 0) for t, n in tools.items())
        if unpriced:
            source += "+unpriced_tool:" + ",".join(unpriced)
    if plan.den != 1:
        parts = [_round(p, plan.den) for p in parts]
    return parts, source


class Pricer:
    """Prices tables (and lists) of events; holds the rate card and the per-period plans."""

    def __init__(self, catalog: RateCard) -> None:
        self.catalog = catalog
        self._plans: dict[int, tuple[PricePeriod, list[_Plan]]] = {}
        self._beyond_said = OncePer(3600.0)

    @classmethod
    def from_config(
        cls,
        prices: PricesConfig | None = None,
        *,
        snapshot: data_snapshot.DataSnapshot | None = None,
        data: PriceData | None = None,
    ) -> Pricer:
        """A pricer over the configuration and genai-prices data: ``data`` (a file fetched by
        ``spendstream prices update``), else ``snapshot``, else the bundled snapshot."""
        if data is not None:
            card = RateCard(prices, data.snapshot, data_source=data.source, data_as_of=data.as_of)
        else:
            card = RateCard(prices, snapshot)
        return cls(card)

    def source_of(self, provider: str, model: str) -> str | None:
        """What prices (provider, model) at all, or None when it is unpriced."""
        return self.catalog.describe(provider, model)

    def resolve(
        self,
        provider: str,
        model: str,
        ts: datetime,
        batch: bool,
        service_tier: str | None = None,
        region: str | None = None,
    ) -> tuple[tuple[int, ...], list[_Plan]] | None:
        """The tier thresholds and one integer plan per band for an event, or None."""
        period = self.catalog.period(provider, model, ts, batch, service_tier, region)
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

    # -- one event, lists of events -------------------------------------------------------

    def price(self, event: UsageEvent, *, at: datetime | None = None) -> Cost | None:
        """One event's Cost (None: nothing prices its model); for commands and tests."""
        return self.price_batch([event], at=at)[0]

    def price_batch(
        self, events: Sequence[UsageEvent], *, at: datetime | None = None
    ) -> list[Cost | None]:
        """One Cost per event, in order (None where nothing prices the event's model).

        The columnar ``price_table`` does the work; this adapter serves callers that hold
        ``UsageEvent`` objects (what-if, repricing, the per-event runtimes until they
        move to Arrow batches).
        """
        if not events:
            return []
        units, big, priced, names, source_of = self._compute(pricing_table(events), at)
        # Straight from the integer units to Decimals: decimal128 -> Decimal conversion
        # costs several times the pricing itself.
        paused = gc.isenabled()
        if paused:  # the Costs hold no cycles; collections during their allocation only rescan
            gc.disable()
        try:
            out: list[Cost | None] = []
            append = out.append
            rows = units.T.tolist()
            ok = priced.tolist()
            src = source_of.tolist()
            with localcontext(_CTX):
                for i, row in enumerate(rows):
                    if not ok[i]:
                        append(None)
                        continue
                    if i in big[-1]:
                        row = [b[i] for b in big]
                    append(_cost(row, names[src[i]]))
            return out
        finally:
            if paused:
                gc.enable()

    # -- tables ---------------------------------------------------------------------------

    def price_table(self, events: pa.Table, *, at: datetime | None = None) -> pa.Table:
        """``events`` with the cost columns (``PRICE_COLUMNS``) appended or replaced.

        ``events`` has the usage event's columns (``table_schemas.EVENT_FIELDS``); the
        billable dimensions beyond the contract's may be absent (0/null). Costs are
        decimal128(38, 18), null where ``priced`` is false. ``at`` prices every event with
        the rates in force at that instant instead of at its own ``ts``.
        """
        units, big, priced, names, source_of = self._compute(events, at)
        indices = pa.array(source_of, mask=~priced, type=pa.int64())
        sources = pc.take(pa.array(names, pa.string()), indices)
        arrays: dict[str, pa.Array] = {
            f"{c}_cost_usd": money(units[i], big[i], priced) for i, c in enumerate(COMPONENTS)
        }
        arrays["cost_usd"] = money(units[len(COMPONENTS)], big[len(COMPONENTS)], priced)
        arrays["priced"] = pa.array(priced, type=pa.bool_())
        arrays["price_source"] = sources
        out = events
        for name in PRICE_COLUMNS:
            if name in out.column_names:
                out = out.drop_columns([name])
        for name in PRICE_COLUMNS:
            out = out.append_column(name, arrays[name])
        return out

    def _note_beyond(self, source: str, units: int) -> None:
        if self._beyond_said.due(source):
            cost = Decimal(units).scaleb(-COST_SCALE, _CTX)
            _log.warning(
                "a call priced by %s would cost %.6E USD, at or past the 1e9 USD no single "
                "call costs (sums of such costs would overflow the warehouse's DECIMAL(38,18)): "
                "it lands unpriced (priced = false, null costs). The rate is wrong: correct it "
                "([[prices.model]], or `spendstream prices update`), then "
                "`spendstream prices reprice`",
                source,
                cost,
            )

    def _compute(self, events: pa.Table, at: datetime | None) -> _Priced:
        n = events.num_rows
        plan_of, plans = self._assign(events, n, at)
        tokens = np.stack([column(events, c, n) for c in _TOKEN_COLUMNS])
        priced = plan_of >= 0
        return self._arithmetic(events, tokens, plan_of, plans, priced)

    def _assign(
        self, events: pa.Table, n: int, at: datetime | None
    ) -> tuple[np.ndarray, list[_Plan]]:
        """Each row's plan index (-1: unpriced), resolving rates once per group and period."""
        plans: list[_Plan] = []
        plan_of = np.full(n, -1, dtype=np.int64)
        if n == 0:
            return plan_of, plans
        if at is not None:
            at = at.astimezone(UTC) if at.tzinfo is not None else at.replace(tzinfo=UTC)
            micros = np.full(n, (at - _EPOCH) // timedelta(microseconds=1), dtype=np.int64)
        else:
            ts = events.column("ts").cast(pa.timestamp("us", tz="UTC"))
            micros = np.asarray(ts.cast(pa.int64()).to_numpy(), dtype=np.int64)
        days = micros // _US_PER_DAY
        keys = [codes(events, c, n) for c in ("provider", "model", "service_tier", "region")]
        batch = (
            np.asarray(pc.fill_null(events.column("batch"), False).to_numpy(), dtype=np.int64)
            if "batch" in events.column_names
            else np.zeros(n, dtype=np.int64)
        )
        parts = [keys[0][0], keys[1][0], batch, keys[2][0], keys[3][0]]
        inverse, firsts = group(parts)
        order = stable_order(inverse)
        ends = np.cumsum(np.bincount(inverse, minlength=len(firsts)))
        inputs = column(events, "input_tokens", n)
        names = [k[1] for k in keys]
        start = 0
        for g, first in enumerate(firsts.tolist()):
            rows = order[start : ends[g]]
            start = int(ends[g])
            provider = names[0][parts[0][first]]
            model = names[1][parts[1][first]]
            tier = names[2][parts[3][first]] if parts[3][first] >= 0 else None
            region = names[3][parts[4][first]] if parts[4][first] >= 0 else None
            is_batch = bool(parts[2][first])
            for span_rows, when in self._spans(provider, model, rows, days, micros, at):
                found = self.resolve(provider, model, when, is_batch, tier, region)
                if found is None:
                    continue
                thresholds, band_plans = found
                base = len(plans)
                plans.extend(band_plans)
                if thresholds:
                    band = np.searchsorted(np.asarray(thresholds), inputs[span_rows], side="left")
                    plan_of[span_rows] = base + band
                else:
                    plan_of[span_rows] = base
        return plan_of, plans

    def _spans(
        self,
        provider: str,
        model: str,
        rows: np.ndarray,
        days: np.ndarray,
        micros: np.ndarray,
        at: datetime | None,
    ) -> list[tuple[np.ndarray, datetime]]:
        """The group's rows split where its rates may change, each with an instant inside."""
        if at is not None:
            return [(rows, at)]
        card = self.catalog
        bounds = card.day_boundaries(provider, model)
        if bounds is None:  # rates may change at any instant: resolve per row
            return [
                (rows[i : i + 1], _EPOCH + timedelta(microseconds=int(micros[r])))
                for i, r in enumerate(rows)
            ]
        breaks = card.day_breaks(provider, model)
        row_days = days[rows]
        span = (
            np.searchsorted(np.asarray(breaks), row_days, side="right")
            if breaks
            else np.zeros(len(rows), dtype=np.int64)
        )
        minutes: tuple[int, ...] = (0,)
        at_bound = np.zeros(len(rows), dtype=np.int64)
        if bounds:
            minutes = (0, *bounds)
            minute = (micros[rows] % _US_PER_DAY) // _US_PER_MINUTE
            at_bound = np.searchsorted(np.asarray(bounds), minute, side="right")
            span = span * len(minutes) + at_bound
        # Dated [[prices.*]] rows start and stop at instants of their own.
        instants = card.instant_breaks()
        past = np.zeros(len(rows), dtype=np.int64)
        if instants:
            past = np.searchsorted(np.asarray(instants, dtype=np.int64), micros[rows], side="right")
            span = span * (len(instants) + 1) + past
        if len(rows) == 0 or span.min() == span.max():
            pieces = [(rows, 0)]
        else:
            order = stable_order(span)
            cuts = np.flatnonzero(np.diff(span[order])) + 1
            pieces = [(rows[p], int(p[0])) for p in np.split(order, cuts)]
        out = []
        for piece, first in pieces:
            at_minute = minutes[int(at_bound[first])]
            day = int(row_days[first])
            when = _EPOCH + timedelta(days=day, minutes=at_minute)
            if instants:
                # The span's rows are all past the same dated rows' instants: the latest of
                # them, when later than the day's start, is an instant inside the span too.
                passed = int(past[first])
                if passed:
                    when = max(when, _EPOCH + timedelta(microseconds=instants[passed - 1]))
            out.append((piece, when))
        return out

    def _arithmetic(
        self,
        events: pa.Table,
        tokens: np.ndarray,
        plan_of: np.ndarray,
        plans: list[_Plan],
        priced: np.ndarray,
    ) -> _Priced:
        """Unscaled components and total (int64 rows; exact ints for ``big`` rows), sources."""
        n = len(plan_of)
        k = len(COMPONENTS) + 1
        units = np.zeros((k, n), dtype=np.int64)
        big: list[dict[int, int]] = [{} for _ in range(k)]
        source_names = [p.source for p in plans]
        source_of = plan_of.copy()
        if not plans:
            return _Priced(units, big, priced, source_names, source_of)
        nums = np.array([p.units for p in plans], dtype=object)
        dens = [p.den for p in plans]
        # A plan whose numerators or denominator do not fit int64 always takes the exact path.
        small = np.array([max((*p.units, p.fee, p.den)) < 2**62 for p in plans], dtype=bool)
        nums64 = np.where(small[:, None], nums, 0).astype(np.int64)
        fees64 = np.array([p.fee if s else 0 for p, s in zip(plans, small, strict=True)])
        dens64 = np.array([d if s else 1 for d, s in zip(dens, small, strict=True)])
        idx = np.where(priced, plan_of, 0)
        leaves = np.stack(leaf_counts(_Columns(tokens)))  # (units, n)
        if (leaves[:, priced] < 0).any():
            raise ValueError(
                "events break the token invariants (a part exceeds its whole): validate "
                "them first (producers.event.token_parts_error)"
            )
        row_nums = nums64[idx].T  # (units, n)
        estimate = (leaves.astype(np.float64) * row_nums.astype(np.float64)).sum(axis=0)
        estimate += fees64[idx].astype(np.float64)
        fast = priced & small[idx]
        tools = ToolColumn.of(events)
        tool_num = np.zeros(n, dtype=np.int64)
        if tools is not None:
            # Each (row, tool) entry: count x the row's plan's numerator for that tool; a
            # tool the plan does not price sends the row to the exact path, which names it.
            table = np.full((len(plans), len(tools.names)), -1, dtype=np.int64)
            for i, p in enumerate(plans):
                for j, name in enumerate(tools.names):
                    rate = p.tools.get(name)
                    if rate is not None and small[i] and rate < 2**62:
                        table[i, j] = rate
            entry_num = table[idx[tools.rows], tools.codes]
            unpriced_tool = (entry_num < 0) & (tools.counts > 0)
            fast[tools.rows[unpriced_tool]] = False
            entry_num = np.maximum(entry_num, 0)
            est = np.zeros(n, dtype=np.float64)
            np.add.at(est, tools.rows, tools.counts.astype(np.float64) * entry_num)
            estimate += est
            fast &= estimate < _SAFE
            np.add.at(tool_num, tools.rows, np.where(fast[tools.rows], tools.counts * entry_num, 0))
        else:
            fast &= estimate < _SAFE
        den = dens64[idx]
        for c in range(len(COMPONENTS)):
            if c == len(COMPONENTS) - 1:
                num = tool_num
            else:
                mask = np.array([comp == c for comp in _UNIT_COMPONENT])
                num = (leaves[mask] * row_nums[mask]).sum(axis=0)
                if c == 0:
                    num += fees64[idx]
            num = np.where(fast, num, 0)
            q, r = np.divmod(num, den)
            twice = 2 * r
            q += (twice > den) | ((twice == den) & (q & 1 == 1))
            units[c] = q
        units[k - 1] = units[: k - 1].sum(axis=0)
        slow = np.nonzero(priced & ~fast)[0]
        if len(slow):
            tool_maps = tools.maps(slow) if tools is not None else {}
            extra: dict[str, int] = {}
            token_rows = tokens[:, slow].T.tolist()
            for i, values in zip(slow.tolist(), token_rows, strict=True):
                plan = plans[plan_of[i]]
                parts, source = _exact_units(plan, _Row(values), tool_maps.get(i))
                total = sum(parts)
                if total >= _UNITS_BEYOND:
                    # Only an absurd rate gets here (bounded events cost at most ~$1.2M at
                    # catalog rates); money that does not fit must not stop the pipeline.
                    priced[i] = False
                    self._note_beyond(plan.source, total)
                    continue
                for c, v in enumerate(parts):
                    big[c][i] = v
                big[k - 1][i] = total
                if source != plan.source:
                    if source not in extra:
                        extra[source] = len(source_names)
                        source_names.append(source)
                    source_of[i] = extra[source]
        return _Priced(units, big, priced, source_names, source_of)


class _Columns:
    """Token columns as attributes, so ``leaf_counts`` runs on numpy arrays too."""

    def __init__(self, tokens: np.ndarray) -> None:
        for name, col in zip(_TOKEN_COLUMNS, tokens, strict=True):
            setattr(self, name, col)
