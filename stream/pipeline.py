"""The pipeline's pure core, shared by the embedded runner and the Faust workers.

raw records -> ``parse_records`` -> events + dead letters
events (deduplicated by the warehouse) -> ``Pipeline.price`` -> facts
facts -> ``Pipeline.detect`` -> alerts + breaker events (``stream.engine.Engine`` on the
facts as one Arrow table)

No I/O here: the shells (``stream.embedded``, the Faust app) read input, ask the
warehouse which events are new, and persist what these functions return.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from spendstream.config import Config
from spendstream.pricedata import PriceData
from spendstream.producers.event import UsageEvent, describe_validation_error
from spendstream.records import DeadLetter, Fact
from spendstream.stream.engine import Detection, Engine
from spendstream.stream.pricing import Pricer
from spendstream.table_schemas import facts_table

__all__ = [
    "MAX_RECORD_BYTES",
    "MAX_STORED_RAW_CHARS",
    "ParsedBatch",
    "Pipeline",
    "parse_records",
    "stored_raw",
]

# A usage event is a few hundred bytes; anything this large is not one, and must not
# be parsed into memory-hungry objects.
MAX_RECORD_BYTES = 1 << 20
# Dead letters keep the input as received, truncated so one huge record can't bloat the warehouse.
MAX_STORED_RAW_CHARS = 16_384


@dataclass(slots=True)
class ParsedBatch:
    events: list[UsageEvent] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)


def stored_raw(raw: bytes | str) -> str:
    """The input as a dead letter keeps it: text, truncated past ``MAX_STORED_RAW_CHARS``."""
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    if len(text) > MAX_STORED_RAW_CHARS:
        return text[:MAX_STORED_RAW_CHARS] + f"... [truncated, {len(text)} chars in all]"
    return text


def parse_records(
    raws: Iterable[bytes | str],
    source: str,
    received_at: datetime,
) -> ParsedBatch:
    """Validate raw JSON records; each ends as an event or a dead letter with a reason."""
    out = ParsedBatch()
    validate = UsageEvent.model_validate_json
    for raw in raws:
        if len(raw) > MAX_RECORD_BYTES:
            out.dead_letters.append(
                DeadLetter(
                    raw=stored_raw(raw),
                    error=f"record is {len(raw)} bytes; a usage event may be at most "
                    f"{MAX_RECORD_BYTES} bytes",
                    source=source,
                    received_at=received_at,
                )
            )
            continue
        try:
            out.events.append(validate(raw))
        except ValidationError as err:
            out.dead_letters.append(
                DeadLetter(
                    raw=stored_raw(raw),
                    error=describe_validation_error(err),
                    source=source,
                    received_at=received_at,
                )
            )
    return out


class Pipeline:
    """Prices and judges batches of new events; holds the pricer and the detection state."""

    def __init__(
        self,
        config: Config,
        engine: Engine | None = None,
        *,
        price_data: PriceData | None = None,
    ) -> None:
        self.config = config
        self.pricer = Pricer.from_config(config.prices, data=price_data)
        self.engine = engine if engine is not None else Engine(config)

    @classmethod
    def restore(
        cls,
        config: Config,
        snapshot: Any,
        *,
        price_data: PriceData | None = None,
    ) -> Pipeline:
        """A pipeline whose detectors continue from a saved snapshot (``snapshot()``'s text;
        None, or a state of another layout: a fresh start)."""
        return cls(config, Engine.restore(config, snapshot), price_data=price_data)

    def price(self, events: Sequence[UsageEvent], ingested_at: datetime) -> list[Fact]:
        # The seam to the columnar runtime: events become one Arrow table priced by
        # Pricer.price_table; the Cost objects serve the per-event detection engine until
        # it takes the priced table itself.
        costs = self.pricer.price_batch(events)
        return [
            Fact(event=e, cost=c, ingested_at=ingested_at)
            for e, c in zip(events, costs, strict=True)
        ]

    def detect(self, facts: Sequence[Fact]) -> Detection:
        # One Arrow table per batch until decoding and pricing are columnar themselves.
        return self.engine.process(facts_table(facts))

    def snapshot(self) -> str:
        """The engine's state as JSON text (it is stored inside the runtimes' JSON state)."""
        return self.engine.snapshot().decode()
