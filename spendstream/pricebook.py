"""What the ``spendstream prices`` commands do, as functions a Python user can call too.

``pricer_for``/``rate_card_for``: the pricer a workdir's pipeline uses (the fetched price
data when ``spendstream prices update`` left one, else the bundled snapshot, plus the
configuration). ``show_rates``: every rate for one model, or an error suggesting the
closest known provider or ids (``did_you_mean``, which ``whatif --route`` uses too). ``reprice_range``: the stored facts of a time range priced again,
old against new, and written back only when asked. ``unpriced_reasons``: why each
unpriced model has no price today.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from spendstream.config import Config, PricesConfig, WarehouseConfig
from spendstream.errors import ConfigError
from spendstream.pricedata import bundled_price_data, load_price_data
from spendstream.records import Fact
from spendstream.stream.pricing import Pricer
from spendstream.stream.ratecard import RateCard
from spendstream.stream.ratesheet import RateSheet, rate_sheet
from spendstream.stream.repricing import RepriceReport, reprice

__all__ = [
    "RepriceRun",
    "did_you_mean",
    "pricer_for",
    "rate_card_for",
    "reprice_range",
    "show_rates",
    "unpriced_reasons",
]


def rate_card_for(workdir: Path | None, prices: PricesConfig) -> RateCard:
    """The rate card of ``workdir``: its fetched price data, else the bundled snapshot."""
    data = load_price_data(workdir) or bundled_price_data()
    return RateCard(prices, data.snapshot, data_source=data.source, data_as_of=data.as_of)


def pricer_for(workdir: Path | None, config: Config) -> Pricer:
    return Pricer(rate_card_for(workdir, config.prices))


def show_rates(
    workdir: Path | None,
    config: Config,
    provider: str,
    model: str,
    at: datetime,
    *,
    service_tier: str | None = None,
    region: str | None = None,
) -> RateSheet:
    """Every rate for (provider, model) at ``at``; ConfigError naming close ids if none."""
    card = rate_card_for(workdir, config.prices)
    sheet = rate_sheet(card, provider, model, at, service_tier=service_tier, region=region)
    if sheet is not None:
        return sheet
    reason = card.why_unpriced(provider, model, at) or "nothing prices it"
    raise ConfigError(
        f"no price for {provider}/{model}: {reason}{did_you_mean(card, provider, model)} (a "
        "[[prices.model]] entry in the configuration prices any model)"
    )


def did_you_mean(card: RateCard, provider: str, model: str) -> str:
    """``"; did you mean ...?"`` for a (provider, model) ``card`` has no entry for, naming
    what is nearest to the part it does not know; ``""`` when nothing is near, or when it
    knows both (its price is dated, or has no token rate: a near name would mislead).

    An unknown provider gets the nearest known provider (``opnai`` -> ``provider openai``),
    else the provider that lists ``model``; a known provider's unknown model gets its nearest
    models (``gpt5-mini`` -> ``gpt-5-mini``, ``RateCard.suggestions``).
    """
    if card.entry(provider, model) is not None:
        return ""
    overridden = {p for p, _ in card.overrides}
    try:
        card.snapshot.find_provider(None, provider, None)
    except LookupError:
        if provider.strip().lower() not in overridden:
            known = sorted({p.id for p in card.snapshot.providers} | overridden)
            close = difflib.get_close_matches(provider.strip().lower(), known, n=1, cutoff=0.8)
            if close:
                return f"; did you mean provider {close[0]}?"
            try:
                lister, listed = card.snapshot.find_provider_model(model, None, None, None)
            except LookupError:
                return ""
            return f"; did you mean {lister.id}/{listed.id}?"
    near = [m for m in card.suggestions(provider, model) if m != model]
    if near:
        return f"; did you mean {', '.join(near)}?"
    # `openai claude-sonnet-4-5`: the model is another provider's (a proxy's events, or the
    # wrong provider typed); its own nearest names were none of the provider's.
    try:
        lister, listed = card.snapshot.find_provider_model(model, None, None, None)
    except LookupError:
        return ""
    if lister.id == provider.strip().lower():
        return ""
    return f"; {listed.id} is {lister.id}'s: did you mean {lister.id}/{listed.id}?"


def unpriced_reasons(
    workdir: Path | None, config: Config, columns: list[str], rows: list[tuple[Any, ...]]
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Add why each (provider, model) row is unpriced today, under the current rate card."""
    card = rate_card_for(workdir, config.prices)
    now = datetime.now(UTC)
    at = columns.index("provider"), columns.index("model")
    out = []
    for row in rows:
        reason = card.why_unpriced(row[at[0]], row[at[1]], now)
        out.append((*row, reason or "priced now: `spendstream prices reprice` can price it"))
    return [*columns, "reason"], out


@dataclass(frozen=True, slots=True)
class RepriceRun:
    """The repricing of a range: the report, and how many facts were written (0: shown only)."""

    report: RepriceReport
    written: int


def reprice_range(
    workdir: Path,
    config: Config,
    since: datetime | None,
    until: datetime | None,
    *,
    provider: str | None = None,
    model: str | None = None,
    at_current_prices: bool = False,
    write: bool = False,
) -> RepriceRun:
    """Price the stored facts of [since, until) again; write the changed ones if ``write``."""
    from spendstream.warehouse.reading import load_facts

    facts = load_facts(workdir, since, until, provider, model, config.warehouse)
    at = datetime.now(UTC) if at_current_prices else None
    report = reprice(facts, pricer_for(workdir, config), at=at)
    written = 0
    if write and report.changed:
        written = _write(workdir, report.changed_facts(facts), config.warehouse)
    return RepriceRun(report, written)


def _write(workdir: Path, changed: Sequence[Fact], config: WarehouseConfig) -> int:
    # Each affected day is rewritten in one Iceberg snapshot, like a compaction: a reader
    # sees either the old costs or the new ones, never a mix within a day.
    from spendstream.warehouse import Warehouse

    wh = Warehouse(workdir, writer="reprice", config=config)
    try:
        return wh.rewrite_facts(changed)
    finally:
        wh.close()
