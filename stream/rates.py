"""The billable dimensions and one rate set per price band (pure; no I/O).

A usage event's tokens nest: cached and modal tokens are parts of ``input_tokens``, the
1-hour writes part of ``cache_write_tokens``, cached audio/images part of both
``cache_read_tokens`` and their modality, output audio/images part of ``output_tokens``.
Pricing bills every token once, at the rate of the most specific part it belongs to
(``UNITS`` and ``leaf_counts``), as genai-prices' unit registry does. A unit with no
rate of its own is billed at the rate of the tokens it is part of (``FALLBACK``): cached
input at the input rate, 1-hour writes at the cache write rate, and so on.

Server-side tools are billed per request (USD per thousand): genai-prices prices
``web_search``, ``code_execution``, ``storage_search`` (file search) and
``social_search`` (X search); ``[[prices.model]]`` ``tool_per_k`` prices any tool name.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType
from typing import Any

from genai_prices import types as gp

__all__ = [
    "CATALOG_PRICE_KEYS",
    "CATALOG_TOOLS",
    "COMPONENT_OF",
    "FALLBACK",
    "UNITS",
    "Band",
    "PricePeriod",
    "bands_from_catalog",
    "format_fraction",
    "leaf_counts",
]

# The priced units, in the order of Band.rates; each is billed to one cost component.
UNITS: tuple[str, ...] = (
    "input",
    "cache_read",
    "cache_write",
    "cache_write_1h",
    "input_audio",
    "cache_audio_read",
    "input_image",
    "cache_image_read",
    "output",
    "output_audio",
    "output_image",
)
COMPONENT_OF: Mapping[str, str] = MappingProxyType(
    {
        "input": "input",
        "input_audio": "input",
        "input_image": "input",
        "cache_read": "cache_read",
        "cache_audio_read": "cache_read",
        "cache_image_read": "cache_read",
        "cache_write": "cache_write",
        "cache_write_1h": "cache_write",
        "output": "output",
        "output_audio": "output",
        "output_image": "output",
    }
)
# Where a unit without a rate of its own is billed, most specific first. genai-prices
# refuses a price set with two rated parents and no rate for their join (cached audio
# with both a cache read and an audio rate), so for the catalog the order of two
# candidates never matters; a `[[prices.model]]` override may be such a set, and then the
# cache read rate comes first (a cached token is billed as cached: the discount is why it
# has a rate), as docs/configuration.md says.
FALLBACK: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "cache_read": ("input",),
        "cache_write": ("input",),
        "cache_write_1h": ("cache_write", "input"),
        "input_audio": ("input",),
        "cache_audio_read": ("cache_read", "input_audio", "input"),
        "input_image": ("input",),
        "cache_image_read": ("cache_read", "input_image", "input"),
        "output_audio": ("output",),
        "output_image": ("output",),
    }
)
# genai-prices price keys of each unit (USD per million tokens).
CATALOG_PRICE_KEYS: Mapping[str, str] = MappingProxyType(
    {
        "input": "input_mtok",
        "cache_read": "cache_read_mtok",
        "cache_write": "cache_write_mtok",
        "cache_write_1h": "cache_write_1h_mtok",
        "input_audio": "input_audio_mtok",
        "cache_audio_read": "cache_audio_read_mtok",
        "input_image": "input_image_mtok",
        "cache_image_read": "cache_image_read_mtok",
        "output": "output_mtok",
        "output_audio": "output_audio_mtok",
        "output_image": "output_image_mtok",
    }
)
# Event tool name -> (genai-prices price key, its usage key), USD per thousand requests.
CATALOG_TOOLS: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "web_search": ("web_searches_kcount", "web_searches"),
        "code_execution": ("code_executions_kcount", "code_executions"),
        "storage_search": ("storage_searches_kcount", "storage_searches"),
        "social_search": ("social_searches_kcount", "social_searches"),
    }
)
_ZERO = Decimal(0)
_KILO = Decimal(1000)
_NO_TOOLS: Mapping[str, Decimal] = MappingProxyType({})


@dataclass(slots=True, frozen=True)
class Band:
    """One rate set: USD per million tokens of the units that have a rate of their own
    (``own``), a per-request fee in USD and USD per thousand requests of each tool."""

    own: Mapping[str, Decimal]
    request_fee_usd: Decimal = _ZERO
    tool_per_k: Mapping[str, Decimal] = field(default_factory=lambda: _NO_TOOLS)

    @classmethod
    def of(
        cls,
        request_fee_usd: Decimal = _ZERO,
        tool_per_k: Mapping[str, Decimal] | None = None,
        **per_mtok: Decimal | None,
    ) -> Band:
        """A band from rates by unit name (``input=3, output=15, ...``); None: no own rate."""
        unknown = set(per_mtok) - set(UNITS)
        if unknown:
            raise TypeError(f"unknown units: {sorted(unknown)}")
        own = {u: r for u in UNITS if (r := per_mtok.get(u)) is not None}
        return cls(MappingProxyType(own), request_fee_usd, MappingProxyType(dict(tool_per_k or {})))

    @property
    def rates(self) -> tuple[Decimal, ...]:
        """The rate of every unit of ``UNITS``, in order, with the fallbacks applied."""
        own = self.own
        out = []
        for unit in UNITS:
            rate = own.get(unit)
            for parent in FALLBACK.get(unit, ()):
                if rate is not None:
                    break
                rate = own.get(parent)
            out.append(_ZERO if rate is None else rate)
        return tuple(out)

    def rate_of(self, unit: str) -> Decimal:
        return self.rates[UNITS.index(unit)]

    @property
    def input_per_mtok(self) -> Decimal:
        return self.rate_of("input")

    @property
    def cache_read_per_mtok(self) -> Decimal:
        return self.rate_of("cache_read")

    @property
    def cache_write_per_mtok(self) -> Decimal:
        return self.rate_of("cache_write")

    @property
    def output_per_mtok(self) -> Decimal:
        return self.rate_of("output")


@dataclass(slots=True, frozen=True)
class PricePeriod:
    """The rates for one (provider, model, price period, batch, tier, region), resolved once.

    ``bands[i]`` applies when exactly ``i`` of ``thresholds`` are below the event's
    total input tokens. ``multiplier`` is the product of the factors still to apply
    (premium, batch, negotiated discount); ``source`` names what priced it.
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
    return f"{pct:f}%"


def leaf_counts(e: Any) -> tuple[int, ...]:
    """Tokens billed at each unit's own rate (``UNITS`` order): each token counted once.

    ``e`` has the event's token attributes; the event's invariants keep every count >= 0.
    """
    read, audio_read, image_read = (
        e.cache_read_tokens,
        e.cache_audio_read_tokens,
        e.cache_image_read_tokens,
    )
    write, write_1h = e.cache_write_tokens, e.cache_write_1h_tokens
    audio, image = e.input_audio_tokens, e.input_image_tokens
    out_audio, out_image = e.output_audio_tokens, e.output_image_tokens
    return (
        e.input_tokens - read - write - (audio - audio_read) - (image - image_read),
        read - audio_read - image_read,
        write - write_1h,
        write_1h,
        audio - audio_read,
        audio_read,
        image - image_read,
        image_read,
        e.output_tokens - out_audio - out_image,
        out_audio,
        out_image,
    )


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


def bands_from_catalog(price: gp.ModelPrice) -> tuple[tuple[int, ...], tuple[Band, ...]] | None:
    """A genai-prices price as tier thresholds and one Band per tier, or None when it has
    neither an input nor an output token price (such a model is unpriced, not free)."""
    attrs = price.__dict__
    if attrs.get("input_mtok") is None and attrs.get("output_mtok") is None:
        return None
    values = {u: attrs.get(k) for u, k in CATALOG_PRICE_KEYS.items()}
    tools = {t: attrs.get(k) for t, (k, _) in CATALOG_TOOLS.items() if attrs.get(k) is not None}
    requests = attrs.get("requests_kcount")
    thresholds = sorted(
        {
            t.start
            for v in (*values.values(), *tools.values(), requests)
            if isinstance(v, gp.TieredPrices)
            for t in v.tiers
        }
    )
    # Band i covers totals above thresholds[i-1]; a tier applies when total > its start.
    bands = []
    for start in (0, *(t + 1 for t in thresholds)):
        fee = _rate_at(requests, start)
        tool_rates = {t: r for t, v in tools.items() if (r := _rate_at(v, start)) is not None}
        rates = {u: _rate_at(v, start) for u, v in values.items()}
        bands.append(
            Band.of(_ZERO if fee is None else fee / _KILO, tool_rates, **rates)  # type: ignore[arg-type]
        )
    return tuple(thresholds), tuple(bands)
