"""A per-event detection engine, kept in tests as the oracle of ``stream.engine.Engine``.

This is the per-event engine that left the product (one fact at a time, every rule a few
lines of plain Python over dicts), with the rules that depended on *when* a lazy sweep ran
replaced by sweep-independent ones. The same rules are stated in each detector's docstring:

* windows (minute, hour, day, calendar period) take a fact while ``end + allowed_lateness >=
  watermark`` (stream/windows.py); the retry-share hour took facts up to 24 h late before,
  the unpriced day one extra day (a call too late for its day counts in its watermark's);
* an idle session (``last < watermark - session_idle_s``) and an old request (``last_s <
  watermark_s - max(lateness, 3600)``) are forgotten when their next fact arrives;
* an anomaly scope is forgotten when its newest hour is past ``end + lateness + history``;
* an emitted dedup_key is forgotten when its alert ts is ``retain`` behind the watermark;
* a scope's first event must be >= 24 h (exactly, in microseconds) before the hour judged.

Nothing is pruned here (the oracle runs on test-sized streams): a rule that reads only
what its window may read gives the same answer with or without pruning.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Context, Decimal, localcontext
from typing import Any, Protocol

import pyarrow as pa

from spendstream.config import BudgetConfig, Config
from spendstream.records import Alert, BreakerEvent, stable_id
from spendstream.scopes import GLOBAL, SCOPE_FIELDS
from spendstream.stream.breakers import BreakerBoard
from spendstream.stream.detectors.sessions import LIMITS, over_limit_text

__all__ = ["ReferenceEngine"]

US = 1_000_000
MIN = 60 * US
HOUR = 60 * MIN
DAY = 24 * HOUR
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ZERO = Decimal(0)
Row = dict[str, Any]


def us(ts: datetime) -> int:
    return (ts - EPOCH) // timedelta(microseconds=1)


def dt(t: int) -> datetime:
    return EPOCH + timedelta(microseconds=t)


def alert(kind, scope, severity, ts, value, threshold, message, condition, details=None) -> Alert:  # type: ignore[no-untyped-def]
    key = "|".join((kind, scope, *condition))
    return Alert(
        stable_id("alert", key),
        kind,
        scope,
        severity,
        ts,
        value,
        threshold,
        message,
        key,
        details or {},
    )


class Rate:
    def __init__(self, c: Config) -> None:
        self.limit = c.runaway.max_calls_per_minute
        self.lat = c.detection.allowed_lateness_s * US
        self.counts: dict[tuple[str, int], int] = {}

    def observe(self, r: Row, ts: int, wm: int) -> list[Alert]:
        minute = ts - ts % MIN
        if minute + MIN + self.lat < wm:
            return []
        out = []
        for kind in ("api_key", "session"):
            scope = scope_of(r, kind)
            if scope is None:
                continue
            n = self.counts.get((scope, minute), 0) + 1
            self.counts[(scope, minute)] = n
            if n == self.limit + 1:
                start = dt(minute)
                out.append(
                    alert(
                        "runaway_rate",
                        scope,
                        "critical",
                        r["ts"],
                        Decimal(n),
                        Decimal(self.limit),
                        f"{scope} made more than {self.limit:,} call{'' if self.limit == 1 else 's'} in the minute from "
                        f"{start:%Y-%m-%d %H:%M} UTC",
                        (start.isoformat(),),
                        {"window_start": start.isoformat(), "window_s": "60"},
                    )
                )
        return out


class Sessions:
    def __init__(self, c: Config) -> None:
        rw = c.runaway
        self.max_turns, self.max_cost, self.max_minutes = (
            rw.max_session_turns,
            rw.max_session_cost_usd,
            rw.max_session_minutes,
        )
        self.max_span = timedelta(seconds=float(rw.max_session_minutes * 60))
        self.idle = c.detection.session_idle_s * US
        self.sessions: dict[str, dict[str, Any]] = {}

    def observe(self, r: Row, ts: int, wm: int) -> list[Alert]:
        sid = r["session_id"]
        if sid is None:
            return []
        st = self.sessions.get(sid)
        if st is not None and st["last"] < wm - self.idle:
            st = None
        if st is None:
            st = self.sessions[sid] = {
                "first": ts,
                "last": ts,
                "calls": 0,
                "turn": 0,
                "cost": ZERO,
                "fired": set(),
            }
        st["first"], st["last"] = min(st["first"], ts), max(st["last"], ts)
        st["calls"] += 1
        if r["turn"] is not None:
            st["turn"] = max(st["turn"], r["turn"])
        if r["cost_usd"] is not None:
            st["cost"] += r["cost_usd"]
        scope = f"session:{sid}"
        turns = max(st["calls"], st["turn"])
        span = timedelta(microseconds=st["last"] - st["first"])
        minutes = (Decimal(span // timedelta(milliseconds=1)) / 60_000).quantize(
            Decimal("0.000001")
        )
        checks = (
            ("turns", Decimal(turns), Decimal(self.max_turns), "turns", turns > self.max_turns),
            ("cost", st["cost"], self.max_cost, "USD", st["cost"] > self.max_cost),
            ("duration", minutes, self.max_minutes, "minutes", span > self.max_span),
        )
        out = []
        for limit, value, threshold, _unit, over in checks:
            if over and limit not in st["fired"]:
                st["fired"].add(limit)
                out.append(
                    alert(
                        "runaway_session",
                        scope,
                        "critical",
                        r["ts"],
                        value,
                        threshold,
                        f"{scope} is over its {limit} limit: "
                        + over_limit_text(LIMITS.index(limit), value, threshold),
                        (limit,),
                        {"limit": limit, "session_id": sid},
                    )
                )
        return out


class Retries:
    def __init__(self, c: Config) -> None:
        d = c.detection
        self.max_attempts = c.runaway.max_attempts
        self.forget_s = max(d.allowed_lateness_s, 3600)
        self.lat = d.allowed_lateness_s * US
        self.factor, self.min_share, self.min_calls = (
            d.retry_share_factor,
            d.retry_min_share,
            d.retry_min_calls,
        )
        self.requests: dict[str, list[int]] = {}  # [attempts, calls, last_s, fired]
        self.hours: dict[tuple[str, int], list[int]] = {}
        self.fired_hours: dict[str, int] = {}

    def observe(self, r: Row, ts: int, wm: int) -> list[Alert]:
        out = []
        key, sess, rid = r["api_key_id"], r["session_id"], r["request_id"]
        scope = f"api_key:{key}" if key else (f"session:{sess}" if sess else "global")
        if rid is not None:
            ts_s = ts // US
            req = self.requests.get(rid)
            if req is not None and req[2] < wm // US - self.forget_s:
                req = None
            if req is None:
                req = self.requests[rid] = [0, 0, ts_s, 0]
            req[0] = max(req[0], r["attempt"])
            req[1] += 1
            req[2] = max(req[2], ts_s)
            attempts = max(req[0], req[1])
            if attempts > self.max_attempts and not req[3]:
                req[3] = 1
                out.append(
                    alert(
                        "retry_storm",
                        scope,
                        "warning",
                        r["ts"],
                        Decimal(attempts),
                        Decimal(self.max_attempts),
                        f"request {rid} on {scope} made {attempts} attempts "
                        f"(limit {self.max_attempts})",
                        ("request", rid),
                        {"request_id": rid, "form": "attempts"},
                    )
                )
        if key is not None:
            hour = ts - ts % HOUR
            if hour + HOUR + self.lat >= wm:
                cur = self.hours.setdefault((key, hour), [0, 0])
                cur[0] += 1
                cur[1] += int(r["status"] != "ok" or r["attempt"] > 1)
                a = self._share(key, hour, cur, r)
                if a is not None:
                    out.append(a)
        return out

    def _share(self, key: str, hour: int, cur: list[int], r: Row) -> Alert | None:
        if cur[0] < self.min_calls or self.fired_hours.get(key, -(2**63)) >= hour:
            return None
        base = [0, 0]
        for h in range(hour - DAY, hour, HOUR):
            b = self.hours.get((key, h), [0, 0])
            base[0] += b[0]
            base[1] += b[1]
        if base[0] < self.min_calls:
            return None
        share = Decimal(cur[1]) / Decimal(cur[0])
        base_share = Decimal(base[1]) / Decimal(base[0])
        threshold = max(self.min_share, self.factor * base_share)
        if share < self.min_share or share <= self.factor * base_share:
            return None
        self.fired_hours[key] = hour
        start = dt(hour)
        scope = f"api_key:{key}"
        q = Decimal("0.0001")
        return alert(
            "retry_storm",
            scope,
            "warning",
            r["ts"],
            share.quantize(q),
            threshold.quantize(q),
            f"{scope}: {share:.0%} of calls failed or were retries in the hour from "
            f"{start:%Y-%m-%d %H:00} UTC, against {base_share:.0%} over the previous 24 h",
            ("share", start.isoformat()),
            {"form": "share", "window_start": start.isoformat()},
        )


def scope_of(r: Row, kind: str) -> str | None:
    if kind == GLOBAL:
        return GLOBAL
    value = r[SCOPE_FIELDS[kind]]
    return None if value is None else f"{kind}:{value}"


class Anomaly:
    def __init__(self, c: Config) -> None:
        an = c.anomaly
        self.factor, self.min_base = an.factor, an.min_baseline_usd
        self.kinds = list(dict.fromkeys(an.scopes))
        self.seasonal, self.days = an.method == "seasonal", an.seasonal_days
        self.hist = self.days * DAY if self.seasonal else DAY
        self.lat = c.detection.allowed_lateness_s * US
        self.scopes: dict[str, dict[str, Any]] = {}

    def observe(self, r: Row, ts: int, wm: int) -> list[Alert]:
        hour = ts - ts % HOUR
        if hour + HOUR + self.lat < wm:
            return []
        cost = r["cost_usd"] if r["cost_usd"] is not None else ZERO
        out = []
        for kind in self.kinds:
            scope = scope_of(r, kind)
            if scope is None:
                continue
            st = self.scopes.get(scope)
            if st is not None and st["last_hour"] + HOUR + self.lat + self.hist < wm:
                st = None
            if st is None:
                st = self.scopes[scope] = {
                    "first": ts,
                    "last_hour": hour,
                    "hours": {},
                    "fired": set(),
                }
            st["first"] = min(st["first"], ts)
            st["last_hour"] = max(st["last_hour"], hour)
            spend = st["hours"].get(hour, ZERO) + cost
            st["hours"][hour] = spend
            if hour in st["fired"] or st["first"] > hour - self.hist or cost == 0:
                continue
            last24 = sum((st["hours"].get(hour - i * HOUR, ZERO) for i in range(1, 25)), ZERO)
            if self.seasonal:
                same = (st["hours"].get(hour - d * DAY, ZERO) for d in range(1, self.days + 1))
                mean = sum(same, ZERO) / self.days
            else:
                mean = last24 / 24
            if last24 < self.min_base:
                continue
            threshold = self.factor * mean
            if spend > threshold:
                st["fired"].add(hour)
                out.append(self._alert(scope, r, hour, spend, threshold, mean))
        return out

    def _alert(self, scope, r, hour, spend, threshold, mean) -> Alert:  # type: ignore[no-untyped-def]
        start = dt(hour)
        if not self.seasonal:
            basis = "the previous 24 h mean hourly spend"
        elif self.days > 1:
            basis = f"the same hour's mean over the previous {self.days} days"
        else:
            basis = "the same hour the previous day"
        p = Decimal("0.000001")
        return alert(
            "hourly_anomaly",
            scope,
            "warning",
            r["ts"],
            spend,
            threshold.quantize(p),
            f"{scope} spent {usd(spend)} so far in the hour from "
            f"{start:%Y-%m-%d %H:00} UTC, over {self.factor} x {basis} "
            f"({usd(mean)})",
            (start.isoformat(),),
            {
                "window_start": start.isoformat(),
                "baseline_mean_usd": str(mean.quantize(p)),
                "method": "seasonal" if self.seasonal else "plain",
            },
        )


def period_bounds(ts: datetime, period: str) -> tuple[datetime, datetime]:
    if period == "hour":
        start = ts.replace(minute=0, second=0, microsecond=0)
        return start, start + timedelta(hours=1)
    if period == "day":
        start = ts.replace(hour=0, minute=0, second=0, microsecond=0)
        return start, start + timedelta(days=1)
    start = ts.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if start.month == 12:
        return start, start.replace(year=start.year + 1, month=1)
    return start, start.replace(month=start.month + 1)


def _dollars(amount: Decimal) -> str:
    # Written apart from the engine's: pad the exact digits to cents, never cut any.
    whole, _, frac = format(amount.normalize(), "f").partition(".")
    return f"{int(whole):,}.{frac.ljust(2, '0')}"


def spent(spend: Decimal, threshold: Decimal) -> str:
    # Written apart from spendstream.wording.usd_past: cents (usd), unless the amount they
    # show is not the spend and either is no more than the threshold or misses the spend by
    # more than a thousandth of it; then every digit of the spend, none padded.
    text = usd(spend)
    shown = Decimal("".join(c for c in text if c not in "$,"))
    off = max(shown, spend) - min(shown, spend)
    if shown != spend and (shown <= threshold or off > threshold / 1000):
        return "$" + format(spend.normalize(Context(prec=80)), "f")
    return text


def usd(amount: Decimal) -> str:
    # Written apart from spendstream.wording.usd: cents with thousands separators, a
    # sub-cent amount to three significant digits, below a millionth in E notation.
    if amount == 0 or amount >= Decimal("0.01"):
        return "$" + format(amount.quantize(Decimal("0.01"), context=Context(prec=80)), ",")
    if amount < Decimal("0.000001"):
        mantissa, exponent = format(amount, ".2E").split("E")
        return f"${mantissa}E{int(exponent)}"
    digits = 2 - amount.adjusted()
    return "$" + format(round(amount, digits).normalize(), "f")


class Budgets:
    def __init__(self, c: Config) -> None:
        self.budgets: list[BudgetConfig] = list(c.budget)
        self.lat = timedelta(seconds=c.detection.allowed_lateness_s)
        self.periods: dict[tuple[int, datetime], dict[str, Any]] = {}

    @staticmethod
    def _in_scope(r: Row, scope: str) -> bool:
        return scope_of(r, scope.partition(":")[0]) == scope

    def observe(self, r: Row, ts: int, wm: int) -> list[Alert]:
        if r["cost_usd"] is None:
            return []
        out = []
        for i, b in enumerate(self.budgets):
            if not self._in_scope(r, b.scope):
                continue
            start, end = period_bounds(r["ts"], b.period)
            if end + self.lat < dt(wm):
                continue
            per = self.periods.setdefault((i, start), {"spend": ZERO, "fired": set()})
            per["spend"] += r["cost_usd"]
            spend = per["spend"]
            bid = f"{b.scope}/{b.period}/{b.amount_usd}"
            key = start.isoformat()
            details = {
                "budget": bid,
                "period": b.period,
                "period_start": key,
                "period_end": end.isoformat(),
                "amount_usd": str(b.amount_usd),
            }
            for level in sorted(b.alert_at):
                tag = str(level)
                if tag in per["fired"] or spend < level * b.amount_usd:
                    continue
                per["fired"].add(tag)
                sev = "info" if level < Decimal("0.8") else ("warning" if level < 1 else "critical")
                out.append(
                    alert(
                        "budget_threshold",
                        b.scope,
                        sev,
                        r["ts"],
                        spend,
                        level * b.amount_usd,
                        f"{b.scope} spent {spent(spend, level * b.amount_usd)} of its "
                        f"${_dollars(b.amount_usd)} {b.period} budget ({level:%} level) in the period "
                        f"from {start:%Y-%m-%d %H:00} UTC",
                        (b.period, str(b.amount_usd), key, tag),
                        {**details, "level": tag},
                    )
                )
            if b.hard_limit is not None and "hard" not in per["fired"]:
                limit = b.hard_limit * b.amount_usd
                if spend >= limit:
                    per["fired"].add("hard")
                    out.append(
                        alert(
                            "budget_exceeded",
                            b.scope,
                            "critical",
                            r["ts"],
                            spend,
                            limit,
                            f"{b.scope} spent {spent(spend, limit)}, past the hard "
                            f"limit of {b.hard_limit} x its ${_dollars(b.amount_usd)} {b.period} budget",
                            (b.period, str(b.amount_usd), key),
                            {**details, "hard_limit": str(b.hard_limit)},
                        )
                    )
        return out


class Cache:
    def __init__(self, c: Config) -> None:
        d = c.detection
        self.drop, self.min_base, self.min_tokens = (
            d.cache_drop_points,
            d.cache_min_baseline_share,
            d.cache_min_input_tokens,
        )
        self.lat = d.allowed_lateness_s * US
        self.hours: dict[tuple[str, int], list[int]] = {}
        self.fired: set[tuple[str, int]] = set()

    def observe(self, r: Row, ts: int, wm: int) -> list[Alert]:
        f = r["feature"]
        if f is None or r["input_tokens"] == 0:
            return []
        hour = ts - ts % HOUR
        if hour + HOUR + self.lat < wm:
            return []
        cur = self.hours.setdefault((f, hour), [0, 0])
        cur[0] += r["input_tokens"]
        cur[1] += r["cache_read_tokens"]
        if cur[0] < self.min_tokens or (f, hour) in self.fired:
            return []
        base = [0, 0]
        for h in range(hour - DAY, hour, HOUR):
            b = self.hours.get((f, h), [0, 0])
            base[0] += b[0]
            base[1] += b[1]
        if base[0] < self.min_tokens:
            return []
        base_share = Decimal(base[1]) / Decimal(base[0])
        share = Decimal(cur[1]) / Decimal(cur[0])
        if base_share < self.min_base or share > base_share - self.drop:
            return []
        self.fired.add((f, hour))
        start = dt(hour)
        scope = f"feature:{f}"
        q = Decimal("0.0001")
        return [
            alert(
                "cache_hit_drop",
                scope,
                "warning",
                r["ts"],
                share.quantize(q),
                (base_share - self.drop).quantize(q),
                f"{scope} read {share:.0%} of its input tokens from the prompt cache in the hour "
                f"from {start:%Y-%m-%d %H:00} UTC, against {base_share:.0%} over the previous 24 h",
                (start.isoformat(),),
                {"window_start": start.isoformat(), "baseline_share": str(base_share.quantize(q))},
            )
        ]


class Unpriced:
    def __init__(self, c: Config) -> None:
        self.lat = c.detection.allowed_lateness_s * US
        self.fired: set[tuple[str, int]] = set()

    def observe(self, r: Row, ts: int, wm: int) -> list[Alert]:
        if r["cost_usd"] is not None:
            return []
        day = ts - ts % DAY
        late = day + DAY + self.lat < wm
        if late:  # counted in the day of the watermark it arrived at
            day = wm - wm % DAY
        model = f"{r['provider']}/{r['model']}"
        if (model, day) in self.fired:
            return []
        self.fired.add((model, day))
        start = dt(day)
        details = {"provider": r["provider"], "model": r["model"], "day": start.date().isoformat()}
        calls = f"its calls on {start:%Y-%m-%d}"
        if late:
            details["call_day"] = f"{r['ts']:%Y-%m-%d}"
            calls = (
                f"its calls arriving on {start:%Y-%m-%d} (the first dated {r['ts']:%Y-%m-%d}, late)"
            )
        return [
            alert(
                "unpriced_model",
                "global",
                "warning",
                r["ts"],
                Decimal(1),
                Decimal(0),
                f"no price for {_named(r['provider'], r['model'])}: {calls} land with priced = "
                "false and null costs; add a [[prices.model]] entry to the configuration "
                "(`spendstream prices unpriced` lists every such model)",
                (model, start.date().isoformat()),
                details,
            )
        ]


def _named(provider: str, model: str) -> str:
    if provider.strip() == provider and model.strip() == model:
        return f"{provider}/{model}"
    return f"{provider!r}/{model!r} (spaces around the name)"


class Rule(Protocol):
    def observe(self, r: Row, ts: int, wm: int) -> list[Alert]: ...


class ReferenceEngine:
    """Judges facts one at a time, in arrival order."""

    def __init__(self, config: Config) -> None:
        self.detectors: list[Rule] = [
            Rate(config),
            Sessions(config),
            Retries(config),
            Anomaly(config),
            Budgets(config),
            Cache(config),
            Unpriced(config),
        ]
        self.board = BreakerBoard(config.breaker)
        d = config.detection
        self.retain_s = 2 * max(d.allowed_lateness_s, d.session_idle_s, 86_400)
        self.emitted: dict[str, int] = {}
        self.watermark: int | None = None

    def process(self, facts: pa.Table) -> tuple[list[Alert], list[BreakerEvent]]:
        # Sums as exact as the engine's (80 digits; the default 28 round past $1e10).
        with localcontext(Context(prec=80)):
            return self._process(facts)

    def _process(self, facts: pa.Table) -> tuple[list[Alert], list[BreakerEvent]]:
        alerts: list[Alert] = []
        events: list[BreakerEvent] = []
        for r in facts.to_pylist():
            ts = us(r["ts"])
            if self.watermark is None or ts > self.watermark:
                self.watermark = ts
                events.extend(self.board.tick(r["ts"]))
            wm = self.watermark
            for det in self.detectors:
                for a in det.observe(r, ts, wm):
                    seen = self.emitted.get(a.dedup_key)
                    if seen is not None and seen >= wm // US - self.retain_s:
                        continue
                    self.emitted[a.dedup_key] = us(a.ts) // US
                    alerts.append(a)
                    change = self.board.on_alert(a)
                    if change is not None:
                        events.append(change)
        return alerts, events

    def advance_breakers(self, ts: datetime) -> list[BreakerEvent]:
        return self.board.tick(ts)
