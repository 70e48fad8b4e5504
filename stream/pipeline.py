"""The pipeline's pure core, shared by the embedded runner and the Faust workers.

raw records -> ``stream.batch.decode_lines`` -> an Arrow table of events + dead letters
events (judged new by the warehouse) -> ``Pipeline.price`` -> facts
facts -> ``Pipeline.detect`` -> alerts + breaker events

No I/O here: the shells (``spendstream.runtime.embedded``, the Faust app) read input, ask
the warehouse which events are new, and persist what these functions return.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from spendstream.config import Config
from spendstream.producers.event import UsageEvent
from spendstream.records import Alert, BreakerEvent, Fact
from spendstream.stream.detection import DetectionEngine
from spendstream.stream.pricing import Pricer

__all__ = ["Pipeline"]


class Pipeline:
    """Prices and judges batches of new events; holds the pricer and the detection state."""

    def __init__(self, config: Config, engine: DetectionEngine | None = None) -> None:
        self.config = config
        self.pricer = Pricer.from_config(config.prices)
        self.engine = engine if engine is not None else DetectionEngine(config)

    @classmethod
    def restore(cls, config: Config, snapshot: dict[str, Any] | None) -> Pipeline:
        """A pipeline whose detectors continue from a saved snapshot (None: a fresh start)."""
        if snapshot is None:
            return cls(config)
        return cls(config, DetectionEngine.restore(config, snapshot))

    def price(self, events: Sequence[UsageEvent], ingested_at: datetime) -> list[Fact]:
        costs = self.pricer.price_batch(events)
        return [
            Fact(event=e, cost=c, ingested_at=ingested_at)
            for e, c in zip(events, costs, strict=True)
        ]

    def detect(self, facts: Sequence[Fact]) -> tuple[list[Alert], list[BreakerEvent]]:
        return self.engine.process(facts)

    def snapshot(self) -> dict[str, Any]:
        return self.engine.snapshot()
