"""The cache and retry detectors cache each hour's 24-hour baseline; the cache must be
invisible: on any sequence, late events included, they raise exactly the alerts a
detector that recomputes the baseline for every event raises."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spendstream.records import Alert, Fact
from spendstream.stream.detectors.cache import CacheDetector
from spendstream.stream.detectors.retries import RetryDetector
from tests.stream.detection_facts import at, config, fact

_CFG = config(
    detection={
        "allowed_lateness_s": 7200,
        "retry_min_calls": 3,
        "retry_min_share": "0.3",
        "retry_share_factor": "1.5",
        "cache_min_input_tokens": 3000,
        "cache_drop_points": "0.2",
        "cache_min_baseline_share": "0.5",
    }
)

_spec = st.tuples(
    # A day of baseline and three hours after it; the unsorted tail lands late, often in
    # the hours inside the current hour's baseline.
    st.one_of(
        st.integers(min_value=0, max_value=24 * 3600),
        st.integers(min_value=24 * 3600, max_value=27 * 3600),
    ),
    st.sampled_from(["k1", "k2"]),
    st.sampled_from(["ok", "ok", "error"]),
    st.sampled_from([0, 500, 900, 1000]),  # cache-read tokens of 1000 input
)


def _facts(specs: list[tuple[int, str, str, int]], sort_prefix: int) -> list[Fact]:
    # Mostly in time order (as traffic is), with a tail of unsorted, late arrivals.
    ordered = sorted(specs[:sort_prefix]) + specs[sort_prefix:]
    return [
        fact(
            at(sec),
            api_key_id=key,
            status=status,
            feature=key,
            input_tokens=1000,
            cache_read_tokens=read,
        )
        for sec, key, status, read in ordered
    ]


def _run(det: Any, facts: list[Fact], *, recompute: bool) -> list[Alert]:
    out: list[Alert] = []
    wm: datetime | None = None
    for f in facts:
        wm = f.event.ts if wm is None or f.event.ts > wm else wm
        if recompute:
            det._base.clear()
        out.extend(det.observe(f, wm))
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs=st.lists(_spec, min_size=1, max_size=200), sort_prefix=st.integers(0, 200))
def test_cached_baselines_raise_the_same_alerts_as_recomputed_ones(
    specs: list[tuple[int, str, str, int]], sort_prefix: int
) -> None:
    facts = _facts(specs, sort_prefix)
    for kind in (CacheDetector, RetryDetector):
        cached = _run(kind(_CFG), facts, recompute=False)
        fresh = _run(kind(_CFG), facts, recompute=True)
        assert cached == fresh


def test_the_property_is_not_vacuous() -> None:
    # A day of healthy traffic, then an hour of errors and cache misses: both detectors fire.
    specs = [(h * 3600 + i, "k1", "ok", 900) for h in range(26) for i in range(5)]
    specs += [(26 * 3600 + i, "k1", "error", 0) for i in range(5)]
    facts = _facts(specs, len(specs))
    for kind, name in ((CacheDetector, "cache_hit_drop"), (RetryDetector, "retry_storm")):
        alerts = _run(kind(_CFG), facts, recompute=False)
        assert [a.kind for a in alerts] == [name]
        assert alerts == _run(kind(_CFG), facts, recompute=True)


def test_a_late_event_in_a_fired_hour_moves_the_current_hours_baseline() -> None:
    # Hours 0..22: one call each at a 90% cache share. Hour 23 collapses (fires). Hour 24
    # reads 75%, fine against the 24 h before it. Then a large, fully cached call arrives
    # late into hour 23: it is not judged (that hour already fired) but it raises hour 24's
    # baseline so that 75% is now a drop, and the next call of hour 24 must say so.
    specs = [(h * 3600, "k1", "ok", 900) for h in range(23)]
    specs += [(23 * 3600 + i, "k1", "ok", 0) for i in range(3)]
    specs += [(24 * 3600 + i, "k1", "ok", 750) for i in range(3)]
    facts = _facts(specs, len(specs))
    facts.append(
        fact(at(23 * 3600 + 10), feature="k1", input_tokens=100_000, cache_read_tokens=100_000)
    )
    facts.append(fact(at(24 * 3600 + 10), feature="k1", input_tokens=1000, cache_read_tokens=750))
    alerts = _run(CacheDetector(_CFG), facts, recompute=False)
    assert [a.ts for a in alerts] == [at(23 * 3600 + 2), at(24 * 3600 + 10)]
    assert alerts == _run(CacheDetector(_CFG), facts, recompute=True)


def test_a_late_call_in_a_fired_hour_moves_the_current_hours_retry_baseline() -> None:
    # Hours 0..22: 30% failed calls. Hour 23 fails outright (fires). Hour 24 at 2 in 5 is
    # under 1.5x the 24 h share (31%). Then 200 good calls arrive late into hour 23 (not
    # judged: it fired) and drop the baseline to 17%: hour 24's next call must fire.
    specs = [
        (h * 3600 + i, "k1", "error" if i in (1, 4, 7) else "ok", 0)
        for h in range(23)
        for i in range(10)
    ]
    specs += [(23 * 3600 + i, "k1", "error", 0) for i in range(5)]
    specs += [(24 * 3600 + i, "k1", "error" if i in (2, 4) else "ok", 0) for i in range(5)]
    facts = _facts(specs, len(specs))
    facts += [fact(at(23 * 3600 + 100 + i), api_key_id="k1") for i in range(200)]
    facts.append(fact(at(24 * 3600 + 10), api_key_id="k1"))
    alerts = _run(RetryDetector(_CFG), facts, recompute=False)
    assert [a.ts for a in alerts] == [at(23 * 3600 + 2), at(24 * 3600 + 10)]
    assert alerts == _run(RetryDetector(_CFG), facts, recompute=True)
