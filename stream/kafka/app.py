"""The Faust app of ``spendstream run``: two agents, their threads, and the web endpoints.

Stage 1 agent on the usage topic (any number of partitions, split among workers):
take a batch -> parse/dedupe/price (thread) -> publish priced facts and dead letters, wait
for the broker's acks -> land facts and dead letters (thread) -> only then the batch is acked.
Stage 2 agent on the single-partition priced topic: take a batch -> detect (thread) ->
publish alerts and breaker transitions, wait for acks -> land them with the engine state
and positions (thread) -> ack. See stages.py for why a crash at any point loses nothing
and lands nothing twice.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import faust
import orjson

from spendstream.config import Config
from spendstream.kafka.settings import KafkaSettings
from spendstream.records import BreakerEvent, DeadLetter, alert_to_wire, breaker_to_wire
from spendstream.runtime.http.events import MAX_BODY_BYTES
from spendstream.signing import load_breaker_signer
from spendstream.stream.kafka.metrics import WorkerMetrics
from spendstream.stream.kafka.stages import DetectOutcome, DetectStage, UsageRecord, UsageStage
from spendstream.stream.kafka.topology import TopicNames, topic_names
from spendstream.stream.kafka.wire import encode_idle

__all__ = ["EXIT_NOT_DURABLE", "OutRecord", "Runtime", "Stage", "WebSettings", "faust_credentials"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# The process exits with this code, without committing offsets, when a batch could not be
# made durable; a supervisor restarts it and the batch replays.
EXIT_NOT_DURABLE = 75


Stage = Literal["all", "usage", "detect"]


@dataclass(frozen=True, slots=True)
class WebSettings:
    host: str
    port: int
    token: str | None  # None: POST /v1/events answers 503 until a token is configured


# (topic, key, value) or (topic, key, value, headers)
OutRecord = (
    tuple[str, bytes | None, bytes] | tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]
)


def faust_credentials(settings: KafkaSettings) -> Any:
    """Faust's form of the ``[kafka]`` security settings (None for PLAINTEXT)."""
    ctx = None
    if settings.uses_tls:
        ctx = ssl.create_default_context(cafile=settings.ssl_ca_location)
        ctx.check_hostname = settings.ssl_endpoint_identification
        if settings.ssl_certificate_location and settings.ssl_key_location:
            password = settings.ssl_key_password
            ctx.load_cert_chain(
                settings.ssl_certificate_location,
                settings.ssl_key_location,
                password.get_secret_value() if password else None,
            )
    if settings.uses_sasl:
        password = settings.sasl_password
        return faust.SASLCredentials(
            username=settings.sasl_username,
            password=password.get_secret_value() if password else None,
            mechanism=settings.sasl_mechanism,
            ssl_context=ctx,
        )
    return None if ctx is None else faust.SSLCredentials(ctx)


def dead_letter_record(d: DeadLetter) -> bytes:
    return orjson.dumps(
        {
            "raw": d.raw,
            "error": d.error,
            "source": d.source,
            "received_at": d.received_at.isoformat(),
        }
    )


class Runtime:
    """One worker process: the Faust app, the two stages (each in its own thread), metrics."""

    def __init__(
        self,
        config: Config,
        workdir: Path,
        web: WebSettings,
        usage_partitions: int = 1,
        stage: Stage = "all",
        kafka: KafkaSettings | None = None,
    ) -> None:
        """``stage``: "all" runs both stages in this process (consumer group ``app_id``);
        "usage" only stage 1 (same group, so it mixes with "all" workers); "detect" only
        stage 2, in its own group ``<app_id>-detect`` — for a layout of N "usage" workers
        plus one "detect" process, which puts the two stages on different cores. Never
        run "detect" next to "all" workers: both would judge the priced topic.

        ``kafka``: the resolved ``[kafka]`` client settings (SASL/TLS), read from ``config``
        when not given."""
        self.config = config
        self.kafka = kafka or KafkaSettings.from_config(config.kafka)
        # Breaker records are signed when [breaker] has an HMAC key (spendstream.signing).
        self.signer = load_breaker_signer(config.breaker)
        self.stage = stage
        self.usage_partitions = usage_partitions
        self.workdir = Path(workdir)
        self.web = web
        self.names: TopicNames = topic_names(config.kafka)
        kc = config.kafka
        self.app = faust.App(
            kc.app_id if stage != "detect" else f"{kc.app_id}-detect",
            broker=[f"kafka://{b.strip()}" for b in self.kafka.bootstrap_servers.split(",")],
            broker_credentials=faust_credentials(self.kafka),
            datadir=str(self.workdir / "faust"),
            store="memory://",
            autodiscover=False,
            web_enabled=True,
            web_bind=web.host,
            web_host=web.host,
            web_port=web.port,
            # aiohttp refuses bodies over 1 MiB by default; a JSON Lines batch may be larger.
            web_application_options={"client_max_size": MAX_BODY_BYTES},
            # Faust's own pages (router, tables, graph, stats) are not part of the product;
            # what remains (its index) answers only with a token, like every endpoint but
            # /healthz (web.py).
            web_router_enabled=False,
            web_tables_enabled=False,
            web_graph_enabled=False,
            web_stats_enabled=False,
            web_metrics_enabled=False,
            topic_replication_factor=1,
            producer_acks=-1,
            consumer_auto_offset_reset="earliest",
            broker_commit_interval=1.0,
            broker_session_timeout=kc.session_timeout_s,
            broker_heartbeat_interval=kc.session_timeout_s / 10,
        )
        self.usage_topic = self.app.topic(
            self.names.usage,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
        )
        self.priced_topic = self.app.topic(
            self.names.priced,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
        )
        self._usage_exec = ThreadPoolExecutor(1, thread_name_prefix="spendstream-usage")
        self._detect_exec = ThreadPoolExecutor(1, thread_name_prefix="spendstream-detect")
        self._usage_stage: UsageStage | None = None
        self._detect_stage: DetectStage | None = None
        self._detect_stale = False
        # (topic, partition) -> last offset processed by this worker
        self.processed: dict[tuple[str, int], int] = {}
        self.metrics = WorkerMetrics(self._lag, config.http.metrics_label_values)
        self.batch_size = config.pipeline.batch_size
        self.within_s = config.pipeline.batch_within_s
        if stage in ("all", "usage"):
            self.app.agent(self.usage_topic, name="usage", concurrency=1)(self._usage_agent)
            self.app.timer(max(0.2, self.within_s), name="caught-up")(self._caught_up)
        self._idle_sent: dict[int, int] = {}  # usage partition -> offset its marker covered
        if stage in ("all", "detect"):
            self.app.agent(self.priced_topic, name="detect", concurrency=1)(self._detect_agent)
        self.app.on_partitions_assigned.connect(self._on_assigned)
        self._detect_lock = asyncio.Lock()
        if stage in ("all", "detect"):
            self.app.timer(max(0.1, config.pipeline.align_idle_s / 2), name="align")(self._tick)
        from spendstream.stream.kafka.web import register_views

        register_views(self)

    # Threads.

    async def in_usage_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._usage_exec, fn, *args)

    async def in_detect_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._detect_exec, fn, *args)

    async def usage_stage(self) -> UsageStage:
        # Built in its thread: the warehouse's SQLite connection belongs to that thread.
        if self._usage_stage is None:
            self._usage_stage = await self.in_usage_thread(
                UsageStage,
                self.config,
                self.workdir,
                self.names.usage,
                f"{self.config.kafka.app_id}-usage",
            )
        return self._usage_stage

    async def detect_stage(self) -> DetectStage:
        if self._detect_stage is None:
            self._detect_stage = await self.in_detect_thread(
                DetectStage,
                self.config,
                self.workdir,
                f"{self.config.kafka.app_id}-detect",
                self.usage_partitions,
            )
            self._detect_stale = False
        elif self._detect_stale:
            # Another worker may have judged the priced partition meanwhile.
            await self.in_detect_thread(self._detect_stage.reload)
            self._detect_stale = False
        return self._detect_stage

    def _on_assigned(self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        self._detect_stale = True

    # Publishing.

    async def publish(self, records: Iterable[OutRecord]) -> int:
        """Send (topic, key, value[, headers]) records and wait until the broker has them all."""
        producer = self.app.producer
        futures = [
            await producer.send(topic, key, value, None, None, headers[0] if headers else None)
            for topic, key, value, *headers in records
        ]
        if futures:
            await asyncio.gather(*futures)
        return len(futures)

    # Agents.

    async def _durably(self, work: Callable[[], Awaitable[None]]) -> None:
        """Run one batch to its durable end even if the agent is cancelled meanwhile.

        Faust acks a take() batch when the agent leaves it, even by cancellation (a
        graceful stop): the batch must be landed by then, or it would be committed unlanded.
        A batch that fails cannot be retried in place (its effects are half-published), so
        the process ends without committing offsets and replays it on restart.
        """
        task = asyncio.ensure_future(work())
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            try:
                await task  # returns at once if it already finished
            except BaseException:
                log.exception("batch failed while stopping; exiting without commit")
                logging.shutdown()
                os._exit(EXIT_NOT_DURABLE)
            raise
        except BaseException:
            log.exception("batch could not be made durable; exiting without commit")
            logging.shutdown()
            os._exit(EXIT_NOT_DURABLE)

    async def _usage_agent(self, stream: Any) -> None:
        async for events in stream.take_events(self.batch_size, within=self.within_s):
            records = [
                UsageRecord(e.message.partition, e.message.offset, e.message.value) for e in events
            ]

            async def work(records: Sequence[UsageRecord] = records) -> None:
                await self.process_usage(records)

            await self._durably(work)

    async def process_usage(self, records: Sequence[UsageRecord]) -> None:
        steps = self.metrics.step_seconds
        stage = await self.usage_stage()
        t0 = time.perf_counter()
        outcome = await self.in_usage_thread(stage.prepare, records)
        t1 = time.perf_counter()
        out: list[OutRecord] = [(self.names.priced, None, v) for v in outcome.priced]
        out += [
            (self.names.dead_letters, None, dead_letter_record(d)) for d in outcome.dead_letters
        ]
        await self.publish(out)
        t2 = time.perf_counter()
        await self.in_usage_thread(stage.land, outcome)
        t3 = time.perf_counter()
        steps.labels("usage_parse_dedupe_price").inc(t1 - t0)
        steps.labels("usage_publish").inc(t2 - t1)
        steps.labels("usage_land").inc(t3 - t2)
        self.metrics.batches.labels("usage").inc()
        m = self.metrics
        m.events_in.inc(outcome.read)
        m.observe_facts(outcome.facts)
        m.duplicates.inc(outcome.duplicates)
        m.dead_letters.labels("usage").inc(len(outcome.dead_letters))
        m.events_out.labels(self.names.priced).inc(len(outcome.priced))
        for r in records:
            key = (self.names.usage, r.partition)
            if r.offset > self.processed.get(key, -1):
                self.processed[key] = r.offset

    async def _detect_agent(self, stream: Any) -> None:
        async for events in stream.take_events(self.batch_size, within=self.within_s):
            records = [(e.message.offset, e.message.value) for e in events]

            async def work(records: Sequence[tuple[int, bytes]] = records) -> None:
                await self.process_priced(records)

            await self._durably(work)

    async def process_priced(self, records: Sequence[tuple[int, bytes]]) -> None:
        async with self._detect_lock:
            stage = await self.detect_stage()
            t0 = time.perf_counter()
            outcome = await self.in_detect_thread(stage.process, records)
            self.metrics.step_seconds.labels("detect").inc(time.perf_counter() - t0)
            self.metrics.batches.labels("detect").inc()
            await self._emit(stage, outcome)
        if records:
            self.processed[(self.names.priced, 0)] = records[-1][0]

    def owns_priced(self) -> bool:
        consumer = getattr(self.app, "_consumer", None)
        return consumer is not None and any(
            tp.topic == self.names.priced for tp in consumer.assignment()
        )

    async def _tick(self) -> None:
        """Judge facts held for alignment once a silent partition stops holding them; when
        nothing is held, move breakers on through a quiet spell ([breaker] idle_advance_s)."""
        stage = self._detect_stage
        if stage is None or self._detect_stale or not self.owns_priced():
            return
        step = stage.tick if stage.aligner.pending() else stage.advance_idle

        async def work() -> None:
            async with self._detect_lock:
                outcome = await self.in_detect_thread(step)
                if outcome.facts or outcome.breaker_events:
                    await self._emit(stage, outcome)

        await self._durably(work)

    async def _emit(self, stage: DetectStage, outcome: DetectOutcome) -> None:
        out: list[OutRecord] = [
            (self.names.alerts, a.scope.encode(), orjson.dumps(alert_to_wire(a)))
            for a in outcome.alerts
        ]
        out += [self.breaker_record(b) for b in outcome.breaker_events]
        t0 = time.perf_counter()
        await self.publish(out)
        t1 = time.perf_counter()
        await self.in_detect_thread(stage.land, outcome)
        self.metrics.step_seconds.labels("detect_publish").inc(t1 - t0)
        self.metrics.step_seconds.labels("detect_land").inc(time.perf_counter() - t1)
        self.metrics.observe_detection(outcome.alerts, outcome.breaker_events)
        self.metrics.events_out.labels(self.names.alerts).inc(len(outcome.alerts))
        self.metrics.events_out.labels(self.names.breakers).inc(len(outcome.breaker_events))
        self.metrics.held.set(stage.aligner.pending())

    def breaker_record(self, event: BreakerEvent) -> OutRecord:
        """A breakers-topic record, signed when [breaker] has an HMAC key."""
        key, value = event.scope.encode(), orjson.dumps(breaker_to_wire(event))
        if self.signer is None:
            return (self.names.breakers, key, value)
        return (self.names.breakers, key, value, self.signer.headers("breaker", key, value))

    async def _caught_up(self) -> None:
        """Tell stage 2 which usage partitions this worker has fully published (idle markers).

        One marker per partition each time it catches up with the broker's high watermark,
        so that alignment stops waiting for it; nothing while it still has records to read.
        """
        consumer = getattr(self.app, "_consumer", None)
        if consumer is None:
            return
        markers: list[OutRecord] = []
        for tp in consumer.assignment():
            if tp.topic != self.names.usage:
                continue
            high = consumer.highwater(tp)
            last = self.processed.get((tp.topic, tp.partition))
            if high is None:
                continue
            if last is None:
                if high != 0:
                    continue  # unknown until its first batch ([pipeline] align_idle_s covers it)
                done = 0
            else:
                done = last + 1
            if done >= high and self._idle_sent.get(tp.partition) != done:
                markers.append((self.names.priced, None, encode_idle(tp.partition, done)))
                self._idle_sent[tp.partition] = done
        if markers:
            await self.publish(markers)

    # Lag.

    def _lag(self) -> Iterable[tuple[str, int, int]]:
        consumer = getattr(self.app, "_consumer", None)
        if consumer is None:
            return []
        out = []
        for tp in consumer.assignment():
            if tp.topic not in (self.names.usage, self.names.priced):
                continue
            last = self.processed.get((tp.topic, tp.partition))
            high = consumer.highwater(tp)
            if last is None or high is None:
                continue
            out.append((tp.topic, tp.partition, max(0, high - last - 1)))
        return out

    def close(self) -> None:
        self._usage_exec.shutdown(wait=True)
        self._detect_exec.shutdown(wait=True)
