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

Every billable dimension of ``stream.rates`` comes from the catalog where it has a rate
(1-hour cache writes, audio and image tokens, server-side tools); a service tier selects
the catalog's ``service_tier`` price variants, as ``calc_price``'s ``price_context``
does. ``[[prices.model]]`` entries (optionally for one service tier or region) override
the catalog; ``[[prices.premium]]`` rows add a percentage (regional endpoints);
``[[prices.discount]]`` rows take one off. A row with ``effective_from`` /
``effective_until`` is in force only in ``[from, until)``: among the rows in force at an
event's ``ts`` the most specific wins, then the latest ``effective_from`` (an undated row
counts as the earliest, and yields to a dated one), then the last written. Rates may so also change at those
instants (``instant_breaks``); the caches are keyed by which of them an event is past.
"""

from __future__ import annotations

import difflib
from bisect import bisect_right
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from genai_prices import data_snapshot
from genai_prices import types as gp

from spendstream.config import (
    DiscountConfig,
    ModelPriceConfig,
    PremiumConfig,
    PricesConfig,
    instant_label,
)
from spendstream.stream.rates import Band, PricePeriod, bands_from_catalog, format_fraction

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
_MAX_MODELS = 50_000
_EPOCH_DAY = date(1970, 1, 1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_NEVER = datetime.min.replace(tzinfo=UTC)


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
        self.by_activity: dict[Any, PricePeriod | None] = {}

    def activity(self, ts: datetime, request: Any) -> tuple[tuple[bool, ...], Any]:
        return (tuple(c.active(ts) for c in self.constraints), request)

    def period_key(self, ts: datetime, request: Any) -> Any:
        if self.time_of_day:
            return self.activity(ts, request)
        day = ts.date() if ts.tzinfo is UTC else ts.astimezone(UTC).date()
        return (bisect_right(self.breakpoints, day), request)


class RateCard:
    """Finds and caches the rates in force for events; overrides, premiums and discounts on top.

    ``data_source`` says where the catalog came from (the bundled genai-prices snapshot or
    a file fetched by ``spendstream prices update``) and ``data_as_of`` how new it is.
    """

    def __init__(
        self,
        prices: PricesConfig | None = None,
        snapshot: data_snapshot.DataSnapshot | None = None,
        *,
        data_source: str | None = None,
        data_as_of: datetime | None = None,
    ) -> None:
        prices = prices or PricesConfig()
        self.snapshot = snapshot or data_snapshot.get_snapshot()
        self.data_source = data_source or "genai-prices bundled snapshot"
        self.data_as_of = data_as_of
        self.overrides: dict[tuple[str, str], list[ModelPriceConfig]] = {}
        for o in prices.model:
            self.overrides.setdefault(_model_key(o.provider, o.model), []).append(o)
        self.discounts = list(prices.discount)
        self.premiums = list(prices.premium)
        self._models: dict[tuple[str, str], _ListedModel | list[ModelPriceConfig] | None] = {}
        self._override_periods: dict[Any, PricePeriod] = {}
        # Every instant at which a dated row starts or stops applying, sorted.
        rows: list[Any] = [*prices.model, *prices.discount, *prices.premium]
        self._instants = sorted(
            {t for r in rows for t in (r.effective_from, r.effective_until) if t is not None}
        )
        self._instant_us = tuple((t - _EPOCH) // _MICROSECOND for t in self._instants)

    def instant_breaks(self) -> tuple[int, ...]:
        """Microseconds since 1970-01-01 UTC at which a dated row starts or stops applying:
        rates may change there as well as at ``day_breaks`` and ``day_boundaries``."""
        return self._instant_us

    def _epoch(self, ts: datetime) -> int:
        """How many of the dated rows' instants ``ts`` is at or past (0 when none are dated)."""
        if not self._instants:
            return 0
        return bisect_right(self._instants, ts if ts.tzinfo else ts.replace(tzinfo=UTC))

    # -- lookup ---------------------------------------------------------------------------

    def entry(self, provider: str, model: str) -> _ListedModel | list[ModelPriceConfig] | None:
        """What prices (provider, model): overrides, a catalog model, or None (unpriced)."""
        key = (provider, model)
        try:
            return self._models[key]
        except KeyError:
            pass
        found: _ListedModel | list[ModelPriceConfig] | None = self.overrides.get(
            _model_key(provider, model)
        )
        if found is None:
            found = self._listed(provider, model)
        if len(self._models) >= _MAX_MODELS:
            # Producers choose model names: a flood of distinct ones must not grow memory.
            self._models.clear()
        self._models[key] = found
        return found

    def _listed(self, provider: str, model: str) -> _ListedModel | None:
        try:
            p, m = self.snapshot.find_provider_model(model, None, provider, None)
        except LookupError:
            return None
        return _ListedModel(p, m)

    def period(
        self,
        provider: str,
        model: str,
        ts: datetime,
        batch: bool,
        service_tier: str | None = None,
        region: str | None = None,
    ) -> PricePeriod | None:
        """The rates for an event, or None when nothing prices it."""
        entry = self.entry(provider, model)
        if entry is None:
            return None
        request = (batch, service_tier, region)
        if isinstance(entry, list):
            chosen = _most_specific(entry, service_tier, region, ts)
            if chosen is not None:
                return self._override_period(provider, model, chosen, ts, request)
            # Overrides for other tiers/regions or other times only: the catalog prices the rest.
            listed = self._catalog_entry(provider, model)
            if listed is None:
                return None
            return self._catalog_cached(provider, model, listed, ts, request)
        return self._catalog_cached(provider, model, entry, ts, request)

    def _catalog_cached(
        self, provider: str, model: str, entry: _ListedModel, ts: datetime, request: Any
    ) -> PricePeriod | None:
        epoch = self._epoch(ts)
        key = (entry.period_key(ts, request), epoch)
        try:
            return entry.periods[key]
        except KeyError:
            pass
        # get_prices (and so the PricePeriod) depends only on which constraints are active
        # (and the premium and discount on which dated rows are in force).
        activity = (entry.activity(ts, request), epoch)
        try:
            found = entry.by_activity[activity]
        except KeyError:
            found = self._catalog_period(provider, model, entry, ts, *request)
            entry.by_activity[activity] = found
        entry.periods[key] = found
        return found

    def day_boundaries(self, provider: str, model: str) -> tuple[int, ...] | None:
        """Minutes of the UTC day at which (provider, model)'s rates may change.

        ``()``: only at midnight (start dates); ``(30, 990)``: also at 00:30 and 16:30
        (off-peak prices); None: at instants finer than a minute (never seen in practice).
        """
        entry = self.entry(provider, model)
        if isinstance(entry, list):
            # Overrides for some tiers/regions or times may leave others to the catalog.
            if any(_always(o) for o in entry):
                return ()
            entry = self._catalog_entry(provider, model)
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

    def day_breaks(self, provider: str, model: str) -> tuple[int, ...]:
        """UTC days (since 1970-01-01) on which (provider, model)'s rates may change: the
        days between two of them share one price period (time of day aside)."""
        entry = self.entry(provider, model)
        if isinstance(entry, list):
            if any(_always(o) for o in entry):
                return ()
            entry = self._catalog_entry(provider, model)
        if not isinstance(entry, _ListedModel):
            return ()
        return tuple((d - _EPOCH_DAY).days for d in entry.breakpoints)

    def _catalog_entry(self, provider: str, model: str) -> _ListedModel | None:
        key: Any = (provider, model, "catalog")
        try:
            return self._models[key]  # type: ignore[return-value]
        except KeyError:
            found = self._models[key] = self._listed(provider, model)
            return found

    def describe(self, provider: str, model: str) -> str | None:
        """A short name of what prices (provider, model), or None when nothing does."""
        entry = self.entry(provider, model)
        if entry is None:
            return None
        if isinstance(entry, list):
            o = entry[0]
            return f"override:{o.provider}/{o.model}"
        return f"genai-prices:{entry.provider.id}/{entry.model.id}"

    def why_unpriced(self, provider: str, model: str, ts: datetime) -> str | None:
        """Why an event of (provider, model) at ``ts`` has no price, for people; None if priced."""
        if self.period(provider, model, ts, False) is not None:
            return None
        bare = provider.strip(), model.strip()
        if bare != (provider, model) and self.period(*bare, ts, False) is not None:
            return (
                f"{provider!r}/{model!r} has spaces around it; {bare[0]}/{bare[1]} has a price: "
                "the producer sends the name with the spaces"
            )
        entry = self.entry(provider, model)
        if isinstance(entry, list) and not any(_always(o) for o in entry):
            dated = [o for o in entry if o.service_tier is None and o.region is None]
            if dated:
                spans = ", ".join(_dates_label(o)[1:] for o in dated)
                return (
                    f"[[prices.model]] rows for {provider}/{model} are dated ({spans}), none "
                    f"in force at {ts.isoformat()}, and genai-prices has no price for it then"
                )
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

    def suggestions(self, provider: str, model: str, limit: int = 3) -> list[str]:
        """The known model ids closest to ``model`` (for "did you mean"), best first.

        Candidates are the provider's catalog models (every model when the provider is
        unknown) and the configured overrides; ``gpt5`` finds ``gpt-5``.
        """
        try:
            providers = [self.snapshot.find_provider(None, provider, None)]
        except LookupError:
            providers = list(self.snapshot.providers)
        ids = {m.id for p in providers for m in p.models}
        ids.update(o.model for entries in self.overrides.values() for o in entries)
        wanted = _squash(model)
        by_squashed: dict[str, list[str]] = {}
        for i in sorted(ids):
            by_squashed.setdefault(_squash(i), []).append(i)
        exact = by_squashed.get(wanted)
        if exact:
            return exact[:limit]
        close = difflib.get_close_matches(wanted, list(by_squashed), n=limit, cutoff=0.6)
        return [i for c in close for i in by_squashed[c]][:limit]

    # -- discounts and premiums -----------------------------------------------------------

    def discount_for(
        self, provider: str, model: str, ts: datetime | None = None
    ) -> DiscountConfig | None:
        """The most specific matching discount in force at ``ts``: provider+model > model >
        provider > global, then the latest ``effective_from``.

        Among equally specific rows the last one written wins (later config lines refine).
        ``ts`` None: undated rows only.
        """
        prov, mod = _model_key(provider, model)
        best: DiscountConfig | None = None
        best_rank: tuple[int, datetime, bool] = (-1, _NEVER, False)
        for d in self.discounts:
            if not _in_force(d, ts):
                continue
            if d.provider is not None and d.provider.strip().lower() != prov:
                continue
            if d.model is not None and d.model.strip().lower() != mod:
                continue
            rank = (
                (2 if d.model is not None else 0) + (1 if d.provider is not None else 0),
                d.effective_from or _NEVER,
                _dated(d),
            )
            if rank >= best_rank:
                best, best_rank = d, rank
        return best

    def premium_for(
        self,
        provider: str,
        model: str,
        service_tier: str | None,
        region: str | None,
        ts: datetime | None = None,
    ) -> PremiumConfig | None:
        """The most specific matching premium row in force at ``ts`` (model > provider >
        tier > region filters, then the latest ``effective_from``); among equally specific
        rows the last one written wins. ``ts`` None: undated rows only."""
        prov, mod = _model_key(provider, model)
        best: PremiumConfig | None = None
        best_rank: tuple[int, datetime, bool] = (-1, _NEVER, False)
        for row in self.premiums:
            if not _in_force(row, ts):
                continue
            checks = (
                (row.model, mod, 8),
                (row.provider, prov, 4),
                (row.service_tier, service_tier, 2),
                (row.region, region, 1),
            )
            rank = 0
            for want, have, weight in checks:
                if want is None:
                    continue
                if have is None or want.strip().lower() != have.strip().lower():
                    break
                rank += weight
            else:
                dated_rank = (rank, row.effective_from or _NEVER, _dated(row))
                if dated_rank >= best_rank:
                    best, best_rank = row, dated_rank
        return best

    def _finish(
        self,
        provider: str,
        model: str,
        base_source: str,
        ts: datetime,
        request: tuple[bool, str | None, str | None],
        batch_fraction: Decimal | None,
        batch_label: str,
        thresholds: tuple[int, ...],
        bands: tuple[Band, ...],
    ) -> PricePeriod:
        multiplier = Decimal(1)
        source = base_source
        premium = self.premium_for(provider, model, request[1], request[2], ts)
        if premium is not None and premium.percent != 0:
            multiplier *= 1 + premium.percent / 100
            source += f"+premium:{format_fraction(premium.percent / 100)}{_dates_label(premium)}"
        if batch_fraction is not None and batch_fraction != 0:
            multiplier *= 1 - batch_fraction
            source += f"+batch:{format_fraction(batch_fraction)}"
        elif batch_label:
            source += batch_label
        disc = self.discount_for(provider, model, ts)
        if disc is not None and disc.percent != 0:
            multiplier *= 1 - disc.percent / 100
            source += f"+discount:{format_fraction(disc.percent / 100)}{_dates_label(disc)}"
        labels = tuple(f"+tier>{t}" for t in thresholds)
        return PricePeriod(thresholds, bands, multiplier, source, labels)

    def _override_period(
        self,
        provider: str,
        model: str,
        o: ModelPriceConfig,
        ts: datetime,
        request: tuple[bool, str | None, str | None],
    ) -> PricePeriod:
        key = (provider, model, id(o), request, self._epoch(ts))
        cached = self._override_periods.get(key)
        if cached is not None:
            return cached
        band = Band.of(
            o.request_fee_usd,
            o.tool_per_k,
            input=o.input_per_mtok,
            output=o.output_per_mtok,
            cache_read=o.cache_read_per_mtok,
            cache_write=o.cache_write_per_mtok,
            cache_write_1h=o.cache_write_1h_per_mtok,
            input_audio=o.input_audio_per_mtok,
            cache_audio_read=o.cache_audio_read_per_mtok,
            input_image=o.input_image_per_mtok,
            cache_image_read=o.cache_image_read_per_mtok,
            output_audio=o.output_audio_per_mtok,
            output_image=o.output_image_per_mtok,
        )
        fraction: Decimal | None = None
        if request[0]:
            if o.batch_discount is not None:
                fraction = o.batch_discount
            elif _model_key(provider, model)[0] in BATCH_PROVIDERS:
                fraction = DEFAULT_BATCH_DISCOUNT
        filters = [f"{k}={v}" for k, v in (("tier", o.service_tier), ("region", o.region)) if v]
        source = f"override:{o.provider}/{o.model}" + (f"[{','.join(filters)}]" if filters else "")
        source += _dates_label(o)
        period = self._finish(provider, model, source, ts, request, fraction, "", (), (band,))
        if len(self._override_periods) >= _MAX_MODELS:
            self._override_periods.clear()
        self._override_periods[key] = period
        return period

    def _catalog_period(
        self,
        provider: str,
        model: str,
        entry: _ListedModel,
        ts: datetime,
        batch: bool,
        service_tier: str | None,
        region: str | None,
    ) -> PricePeriod | None:
        info = entry.model
        standard = info.get_prices(ts)
        labels = ""
        fraction: Decimal | None = None
        context: dict[str, str] = {}
        # calc_price applies variants only to the provider's own models, not fallbacks.
        own = any(info is m for m in entry.provider.models)
        if service_tier is not None and own:
            tiered = info.get_prices(ts, {"service_tier": service_tier})
            if tiered != standard:
                context["service_tier"] = service_tier
                labels += f"+service_tier:{service_tier}"
        batch_label = ""
        if batch:
            with_batch = info.get_prices(ts, {"processing": "batch"}) if own else standard
            if with_batch != standard:
                context["processing"] = "batch"
                batch_label = "+batch"
            elif entry.provider.id in BATCH_PROVIDERS:
                fraction = DEFAULT_BATCH_DISCOUNT
        price = info.get_prices(ts, context) if context else standard
        bands = bands_from_catalog(price)
        if bands is None:
            return None
        thresholds, rate_bands = bands
        source = f"genai-prices:{entry.provider.id}/{info.id}{_period_label(info, ts)}{labels}"
        return self._finish(
            provider,
            model,
            source,
            ts,
            (batch, service_tier, region),
            fraction,
            batch_label,
            thresholds,
            rate_bands,
        )


def _most_specific(
    entries: list[ModelPriceConfig],
    service_tier: str | None,
    region: str | None,
    ts: datetime | None = None,
) -> ModelPriceConfig | None:
    """The override for this tier and region in force at ``ts``: tier+region > tier > region
    > neither, then the latest ``effective_from`` (undated: the earliest); the last written
    wins among equals; None when every entry is for another tier, region or time."""
    best: ModelPriceConfig | None = None
    best_rank: tuple[int, datetime, bool] = (-1, _NEVER, False)
    for o in entries:
        if not _in_force(o, ts):
            continue
        if o.service_tier is not None and o.service_tier != service_tier:
            continue
        if o.region is not None and o.region != region:
            continue
        rank = (
            (2 if o.service_tier is not None else 0) + (1 if o.region is not None else 0),
            o.effective_from or _NEVER,
            _dated(o),
        )
        if rank >= best_rank:
            best, best_rank = o, rank
    return best


def _in_force(row: ModelPriceConfig | DiscountConfig | PremiumConfig, ts: datetime | None) -> bool:
    """Whether ``row`` applies at ``ts``: ``effective_from <= ts < effective_until``
    (``ts`` None: only an undated row)."""
    start, end = row.effective_from, row.effective_until
    if ts is None:
        return start is None and end is None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return (start is None or start <= ts) and (end is None or ts < end)


def _dated(row: ModelPriceConfig | DiscountConfig | PremiumConfig) -> bool:
    # A row dated only by effective_until ties an undated one on effective_from: it wins.
    return row.effective_from is not None or row.effective_until is not None


def _always(o: ModelPriceConfig) -> bool:
    """An override for every tier, region and time: with one, the catalog never prices."""
    return (
        o.service_tier is None
        and o.region is None
        and o.effective_from is None
        and o.effective_until is None
    )


def _dates_label(row: ModelPriceConfig | DiscountConfig | PremiumConfig) -> str:
    """``@2026-03-01``, ``@2026-03-01..2026-04-01``, ``@..2026-04-01``; "" when undated."""
    start, end = row.effective_from, row.effective_until
    if start is None and end is None:
        return ""
    text = "@" + (instant_label(start) if start is not None else "")
    return text + (f"..{instant_label(end)}" if end is not None else "")


def _squash(model_id: str) -> str:
    return "".join(ch for ch in model_id.lower() if ch.isalnum() or ch == ".")


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
