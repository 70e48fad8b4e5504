"""Reading the ``spendstream.facts`` topic back: a batch's facts for a scope owner that must
locate a crossing (``stream.partials.DetailSource``), and the cuts of batches a worker
published but never landed (the usage loop replays them cut the same way)."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from spendstream import facts_topic
from spendstream.errors import KafkaUnavailable
from spendstream.kafka.consumer import Consumer, Message
from spendstream.kafka.settings import KafkaSettings
from spendstream.stream.partials import FactsUnreadable
from spendstream.table_schemas import FACTS

__all__ = ["READ_CONFIG", "FactsReader", "batch_ref", "parse_ref"]

log = logging.getLogger(__name__)

# Decoded batches kept, by size: a round's crossings usually read a handful, and a decoded
# 20k-event batch is ~10 MB (64 of them held ~650 MB in a 10M-event run).
_CACHE_BYTES = 128 << 20
_TIMEOUT_S = 30.0
_RECHECK_S = 1.0
_TAIL = 8  # facts records looked at backwards for unlanded batches (one is usual)
_LOOK_AT_MOST = 64  # ... records of any kind, strays included


def batch_ref(partition: int, offset: int) -> str:
    """How partials name their source batch: its facts record's partition and offset."""
    return f"{partition}@{offset}"


def parse_ref(batch: str) -> tuple[int, int]:
    partition, _, offset = batch.partition("@")
    return int(partition), int(offset)


# Reads are random access (one batch where a merge may cross): prefetching what follows
# would keep up to 64 MB of facts records per reader for nothing. With one record queued,
# librdkafka postpones the partition's next fetch by fetch.queue.backoff.ms (1 s by
# default): a read after a seek waited for it, up to ~1 s per batch a scope owner read back
# (most of its merge time, and as much on a wide-scope alert), p99 ~25 ms without it
# (bench.facts_readback). Nor need the broker hold a fetch at a partition's end 500 ms.
READ_CONFIG: dict[str, Any] = {
    "queued.min.messages": 1,
    "queued.max.messages.kbytes": 4096,
    "fetch.queue.backoff.ms": 0,
    "fetch.wait.max.ms": 10,
}


class FactsReader:
    """An assign()-mode consumer of the facts topic (no group), used from one thread."""

    def __init__(
        self, settings: KafkaSettings, topic: str, config: Mapping[str, Any] | None = None
    ) -> None:
        """``config``: librdkafka settings over ``READ_CONFIG`` (the benchmark's baseline)."""
        self.topic = topic
        self.consumer = Consumer(
            settings,
            client_id="spendstream-facts-reader",
            config={**READ_CONFIG, **(config or {})},
        )
        self._cache: OrderedDict[str, pa.Table] = OrderedDict()
        self._cached_bytes = 0
        self.fetched = 0  # records read from the broker (metrics and tests)

    def _read(self, partition: int, offset: int, ref: str | None = None) -> Message:
        """The record at ``offset``; ``FactsUnreadable`` (naming ``ref``, the reference as
        partials wrote it) when it will never come (deleted by the topic's retention,
        past the partition's end, no such partition)."""
        ref = ref or batch_ref(partition, offset)
        self.consumer.assign({(self.topic, partition): offset})
        deadline = time.monotonic() + _TIMEOUT_S
        asked = False
        try:
            while time.monotonic() < deadline:
                for m in self.consumer.consume(1, 0.5):
                    if m.partition() == partition and m.offset() == offset:
                        self.fetched += 1
                        return m
                if not asked:
                    # A record that exists comes first, within ms: only a read that got
                    # nothing, or other records (librdkafka starts a position out of range
                    # over at the beginning), asks whether it can come at all (waiting out
                    # the timeout, a scope owner retried the same round for ever).
                    asked = True
                    self._check_exists(partition, offset, ref)
        finally:
            # Nothing to fetch until the next read says where: without the backoff, a
            # partition left assigned would be fetched again and again.
            self.consumer.assign({})
        raise KafkaUnavailable(
            f"cannot read {self.topic}/{partition}@{offset} within {_TIMEOUT_S:.0f}s",
            code="_TIMED_OUT",
            retriable=True,
        )

    def _has_partition(self, topic: str, partition: int) -> bool:
        parts = self.consumer.partitions_for(topic, timeout_s=5)
        if parts is not None and partition not in parts:
            # Asked again once: a broker may answer from metadata older than partitions
            # just added (grow_facts), and what is set aside on "no" is set aside for good.
            time.sleep(_RECHECK_S)
            parts = self.consumer.partitions_for(topic, timeout_s=5)
        return parts is None or partition in parts

    def end_of(self, topic: str, partition: int) -> int | None:
        """The end offset (high watermark) of ``topic``'s ``partition``, asked of the broker
        now; None when the topic has no such partition (asked twice, a second apart)."""
        if not self._has_partition(topic, partition):
            return None
        return self.consumer.watermarks((topic, partition), timeout_s=5)[1]

    def _check_exists(self, partition: int, offset: int, ref: str) -> None:
        if not self._has_partition(self.topic, partition):
            raise FactsUnreadable(ref, f"{self.topic} has no partition {partition}")
        low, high = self.consumer.watermarks((self.topic, partition), timeout_s=5)
        if offset >= high:
            raise FactsUnreadable(ref, f"past the end of {self.topic}/{partition} ({high})")
        if offset < low:
            raise FactsUnreadable(
                ref,
                f"before the first record {self.topic}/{partition} keeps ({low}): "
                "the topic's retention deleted it",
            )

    def facts_of(self, batch: str) -> pa.Table:
        """The facts (``table_schemas.FACTS``) of the batch ``batch_ref`` names;
        ``FactsUnreadable`` when they cannot be had, now or later."""
        table = self._cache.get(batch)
        if table is None:
            try:
                partition, offset = parse_ref(batch)
            except ValueError:
                raise FactsUnreadable(batch, "it names no facts record") from None
            value = self._read(partition, offset, batch).value() or b""
            try:
                table = facts_topic.decode(value).facts.select(FACTS.names)
            except ValueError as exc:
                raise FactsUnreadable(batch, str(exc)) from exc
            self._cache[batch] = table
            self._cached_bytes += table.nbytes
            while self._cached_bytes > _CACHE_BYTES and len(self._cache) > 1:
                self._cached_bytes -= self._cache.popitem(last=False)[1].nbytes
        else:
            self._cache.move_to_end(batch)
        return table

    def unlanded_cuts(
        self, partition: int, landed: int, usage_end: int | None = None
    ) -> list[tuple[int, int]]:
        """The (first, last) usage offsets of the batches published for usage ``partition``
        past its landed position ``landed``, oldest first: a worker died between publishing
        them and landing them, and they must be replayed cut exactly so (scope owners may
        have merged their partials). ``usage_end``: the usage partition's end offset; a
        record naming offsets at or past it was written by no worker (a batch is published
        after its records were read), and is passed over: replayed, the partition waited
        for those offsets, reading and holding everything else, at every takeover."""
        low, high = self.consumer.watermarks((self.topic, partition))
        cuts: list[tuple[int, int]] = []
        offset = high - 1
        looked = 0
        while offset >= low and len(cuts) < _TAIL and looked < _LOOK_AT_MOST:
            looked += 1
            try:
                value = self._read(partition, offset).value() or b""
            except FactsUnreadable as exc:  # the topic's retention deleted it meanwhile
                log.warning("looking for unlanded batches: %s", exc)
                break
            offset -= 1
            try:
                span = facts_topic.decode(value).batch_offsets
            except ValueError as exc:
                # Not written by a worker: no batch was cut by it. Failing here would stop
                # the partition's every takeover; the record stays on the topic to look at.
                log.warning(
                    "%s/%d@%d is not a facts record (%s): passed over",
                    self.topic, partition, offset + 1, exc,
                )  # fmt: skip
                continue
            if span is None or span[1] <= landed:
                break
            if usage_end is not None and span[1] >= usage_end:
                log.warning(
                    "%s/%d@%d names usage offsets %d..%d, past the usage partition's end %d: "
                    "no worker published it; passed over",
                    self.topic, partition, offset + 1, span[0], span[1], usage_end,
                )  # fmt: skip
                continue
            cuts.append(span)
        cuts.reverse()
        # A cut that does not start right after the last one (or the landed position) was
        # published by a worker that had not landed what came before: start over from there.
        out: list[tuple[int, int]] = []
        expected = landed + 1
        for first, last in cuts:
            if first == expected:
                out.append((first, last))
                expected = last + 1
            elif first > expected:
                break
            else:
                out = [(first, last)] if first == landed + 1 else []
                expected = last + 1 if out else landed + 1
        return out

    def close(self) -> None:
        self.consumer.close()
