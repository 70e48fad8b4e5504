"""A realistic synthetic workload with a story in it, for ``spendstream demo``, tests and benchmarks.

Three days of traffic from five teams (diurnal load, cached system prompts, retries,
agent sessions with sub-agents, a batch summariser, a self-hosted fine-tune with no
price), and on the last day four things go wrong:

* 01:00  an agent session loops for 40 minutes at ~150 calls a minute (runaway);
* 14:00  the growth team's onboarding-emails job spends many times its usual hour;
  the growth team's daily budget is blown the same afternoon;
* 16:00  a prompt change breaks support-chat's prompt cache (hit rate 90% -> ~50%).

Deterministic for a given (seed, start): event ids and values repeat exactly, so
re-running the demo adds nothing to the warehouse.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

__all__ = [
    "DEMO_CONFIG_TOML",
    "LOOP_SESSION",
    "Workload",
    "default_start",
    "generate",
    "write_jsonl",
]

LOOP_SESSION = "sess-agent-loop-7f3a"
LOOP_KEY = "key-platform-agent-ci"
DAYS = 3

# Budgets and limits the demo's story is told against (a real deployment writes its own).
DEMO_CONFIG_TOML = """
[[budget]]
scope = "team:growth"
period = "day"
amount_usd = 40.0
alert_at = [0.5, 0.8, 1.0]
hard_limit = 1.5

[[budget]]
scope = "global"
period = "month"
amount_usd = 5000.0

# The agents' burst (spendstream.runtime.agent_burst): a cap leases hold under concurrency.
[[budget]]
scope = "team:agents"
period = "day"
amount_usd = 5.0
hard_limit = 1.0

[leases]
# Small leases (4 calls' worst case): sixteen agents share $5 without stranding it.
refill_calls = 4
"""


@dataclass(frozen=True, slots=True)
class _Feature:
    team: str
    feature: str
    provider: str
    model: str
    share: float  # of base traffic
    input_mean: int
    output_mean: int
    cache_hit: float  # share of input read from cache
    api_key: str
    batch: bool = False
    project: str = "core"


FEATURES: tuple[_Feature, ...] = (
    _Feature(
        "search", "semantic-search", "openai", "gpt-5-mini", 0.26, 1800, 250, 0.5, "key-search-prod"
    ),
    _Feature(
        "support",
        "support-chat",
        "anthropic",
        "claude-sonnet-4-5",
        0.22,
        6000,
        450,
        0.9,
        "key-support-prod",
    ),
    _Feature(
        "support",
        "ticket-summary",
        "openai",
        "gpt-5",
        0.10,
        3000,
        300,
        0.0,
        "key-support-batch",
        batch=True,
    ),
    _Feature(
        "growth",
        "onboarding-emails",
        "google",
        "gemini-2.5-flash",
        0.16,
        2500,
        900,
        0.2,
        "key-growth-prod",
        project="lifecycle",
    ),
    _Feature(
        "platform",
        "coding-agent",
        "anthropic",
        "claude-sonnet-4-5",
        0.20,
        12000,
        800,
        0.7,
        "key-platform-agent",
    ),
    _Feature(
        "research",
        "doc-classifier",
        "self-hosted",
        "llama-3.1-8b-support-ft",
        0.06,
        900,
        40,
        0.0,
        "key-research-gpu",
        project="labs",
    ),
)


def default_start(today: datetime | None = None) -> datetime:
    """Midnight UTC three days before today, so the demo's story ends in the recent past."""
    now = today or datetime.now(UTC)
    midnight = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight - timedelta(days=DAYS)


def _diurnal(hour: int) -> float:
    # Quiet nights, a peak mid-afternoon UTC.
    return 0.35 + 0.65 * max(0.0, math.sin(math.pi * (hour - 5) / 16)) if 5 <= hour <= 21 else 0.35


@dataclass
class Workload:
    """Generates event dicts (JSON-ready) in time order."""

    events: int = 50_000
    seed: int = 7
    start: datetime | None = None

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(generate(self.events, self.seed, self.start))


def _ts(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def generate(
    events: int = 50_000, seed: int = 7, start: datetime | None = None
) -> list[dict[str, Any]]:
    """Return ``events`` usage events (dicts), sorted by time, with the story injected."""
    rng = random.Random(seed)
    t0 = (start or default_start()).astimezone(UTC)
    out: list[dict[str, Any]] = []
    counter = 0

    def new_id() -> str:
        nonlocal counter
        counter += 1
        return f"demo-{seed}-{t0:%Y%m%d}-{counter:08d}"

    loop_calls = min(6000, max(200, events // 10))
    spike_calls = min(3000, max(100, events // 25))
    base = max(0, events - loop_calls - spike_calls)

    weights = [_diurnal(h % 24) for h in range(24 * DAYS)]
    total_w = sum(weights)
    users = [f"user-{i:04d}" for i in range(600)]
    hours_counts = [int(base * w / total_w) for w in weights]
    hours_counts[-1] += base - sum(hours_counts)

    # Larger workloads are more services, not busier ones: beyond the demo's 50,000 calls,
    # traffic spreads over more api keys and agent sessions, so each stays within the
    # default limits and only the injected story trips them.
    fan = max(1, events // 50_000)
    broken_cache_from = t0 + timedelta(days=DAYS - 1, hours=16)
    for hour, n in enumerate(hours_counts):
        h0 = t0 + timedelta(hours=hour)
        for _ in range(n):
            f = rng.choices(FEATURES, weights=[x.share for x in FEATURES])[0]
            ts = h0 + timedelta(seconds=rng.uniform(0, 3600))
            inp = max(50, int(rng.gauss(f.input_mean, f.input_mean * 0.3)))
            outp = max(1, int(rng.gauss(f.output_mean, f.output_mean * 0.4)))
            hit = f.cache_hit
            if f.feature == "support-chat" and ts >= broken_cache_from:
                hit = 0.5
            cache_read = int(inp * hit * rng.uniform(0.9, 1.0)) if hit else 0
            cache_write = int((inp - cache_read) * 0.3) if f.provider == "anthropic" and hit else 0
            req = new_id()
            ev: dict[str, Any] = {
                "event_id": req,
                "ts": _ts(ts),
                "provider": f.provider,
                "model": f.model,
                "input_tokens": inp,
                "output_tokens": outp,
                "cache_read_tokens": cache_read,
                "cache_write_tokens": cache_write,
                "batch": f.batch,
                "team": f.team,
                "feature": f.feature,
                "project": f.project,
                "environment": "prod",
                "user_id": rng.choice(users),
                "api_key_id": f.api_key if fan == 1 else f"{f.api_key}-{rng.randrange(fan)}",
                "request_id": f"req-{req}",
                "latency_ms": round(rng.uniform(200, 4000), 1),
            }
            if f.feature == "coding-agent":
                # One session per 5-minute slot: ordinary agent runs stay well inside the
                # 30-minute duration limit, so only the injected loop trips a breaker.
                slot = int((ts - h0).total_seconds() // 300)
                sess = f"sess-agent-{hour:03d}-{slot:02d}"
                if fan > 1:
                    sess += f"-{rng.randrange(fan)}"
                ev["session_id"] = sess
                if (
                    rng.random() < 0.3
                ):  # a sub-agent dispatched by the main session, on a cheaper model
                    ev["parent_session_id"] = sess
                    ev["session_id"] = f"{sess}-sub{rng.randrange(3)}"
                    ev["model"] = "claude-haiku-4-5"
                ev["turn"] = rng.randrange(1, 30)
            if rng.random() < 0.04:  # a failed first attempt, then its retry
                failed = dict(
                    ev, event_id=new_id(), status=rng.choice(["error", "timeout"]), output_tokens=0
                )
                failed["ts"] = _ts(ts - timedelta(seconds=2))
                out.append(failed)
                ev["attempt"] = 2
            out.append(ev)

    # The runaway agent loop: one session, ~150 calls a minute for 40 minutes, growing context.
    loop_start = t0 + timedelta(days=DAYS - 1, hours=1)
    step = 2400.0 / loop_calls
    for i in range(loop_calls):
        ctx = 8000 + 40 * i
        out.append(
            {
                "event_id": new_id(),
                "ts": _ts(loop_start + timedelta(seconds=i * step)),
                "provider": "anthropic",
                "model": "claude-sonnet-4-5",
                "input_tokens": ctx,
                "output_tokens": 600,
                "cache_read_tokens": int(ctx * 0.8),
                "cache_write_tokens": int(ctx * 0.05),
                "team": "platform",
                "feature": "coding-agent",
                "project": "core",
                "environment": "prod",
                "api_key_id": LOOP_KEY,
                "session_id": LOOP_SESSION,
                "turn": i + 1,
                "latency_ms": 1800.0,
            }
        )

    # The spiking hour: a bulk re-send of onboarding emails with long outputs.
    spike_start = t0 + timedelta(days=DAYS - 1, hours=14)
    for _ in range(spike_calls):
        out.append(
            {
                "event_id": new_id(),
                "ts": _ts(spike_start + timedelta(seconds=rng.uniform(0, 3599))),
                "provider": "google",
                "model": "gemini-2.5-flash",
                "input_tokens": 9000,
                "output_tokens": 6000,
                "team": "growth",
                "feature": "onboarding-emails",
                "project": "lifecycle",
                "environment": "prod",
                "user_id": rng.choice(users),
                "api_key_id": "key-growth-prod",
                "latency_ms": 5200.0,
            }
        )

    out.sort(key=lambda e: (e["ts"], e["event_id"]))
    return out


def write_jsonl(
    path: Path, events: int = 50_000, seed: int = 7, start: datetime | None = None
) -> int:
    """``generate(events, seed, start)`` as a JSON Lines file, one compact event per line;
    returns how many lines (a few percent over ``events``: failed attempts and their retries
    are calls of their own)."""
    written = 0
    with open(path, "w", encoding="utf-8") as fh:
        for e in generate(events, seed, start):
            fh.write(json.dumps(e, separators=(",", ":")) + "\n")
            written += 1
    return written
