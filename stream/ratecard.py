"""Rates in force for (provider, model) at an event time: genai-prices, then config overrides.

The genai-prices bundled snapshot (offline) is the default catalog. Its per-call API
(``calc_price``) re-resolves the model and price period on every call; here a model is
matched once per (provider, model) and a price period once per UTC day (or, for the few
time-of-day priced models, per combination of active constraints), then cached.

Resolution mirrors ``calc_price`` for the token usage spendstream meters: the bands are
the catalog's long-context tiers (a tier applies to every token of a request whose
*total* input, cache included, exceeds its start), cache read/write tokens fall back to
the input rate when the period has no cache price (genai-prices bills them as input),
and a per-request price (``requests_kcount``) is a flat fee per event. A period with
neither an input nor an output token price does not price tokens: such a model counts
as unpriced rather than silently free.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from genai_prices import data_snapshot
from genai_prices import types as gp

from spendstream.config import DiscountConfig, ModelPriceConfig, PricesConfig

__all__ = [
    "BATCH_PROVIDERS",
    "DEFAULT_BATCH_DISCOUNT",
    "Band",
    "PricePeriod",
    "RateCard",
    "format_fraction",
]

# Providers with a batch API and (today) 50% off list price for it. Used only when neither
# an override's batch_discount nor the catalog's own batch prices say otherwise.
BATCH_PROVIDERS = frozenset({"anthropic", "openai", "google"})
DEFAULT_BATCH_DISCOUNT = Decimal("0.5")
_BATCH_CONTEXT: Mapping[str, str] = {"processing": "batch"}
_ZERO = Decimal(0)
_KILO = Decimal(1000)
_MAX_MODELS = 50_000


@dataclass(slots=True, frozen=True)
class Band:
    """One rate set, USD per million tokens, plus a flat per-request fee in USD."""

    input_per_mtok: Decimal
    cache_read_per_mtok: Decimal
    cache_write_per_mtok: Decimal
    output_per_mtok: Decimal
    request_fee_usd: Decimal = _ZERO


@dataclass(slots=True, frozen=True)
class PricePeriod:
    """The rates for one (provider, model, price period, batch flag), resolved once.

    ``bands[i]`` applies when exactly ``i`` of ``thresholds`` are below the event's
    total input tokens. ``multiplier`` is the product of the discount factors (batch,
    then negotiated) still to apply; ``source`` names what priced it.
    """

    thresholds: tuple[int, ...]
    bands: tuple[Band, ...]
    multiplier: Decimal
    source: str
    tier_labels: tuple[str, ...] = ()

    def band_index(self, input_tokens: int) -> int:
        return bisect_left(self.thresholds, input_tokens) if self.thresholds else 0


def format_fraction(fraction: Decimal) -> str:
    """0.2 -> '20%', 0.125 -> '12.5%'."""
    pct = (fraction * 100).normalize()
    text = f"{pct:f}"
    return f"{text}%"


def _model_key(provider: str, model: str) -> tuple[str, str]:
    return provider.strip().lower(), model.strip().lower()


class _ListedModel:
    """A matched genai-prices model with its period cache."""

    __slots__ = (
        "breakpoints",
        "by_activity",
        "constraints",
        "model",
        "periods",
        "provider",
        "time_of_day",
    )

    def __init__(self, provider: gp.Provider, model: gp.ModelInfo) -> None:
        self.provider = provider
        self.model = model
        constraints: list[Any] = []
        if not isinstance(model.prices, gp.ModelPrice):
            constraints.extend(c.constraint for c in model.prices if c.constraint is not None)
        constraints.extend(
            v.constraint for v in model.price_variants or () if v.constraint is not None
        )
        self.constraints = tuple(constraints)
        # Only time-of-day prices (off-peak hours) vary within a UTC day.
        self.time_of_day = any(isinstance(c, gp.TimeOfDateConstraint) for c in constraints)
        # Otherwise only start dates matter: the days between two of them share one price.
        self.breakpoints = sorted(
            {c.start_date for c in constraints if isinstance(c, gp.StartDateConstraint)}
        )
        # period_key -> PricePeriod, and the same PricePeriods by which constraints are active: a
        # price period spans many days, and one PricePeriod per span keeps batches in few groups.
        self.periods: dict[Any, PricePeriod | None] = {}
        self.by_activity: dict[tuple[tuple[bool, ...], bool], PricePeriod | None] = {}

    def activity(self, ts: datetime, batch: bool) -> tuple[tuple[bool, ...], bool]:
        return (tuple(c.active(ts) for c in self.constraints), batch)

    def period_key(self, ts: datetime, batch: bool) -> Any:
        if self.time_of_day:
            return self.activity(ts, batch)
        day = ts.date() if ts.tzinfo is UTC else ts.astimezone(UTC).date()
        return (bisect_right(self.breakpoints, day), batch)


class RateCard:
    """Finds and caches the rates in force for events; overrides and discounts on top."""

    def __init__(
        self,
        prices: PricesConfig | None = None,
        snapshot: data_snapshot.DataSnapshot | None = None,
    ) -> None:
        prices = prices or PricesConfig()
        self.snapshot = snapshot or data_snapshot.get_snapshot()
        self.overrides: dict[tuple[str, str], ModelPriceConfig] = {
            _model_key(o.provider, o.model): o for o in prices.model
        }
        self.discounts = list(prices.discount)
        self._models: dict[tuple[str, str], _ListedModel | ModelPriceConfig | None] = {}
        self._override_periods: dict[tuple[str, str, bool], PricePeriod] = {}

    # -- lookup ---------------------------------------------------------------------------

    def entry(self, provider: str, model: str) -> _ListedModel | ModelPriceConfig | None:
        """What prices (provider, model): an override, a catalog model, or None (unpriced)."""
        key = (provider, model)
        try:
            return self._models[key]
        except KeyError:
            pass
        found: _ListedModel | ModelPriceConfig | None = self.overrides.get(
            _model_key(provider, model)
        )
        if found is None:
            try:
                p, m = self.snapshot.find_provider_model(model, None, provider, None)
            except LookupError:
                found = None
            else:
                found = _ListedModel(p, m)
        if len(self._models) >= _MAX_MODELS:
            # Producers choose model names: a flood of distinct ones must not grow memory.
            self._models.clear()
        self._models[key] = found
        return found

    def period(
        self,
        provider: str,
        model: str,
        ts: datetime,
        batch: bool,
    ) -> PricePeriod | None:
        """The rates for an event, or None when nothing prices it."""
        entry = self.entry(provider, model)
        if entry is None:
            return None
        if isinstance(entry, ModelPriceConfig):
            return self._override_period(provider, model, entry, batch)
        key = entry.period_key(ts, batch)
        try:
            return entry.periods[key]
        except KeyError:
            pass
        # get_prices (and so the PricePeriod) depends only on which constraints are active.
        activity = entry.activity(ts, batch)
        try:
            found = entry.by_activity[activity]
        except KeyError:
            found = self._catalog_period(provider, model, entry, ts, batch)
            entry.by_activity[activity] = found
        entry.periods[key] = found
        return found

    def day_boundaries(self, provider: str, model: str) -> tuple[int, ...] | None:
        """Minutes of the UTC day at which (provider, model)'s rates may change.

        ``()``: only at midnight (start dates); ``(30, 990)``: also at 00:30 and 16:30
        (off-peak prices); None: at instants finer than a minute (never seen in practice).
        """
        entry = self.entry(provider, model)
        if not isinstance(entry, _ListedModel) or not entry.time_of_day:
            return ()
        minutes = set()
        for c in entry.constraints:
            if isinstance(c, gp.TimeOfDateConstraint):
                for t in (c.start_time, c.end_time):
                    if t.tzinfo is not None:
                        t = datetime.combine(date(1970, 1, 1), t).astimezone(UTC).time()
                    if t.second or t.microsecond:
                        return None
                    minutes.add(t.hour * 60 + t.minute)
        return tuple(sorted(minutes))

    def describe(self, provider: str, model: str) -> str | None:
        """A short name of what prices (provider, model), or None when nothing does."""
        entry = self.entry(provider, model)
        if entry is None:
            return None
        if isinstance(entry, ModelPriceConfig):
            return f"override:{entry.provider}/{entry.model}"
        return f"genai-prices:{entry.provider.id}/{entry.model.id}"

    def why_unpriced(self, provider: str, model: str, ts: datetime) -> str | None:
        """Why an event of (provider, model) at ``ts`` has no price, for people; None if priced."""
        if self.period(provider, model, ts, False) is not None:
            return None
        entry = self.entry(provider, model)
        if isinstance(entry, _ListedModel):
            return (
                f"genai-prices has {entry.provider.id}/{entry.model.id} but no token price "
                f"for it at {ts:%Y-%m-%d}"
            )
        try:
            self.snapshot.find_provider(None, provider, None)
        except LookupError:
            return f"provider {provider!r} is not in genai-prices and no [[prices.model]] entry"
        return f"genai-prices knows no {provider} model matching {model!r}"

    # -- discounts ------------------------------------------------------------------------

    def discount_for(self, provider: str, model: str) -> DiscountConfig | None:
        """The most specific matching discount: provider+model > model > provider > global.

        Among equally specific rows the last one written wins (later config lines refine).
        """
        prov, mod = _model_key(provider, model)
        best: DiscountConfig | None = None
        best_rank = -1
        for d in self.discounts:
            if d.provider is not None and d.provider.strip().lower() != prov:
                continue
            if d.model is not None and d.model.strip().lower() != mod:
                continue
            rank = (2 if d.model is not None else 0) + (1 if d.provider is not None else 0)
            if rank >= best_rank:
                best, best_rank = d, rank
        return best

    def _finish(
        self,
        provider: str,
        model: str,
        base_source: str,
        batch_fraction: Decimal | None,
        batch_label: str,
        thresholds: tuple[int, ...],
        bands: tuple[Band, ...],
    ) -> PricePeriod:
        multiplier = Decimal(1)
        source = base_source
        if batch_fraction is not None and batch_fraction != 0:
            multiplier *= 1 - batch_fraction
            source += f"+batch:{format_fraction(batch_fraction)}"
        elif batch_label:
            source += batch_label
        disc = self.discount_for(provider, model)
        if disc is not None and disc.percent != 0:
            multiplier *= 1 - disc.percent / 100
            source += f"+discount:{format_fraction(disc.percent / 100)}"
        labels = tuple(f"+tier>{t}" for t in thresholds)
        return PricePeriod(thresholds, bands, multiplier, source, labels)

    def _override_period(
        self, provider: str, model: str, o: ModelPriceConfig, batch: bool
    ) -> PricePeriod:
        key = (provider, model, batch)
        cached = self._override_periods.get(key)
        if cached is not None:
            return cached
        band = Band(
            input_per_mtok=o.input_per_mtok,
            cache_read_per_mtok=(
                o.input_per_mtok if o.cache_read_per_mtok is None else o.cache_read_per_mtok
            ),
            cache_write_per_mtok=(
                o.input_per_mtok if o.cache_write_per_mtok is None else o.cache_write_per_mtok
            ),
            output_per_mtok=o.output_per_mtok,
        )
        fraction: Decimal | None = None
        if batch:
            if o.batch_discount is not None:
                fraction = o.batch_discount
            elif _model_key(provider, model)[0] in BATCH_PROVIDERS:
                fraction = DEFAULT_BATCH_DISCOUNT
        period = self._finish(
            provider, model, f"override:{o.provider}/{o.model}", fraction, "", (), (band,)
        )
        self._override_periods[key] = period
        return period

    def _catalog_period(
        self, provider: str, model: str, entry: _ListedModel, ts: datetime, batch: bool
    ) -> PricePeriod | None:
        info = entry.model
        standard = info.get_prices(ts)
        price = standard
        batch_label = ""
        fraction: Decimal | None = None
        if batch:
            # calc_price applies variants only to the provider's own models, not fallbacks.
            own = any(info is m for m in entry.provider.models)
            with_batch = info.get_prices(ts, _BATCH_CONTEXT) if own else standard
            if with_batch != standard:
                price, batch_label = with_batch, "+batch"
            elif entry.provider.id in BATCH_PROVIDERS:
                fraction = DEFAULT_BATCH_DISCOUNT
        bands = _bands(price)
        if bands is None:
            return None
        thresholds, rate_bands = bands
        source = f"genai-prices:{entry.provider.id}/{info.id}{_period_label(info, ts)}"
        return self._finish(provider, model, source, fraction, batch_label, thresholds, rate_bands)


def _period_label(info: gp.ModelInfo, ts: datetime) -> str:
    # Mirrors ModelInfo.get_prices: the last active conditional price wins, else the first.
    if isinstance(info.prices, gp.ModelPrice):
        return ""
    chosen = info.prices[0]
    for cp in reversed(info.prices):
        if cp.constraint is None or cp.constraint.active(ts):
            chosen = cp
            break
    c = chosen.constraint
    if isinstance(c, gp.StartDateConstraint):
        return f"@{c.start_date.isoformat()}"
    if isinstance(c, gp.TimeOfDateConstraint):
        return f"@{c.start_time:%H:%M}-{c.end_time:%H:%M}"
    return ""


def _rate_at(value: Any, band_start: int) -> Decimal | None:
    """The rate of a (maybe tiered) price for requests whose total input exceeds band_start."""
    if value is None:
        return None
    if isinstance(value, gp.TieredPrices):
        rate: Decimal = value.base
        for tier in value.tiers:
            if band_start >= tier.start + 1:
                rate = tier.price
        return rate
    assert isinstance(value, Decimal)
    return value


def _bands(price: gp.ModelPrice) -> tuple[tuple[int, ...], tuple[Band, ...]] | None:
    attrs = price.__dict__
    inp = attrs.get("input_mtok")
    out = attrs.get("output_mtok")
    if inp is None and out is None:
        return None
    read = attrs.get("cache_read_mtok")
    write = attrs.get("cache_write_mtok")
    requests = attrs.get("requests_kcount")
    thresholds = sorted(
        {
            t.start
            for v in (inp, out, read, write)
            if isinstance(v, gp.TieredPrices)
            for t in v.tiers
        }
    )
    # Band i covers totals above thresholds[i-1]; a tier applies when total > its start.
    starts = [0, *(t + 1 for t in thresholds)]
    bands = []
    for start in starts:
        i = _rate_at(inp, start) or _ZERO
        bands.append(
            Band(
                input_per_mtok=i,
                cache_read_per_mtok=i if read is None else _rate_at(read, start) or _ZERO,
                cache_write_per_mtok=i if write is None else _rate_at(write, start) or _ZERO,
                output_per_mtok=_rate_at(out, start) or _ZERO,
                request_fee_usd=_ZERO if requests is None else requests / _KILO,
            )
        )
    return tuple(thresholds), tuple(bands)
