"""A burst of concurrent agents on one hard budget: the demo's story of a cap that holds.

``run_agent_burst`` starts ``agents`` threads. Each is an agent with its own ``Meter`` and
``LeaseClient`` on the embedded runner's lease service (``EmbeddedRunner.leases``): before
every call it reserves the call's worst case (its prompt plus ``max_tokens`` of output at
list price), makes the call (a short sleep: the model's time), and records what the call
used with the reservation, which settles it. A call the budget cannot cover is refused
with ``BudgetExhausted`` before it is made. The agents' events then land through the same
runner, whose ledger counts them as landed spend.

What each agent asks for is seeded; which calls get through depends on how the threads
interleave, but never what lands past the cap.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

from spendstream.errors import BudgetExhausted
from spendstream.producers.guard import worst_case_usd
from spendstream.producers.meter import Meter
from spendstream.producers.transports import Record, SendResult
from spendstream.records import stable_id
from spendstream.runtime.embedded import EmbeddedRunner, IngestSummary, read_lines
from spendstream.stream.windows import period_bounds
from spendstream.synthetic import DAYS, default_start

__all__ = [
    "BURST_SCOPE",
    "AgentBurst",
    "AgentCall",
    "burst_start",
    "plan_calls",
    "run_agent_burst",
]

BURST_TEAM = "agents"
BURST_SCOPE = f"team:{BURST_TEAM}"
PROVIDER, MODEL = "openai", "gpt-5"


def burst_start(today: datetime | None = None) -> datetime:
    """23:05 UTC on the last of the demo's synthetic days (yesterday): inside the days its
    report compares, in a quiet hour."""
    return default_start(today) + timedelta(days=DAYS) - timedelta(minutes=55)


@dataclass(frozen=True, slots=True)
class AgentCall:
    input_tokens: int
    max_tokens: int
    output_tokens: int  # what the call used: below max_tokens
    worst_usd: Decimal  # what it reserves


@dataclass(frozen=True, slots=True)
class AgentBurst:
    """What the agents asked for, what the budget let through, and what landed."""

    scope: str
    budget: str  # e.g. "team:agents/day"
    period: str  # the cap's UTC period: "day", ...
    cap_usd: Decimal
    period_start: datetime  # the cap's period the agents spent in
    period_end: datetime
    agents: int
    calls: int  # attempted
    requested_usd: Decimal  # every attempted call's worst case
    granted_usd: Decimal  # the leases the service granted the agents, in total
    leases: int
    ran: int  # calls reserved and made
    refused: int  # calls refused with BudgetExhausted
    summary: IngestSummary  # the agents' events landing


def plan_calls(seed: int, agents: int, calls_per_agent: int) -> list[list[AgentCall]]:
    """Each agent's calls, seeded: a prompt, a ``max_tokens`` and what the call used."""
    rng = random.Random(f"agent-burst-{seed}")
    plans: list[list[AgentCall]] = []
    for _ in range(agents):
        calls = []
        for _ in range(calls_per_agent):
            prompt = rng.randint(2_000, 8_000)
            max_tokens = rng.choice((1024, 2048, 4096))
            used = rng.randint(max_tokens // 8, max_tokens - 1)
            worst = worst_case_usd(PROVIDER, MODEL, prompt, max_tokens, cache_writes=True)
            if worst is None:
                raise RuntimeError(f"no list price for {PROVIDER}/{MODEL}: genai-prices missing?")
            calls.append(AgentCall(prompt, max_tokens, used, worst))
        plans.append(calls)
    return plans


class _Collected:
    """A transport keeping what the agents' Meters send, to land it afterwards."""

    name = "memory"

    def __init__(self) -> None:
        self.values: list[bytes] = []
        self._lock = threading.Lock()

    def send(self, records: Sequence[Record]) -> SendResult:
        with self._lock:
            self.values.extend(r.value for r in records)
        return SendResult()

    def close(self) -> None:
        pass

    def after_fork(self) -> None:
        pass


def run_agent_burst(
    runner: EmbeddedRunner,
    at: datetime,
    events_file: Path,
    *,
    agents: int = 16,
    calls_per_agent: int = 25,
    seed: int = 7,
    scope: str = BURST_SCOPE,
) -> AgentBurst:
    """Run the burst against ``scope``'s hard budget; ``at``: the agents' events' time.

    The agents' events are written to ``events_file`` (JSON Lines, in time order), then
    landed from it through ``runner``: landing the file again adds nothing.
    """
    team = scope.removeprefix("team:")
    if scope != f"team:{team}" or scope not in runner.leases.scopes:
        raise ValueError(f"the agents' burst needs a hard [[budget]] on a team scope, not {scope}")
    caps = runner.leases.service.ledger.caps(scope)
    cap = min(caps, key=lambda c: c.limit_usd)
    plans = plan_calls(seed, agents, calls_per_agent)
    transport = _Collected()
    ran = [0] * agents
    refused = [0] * agents
    client_ids = [f"demo-agent-{seed}-{i:02d}" for i in range(agents)]
    start = threading.Barrier(agents)
    errors: list[BaseException] = []

    def agent(i: int) -> None:
        try:
            work(i)
        except BaseException as exc:  # re-raised below, in the caller's thread
            start.abort()  # the others stop waiting for this one
            errors.append(exc)

    def work(i: int) -> None:
        sleep = random.Random(f"agent-burst-{seed}-{i}").uniform
        client = runner.leases.client(client_id=client_ids[i], background=False)
        meter = Meter(transport, spool_dir=None, defaults={"team": team, "feature": "research"})
        meter.use_leases(client)
        try:
            start.wait()
            for n, call in enumerate(plans[i]):
                try:
                    reservation = meter.reserve(
                        provider=PROVIDER,
                        model=MODEL,
                        input_tokens=call.input_tokens,
                        max_tokens=call.max_tokens,
                    )
                except BudgetExhausted:
                    refused[i] += 1
                    continue
                time.sleep(sleep(0.0005, 0.002))  # the model at work; lets the agents interleave
                meter.record(
                    provider=PROVIDER,
                    model=MODEL,
                    input_tokens=call.input_tokens,
                    output_tokens=call.output_tokens,
                    event_id=stable_id("demo-agent", str(seed), str(i), str(n)),
                    ts=at + timedelta(milliseconds=100 * n + i),
                    user_id=f"agent-{i:02d}",
                    reservation=reservation,
                )
                ran[i] += 1
        finally:
            meter.close()
            client.close()

    threads = [
        threading.Thread(target=agent, args=(i,), name=f"demo-agent-{i}") for i in range(agents)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for exc in errors:
        if not isinstance(exc, threading.BrokenBarrierError):
            raise exc
    leases = [x for x in runner.leases.service.ledger.leases(scope) if x.client_id in client_ids]
    values = sorted(transport.values, key=lambda v: json.loads(v)["ts"])
    events_file.parent.mkdir(parents=True, exist_ok=True)
    events_file.write_bytes(b"".join(v + b"\n" for v in values))
    summary = runner.run(read_lines([str(events_file)]))
    period_start, period_end = period_bounds(at, cap.period)
    return AgentBurst(
        scope=scope,
        budget=cap.budget,
        period=cap.period,
        cap_usd=cap.limit_usd,
        period_start=period_start,
        period_end=period_end,
        agents=agents,
        calls=agents * calls_per_agent,
        requested_usd=sum((c.worst_usd for plan in plans for c in plan), Decimal(0)),
        granted_usd=sum((x.granted_usd for x in leases), Decimal(0)),
        leases=len(leases),
        ran=sum(ran),
        refused=sum(refused),
        summary=summary,
    )
