"""``runaway_session``: a session over its turn count, its cost or its wall-clock duration.

A session's turn count is the number of calls it made, or its highest ``turn`` if that is
larger (turns are taken as 1-based): with ``max_session_turns = 100`` the 101st turn fires
and the 100th does not. Cost counts priced calls only (``cost > max_session_cost_usd``
fires); duration is the event-time span from its first to its last call
(``span > max_session_minutes`` fires). Each limit fires once per session.

Forgetting (sweep-independent): a session whose last call is more than
``[detection] session_idle_s`` behind the watermark is forgotten *when its next call
arrives* (that call starts it afresh; the engine still drops an alert whose dedup_key it
emitted within its retention). The per-event engine forgot it at a sweep every idle/6 of
event time, so a call just past the idle span could continue or restart the session
depending on when the last sweep ran; now the rule alone decides.

Columnar: rows grouped by session; count, highest turn and span are running aggregates,
all monotone, so each limit's crossing is the first row where it holds. Cost is summed as
float only to pick the sessions that may cross; their crossing is found with exact
Decimals. A session forgotten in the middle of a batch, or summing past 1e9 USD, is judged
call by call.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

import numpy as np
import numpy.typing as npt

from spendstream.config import Config
from spendstream.records import Alert
from spendstream.stream.columns import FactColumns
from spendstream.stream.detectors.base import SESSIONS, Finding, make_alert
from spendstream.stream.grouping import Groups
from spendstream.stream.windows import US, idle
from spendstream.wording import exact_usd, written_usd

__all__ = ["EXACT_BOUND_USD", "SessionDetector", "SessionState", "SessionWire", "might_exceed"]

_MINUTE_PLACES = Decimal("0.000001")
LIMITS = ("turns", "cost", "duration")
_UNITS = ("turns", "USD", "minutes")
_NONE = np.iinfo(np.int64).min
# Money sums past this are judged call by call, on exact Decimals: the columnar path's float
# screen (might_exceed) keeps its margin below it.
EXACT_BOUND_USD = 1e9
# Snapshot: [[session, first_us, last_us, calls, max_turn, cost, fired bits], ...]
SessionWire = list[list[int | str]]

I64 = npt.NDArray[np.int64]


def might_exceed(total: npt.NDArray[np.float64], limit: float) -> npt.NDArray[np.bool_]:
    """Float running sums that may be over ``limit`` once summed exactly (generous margin)."""
    return total >= limit - (abs(limit) + np.abs(total)) * 1e-9 - 1e-12


def shift(groups: Groups, values: I64, fill: int) -> I64:
    """Each sorted row's previous value inside its group; ``fill`` for a group's first row."""
    out = np.empty_like(values)
    out[1:] = values[:-1]
    out[groups.starts] = fill
    return out


@dataclass(slots=True)
class SessionState:
    first_us: int
    last_us: int
    calls: int = 0
    max_turn: int = 0
    cost_usd: Decimal = Decimal(0)
    fired: int = 0  # bit i: LIMITS[i] fired

    @property
    def turns(self) -> int:
        return max(self.calls, self.max_turn)


class SessionDetector:
    name = "sessions"

    def __init__(self, config: Config, replay_all: bool = False) -> None:
        rw = config.runaway
        self.max_turns = rw.max_session_turns
        self.max_cost_usd = rw.max_session_cost_usd
        self.max_minutes = rw.max_session_minutes
        # As the per-event engine had it: a float timedelta, exact to the microsecond.
        self.max_duration_us = timedelta(seconds=float(rw.max_session_minutes * 60)) // timedelta(
            microseconds=1
        )
        self.idle_us = config.detection.session_idle_s * US
        self.replay_all = replay_all
        self.sessions: dict[str, SessionState] = {}
        self._swept_at: int | None = None  # derived: when the last sweep ran

    def detect(self, cols: FactColumns, out: list[Finding]) -> None:
        codes, _ = cols.scope_codes("session")
        sel = np.flatnonzero(codes.index >= 0)
        if not len(sel):
            return
        g = Groups.of(codes.index[sel], sel)
        rows, starts, ends = g.rows, g.starts.tolist(), g.ends.tolist()
        ids = [codes.values[c] for c in codes.index[rows[g.starts]].tolist()]
        carried = [self.sessions.get(sid) for sid in ids]
        ts, wm = cols.ts_us[rows], cols.wm_us[rows]
        last0 = np.array([_NONE if s is None else s.last_us for s in carried], dtype=np.int64)
        # The last call before each row: the carried one, then the group's running maximum.
        before = np.maximum(last0[g.group], shift(g, g.cummax(ts), _NONE))
        restart = (before == _NONE) | (before < wm - self.idle_us)
        inner = g.any(restart & (g.rank() > 0))
        # A session forgotten at its first row here starts afresh; that is no reason to replay.
        base = [None if r else s for s, r in zip(carried, restart[g.starts].tolist(), strict=True)]
        cost = cols.cost_f[rows]
        cost0 = np.array([0.0 if s is None else float(s.cost_usd) for s in base])
        run_cost = cost0[g.group] + g.cumsum(cost)
        slow = inner | (g.last(run_cost) >= EXACT_BOUND_USD) | self.replay_all
        calls0 = np.array([0 if s is None else s.calls for s in base], dtype=np.int64)
        turn = cols.ints("turn")[rows]
        turn0 = np.array([0 if s is None else s.max_turn for s in base], dtype=np.int64)
        first0 = np.array([_NONE if s is None else s.first_us for s in base], dtype=np.int64)
        first0 = np.where(first0 == _NONE, g.first(ts), first0)
        lastb = np.array([_NONE if s is None else s.last_us for s in base], dtype=np.int64)
        turns = np.maximum(
            calls0[g.group] + g.rank() + 1, np.maximum(turn0[g.group], g.cummax(turn))
        )
        span = np.maximum(lastb[g.group], g.cummax(ts)) - np.minimum(first0[g.group], g.cummin(ts))
        at_turns = g.first_where(turns > self.max_turns)
        at_cost = g.first_where(might_exceed(run_cost, float(self.max_cost_usd)))
        at_span = g.first_where(span > self.max_duration_us)
        crossing = (at_turns.tolist(), at_cost.tolist(), at_span.tolist())
        # Most sessions cross nothing in a batch: they only carry their totals forward.
        may_cross = ((at_turns >= 0) | (at_cost >= 0) | (at_span >= 0)).tolist()
        sums = cols.cost_sums(g)
        max_turn, first_ts = g.maximum(turn).tolist(), ts[g.starts].tolist()
        min_ts, max_ts = g.minimum(ts).tolist(), g.maximum(ts).tolist()
        sessions = self.sessions
        for i, (sid, replay) in enumerate(zip(ids, slow.tolist(), strict=True)):
            lo, hi = starts[i], ends[i]
            if replay:
                self._replay(sid, rows[lo:hi].tolist(), cols, out)
                continue
            st = base[i] or SessionState(first_ts[i], first_ts[i])
            if may_cross[i]:
                hits: list[tuple[int, int, Decimal]] = []
                for limit in (0, 2):
                    p = crossing[limit][i]
                    if p >= 0 and not st.fired >> limit & 1:
                        value = Decimal(int(turns[p])) if limit == 0 else _minutes(int(span[p]))
                        hits.append((p, limit, value))
                if crossing[1][i] >= 0 and not st.fired & 2:
                    hit = cols.crossing(rows[lo:hi], st.cost_usd, self.max_cost_usd, strict=True)
                    if hit is not None:
                        hits.append((lo + hit[0], 1, hit[1]))
                for p, limit, value in sorted(hits, key=lambda h: (h[0], h[1])):
                    st.fired |= 1 << limit
                    out.append(self._finding(sid, limit, value, int(rows[p]), cols))
            st.first_us = min(st.first_us, min_ts[i])
            st.last_us = max(st.last_us, max_ts[i])
            st.calls += hi - lo
            st.max_turn = max(st.max_turn, max_turn[i])
            st.cost_usd += sums[i]
            sessions[sid] = st

    def _replay(self, sid: str, rows: list[int], cols: FactColumns, out: list[Finding]) -> None:
        """The session judged one call at a time: the rule itself."""
        st = self.sessions.get(sid)
        turns = cols.ints("turn", -1)
        for row, cost in zip(rows, cols.costs(rows), strict=True):
            ts = int(cols.ts_us[row])
            if st is not None and idle(st.last_us, int(cols.wm_us[row]), self.idle_us):
                st = None
            if st is None:
                st = SessionState(ts, ts)
            st.first_us = min(st.first_us, ts)
            st.last_us = max(st.last_us, ts)
            st.calls += 1
            turn = int(turns[row])
            if turn >= 0:
                st.max_turn = max(st.max_turn, turn)
            if cost is not None:
                st.cost_usd += cost
            span = st.last_us - st.first_us
            checks = (
                (Decimal(st.turns), st.turns > self.max_turns),
                (st.cost_usd, st.cost_usd > self.max_cost_usd),
                (_minutes(span), span > self.max_duration_us),
            )
            for limit, (value, over) in enumerate(checks):
                if over and not st.fired >> limit & 1:
                    st.fired |= 1 << limit
                    out.append(self._finding(sid, limit, value, row, cols))
        if st is not None:
            self.sessions[sid] = st

    def _finding(
        self, sid: str, limit: int, value: Decimal, row: int, cols: FactColumns
    ) -> Finding:
        return Finding(cols.pos(row), SESSIONS, limit, self._alert(sid, limit, value, cols, row))

    def _alert(self, sid: str, limit: int, value: Decimal, cols: FactColumns, row: int) -> Alert:
        scope = f"session:{sid}"
        name = LIMITS[limit]
        threshold = (Decimal(self.max_turns), self.max_cost_usd, self.max_minutes)[limit]
        return make_alert(
            "runaway_session",
            scope,
            "critical",
            cols.ts_at(row),
            value,
            threshold,
            f"{scope} is over its {name} limit: {over_limit_text(limit, value, threshold)}",
            (name,),
            {"limit": name, "session_id": sid},
        )

    def expire(self, watermark_us: int) -> None:
        # Results never depend on this sweep (the rule is checked at the next call);
        # it only bounds the state, so it runs once per idle/6 of event time.
        if self._swept_at is not None and watermark_us - self._swept_at < self.idle_us // 6:
            return
        self._swept_at = watermark_us
        gone = [
            s for s, st in self.sessions.items() if idle(st.last_us, watermark_us, self.idle_us)
        ]
        for sid in gone:
            del self.sessions[sid]

    def snapshot(self) -> SessionWire:
        return [
            [sid, st.first_us, st.last_us, st.calls, st.max_turn, str(st.cost_usd), st.fired]
            for sid, st in sorted(self.sessions.items())
        ]

    def restore(self, data: SessionWire) -> None:
        for sid, first, last, calls, max_turn, cost, fired in data:
            self.sessions[str(sid)] = SessionState(
                int(first), int(last), int(calls), int(max_turn), Decimal(str(cost)), int(fired)
            )


def over_limit_text(limit: int, value: Decimal, threshold: Decimal) -> str:
    """``101 turns > 100``, ``$50.0125 > $50.00``, ``270 minutes > 30``: as people write
    them (exact; no ``270.000000`` nor DECIMAL(38,18)'s trailing zeros)."""
    if LIMITS[limit] == "cost":
        return f"{exact_usd(value)} > {written_usd(threshold)}"
    return f"{_plain(value)} {_UNITS[limit]} > {_plain(threshold)}"


def _plain(value: Decimal) -> str:
    text = f"{Decimal(value):f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _minutes(span_us: int) -> Decimal:
    # Reported to the millisecond; judged exactly on the microseconds.
    return (Decimal(span_us // 1000) / 60_000).quantize(_MINUTE_PLACES)
