"""The two stages' batch logic, synchronous and free of Faust: the app runs them in a thread.

Stage 1 (``UsageStage``), per batch of usage records: decode and validate them as one batch
(``stream.batch``; each bad record -> a dead letter naming ``kafka:<topic>/<partition>@<offset>``),
judge each event new, duplicate or conflicting against the warehouse, price the new ones,
and encode each new fact for the priced topic with its (partition, offset). The app publishes those records *before* landing the facts, and acks
the usage offsets only after landing: a crash in between replays the batch, which lands
nothing twice (the warehouse dedupes by event_id) and re-publishes facts stage 2 drops by
position.

Stage 2 (``DetectStage``), per batch of priced records: drop facts at or below the highest
usage position already judged, run the detection engine, and land alerts and breaker events
together with the engine snapshot and those positions, in one warehouse commit. That commit
is the state of record: a restarted or newly assigned worker continues from it.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa

from spendstream.config import Config
from spendstream.pricedata import load_price_data
from spendstream.records import Alert, BreakerEvent, DeadLetter, Fact
from spendstream.signing import load_breaker_signer
from spendstream.stream.batch import DIGEST, ROW, events_from_table, judge_lines
from spendstream.stream.kafka.alignment import Aligner
from spendstream.stream.kafka.wire import (
    IdleMarker,
    PricedFact,
    ResetCommand,
    decode_priced,
    encode_priced_facts,
)
from spendstream.stream.pipeline import Pipeline
from spendstream.table_schemas import (
    alerts_table,
    breaker_events_table,
    dead_letters_table,
    facts_table,
)
from spendstream.warehouse import CommitResult, Warehouse

__all__ = [
    "DetectOutcome",
    "DetectStage",
    "UsageOutcome",
    "UsageRecord",
    "UsageStage",
]

log = logging.getLogger(__name__)

STATE_VERSION = 1
# positions: usage partition (as str) -> last offset judged; this key -> last priced offset.
PRICED_KEY = "priced"


@dataclass(frozen=True, slots=True)
class UsageRecord:
    partition: int
    offset: int
    value: bytes | None


@dataclass(slots=True)
class UsageOutcome:
    read: int = 0
    facts: list[Fact] = field(default_factory=list)
    digests: list[bytes] = field(default_factory=list)  # each fact's content digest
    priced: list[bytes] = field(default_factory=list)  # priced-topic records, facts in order
    dead_letters: list[DeadLetter] = field(default_factory=list)
    duplicates: int = 0


class UsageStage:
    """Stage 1: validate, dedupe against the warehouse, price."""

    def __init__(self, config: Config, workdir: Path, topic: str, writer: str) -> None:
        self.topic = topic
        self.config = config
        self.pipeline = Pipeline(config, price_data=load_price_data(workdir))
        # Stage 1 carries no positions (Kafka's group offsets are its positions, acked after
        # landing): each process is its own writer, so its commits number from 1.
        self.warehouse = Warehouse(
            workdir, writer=f"{writer}-{uuid.uuid4().hex[:8]}", config=config.warehouse
        )
        self.warehouse.ensure_views()

    def prepare(self, records: Sequence[UsageRecord]) -> UsageOutcome:
        now = datetime.now(UTC)
        out = UsageOutcome(read=len(records))
        topic = self.topic

        def position(i: int) -> str:
            return f"kafka:{topic}/{records[i].partition}@{records[i].offset}"

        # A record without a value (a tombstone) decodes as an empty line: a dead letter.
        judged = judge_lines(
            [rec.value or b"" for rec in records],
            now,
            position,
            self.warehouse.classify,
            self.config.detection.max_future_skew_s,
        )
        out.dead_letters = judged.dead_letters
        out.duplicates = judged.duplicates
        new = judged.new
        out.facts = self.pipeline.price(events_from_table(new), now)
        out.digests = new.column(DIGEST).to_pylist()
        kept = [records[i] for i in new.column(ROW).to_pylist()]
        out.priced = encode_priced_facts(
            [
                PricedFact(rec.partition, rec.offset, fact, rec.value or b"")
                for rec, fact in zip(kept, out.facts, strict=True)
            ]
        )
        return out

    def land(self, outcome: UsageOutcome) -> CommitResult:
        return self.warehouse.commit(
            facts_table(outcome.facts),
            dead_letters=dead_letters_table(outcome.dead_letters),
            digests=pa.array(outcome.digests, pa.binary()),
        )

    def land_dead_letters(self, dead_letters: Sequence[DeadLetter]) -> CommitResult:
        return self.warehouse.commit(dead_letters=dead_letters_table(dead_letters))


@dataclass(slots=True)
class DetectOutcome:
    facts: int = 0  # judged by the engine in this call
    replayed: int = 0  # already judged before a restart: dropped by position
    alerts: list[Alert] = field(default_factory=list)
    breaker_events: list[BreakerEvent] = field(default_factory=list)
    unverified_resets: int = 0  # reset commands ignored: their signature did not verify


class DetectStage:
    """Stage 2: the one detection engine, its positions and state landed with its alerts."""

    def __init__(
        self,
        config: Config,
        workdir: Path,
        writer: str,
        partitions: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.clock = clock
        self.partitions = partitions  # of the usage topic
        # With a [breaker] HMAC key, reset commands must be signed with it.
        self.signer = load_breaker_signer(config.breaker)
        self.warehouse = Warehouse(workdir, writer=writer, config=config.warehouse)
        self.positions: dict[str, int] = {}
        self.pipeline = Pipeline(config)
        self.aligner: Aligner[PricedFact] = Aligner(config.pipeline.align_idle_s, clock, partitions)
        self.judged_at = clock()  # processing time of the last judged fact (or start)
        self.advanced_at = self.judged_at  # ... or of the last idle advance
        self.reload()

    def reload(self) -> None:
        """Continue from the last landed commit (after a restart or a reassignment)."""
        # A fresh handle: another worker may have committed as this writer since (rebalance).
        self.warehouse.close()
        self.warehouse = Warehouse(
            self.warehouse.workdir, writer=self.warehouse.writer, config=self.config.warehouse
        )
        raw = self.warehouse.resume().state
        state: dict[str, Any] | None = orjson.loads(raw) if raw else None
        self.aligner = Aligner(self.config.pipeline.align_idle_s, self.clock, self.partitions)
        if state is None:
            self.pipeline = Pipeline(self.config)
            self.positions = {}
            return
        self.pipeline = Pipeline.restore(self.config, state["engine"])
        self.positions = {str(k): int(v) for k, v in state["positions"].items()}
        for lane in state.get("held", []):
            items: list[tuple[datetime, PricedFact]] = []
            for text in lane["items"]:
                decoded = decode_priced(text.encode())
                assert isinstance(decoded, list)
                items.extend((pf.fact.event.ts, pf) for pf in decoded)
            wm = lane["watermark"]
            self.aligner.restore_lane(
                int(lane["partition"]),
                None if wm is None else datetime.fromisoformat(wm),
                items,
                bool(lane.get("idle", False)),
            )

    def _judge(self, out: DetectOutcome) -> None:
        released = self.aligner.release()
        if released:
            detection = self.pipeline.detect([pf.fact for pf in released])
            out.alerts.extend(detection.alerts)
            out.breaker_events.extend(detection.breaker_events)
            out.facts += len(released)
            self.judged_at = self.advanced_at = self.clock()

    def process(self, records: Sequence[tuple[int, bytes]]) -> DetectOutcome:
        """Take (priced-topic offset, value) records; judge what alignment releases.

        Replays (of the priced topic, or of facts stage 1 re-published after a crash) are
        dropped by position.
        """
        out = DetectOutcome()
        for priced_offset, value in records:
            if priced_offset <= self.positions.get(PRICED_KEY, -1):
                out.replayed += 1
                continue
            self.positions[PRICED_KEY] = priced_offset
            rec = decode_priced(value)
            if isinstance(rec, IdleMarker):
                self.aligner.mark_idle(rec.partition)
                continue
            if isinstance(rec, ResetCommand):
                if self.signer is not None and not rec.verified_by(self.signer):
                    out.unverified_resets += 1
                    log.warning(
                        "ignoring a breaker reset of %s at priced offset %d: not signed with "
                        "the [breaker] HMAC key",
                        rec.scope,
                        priced_offset,
                    )
                    continue
                self._judge(out)  # a reset applies after the facts released before it
                event = self.pipeline.engine.reset_breaker(rec.scope, rec.ts)
                if event is not None:
                    out.breaker_events.append(event)
                continue
            for pf in rec:
                key = str(pf.partition)
                if pf.offset <= self.positions.get(key, -1):
                    out.replayed += 1
                    continue
                self.positions[key] = pf.offset
                self.aligner.add(pf.partition, pf.fact.event.ts, pf)
        self._judge(out)
        return out

    def tick(self) -> DetectOutcome:
        """Judge what an idle partition no longer holds back."""
        out = DetectOutcome()
        self._judge(out)
        return out

    def advance_idle(self) -> DetectOutcome:
        """Move breakers on by the processing time the stream has been quiet
        (``[breaker] idle_advance_s``); nothing while facts are held or time flows."""
        out = DetectOutcome()
        wait = self.config.breaker.idle_advance_s
        engine = self.pipeline.engine
        base = engine.breaker_time  # also an advance landed before a restart
        if not wait or base is None or self.aligner.pending():
            return out
        now = self.clock()
        if now - self.judged_at < wait:
            return out
        out.breaker_events = engine.advance_breakers(
            base + timedelta(seconds=now - self.advanced_at)
        )
        self.advanced_at = now
        return out

    def state(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "engine": self.pipeline.snapshot(),
            "positions": dict(self.positions),
            "held": [
                {
                    "partition": p,
                    "watermark": None if lane.watermark is None else lane.watermark.isoformat(),
                    "items": [
                        r.decode() for r in encode_priced_facts([pf for _, pf in lane.queue])
                    ],
                    "idle": lane.idle,
                }
                for p, lane in sorted(self.aligner.lanes.items())
            ],
        }

    def land(self, outcome: DetectOutcome) -> CommitResult:
        return self.warehouse.commit(
            alerts=alerts_table(outcome.alerts),
            breaker_events=breaker_events_table(outcome.breaker_events),
            state=orjson.dumps(self.state(), option=orjson.OPT_NON_STR_KEYS),
            positions=dict(self.positions),
        )
