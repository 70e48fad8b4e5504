"""Columnar pricing vs a per-event ``genai_prices.calc_price`` loop, same events, same run.

    .venv/bin/python -m bench.pricing [--events 100000] [--seed 7]

The workload is synthetic but shaped like real traffic: a dozen catalog models across
anthropic, openai, google, deepseek (time-of-day prices), openrouter and bedrock, with
prompt caching on about half the calls (a third of Anthropic's cache writes with the
1-hour TTL), a few long-context (tiered) requests, web searches on 3% of the calls of
models that bill them, audio input on a tenth of gemini-2.5-flash calls, batch calls where
the catalog has batch prices, timestamps over 18 months (so several price periods apply)
and 2% calls to self-hosted models nobody prices.

Measured, in one process:

* ``calc_price_loop`` (the baseline): ``calc_price(Usage(...), model, provider_id=...,
  genai_request_timestamp=ts, price_context=batch?)`` per event, a LookupError = unpriced;
* ``price_table_cold``: ``Pricer.from_config().price_table(table)`` on the events as one
  Arrow table (what the columnar pipeline hands it), a fresh pricer each time (model
  matching and period resolution included), best of three;
* ``price_table_warm``: the same on a pricer that has seen the events, in 20,000-event
  tables (the embedded ingest batch size), best of three;
* ``price_batch_warm``: ``Pricer.price_batch(events)``, the adapter for callers holding
  ``UsageEvent`` objects (objects -> Arrow -> price_table -> ``Cost`` objects).

The previous run's figures (the per-event ``price_batch`` engine before price_table) are
kept beside the new ones in results/pricing.json (``previous``) and the RESULTS.md line.

The totals must agree: every event within the per-component rounding to 18 places (only
rates with more than 12 fractional digits per million tokens round at all), the sums
likewise, and the same events unpriced.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import time
from datetime import UTC, datetime, timedelta
from decimal import Context, Decimal, localcontext
from typing import Any

import pyarrow as pa
from genai_prices import Usage, calc_price

from bench._common import ROOT, record
from bench._common import machine as shared_machine
from spendstream.producers.event import UsageEvent
from spendstream.records import Cost
from spendstream.stream.pricing import Pricer, costs_from_table
from spendstream.table_schemas import events_table

NAME = "pricing"
CHUNK = 20_000  # [pipeline] ingest_batch_size
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
    return shared_machine(("spendstream", "genai-prices", "numpy", "pyarrow", "pydantic"))


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
        write_1h = write if provider == "anthropic" and write and rng.random() < 0.33 else 0
        audio = 0
        if model == "gemini-2.5-flash" and rng.random() < 0.1:
            audio = rng.randint(0, total - read - write)
        tools = None
        if provider in ("anthropic", "openai", "google") and not embedding and rng.random() < 0.03:
            tools = {"web_search": rng.randint(1, 3)}
        events.append(
            UsageEvent(
                event_id=f"b{i}",
                ts=ts,
                provider=provider,
                model=model,
                input_tokens=total,
                cache_read_tokens=read,
                cache_write_tokens=write,
                cache_write_1h_tokens=write_1h,
                input_audio_tokens=audio,
                output_tokens=out,
                batch=batch,
                tool_requests=tools,
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
                    cache_write_1h_tokens=e.cache_write_1h_tokens,
                    input_audio_tokens=e.input_audio_tokens,
                    cache_audio_read_tokens=e.cache_audio_read_tokens,
                    output_tokens=e.output_tokens,
                    web_searches=(e.tool_requests or {}).get("web_search", 0),
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


def price_tables(pricer: Pricer, tables: list[pa.Table]) -> list[pa.Table]:
    return [pricer.price_table(t) for t in tables]


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
    tolerance = Decimal("2.5E-18")  # five components, each within 0.5e-18 of exact
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


def _previous() -> dict[str, Any] | None:
    path = ROOT / "results" / f"{NAME}.json"
    if not path.exists():
        return None
    old = json.loads(path.read_text())
    # Keep the figures of the engine before price_table, run after run.
    if "previous" in old:
        return dict(old["previous"])
    keep = ("when", "events", "calc_price_loop", "pricer_cold", "pricer_warm", "pricer_numpy")
    return {k: old[k] for k in keep if k in old} | {"engine": "per-event price_batch"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pricing")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)

    previous = _previous()
    events = workload(args.events, args.seed)
    whole = [events_table(events)]
    chunks = [events_table(events[i : i + CHUNK]) for i in range(0, len(events), CHUNK)]
    theirs, t_base, w_base = timed(calc_price_loop, events)
    cold_runs = [timed(price_tables, Pricer.from_config(), whole) for _ in range(3)]
    cold, t_cold, w_cold = min(cold_runs, key=lambda r: r[1])
    pricer = Pricer.from_config()
    price_tables(pricer, chunks)
    warm_runs = [timed(price_tables, pricer, chunks) for _ in range(3)]
    warm, t_warm, w_warm = min(warm_runs, key=lambda r: r[1])
    objs, t_objs, w_objs = min(
        (timed(pricer.price_batch, events) for _ in range(3)), key=lambda r: r[1]
    )
    ours = costs_from_table(cold[0])
    if ours != [c for t in warm for c in costs_from_table(t)] or ours != objs:
        raise AssertionError("pricer runs disagree with each other")
    agreement = compare(events, ours, theirs)

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
        "price_table_cold": rate(t_cold, w_cold),
        "price_table_warm": rate(t_warm, w_warm),
        "price_batch_warm": rate(t_objs, w_objs),
        "speedup_cold": round(t_base / t_cold, 1),
        "speedup_warm": round(t_base / t_warm, 1),
        "agreement": agreement,
        "previous": previous,
        "goal": "pricing >= 30x the calc_price loop, totals equal",
    }
    before = ""
    if previous and "pricer_cold" in previous:
        before = (
            f"; before price_table ({previous['when'][:10]}): price_batch "
            f"{previous['pricer_cold']['events_per_s']}/s cold, "
            f"{previous['pricer_warm']['events_per_s']}/s warm vs calc_price loop "
            f"{previous['calc_price_loop']['events_per_s']}/s on four token counts"
        )
    line = (
        f"- {NAME} ({report['when']}, {report['machine']['cpu_model']}, "
        f"{report['machine']['cores']} cores, {n} events with 1h writes, web searches and "
        f"audio, CPU time): Pricer.price_table {report['price_table_cold']['events_per_s']}/s "
        f"cold, {report['price_table_warm']['events_per_s']}/s warm in {CHUNK}-event tables vs "
        f"calc_price loop {report['calc_price_loop']['events_per_s']}/s = "
        f"{report['speedup_cold']}x cold, {report['speedup_warm']}x warm; price_batch over "
        f"UsageEvent objects {report['price_batch_warm']['events_per_s']}/s; totals equal "
        f"(diff {agreement['total_difference_usd']} USD){before} -> results/{NAME}.json"
    )
    record(NAME, report, line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
