"""The pipeline's pure core of the embedded runner (the Kafka runtime calls the same pieces:
``judge_lines``, ``price_table`` and the split engine, ``stream.engine.LocalEngine`` and
``ScopeEngine``).

raw records -> ``stream.batch.judge_lines`` -> an Arrow table of new events + dead letters
new events (judged new by the warehouse) -> ``Pipeline.price_table`` -> a facts table
(``table_schemas.FACTS``)
facts table -> ``Pipeline.detect_table`` -> alerts + breaker events (``stream.engine.Engine``)

No object per event: the tables go from decoding to landing.

No I/O here: the shells (``spendstream.runtime.embedded``, ``spendstream.runtime.kafka``) read input, ask
the warehouse which events are new, and persist what these functions return.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pyarrow as pa

from spendstream.config import Config
from spendstream.pricedata import PriceData
from spendstream.stream.engine import Detection, Engine
from spendstream.stream.pricing import Pricer
from spendstream.table_schemas import EVENT_FIELDS, FACTS, TS

__all__ = ["Pipeline"]

_EVENT_NAMES = [name for name, _ in EVENT_FIELDS]


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

    def price_table(self, new: pa.Table, ingested_at: datetime) -> pa.Table:
        """The facts table (``table_schemas.FACTS``) of a table of new events.

        ``new`` holds the event columns (``EVENT_FIELDS``; others, such as the decoder's row
        and digest columns, are dropped). The same table ``facts_table`` builds from the
        ``Fact`` objects ``price`` returns, without an object per event.
        """
        priced = self.pricer.price_table(new.select(_EVENT_NAMES))
        stamp = pa.repeat(pa.scalar(ingested_at, type=TS), priced.num_rows)
        priced = priced.append_column(FACTS.field("ingested_at"), stamp)
        return pa.Table.from_arrays([priced.column(f.name) for f in FACTS], schema=FACTS)

    def detect_table(self, facts: pa.Table) -> Detection:
        """Alerts and breaker events of a facts table (``price_table``'s)."""
        return self.engine.process(facts)

    def snapshot(self) -> str:
        """The engine's state as JSON text (it is stored inside the runtimes' JSON state)."""
        return self.engine.snapshot().decode()
