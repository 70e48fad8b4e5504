"""Records on the internal priced topic (stage 1 -> stage 2).

A priced fact is a JSON header line (source position, cost, ingested_at), a newline, and
the usage event exactly as received: stage 2 parses the same bytes stage 1 validated, so
nothing is lost or changed by a second serialisation. A manual breaker reset travels on the
same single-partition topic, so the engine sees resets and facts in one order.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import orjson

from spendstream.producers.event import UsageEvent
from spendstream.stream.records import Cost, Fact

__all__ = [
    "PricedFact",
    "ResetCommand",
    "decode_priced",
    "encode_priced_fact",
    "encode_reset",
]


@dataclass(frozen=True, slots=True)
class PricedFact:
    """A fact with where its event was read: (usage partition, offset)."""

    partition: int
    offset: int
    fact: Fact


@dataclass(frozen=True, slots=True)
class ResetCommand:
    """``spendstream breakers reset SCOPE``: close the scope's breaker at ``ts``."""

    scope: str
    ts: datetime


def _cost_to_wire(cost: Cost | None) -> dict[str, str] | None:
    if cost is None:
        return None
    return {
        "input": str(cost.input_cost_usd),
        "cache_read": str(cost.cache_read_cost_usd),
        "cache_write": str(cost.cache_write_cost_usd),
        "output": str(cost.output_cost_usd),
        "total": str(cost.cost_usd),
        "source": cost.price_source,
    }


def _cost_from_wire(data: dict[str, str] | None) -> Cost | None:
    if data is None:
        return None
    return Cost(
        input_cost_usd=Decimal(data["input"]),
        cache_read_cost_usd=Decimal(data["cache_read"]),
        cache_write_cost_usd=Decimal(data["cache_write"]),
        output_cost_usd=Decimal(data["output"]),
        cost_usd=Decimal(data["total"]),
        price_source=data["source"],
    )


def encode_priced_fact(partition: int, offset: int, raw: bytes, fact: Fact) -> bytes:
    header = {
        "t": "fact",
        "p": partition,
        "o": offset,
        "cost": _cost_to_wire(fact.cost),
        "ingested_at": fact.ingested_at.isoformat(),
    }
    return orjson.dumps(header) + b"\n" + raw


def encode_reset(scope: str, ts: datetime) -> bytes:
    return orjson.dumps({"t": "reset", "scope": scope, "ts": ts.isoformat()})


def decode_priced(value: bytes) -> PricedFact | ResetCommand:
    head, sep, raw = value.partition(b"\n")
    header = orjson.loads(head)
    if header["t"] == "reset":
        return ResetCommand(str(header["scope"]), datetime.fromisoformat(header["ts"]))
    if header["t"] != "fact" or not sep:
        raise ValueError(f"not a priced-topic record: {head[:200]!r}")
    fact = Fact(
        event=UsageEvent.model_validate_json(raw),
        cost=_cost_from_wire(header["cost"]),
        ingested_at=datetime.fromisoformat(header["ingested_at"]),
    )
    return PricedFact(int(header["p"]), int(header["o"]), fact)
