"""The pipeline's pure core, shared by the embedded runner and the Faust workers.

raw records -> ``stream.batch.judge_lines`` -> an Arrow table of new events + dead letters
events (judged new by the warehouse) -> ``Pipeline.price`` -> facts
facts -> ``Pipeline.detect`` -> alerts + breaker events (``stream.engine.Engine`` on the
facts as one Arrow table)

No I/O here: the shells (``spendstream.runtime.embedded``, the Faust app) read input, ask
the warehouse which events are new, and persist what these functions return.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from spendstream.config import Config
from spendstream.pricedata import PriceData
from spendstream.producers.event import UsageEvent
from spendstream.records import Fact
from spendstream.stream.engine import Detection, Engine
from spendstream.stream.pricing import Pricer
from spendstream.table_schemas import facts_table

__all__ = ["Pipeline"]


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
