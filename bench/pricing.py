"""Batch pricer vs a per-event ``genai_prices.calc_price`` loop, on the same events, same run.

    .venv/bin/python -m bench.pricing [--events 100000] [--seed 7]

The workload is synthetic but shaped like real traffic: a dozen catalog models across
anthropic, openai, google, deepseek (time-of-day prices), openrouter and bedrock, with
prompt caching on about half the calls, a few long-context (tiered) requests, batch calls
where the catalog has batch prices, timestamps over 18 months (so several price periods
apply) and 2% calls to self-hosted models nobody prices.

Measured, in one process:

* ``calc_price_loop`` (the baseline): ``calc_price(Usage(...), model, provider_id=...,
  genai_request_timestamp=ts, price_context=batch?)`` per event, a LookupError = unpriced;
* ``pricer_cold``: ``Pricer.from_config().price_batch(events)`` on a fresh pricer (model
  matching and period resolution included), best of three fresh pricers;
* ``pricer_warm``: a pricer that has seen the events once (what a long-running stream
  sees), best of three;
* ``pricer_numpy``: the same groups with numpy int64 arithmetic (overflow-guarded) instead
  of Python ints, to show which exact arithmetic is faster here.

The totals must agree: every event within the per-component rounding to 18 places (only
rates with more than 12 fractional digits per million tokens round at all), the sums
likewise, and the same events unpriced. Results: bench/results/pricing.json and a line in
bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import gc
import random
import time
from bisect import bisect_left
from datetime import UTC, datetime, timedelta
from decimal import Context, Decimal, localcontext
from typing import Any

import numpy as np
from genai_prices import Usage, calc_price

from bench._common import machine as shared_machine
from bench._common import record
from spendstream.producers.event import UsageEvent
from spendstream.records import Cost
from spendstream.stream.pricing import Pricer

NAME = "pricing"
START = datetime(2025, 6, 1, tzinfo=UTC)
SPAN_S = 540 * 86_400
BATCH_FROM = datetime(2026, 10, 14, tzinfo=UTC)  # the catalog's batch prices start here
# (provider, model, weight, has catalog batch prices)
MODELS: list[tuple[str, str, int, bool]] = [
    ("anthropic", "claude-sonnet-4-5", 20, True),
    ("anthropic", "claude-haiku-4-5", 10, True),
    ("anthropic", "claude-opus-4-1", 3, False),
    ("openai", "gpt-5", 10, True),
    ("openai", "gpt-5-mini", 12, True),
    ("openai", "gpt-4o", 6, True),
    ("openai", "o3", 3, False),
    ("openai", "text-embedding-3-small", 5, False),
    ("google", "gemini-2.5-pro", 6, False),
    ("google", "gemini-2.5-flash", 8, False),
    ("deepseek", "deepseek-chat", 4, False),
    ("openrouter", "google/gemini-2.5-flash", 4, False),
    ("openrouter", "meta-llama/llama-3.3-70b-instruct", 3, False),
    ("bedrock", "anthropic.claude-3-5-sonnet-20241022-v2:0", 4, False),
    ("self-hosted", "llama-3.1-70b-instruct", 1, False),
    ("self-hosted", "qwen2.5-coder-32b", 1, False),
]


def machine() -> dict[str, Any]:
    return shared_machine(("spendstream", "genai-prices", "numpy", "pydantic"))


def workload(n: int, seed: int) -> list[UsageEvent]:
    rng = random.Random(seed)
    weights = [w for _, _, w, _ in MODELS]
    events = []
    for i, (provider, model, _, has_batch) in enumerate(rng.choices(MODELS, weights, k=n)):
        ts = START + timedelta(seconds=rng.randrange(SPAN_S))
        embedding = "embedding" in model
        long_context = rng.random() < 0.02
        total = rng.randint(200_001, 400_000) if long_context else int(rng.lognormvariate(8, 1.2))
        read = write = 0
        if not embedding and rng.random() < 0.5:
            read = int(total * rng.uniform(0.3, 0.95))
            if rng.random() < 0.2:
                write = rng.randint(0, total - read)
        out = 0 if embedding else int(rng.lognormvariate(6, 1.0))
        batch = has_batch and ts >= BATCH_FROM and rng.random() < 0.1
        events.append(
            UsageEvent(
                event_id=f"b{i}",
                ts=ts,
                provider=provider,
                model=model,
                input_tokens=total,
                cache_read_tokens=read,
                cache_write_tokens=write,
                output_tokens=out,
                batch=batch,
            )
        )
    return events


def calc_price_loop(events: list[UsageEvent]) -> list[Decimal | None]:
    batch_ctx = {"processing": "batch"}
    out: list[Decimal | None] = []
    for e in events:
        try:
            calc = calc_price(
                Usage(
                    input_tokens=e.input_tokens,
                    cache_read_tokens=e.cache_read_tokens,
                    cache_write_tokens=e.cache_write_tokens,
                    output_tokens=e.output_tokens,
                ),
                e.model,
                provider_id=e.provider,
                genai_request_timestamp=e.ts,
                price_context=batch_ctx if e.batch else None,
            )
        except LookupError:
            out.append(None)
        else:
            out.append(calc.total_price)
    return out


_CTX = Context(prec=80)
_UNIT = Decimal("1E-18")
_ZERO = Decimal("0E-18")
_INT64_MAX = 2**63 - 1


def numpy_price_batch(pricer: Pricer, events: list[UsageEvent]) -> list[Cost | None]:
    """Group events sharing a price and band, then numpy int64 products per group."""
    out: list[Cost | None] = [None] * len(events)
    groups: dict[tuple[int, int], tuple[Any, list[int]]] = {}
    for i, e in enumerate(events):
        found = pricer.resolve(e.provider, e.model, e.ts, e.batch)
        if found is None:
            continue
        thresholds, plans = found
        band = bisect_left(thresholds, e.input_tokens) if thresholds else 0
        groups.setdefault((id(plans), band), (plans[band], []))[1].append(i)
    mul, dec = _CTX.multiply, Decimal
    for plan, idxs in groups.values():
        n = len(idxs)
        inp = np.fromiter((events[i].input_tokens for i in idxs), np.int64, n)
        read = np.fromiter((events[i].cache_read_tokens for i in idxs), np.int64, n)
        write = np.fromiter((events[i].cache_write_tokens for i in idxs), np.int64, n)
        outp = np.fromiter((events[i].output_tokens for i in idxs), np.int64, n)
        biggest = max(plan.input, plan.cache_read, plan.cache_write, plan.output, 1)
        top = int(max(inp.max(), outp.max()))
        if plan.den != 1 or top * biggest * 4 + plan.fee >= _INT64_MAX:
            # Would overflow int64 or needs rounding: the Python-int path stays exact.
            for i, cost in zip(idxs, pricer.price_batch([events[i] for i in idxs]), strict=True):
                out[i] = cost
            continue
        a = (inp - read - write) * plan.input + plan.fee
        b = read * plan.cache_read
        c = write * plan.cache_write
        d = outp * plan.output
        t = a + b + c + d
        for i, av, bv, cv, dv, tv in zip(
            idxs, a.tolist(), b.tolist(), c.tolist(), d.tolist(), t.tolist(), strict=True
        ):
            out[i] = Cost(
                mul(dec(av), _UNIT) if av else _ZERO,
                mul(dec(bv), _UNIT) if bv else _ZERO,
                mul(dec(cv), _UNIT) if cv else _ZERO,
                mul(dec(dv), _UNIT) if dv else _ZERO,
                mul(dec(tv), _UNIT),
                plan.source,
            )
    return out


def timed(fn: Any, *args: Any) -> tuple[Any, float, float]:
    """(result, CPU seconds of this process, wall seconds).

    CPU time is the figure compared: the machine is shared, and wall time there measures
    the neighbours as much as the code.
    """
    gc.collect()
    c0, w0 = time.process_time(), time.perf_counter()
    result = fn(*args)
    return result, time.process_time() - c0, time.perf_counter() - w0


def compare(
    events: list[UsageEvent], ours: list[Cost | None], theirs: list[Decimal | None]
) -> dict[str, Any]:
    """Per-event and total agreement; raises if they disagree beyond the documented rounding."""
    tolerance = Decimal("2E-18")  # four components, each within 0.5e-18 of exact
    exact = within = 0
    with localcontext(Context(prec=100)):
        total_ours = total_theirs = Decimal(0)
        for e, c, t in zip(events, ours, theirs, strict=True):
            if (c is None) != (t is None):
                raise AssertionError(f"{e.provider}/{e.model}: priced by one side only")
            if c is None or t is None:
                continue
            total_ours += c.cost_usd
            total_theirs += t
            if c.cost_usd == t:
                exact += 1
            elif abs(c.cost_usd - t) <= tolerance:
                within += 1
            else:
                raise AssertionError(f"{e.event_id}: {c.cost_usd} != calc_price {t}")
        diff = total_ours - total_theirs
        if abs(diff) > tolerance * (within or 1):
            raise AssertionError(f"totals differ by {diff}")
    return {
        "priced": exact + within,
        "unpriced": sum(c is None for c in ours),
        "exactly_equal": exact,
        "equal_within_18_place_rounding": within,
        "total_usd_pricer": str(total_ours),
        "total_usd_calc_price": str(total_theirs),
        "total_difference_usd": str(diff),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pricing")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)

    events = workload(args.events, args.seed)
    theirs, t_base, w_base = timed(calc_price_loop, events)
    # Cold: a fresh pricer (model matching and period resolution included), best of three.
    cold_runs = [timed(Pricer.from_config().price_batch, events) for _ in range(3)]
    cold, t_cold, w_cold = min(cold_runs, key=lambda r: r[1])
    pricer = Pricer.from_config()
    pricer.price_batch(events)
    # Warm: the best of three, as a long-running stream sees it.
    warm_runs = [timed(pricer.price_batch, events) for _ in range(3)]
    warm, t_warm, w_warm = min(warm_runs, key=lambda r: r[1])
    npy, t_numpy, w_numpy = timed(numpy_price_batch, pricer, events)
    if not (cold == warm == npy):
        raise AssertionError("pricer runs disagree with each other")
    agreement = compare(events, cold, theirs)

    n = len(events)

    def rate(cpu_s: float, wall_s: float) -> dict[str, float]:
        return {
            "cpu_seconds": round(cpu_s, 3),
            "wall_seconds": round(wall_s, 3),
            "events_per_s": round(n / cpu_s),
            "us_per_event": round(cpu_s / n * 1e6, 3),
        }

    report = {
        "name": NAME,
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "events": n,
        "seed": args.seed,
        "models": [f"{p}/{m}" for p, m, _, _ in MODELS],
        "calc_price_loop": rate(t_base, w_base),
        "pricer_cold": rate(t_cold, w_cold),
        "pricer_warm": rate(t_warm, w_warm),
        "pricer_numpy": rate(t_numpy, w_numpy),
        "speedup_cold": round(t_base / t_cold, 1),
        "speedup_warm": round(t_base / t_warm, 1),
        "agreement": agreement,
        "goal": "pricer >= 30x the calc_price loop, totals equal",
    }
    line = (
        f"- {NAME} ({report['when']}, {report['machine']['cpu_model']}, "
        f"{report['machine']['cores']} cores, {n} events, CPU time): Pricer.price_batch "
        f"{report['pricer_cold']['events_per_s']}/s cold, {report['pricer_warm']['events_per_s']}/s "
        f"warm vs calc_price loop {report['calc_price_loop']['events_per_s']}/s = "
        f"{report['speedup_cold']}x cold, {report['speedup_warm']}x warm (numpy int64 variant "
        f"{report['pricer_numpy']['events_per_s']}/s); totals equal "
        f"(diff {agreement['total_difference_usd']} USD) -> results/{NAME}.json"
    )
    record(NAME, report, line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
