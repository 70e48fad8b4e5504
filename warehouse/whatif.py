"""What-if repricing: a period's actual calls priced again under alternative assumptions.

Each lever rewrites calls (never the warehouse): route calls to another model, reach a
target cache hit rate, move a share of traffic to a batch API, cap output tokens. Every
rewritten call is priced by the pipeline's own ``Pricer`` (same catalog, overrides,
tiers, batch and negotiated discounts, same exact Decimal arithmetic), so a what-if
total and a landed total are computed alike. The table shows, per feature and in total,
the baseline (the same calls priced by the same pricer unchanged), each lever alone,
and all levers together (applied in the order route, output cap, cache, batch).

Self-hosting is a separate question: the monthly API bill of some traffic against the
GPUs it would take (``self_hosting``), with the break-even volume and whether the GPU
count could serve the busiest hour.

Pure logic up to ``WhatIf.result``; ``run_whatif`` is the thin reader over DuckDB.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Context, Decimal, localcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from spendstream.config import WarehouseConfig
from spendstream.errors import ConfigError
from spendstream.stream.pricing import Pricer

if TYPE_CHECKING:
    from spendstream.producers.event import UsageEvent

__all__ = [
    "HOURS_PER_MONTH",
    "BatchShare",
    "CacheTarget",
    "Call",
    "FeatureLine",
    "Lever",
    "OutputCap",
    "Route",
    "Selector",
    "SelfHosting",
    "SelfHostingResult",
    "WhatIf",
    "WhatIfResult",
    "run_whatif",
    "self_hosting",
]

# The cloud-billing convention for a month of GPU time (8760 h / 12).
HOURS_PER_MONTH = Decimal(730)
_CTX = Context(prec=60)
_ONE = Decimal(1)
_ZERO = Decimal(0)
_CHUNK = 50_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Call:
    """The fields pricing reads, plus the attribution the table groups by."""

    ts: datetime
    provider: str
    model: str
    batch: bool
    input_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    output_tokens: int
    team: str | None = None
    feature: str | None = None


def _copy(c: Call, **changes: Any) -> Call:
    # dataclasses.replace costs ~20 us a call; what-if makes several copies per call.
    fields: dict[str, Any] = {
        "ts": c.ts,
        "provider": c.provider,
        "model": c.model,
        "batch": c.batch,
        "input_tokens": c.input_tokens,
        "cache_read_tokens": c.cache_read_tokens,
        "cache_write_tokens": c.cache_write_tokens,
        "output_tokens": c.output_tokens,
        "team": c.team,
        "feature": c.feature,
    }
    fields.update(changes)
    return Call(**fields)


_SELECTOR = re.compile(r"^(all|feature:(.+)|model:([^/]+)/(.+)|under:([0-9]+)|team:(.+))$")


@dataclass(frozen=True, slots=True)
class Selector:
    """Which calls a lever touches: ``all``, ``team:T``, ``feature:F``, ``model:P/M``,
    ``under:N``.

    ``under:N`` selects calls with fewer than N input tokens (cached ones included).
    """

    kind: Literal["all", "team", "feature", "model", "under"] = "all"
    feature: str = ""
    team: str = ""
    provider: str = ""
    model: str = ""
    under: int = 0

    @classmethod
    def parse(cls, text: str, flag: str) -> Selector:
        m = _SELECTOR.match(text.strip())
        if not m:
            raise ConfigError(
                f"{flag}: {text!r} is not a selector: all, team:NAME, feature:NAME, "
                "model:PROVIDER/MODEL or under:TOKENS"
            )
        if m.group(2) is not None:
            return cls("feature", feature=m.group(2))
        if m.group(3) is not None:
            return cls("model", provider=m.group(3), model=m.group(4))
        if m.group(5) is not None:
            return cls("under", under=int(m.group(5)))
        if m.group(6) is not None:
            return cls("team", team=m.group(6))
        return cls()

    def matches(self, c: Call) -> bool:
        if self.kind == "all":
            return True
        if self.kind == "feature":
            return c.feature == self.feature
        if self.kind == "team":
            return c.team == self.team
        if self.kind == "model":
            return c.provider == self.provider and c.model == self.model
        return c.input_tokens < self.under

    def describe(self) -> str:
        return {
            "all": "all calls",
            "feature": f"feature {self.feature}",
            "team": f"team {self.team}",
            "model": f"calls to {self.provider}/{self.model}",
            "under": f"calls under {self.under:,} input tokens",
        }[self.kind]


Weighted = list[tuple[Call, Decimal]]


@dataclass(frozen=True, slots=True)
class Route:
    """Send the selected calls to another model, token counts unchanged."""

    selector: Selector
    provider: str
    model: str

    def apply(self, c: Call) -> Weighted:
        if not self.selector.matches(c):
            return [(c, _ONE)]
        return [(_copy(c, provider=self.provider, model=self.model), _ONE)]

    def describe(self) -> str:
        return f"route {self.selector.describe()} to {self.provider}/{self.model}"


@dataclass(frozen=True, slots=True)
class OutputCap:
    """Cap output at ``max_tokens`` per call (answer quality is not modelled)."""

    selector: Selector
    max_tokens: int

    def apply(self, c: Call) -> Weighted:
        if not self.selector.matches(c) or c.output_tokens <= self.max_tokens:
            return [(c, _ONE)]
        return [(_copy(c, output_tokens=self.max_tokens), _ONE)]

    def describe(self) -> str:
        return f"cap output of {self.selector.describe()} at {self.max_tokens:,} tokens"


@dataclass(frozen=True, slots=True)
class CacheTarget:
    """Raise each selected call's cache-read share of input to ``hit_rate`` (never lower it).

    Cache reads become round(hit_rate x input_tokens) (half-even); cache writes shrink if
    reads and writes would exceed the input.
    """

    selector: Selector
    hit_rate: Decimal

    def apply(self, c: Call) -> Weighted:
        if not self.selector.matches(c):
            return [(c, _ONE)]
        target = int((self.hit_rate * c.input_tokens).to_integral_value(ROUND_HALF_EVEN))
        if target <= c.cache_read_tokens:
            return [(c, _ONE)]
        write = min(c.cache_write_tokens, c.input_tokens - target)
        return [(_copy(c, cache_read_tokens=target, cache_write_tokens=write), _ONE)]

    def describe(self) -> str:
        return f"cache hit rate of {self.selector.describe()} raised to {_pct(self.hit_rate)}"


@dataclass(frozen=True, slots=True)
class BatchShare:
    """Move ``share`` of the selected non-batch calls to the provider's batch API.

    Priced as the expected cost: (1 - share) x list price + share x batch price, exactly.
    """

    selector: Selector
    share: Decimal

    def apply(self, c: Call) -> Weighted:
        if c.batch or not self.selector.matches(c) or not self.share:
            return [(c, _ONE)]
        return [(c, _ONE - self.share), (_copy(c, batch=True), self.share)]

    def describe(self) -> str:
        return f"{_pct(self.share)} of {self.selector.describe()} moved to batch"


Lever = Route | OutputCap | CacheTarget | BatchShare
_ORDER = {Route: 0, OutputCap: 1, CacheTarget: 2, BatchShare: 3}


def _pct(x: Decimal) -> str:
    return f"{(x * 100).normalize():f}%"


@dataclass(slots=True)
class FeatureLine:
    """One feature's baseline, each lever alone, and all levers together."""

    team: str | None
    feature: str | None
    calls: int = 0
    unpriced_calls: int = 0
    stored_usd: Decimal = _ZERO
    baseline_usd: Decimal = _ZERO
    lever_usd: list[Decimal] = field(default_factory=list)
    combined_usd: Decimal = _ZERO

    @property
    def savings_usd(self) -> Decimal:
        with localcontext(_CTX):
            return self.baseline_usd - self.combined_usd

    @property
    def savings_share(self) -> Decimal | None:
        with localcontext(_CTX):
            return self.savings_usd / self.baseline_usd if self.baseline_usd else None


@dataclass(slots=True)
class WhatIfResult:
    levers: list[str]
    lines: list[FeatureLine]
    total: FeatureLine
    still_unpriced: int  # calls a lever sent to a model with no price (kept at baseline)
    self_hosting: SelfHostingResult | None = None


@dataclass(frozen=True, slots=True)
class SelfHosting:
    """GPUs at ``gpu_usd_per_hour`` decoding ``decode_tok_s`` tokens/s each, busy at
    ``utilisation`` on average, instead of the API for the selected calls."""

    selector: Selector
    gpu_usd_per_hour: Decimal
    decode_tok_s: Decimal
    utilisation: Decimal
    tokens: Literal["output", "total"] = "output"

    def describe(self) -> str:
        return (
            f"self-host {self.selector.describe()}: GPU ${self.gpu_usd_per_hour}/h, "
            f"{self.decode_tok_s} {self.tokens} tokens/s per GPU, {_pct(self.utilisation)} "
            f"average utilisation, {HOURS_PER_MONTH} h/month"
        )


@dataclass(frozen=True, slots=True)
class SelfHostingResult:
    assumptions: SelfHosting
    period_hours: Decimal
    tokens_in_period: int
    api_usd_in_period: Decimal
    tokens_per_month: Decimal
    api_usd_per_month: Decimal
    tokens_per_gpu_month: Decimal
    gpus: int
    self_host_usd_per_month: Decimal
    savings_usd_per_month: Decimal  # API minus self-hosting; negative: the API is cheaper
    break_even_tokens_per_month: Decimal | None  # None: self-hosting never wins at this price
    peak_hour_tokens: int
    gpus_for_peak: int
    serves_peak: bool


def _ceil(x: Decimal) -> int:
    return int(x.to_integral_value(ROUND_CEILING))


def self_hosting(
    a: SelfHosting,
    tokens_in_period: int,
    api_usd_in_period: Decimal,
    period_hours: Decimal,
    peak_hour_tokens: int,
) -> SelfHostingResult:
    """The seed's break-even arithmetic, on the period's traffic scaled to a month.

    GPUs = ceil(tokens per month / (decode tok/s x utilisation x seconds per month));
    cost = GPUs x $/h x hours per month. The API bill is linear in tokens at the
    traffic's own blended rate c, so one GPU (G $/month) breaks even at G / c tokens a
    month -- if one GPU can decode that many; otherwise every GPU costs more than the API
    bill for what it can produce and self-hosting never wins. The busiest hour needs
    ceil(peak tokens/s / decode tok/s) GPUs running flat out.
    """
    with localcontext(_CTX):
        scale = HOURS_PER_MONTH / period_hours
        tokens_month = Decimal(tokens_in_period) * scale
        api_month = api_usd_in_period * scale
        per_gpu = a.decode_tok_s * a.utilisation * 3600 * HOURS_PER_MONTH
        gpus = _ceil(tokens_month / per_gpu) if tokens_month and per_gpu else 0
        gpu_month = a.gpu_usd_per_hour * HOURS_PER_MONTH
        self_month = gpus * gpu_month
        break_even: Decimal | None = None
        if tokens_in_period and api_usd_in_period > 0:
            rate = api_usd_in_period / tokens_in_period
            if rate * per_gpu >= gpu_month:
                break_even = gpu_month / rate
        for_peak = _ceil(Decimal(peak_hour_tokens) / 3600 / a.decode_tok_s) if a.decode_tok_s else 0
    return SelfHostingResult(
        a,
        period_hours,
        tokens_in_period,
        api_usd_in_period,
        tokens_month,
        api_month,
        per_gpu,
        gpus,
        self_month,
        api_month - self_month,
        break_even,
        peak_hour_tokens,
        for_peak,
        gpus >= for_peak,
    )


class WhatIf:
    """Accumulates calls chunk by chunk; ``result()`` gives the savings table."""

    def __init__(
        self, pricer: Pricer, levers: Sequence[Lever], hosting: SelfHosting | None = None
    ) -> None:
        self.pricer = pricer
        self.levers = list(levers)
        self.combined = sorted(self.levers, key=lambda lv: _ORDER[type(lv)])
        self.hosting = hosting
        self._lines: dict[tuple[str | None, str | None], FeatureLine] = {}
        self._still_unpriced = 0
        self._host_tokens = 0
        self._host_usd = _ZERO
        self._host_hours: dict[datetime, int] = {}
        for lv in self.levers:
            if isinstance(lv, Route) and pricer.source_of(lv.provider, lv.model) is None:
                from spendstream.pricebook import did_you_mean

                # As `prices show` says it: a route to a mistyped name is the usual cause.
                raise ConfigError(
                    f"--route: nothing prices {lv.provider}/{lv.model} (not in genai-prices, "
                    "no [[prices.model]] entry)"
                    f"{did_you_mean(pricer.catalog, lv.provider, lv.model)}"
                )

    def _price(
        self,
        kept: Sequence[Call],
        weighted: Sequence[Weighted],
        baseline: Sequence[Decimal],
        unpriced: set[int],
    ) -> list[Decimal]:
        """The cost of each call under ``weighted``; adds to ``unpriced`` the index of each
        call that went to a model with no price (it keeps its baseline)."""
        # Only rewritten calls are priced again; a call a lever left alone keeps its baseline.
        flat = [n for c, group in zip(kept, weighted, strict=True) for n, _ in group if n is not c]
        costs = iter(self.pricer.price_batch(cast("Sequence[UsageEvent]", flat)))
        out = []
        for i, (c, group, base) in enumerate(zip(kept, weighted, baseline, strict=True)):
            total, missing = _ZERO, False
            for n, weight in group:
                if n is c:
                    total += base * weight
                    continue
                cost = next(costs)
                if cost is None:
                    missing = True
                else:
                    total += cost.cost_usd * weight
            if missing:
                unpriced.add(i)
                total = base
            out.append(total)
        return out

    def add(self, calls: Sequence[Call], stored: Sequence[Decimal | None]) -> None:
        """Price one chunk of calls (``stored``: their landed cost_usd) under every lever."""
        with localcontext(_CTX):
            base_costs = self.pricer.price_batch(cast("Sequence[UsageEvent]", calls))
            priced = [i for i, c in enumerate(base_costs) if c is not None]
            kept = [calls[i] for i in priced]
            base = [cast("Decimal", base_costs[i].cost_usd) for i in priced]  # type: ignore[union-attr]
            # A call counts once however many levers (and their combination) send it there.
            unpriced: set[int] = set()
            per_lever = [
                self._price(kept, [lv.apply(c) for c in kept], base, unpriced) for lv in self.levers
            ]
            together: list[Weighted] = []
            for c in kept:
                group: Weighted = [(c, _ONE)]
                for lv in self.combined:
                    group = [(n, w * w2) for x, w in group for n, w2 in lv.apply(x)]
                together.append(group)
            combined = self._price(kept, together, base, unpriced)
            self._still_unpriced += len(unpriced)
            for c, cost in zip(calls, base_costs, strict=True):
                if cost is None:
                    self._line(c).unpriced_calls += 1
                    self._line(c).calls += 1
            for j, i in enumerate(priced):
                c = calls[i]
                line = self._line(c)
                line.calls += 1
                line.stored_usd += stored[i] or _ZERO
                line.baseline_usd += base[j]
                for k, costs in enumerate(per_lever):
                    line.lever_usd[k] += costs[j]
                line.combined_usd += combined[j]
                if self.hosting is not None and self.hosting.selector.matches(c):
                    n = (
                        c.output_tokens
                        if self.hosting.tokens == "output"
                        else (c.input_tokens + c.output_tokens)
                    )
                    self._host_tokens += n
                    self._host_usd += base[j]
                    hour = c.ts.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
                    self._host_hours[hour] = self._host_hours.get(hour, 0) + n

    def _line(self, c: Call) -> FeatureLine:
        key = (c.team, c.feature)
        line = self._lines.get(key)
        if line is None:
            line = self._lines[key] = FeatureLine(
                c.team, c.feature, lever_usd=[_ZERO] * len(self.levers)
            )
        return line

    def result(self, period_hours: Decimal) -> WhatIfResult:
        lines = sorted(
            self._lines.values(),
            key=lambda ln: (-ln.baseline_usd, ln.team or "", ln.feature or ""),
        )
        total = FeatureLine(None, None, lever_usd=[_ZERO] * len(self.levers))
        with localcontext(_CTX):
            for ln in lines:
                total.calls += ln.calls
                total.unpriced_calls += ln.unpriced_calls
                total.stored_usd += ln.stored_usd
                total.baseline_usd += ln.baseline_usd
                total.combined_usd += ln.combined_usd
                total.lever_usd = [
                    a + b for a, b in zip(total.lever_usd, ln.lever_usd, strict=True)
                ]
        hosting = None
        if self.hosting is not None:
            hosting = self_hosting(
                self.hosting,
                self._host_tokens,
                self._host_usd,
                period_hours,
                max(self._host_hours.values(), default=0),
            )
        return WhatIfResult(
            [lv.describe() for lv in self.levers], lines, total, self._still_unpriced, hosting
        )


def _calls(rows: Iterable[tuple[Any, ...]]) -> tuple[list[Call], list[Decimal | None]]:
    calls, stored = [], []
    for us, prov, model, batch, inp, read, write, out, team, feature, cost in rows:
        # Epoch microseconds: DuckDB's TIMESTAMPTZ -> datetime conversion is the slow part.
        ts = _EPOCH + timedelta(microseconds=us)
        calls.append(Call(ts, prov, model, bool(batch), inp, read, write, out, team, feature))
        stored.append(cost)
    return calls, stored


def run_whatif(
    workdir: Path,
    since: datetime,
    until: datetime,
    pricer: Pricer,
    levers: Sequence[Lever],
    hosting: SelfHosting | None = None,
    config: WarehouseConfig | None = None,
) -> WhatIfResult:
    """Re-price the calls of [since, until) read-only; nothing is written anywhere."""
    from spendstream.warehouse.reading import connect

    engine = WhatIf(pricer, levers, hosting)
    con = connect(workdir, config)
    try:
        cur = con.execute(
            "SELECT epoch_us(ts), provider, model, batch, input_tokens, cache_read_tokens, "
            "cache_write_tokens, output_tokens, team, feature, cost_usd FROM usage_facts "
            "WHERE ts >= $s AND ts < $u",
            {"s": since, "u": until},
        )
        while rows := cur.fetchmany(_CHUNK):
            engine.add(*_calls(rows))
    finally:
        con.close()
    hours = Decimal((until - since).total_seconds()) / 3600
    return engine.result(hours)
