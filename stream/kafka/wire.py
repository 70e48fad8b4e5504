"""Records on the internal priced topic (stage 1 -> stage 2).

One record carries many priced facts (per-record producer and Faust costs dominate
otherwise): a JSON header line listing each fact's source position, cost, ingested_at
and byte length, a newline, then the usage events exactly as received, back to back:
stage 2 parses the same bytes stage 1 validated, so nothing is lost or changed by a
second serialisation. A manual breaker reset travels on the same single-partition topic,
so the engine sees resets and facts in one order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import orjson

from spendstream.producers.event import UsageEvent
from spendstream.records import Cost, Fact
from spendstream.signing import RecordSigner

__all__ = [
    "MAX_RECORD_BYTES",
    "IdleMarker",
    "PricedFact",
    "ResetCommand",
    "decode_priced",
    "encode_idle",
    "encode_priced_facts",
    "encode_reset",
]

# Below Kafka's default max.message.bytes (1 MiB) with room for the header.
MAX_RECORD_BYTES = 512 * 1024


@dataclass(frozen=True, slots=True)
class PricedFact:
    """A fact with where its event was read: (usage partition, offset)."""

    partition: int
    offset: int
    fact: Fact
    raw: bytes  # the usage record as received


@dataclass(frozen=True, slots=True)
class ResetCommand:
    """``spendstream breakers reset SCOPE``: close the scope's breaker at ``ts``.

    ``header`` is the command's JSON as sent and ``signature`` what followed it (the
    ``spendstream.signing`` header value, or b"" when unsigned)."""

    scope: str
    ts: datetime
    header: bytes = b""
    signature: bytes = b""

    def verified_by(self, signer: RecordSigner) -> bool:
        return signer.verify("reset", None, self.header, self.signature)


@dataclass(frozen=True, slots=True)
class IdleMarker:
    """Stage 1 has published every fact of usage ``partition`` below ``offset`` (caught up)."""

    partition: int
    offset: int


def _cost_to_wire(cost: Cost | None) -> dict[str, str] | None:
    if cost is None:
        return None
    return {
        "input": str(cost.input_cost_usd),
        "cache_read": str(cost.cache_read_cost_usd),
        "cache_write": str(cost.cache_write_cost_usd),
        "output": str(cost.output_cost_usd),
        "tool": str(cost.tool_cost_usd),
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
        tool_cost_usd=Decimal(data.get("tool", "0")),
    )


def _entry(pf: PricedFact) -> dict[str, object]:
    return {
        "p": pf.partition,
        "o": pf.offset,
        "cost": _cost_to_wire(pf.fact.cost),
        "ingested_at": pf.fact.ingested_at.isoformat(),
        "n": len(pf.raw),
    }


def encode_priced_facts(facts: Sequence[PricedFact]) -> list[bytes]:
    """Records of at most ~MAX_RECORD_BYTES each (one fact per record if it is larger)."""
    out: list[bytes] = []
    chunk: list[PricedFact] = []
    size = 0

    def flush() -> None:
        if chunk:
            header = orjson.dumps({"t": "facts", "items": [_entry(pf) for pf in chunk]})
            out.append(header + b"\n" + b"".join(pf.raw for pf in chunk))
            chunk.clear()

    for pf in facts:
        if chunk and size + len(pf.raw) > MAX_RECORD_BYTES:
            flush()
            size = 0
        chunk.append(pf)
        size += len(pf.raw) + 200
    flush()
    return out


def encode_reset(scope: str, ts: datetime, signer: RecordSigner | None = None) -> bytes:
    """The command's JSON, then (signed) a newline and its signature."""
    header = orjson.dumps({"t": "reset", "scope": scope, "ts": ts.isoformat()})
    if signer is None:
        return header
    return header + b"\n" + signer.signature("reset", None, header)


def encode_idle(partition: int, offset: int) -> bytes:
    return orjson.dumps({"t": "idle", "p": partition, "o": offset})


def decode_priced(value: bytes) -> list[PricedFact] | ResetCommand | IdleMarker:
    head, sep, body = value.partition(b"\n")
    header = orjson.loads(head)
    if header["t"] == "reset":
        return ResetCommand(
            str(header["scope"]), datetime.fromisoformat(header["ts"]), head, body.strip()
        )
    if header["t"] == "idle":
        return IdleMarker(int(header["p"]), int(header["o"]))
    if header["t"] != "facts" or not sep:
        raise ValueError(f"not a priced-topic record: {head[:200]!r}")
    out = []
    pos = 0
    validate = UsageEvent.model_validate_json
    for item in header["items"]:
        raw = body[pos : pos + item["n"]]
        pos += item["n"]
        fact = Fact(
            event=validate(raw),
            cost=_cost_from_wire(item["cost"]),
            ingested_at=datetime.fromisoformat(item["ingested_at"]),
        )
        out.append(PricedFact(int(item["p"]), int(item["o"]), fact, raw))
    return out
