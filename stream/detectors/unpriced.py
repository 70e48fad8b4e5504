"""``unpriced_model``: a call landed without a price -- once per (provider, model) and UTC day.

Such facts still land (``priced = false``, null costs); this alert says which model needs a
``[[prices.model]]`` entry. Scope ``global``: the missing price is the catalog's, not a
team's. ``value`` is 1 (the call that revealed it), ``threshold`` 0. Days take calls by the
grace rule of ``stream.windows`` (the per-event engine kept one extra day, and none for
a lateness under a day); older days are forgotten. A call too late for its own day counts
in the day of the watermark it arrived at (its alert says when it was dated): such a call
raised nothing before, so a model first seen in calls imported or replayed late (a
gateway's backlog, last week's file after today's) was never named, though every such
call landed unpriced.

Columnar (``stream.partials``): the first unpriced row per (model, day) is the alert.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

import numpy as np
import numpy.typing as npt

from spendstream.config import Config
from spendstream.stream.columns import FactColumns
from spendstream.stream.detectors.base import UNPRICED, Finding, make_alert
from spendstream.stream.grouping import Groups, combine
from spendstream.stream.partials import Details, Partial, Source, by_group, by_window, spans
from spendstream.stream.windows import DAY_US, US, Windowed, WindowRule, from_us

__all__ = ["UnpricedModelDetector", "UnpricedWire"]

_ZERO = Decimal(0)
# Snapshot: [[day start us, "provider/model"], ...]
UnpricedWire = list[list[int | str]]


def _named(provider: str, model: str) -> str:
    """``provider/model``; quoted, and said, when a name has spaces around it: the catalog
    has ``gpt-4o`` and the alert read "no price for openai/gpt-4o " with the space unseen."""
    if provider == provider.strip() and model == model.strip():
        return f"{provider}/{model}"
    return f"{provider!r}/{model!r} (spaces around the name)"


def _message(
    provider: str, model: str, day: datetime, ts: datetime, details: dict[str, str]
) -> str:
    """The alert's words; a call dated before ``day`` (it came too late for its own day)
    is said as such, and its date added to ``details`` as ``call_day``."""
    where = f"its calls on {day:%Y-%m-%d}"
    if ts < day:
        details["call_day"] = f"{ts:%Y-%m-%d}"
        where = f"its calls arriving on {day:%Y-%m-%d} (the first dated {ts:%Y-%m-%d}, late)"
    return (
        f"no price for {_named(provider, model)}: {where} land with priced = false and null "
        "costs; add a [[prices.model]] entry to the configuration "
        "(`spendstream prices unpriced` lists every such model)"
    )


class UnpricedModelDetector:
    """Raises one ``unpriced_model`` alert per model and UTC day with unpriced calls."""

    name = "unpriced_model"

    def __init__(self, config: Config) -> None:
        self.rule = WindowRule("day", config.detection.allowed_lateness_s * US)
        self.fired: Windowed[bool] = Windowed(self.rule)

    def _days(self, cols: FactColumns) -> npt.NDArray[np.int64]:
        """Each call's day: its own while that day takes it, else its watermark's."""
        days = self.rule.starts(cols.ts_us)
        late = ~self.rule.accepted(days, cols.wm_us)
        if late.any():
            days = np.where(late, self.rule.starts(cols.wm_us), days)
        return days

    def summarize(self, cols: FactColumns, source: Source) -> list[Partial]:
        if cols.priced.all():
            return []
        days = self._days(cols)
        sel = np.flatnonzero(~cols.priced)
        if not len(sel):
            return []
        prov, model = cols.codes("provider"), cols.codes("model")
        pair = combine(prov.index[sel], model.index[sel])
        g = Groups.of(combine(pair, days[sel] // DAY_US), sel)
        firsts, lasts, min_ts = spans(cols, g)
        heads = g.rows[g.starts]
        out = []
        for k, (p, m, day, n) in enumerate(
            zip(
                prov.index[heads].tolist(),
                model.index[heads].tolist(),
                days[heads].tolist(),
                g.sizes.tolist(),
                strict=True,
            )
        ):
            key = f"{prov.values[p]}/{model.values[m]}"
            out.append(
                Partial(
                    "unpriced",
                    key,
                    0,
                    day,
                    day + DAY_US,
                    n,
                    _ZERO,
                    0,
                    0,
                    0.0,
                    min_ts[k],
                    firsts[k],
                    lasts[k],
                    False,
                    source,
                )
            )
        return out

    def merge(self, partials: Sequence[Partial], details: Details, out: list[Finding]) -> None:
        for (_, key), ps in by_group(partials).items():
            for day, dp in by_window(ps):
                if self.fired.get(day, key):
                    continue
                self.fired.put(day, key, True)
                first = min(dp, key=lambda p: p.first)
                cols = details.columns(first.source)
                row = first.first[2] - cols.row_base
                provider = str(cols.strings("provider", np.array([row]))[0])
                model = str(cols.strings("model", np.array([row]))[0])
                start, ts = from_us(day), cols.ts_at(row)
                said = {"provider": provider, "model": model, "day": start.date().isoformat()}
                alert = make_alert(
                    "unpriced_model",
                    "global",
                    "warning",
                    ts,
                    Decimal(1),
                    Decimal(0),
                    _message(provider, model, start, ts, said),
                    (key, start.date().isoformat()),
                    said,
                )
                out.append(Finding(first.first, UNPRICED, 0, alert))

    def expire(self, watermark_us: int) -> None:
        self.fired.expire(watermark_us)

    def snapshot(self) -> UnpricedWire:
        return [[day, key] for day, key, _ in self.fired.items()]

    def restore(self, data: UnpricedWire) -> None:
        for day, key in data:
            self.fired.put(int(day), str(key), True)
