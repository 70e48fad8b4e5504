"""The Meter: record a usage event in one line; a background thread delivers it.

``record()`` validates the event and appends it to an in-memory queue; that is all the
caller's thread ever pays. A daemon sender thread takes batches from the queue and hands
them to a transport (Kafka or HTTP). Where things can pile up, the bound and what happens
at it:

- **queue** (``queue_size`` events, default 10 000). While the spool holds events (a replay,
  which the sender finishes before it takes anything newer), the background threads move
  the queue to the spool's tail: the sender before each replayed batch, the spill thread as
  soon as the queue is half full. ``record()`` finds the queue full only when the app
  outruns them by half a queue (or the transport is slower than the app with nothing
  spooled yet); it then writes the event to the spool itself (``overflowed``), the one disk
  write the caller's thread can make; with no spool the event is dropped (``dropped``).
- **transport down**: the failed batch and everything queued after it go to the spool
  (``spooled``); the sender retries with backoff (0.1 s doubling to 5 s) and replays the
  spool, oldest first, before sending anything newer (``replayed``). With no spool the
  failed batch is held (one batch) and retried; the queue bound then applies. So is what
  of a failed batch the spool has no room for: held, retried before the spool (it is older
  than every line there), offered to the spool again at each failure, and dropped only by
  a ``close()`` that can neither send nor spool it.
- **transport stuck** (a send that does not return: Kafka's producer retries its batch in
  flight for ``delivery_timeout_ms``, 2 min): a spill thread writes the batch in flight and
  the queue to the spool once the send has hung ``spool_flush_s / 2``, then keeps the queue
  spilled every ``spool_flush_s / 4`` while the transport stays down. So during an outage
  every event ``record()`` accepted is on disk within ``spool_flush_s + linger_s`` (default
  1.05 s), as far as the spool has room, and a kill -9 at any moment loses at most the
  events of that last window. The batch in flight is written whole or not at all: one the
  spool has no room for stays in memory, its send's to settle (``close()`` spools what fits
  of it and counts the rest dropped). A batch
  spilled while in flight stays at the spool's head; if its send then succeeds, those lines
  are removed from the spool (not sent twice), unless newer lines overtook it there.
- **spool** (``spool_max_bytes`` on disk, default 256 MiB): queued events that do not fit
  stay queued (so does a hung batch that does not fit whole, and a failed batch is held);
  a line that does not fit when the queue is full too is dropped (``dropped``), logged
  naming ``spool_max_bytes``, counted.
- **rejected** by the receiver (the HTTP endpoint refused a line): logged, counted
  (``rejected``), not retried: it would be refused again.

Ordering: events reach the transport in ``record()`` order, and the spool replays in the
order events entered it. One exception: an event that overflows a full queue enters the
spool ahead of the (older) events still queued or in flight at that moment.

Nothing is dropped silently: every drop is logged (at most once a second) and counted
in ``meter.metrics``. ``close()`` (also run at interpreter exit) sends what it can within
its timeout and spools the rest for the next process.

Client-side breaker checks (``guard``) live in ``producers/guard.py`` and budget leases
(``reserve``) in ``producers/leases.py``; the Meter's methods wiring them to its default
tags in ``producers/meter_breakers_leases.py`` (its base class). ``Call`` and the
``meter.tags()`` context are in ``producers/call.py``; ``record_openai`` and the other
provider-response helpers in ``producers/meter_responses.py`` (a base class too);
``Meter.replay_slot`` is ``producers/slot_replay.py``.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, TypeVar

from pydantic import ValidationError

from spendstream.errors import SpendstreamError
from spendstream.kafka.settings import KafkaSettings
from spendstream.log_filters import OncePer
from spendstream.producers.call import CALL_TAGS as _CALL_TAGS
from spendstream.producers.call import Call, status_of
from spendstream.producers.event import UsageEvent, describe_validation_error
from spendstream.producers.leases import Reservation
from spendstream.producers.meter_breakers_leases import BreakersAndLeases
from spendstream.producers.meter_responses import ProviderResponses
from spendstream.producers.slot_replay import SlotReplay, replay_slot
from spendstream.producers.slot_replay import record_of as _record_of
from spendstream.producers.slot_replay import transport_name as _name_of
from spendstream.producers.spool import DEFAULT_SPOOL_ROOT, Spool
from spendstream.producers.transports import (
    FileTransport,
    HttpTransport,
    KafkaTransport,
    Record,
    SendResult,
    Transport,
)
from spendstream.topics import partition_key
from spendstream.wording import plural

__all__ = ["Call", "InvalidUsageEvent", "Meter", "MeterMetrics", "SlotReplay", "status_of"]

log = logging.getLogger("spendstream.producers")

ClientT = TypeVar("ClientT")

ENV_METER_URL = "SPENDSTREAM_METER_URL"
ENV_METER_TAGS = "SPENDSTREAM_METER_TAGS"
ENV_INGEST_TOKEN = "SPENDSTREAM_INGEST_TOKEN"

_BACKOFF_MIN_S = 0.1
_MIRROR_PENDING, _MIRROR_HEAD, _MIRROR_TAIL = "pending", "head", "tail"
# The spool had no room for the whole batch: it stays in memory, held by the send.
_MIRROR_REFUSED = "refused"
_BACKOFF_MAX_S = 5.0
_MAX_TRACKED_REQUESTS = 10_000


class InvalidUsageEvent(SpendstreamError, ValueError):
    """``record()`` was given an event that breaks the schema; the message names each field."""

    def __init__(self, error: ValidationError) -> None:
        super().__init__(f"invalid usage event: {describe_validation_error(error)}")
        self.error = error


@dataclass(frozen=True, slots=True)
class MeterMetrics:
    """Counters since the Meter started (``queued`` and ``spool_bytes`` are current levels)."""

    sent: int  # acknowledged by the transport (replayed ones included)
    spooled: int  # written to the spool (transport down, or at close)
    overflowed: int  # of those, written by record() because the queue was full
    replayed: int  # sent from the spool
    rejected: int  # refused by the receiver; not retried
    dropped: int  # lost to a bound (queue full with no spool, spool full): logged
    invalid: int  # refused by record() (on_invalid="drop")
    send_failures: int  # batches the transport could not deliver
    queued: int
    spool_bytes: int


class _InFlight:
    """The batch a send is working on, and whether the spill thread has put it on disk."""

    __slots__ = ("batch", "mirrored", "on_disk", "on_disk_lines", "source")

    def __init__(self, batch: list[Record], source: str) -> None:
        self.batch = batch
        self.source = source
        # pending -> head (first in the spool) | tail | refused (no room: still in memory)
        self.mirrored: str | None = None
        self.on_disk = threading.Event()
        # Its leading lines in the spool: all of them, or fewer when the disk cut the write.
        self.on_disk_lines = 0


class _Counters:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent = self.spooled = self.overflowed = self.replayed = 0
        self.rejected = self.dropped = self.invalid = self.send_failures = 0


class Meter(BreakersAndLeases, ProviderResponses):
    """Meter LLM calls: ``meter.record(provider=..., model=..., input_tokens=..., ...)``."""

    def __init__(
        self,
        transport: Transport,
        *,
        spool_dir: Path | str | None = DEFAULT_SPOOL_ROOT,
        spool_max_bytes: int = 256 << 20,
        queue_size: int = 10_000,
        batch_size: int = 1_000,
        linger_s: float = 0.05,
        on_invalid: Literal["raise", "drop"] = "raise",
        defaults: Mapping[str, Any] | None = None,
        close_timeout_s: float = 10.0,
        spool_flush_s: float = 1.0,
        **fields: Any,
    ) -> None:
        """``fields``: event fields every event gets (``team="search"``), as ``defaults``."""
        unknown = sorted(set(fields) - _EventFields)
        if unknown:
            raise TypeError(
                f"Meter() takes event fields as defaults (team, feature, ...); not: "
                f"{', '.join(unknown)}"
            )
        if queue_size < 1 or batch_size < 1:
            raise ValueError("queue_size and batch_size must be at least 1")
        if spool_flush_s <= 0:
            raise ValueError("spool_flush_s must be positive")
        self.transport = transport
        self.queue_size = queue_size
        self.batch_size = batch_size
        self._high_water = max(1, queue_size // 2)
        self.linger_s = linger_s
        self.on_invalid = on_invalid
        self.close_timeout_s = close_timeout_s
        self.spool_flush_s = spool_flush_s
        self._defaults = {**(defaults or {}), **fields}
        self._queue: collections.deque[UsageEvent] = collections.deque()
        self._spool: Spool | None = None
        if spool_dir:
            self._use_spool(
                _open_spool(
                    spool_dir, max_bytes=spool_max_bytes, destination=_destination_of(transport)
                )
            )
        self._held: list[Record] = []  # the failed batch when there is no spool
        self._c = _Counters()
        self._wake = threading.Event()
        self._closing = False
        self._deadline = float("inf")
        self._inflight = 0  # taken from the queue, not yet sent, spooled or dropped
        self._current: _InFlight | None = None  # the batch being sent
        self._send_started: float | None = None  # monotonic start of the send in progress
        self._stash_lock = threading.Lock()  # one spill of the queue at a time, in order
        self._spill_stop = threading.Event()
        self._spill_wake = threading.Event()
        self._abandoned = False
        self._closed = False
        self._close_hooks: list[Callable[[Meter], None]] = []
        self._close_hooks_lock = threading.Lock()
        self._retry_at = 0.0
        self._backoff = _BACKOFF_MIN_S
        self._last_drop_log = 0.0
        self._quiet = OncePer(60.0)  # warnings a long outage would repeat
        self._attempts: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._attempts_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="spendstream-meter", daemon=True)
        self._thread.start()
        self._spiller = self._start_spiller()
        # A weak reference: registering at exit must not keep an unused Meter alive.
        ref = weakref.ref(self)

        def close_at_exit() -> None:
            meter = ref()
            if meter is not None:
                meter.close()

        self._atexit = close_at_exit
        atexit.register(close_at_exit)

        def restart_in_child() -> None:
            meter = ref()
            if meter is not None and not meter._closed:
                meter._after_fork()

        os.register_at_fork(after_in_child=restart_in_child)
        mp_util = sys.modules.get("multiprocessing.util")
        if mp_util is not None:
            # Made in a multiprocessing child (fork, forkserver): it ends in os._exit, past
            # atexit; its finalizers run (see _after_fork for a Meter the child inherits).
            import multiprocessing

            if multiprocessing.parent_process() is not None:
                _close_at_multiprocessing_exit(self)

    # -- constructors -----------------------------------------------------------------------

    @classmethod
    def kafka(cls, bootstrap_servers: str | list[str] | KafkaSettings, **kwargs: Any) -> Meter:
        """A Meter producing to ``spendstream.usage``.

        Keyword arguments that are event fields (``team="search"``, ``api_key_id=...``)
        become defaults of every event; Meter options (``spool_dir``, ``queue_size``...)
        configure the Meter; the rest (``topic``, librdkafka settings) go to the producer.
        ``bootstrap_servers`` may be ``KafkaSettings`` (SASL, TLS; ``KafkaSettings.from_config``).
        """
        meter_kw, producer_kw = _split_options(kwargs)
        return cls(KafkaTransport(bootstrap_servers, **producer_kw), **meter_kw)

    @classmethod
    def http(cls, base_url: str, token: str, **kwargs: Any) -> Meter:
        """A Meter posting JSON Lines to ``<base_url>/v1/events`` (``spendstream run``).

        Event-field keywords become defaults, as in ``Meter.kafka``; ``timeout_s`` is the
        HTTP timeout.
        """
        meter_kw, http_kw = _split_options(kwargs)
        return cls(HttpTransport(base_url, token, **http_kw), **meter_kw)

    @classmethod
    def jsonl(cls, path: str | os.PathLike[str], **kwargs: Any) -> Meter:
        """A Meter appending JSON Lines to ``path``, for the embedded pipeline with no server:
        ``spendstream ingest PATH`` lands them (a replay adds nothing), or
        ``tail -F PATH | spendstream ingest -`` as they come. Keywords as for ``Meter.kafka``.
        """
        meter_kw, rest = _split_options(kwargs)
        if rest:
            raise TypeError(f"Meter.jsonl takes no {', '.join(sorted(rest))}")
        return cls(FileTransport(path), **meter_kw)

    @classmethod
    def from_env(cls, **kwargs: Any) -> Meter:
        """A Meter configured by the environment, for code that cannot take arguments
        (a LiteLLM proxy's callback): ``SPENDSTREAM_METER_URL`` is ``kafka://host:9092``
        (comma-separated brokers), ``http(s)://host:8787`` (``spendstream run``, bearer
        token from ``SPENDSTREAM_INGEST_TOKEN``) or ``file:///path/calls.jsonl``
        (``Meter.jsonl``, for ``spendstream ingest``); ``SPENDSTREAM_METER_TAGS`` holds default
        event fields, ``team=search,environment=prod``. Keywords are as for ``Meter.kafka``.
        """
        url = os.environ.get(ENV_METER_URL, "").strip()
        tags = os.environ.get(ENV_METER_TAGS, "")
        for pair in filter(None, (p.strip() for p in tags.split(","))):
            key, sep, value = pair.partition("=")
            if not sep or key.strip() not in _EventFields:
                raise SpendstreamError(
                    f"{ENV_METER_TAGS}: {pair!r} is not field=value with an event field "
                    "(team, feature, project, environment, ...)"
                )
            kwargs.setdefault(key.strip(), value.strip())
        if url.startswith("kafka://"):
            return cls.kafka(url.removeprefix("kafka://").split(","), **kwargs)
        if url.startswith(("http://", "https://")):
            token = os.environ.get(ENV_INGEST_TOKEN)
            if not token:
                raise SpendstreamError(f"{ENV_METER_URL} is HTTP: set {ENV_INGEST_TOKEN} too")
            return cls.http(url, token, **kwargs)
        if url.startswith("file://"):
            return cls.jsonl(url.removeprefix("file://"), **kwargs)
        raise SpendstreamError(
            f"set {ENV_METER_URL} to kafka://host:9092, http://host:8787 or "
            f"file:///path/calls.jsonl (got {url!r}) to say where usage events go"
        )

    @staticmethod
    def replay_slot(
        slot: Path | str, transport: Transport, *, batch_size: int = 1_000
    ) -> SlotReplay:
        """Send the events waiting in a spool slot through ``transport``, oldest first,
        removing each batch from the slot once sent; stops at the first batch the transport
        fails (run it again later). See ``producers.slot_replay.replay_slot``."""
        return replay_slot(slot, transport, batch_size=batch_size)

    @property
    def defaults(self) -> Mapping[str, Any]:
        """Fields every event gets unless the call gives them (tags such as ``team``)."""
        return MappingProxyType(self._defaults)

    # -- the caller's side ------------------------------------------------------------------

    def record(self, event: UsageEvent | Mapping[str, Any] | None = None, /, **fields: Any) -> str:
        """Validate and enqueue one event; returns its ``event_id`` ("" if dropped invalid).

        Give a ``UsageEvent``, a mapping, or keyword fields; ``event_id`` (random) and
        ``ts`` (now, UTC) are filled in when absent, ``defaults`` under the given fields.
        Never raises for transport trouble; raises ``InvalidUsageEvent`` for a bad event
        unless the Meter was made with ``on_invalid="drop"``.

        ``reservation=r`` (from ``reserve``): the event carries ``r.lease_id`` and ``r`` is
        settled with the event's price (see ``settle_from``).
        """
        reservation: Reservation | None = fields.pop("reservation", None)
        if reservation is not None:
            return self._record_reserved(reservation, event, fields)
        if not isinstance(event, UsageEvent):
            data = {**self._defaults, **_CALL_TAGS.get(), **(event or {}), **fields}
            if "event_id" not in data:
                data["event_id"] = os.urandom(16).hex()
            if "ts" not in data:
                data["ts"] = datetime.now(UTC)
            try:
                event = UsageEvent.model_validate(data)
            except ValidationError as exc:
                return self._invalid(exc)
        elif fields:
            raise TypeError("record() takes a UsageEvent or keyword fields, not both")
        queue = self._queue
        if len(queue) < self.queue_size and not self._closing:
            queue.append(event)
            queued = len(queue)
            if queued >= self.batch_size:
                self._wake.set()
            if queued >= self._high_water and self._spool is not None and not self._spool.empty:
                # A replay holds the sender: the spill thread moves the queue to disk before
                # it fills and record() has to write to the spool itself (see _overflow).
                self._spill_wake.set()
        else:
            self._overflow(event)
        return event.event_id

    @contextlib.contextmanager
    def tags(self, **fields: Any) -> Iterator[None]:
        """Event fields for every call recorded inside the block (``record_*``, ``track`` and
        instrumented clients): ``with meter.tags(feature="summarise", user_id=uid): ...``.

        Nested blocks add to the outer ones; they are per thread and per asyncio task, and
        override the Meter's defaults (the fields given to one ``record()`` override them).
        """
        unknown = sorted(set(fields) - _EventFields)
        if unknown:
            raise TypeError(f"meter.tags() takes event fields; not: {', '.join(unknown)}")
        token = _CALL_TAGS.set(MappingProxyType({**_CALL_TAGS.get(), **fields}))
        try:
            yield
        finally:
            _CALL_TAGS.reset(token)

    def context_tags(self) -> Mapping[str, Any]:
        """The fields of the ``meter.tags()`` blocks the caller is in."""
        return _CALL_TAGS.get()

    def instrument(
        self,
        client: ClientT,
        *,
        provider: str | None = None,
        stream_usage: bool = True,
        **fields: Any,
    ) -> ClientT:
        """Record every call of an OpenAI or Anthropic client (sync, async, streaming), with
        no per-call code; returns the same client. Keywords are event fields for its calls.
        Details: ``spendstream.producers.integrations.clients``."""
        from spendstream.producers.integrations.clients import instrument

        return instrument(self, client, provider=provider, stream_usage=stream_usage, **fields)

    def _record_reserved(
        self,
        reservation: Reservation,
        event: UsageEvent | Mapping[str, Any] | None,
        fields: dict[str, Any],
    ) -> str:
        if isinstance(event, UsageEvent):
            if fields:
                raise TypeError("record() takes a UsageEvent or keyword fields, not both")
            if reservation.lease_id and event.lease_id is None:
                event = event.model_copy(update={"lease_id": reservation.lease_id})
        elif reservation.lease_id:
            fields = {"lease_id": reservation.lease_id, **fields}
        try:
            event_id = self.record(event, **fields)
        except BaseException:
            reservation.settle(reservation.max_usd)  # unknown cost: assume the worst case
            raise
        if not event_id:  # dropped as invalid: nothing says what it cost
            reservation.settle(reservation.max_usd)
        elif not reservation.settled:
            self._settle_recorded(reservation, event, fields)
        return event_id

    def _invalid(self, exc: ValidationError) -> str:
        if self.on_invalid == "raise":
            raise InvalidUsageEvent(exc) from None
        with self._c.lock:
            self._c.invalid += 1
        log.warning("usage event dropped: %s", describe_validation_error(exc))
        return ""

    def _overflow(self, event: UsageEvent) -> None:
        """The queue is full: the caller's thread writes the event to the spool. The last
        resort, reached only when the app records half a queue faster than the background
        threads can write to disk (during a replay, they move the queue to the spool as it
        fills); dropping it instead would lose an event the spool has room for."""
        if self._closed:  # the spool's slot is released: another process may own it now
            self._drop(1, "recorded after close()")
            return
        if self._spool is not None and self._spool.append([_value(event)]):
            with self._c.lock:
                self._c.spooled += 1
                self._c.overflowed += 1
            return
        self._drop(
            1,
            "queue full"
            if self._spool is None
            else f"queue full (queue_size={self.queue_size:,}), and {self._spool_refusal()}",
        )

    def _drop(self, n: int, why: str) -> None:
        with self._c.lock:
            self._c.dropped += n
        self._log_drop(n, why)

    def _log_drop(self, n: int, why: str) -> None:
        total = self._c.dropped
        now = time.monotonic()
        if now - self._last_drop_log >= 1.0:
            self._last_drop_log = now
            log.error(
                "%s dropped (%s); %s dropped so far", plural(n, "usage event"), why, f"{total:,}"
            )

    @contextlib.contextmanager
    def track(
        self,
        provider: str,
        model: str,
        *,
        request_id: str | None = None,
        reservation: Reservation | None = None,
        **fields: Any,
    ) -> Iterator[Call]:
        """Meter one call: latency, ``status`` from an exception, ``attempt`` per request_id.

        ``with meter.track("openai", "gpt-5-mini", team="search") as call:`` then
        ``call.usage(response)`` (or ``call.set(input_tokens=..., ...)``) inside the block.
        Passing the same ``request_id`` to a retry numbers it ``attempt`` 2, 3, ...
        ``reservation=r`` (from ``reserve``) is settled from the recorded event.
        """
        rid = request_id or os.urandom(16).hex()
        call = Call(
            provider,
            model,
            rid,
            self._next_attempt(rid),
            fields,
            self if self.on_invalid == "drop" else None,
        )
        started = time.perf_counter()
        failed: BaseException | None = None
        try:
            yield call
        except BaseException as exc:
            failed = exc
            raise
        finally:
            call.fields.setdefault("latency_ms", (time.perf_counter() - started) * 1000.0)
            if failed is not None and "status" not in call.fields:
                call.fields["status"] = status_of(failed)
            try:
                self.record(**call.event_fields(), reservation=reservation)
            except InvalidUsageEvent:
                if failed is None:
                    raise
                log.exception("usage event of a failed call is invalid; not recorded")

    def _next_attempt(self, request_id: str) -> int:
        with self._attempts_lock:
            attempt = self._attempts.pop(request_id, 0) + 1
            self._attempts[request_id] = attempt
            if len(self._attempts) > _MAX_TRACKED_REQUESTS:
                self._attempts.popitem(last=False)
            return attempt

    @property
    def metrics(self) -> MeterMetrics:
        c = self._c
        with c.lock:
            return MeterMetrics(
                sent=c.sent,
                spooled=c.spooled,
                overflowed=c.overflowed,
                replayed=c.replayed,
                rejected=c.rejected,
                dropped=c.dropped,
                invalid=c.invalid,
                send_failures=c.send_failures,
                queued=len(self._queue) + len(self._held) + self._inflight,
                spool_bytes=self._spool.size_bytes if self._spool is not None else 0,
            )

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until the queue and the spool are delivered: True once they are.

        With ``timeout_s``, False if still pending then. Without it, False as soon as the
        transport is failing (a send failed since the flush began, or the one in flight has
        hung ``spool_flush_s / 2``: an endpoint down or black-holed) and every event is
        on disk (the spool, replayed when the transport answers) as far as the spool has
        room (what it refused stays queued or held in memory) or, with no spool, at once:
        waiting for an endpoint to come back hung the app's request handler or its exit
        for as long as the outage. Nothing is lost on False: the events stay spooled or
        queued and the Meter keeps retrying.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        failures = self._c.send_failures
        self._retry_at = 0.0  # an explicit flush tries the transport again now
        while not self._drained():
            if not self._thread.is_alive():
                return False
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return False
            if deadline is None and self._failing_since(failures, now) and self._on_disk():
                return False
            self._wake.set()
            time.sleep(0.005)
        return True

    def _failing_since(self, failures: int, now: float) -> bool:
        """Whether a send failed since ``failures`` were counted, or the one in flight hangs."""
        with self._c.lock:
            started = self._send_started
            failed = self._c.send_failures > failures
        return failed or (started is not None and now - started >= self.spool_flush_s / 2)

    def _on_disk(self) -> bool:
        """Whether every pending event is in the spool, as far as it has room (True with no
        spool: there is no safer place to wait for)."""
        spool = self._spool
        if spool is None:
            return True
        with self._c.lock:
            entry = self._current
            # A hung batch the spool had no room for is as far on disk as it can be now:
            # waiting for it waited out the outage (close() spools what fits of it then).
            unspillable = (
                len(entry.batch) - entry.on_disk_lines
                if entry is not None
                and entry.source == "queue"
                and entry.mirrored in (_MIRROR_REFUSED, _MIRROR_HEAD, _MIRROR_TAIL)
                else 0
            )
            # Held events (a failed batch's) are those the spool refused when they failed:
            # offered to it again at their next failure, they are as far on disk as they go.
            if self._inflight > unspillable:
                return False
            if not self._queue:
                return True
            head = self._queue[0]
        return spool.max_bytes - spool.size_bytes < len(_value(head)) + 1

    def _drained(self) -> bool:
        # Under the counters' lock: a failed send moves its batch from in flight back to
        # _held, and read field by field, both could look empty (flush() said True).
        with self._c.lock:
            return (
                not self._queue
                and not self._held
                and not self._inflight
                and (self._spool is None or self._spool.empty)
            )

    def close(self, timeout_s: float | None = None) -> None:
        """Deliver what can be delivered within the timeout, spool the rest, stop the sender.

        A send that fails while closing ends the close at once (with a spool); one that hangs
        holds it until the timeout, on purpose: it may still succeed, and its events are on
        disk already (the spill thread)."""
        if self._closing:
            return
        timeout = self.close_timeout_s if timeout_s is None else timeout_s
        self._deadline = time.monotonic() + timeout
        # Tried again now, as flush() does: only a send failing while closing ends the
        # close early (a failure seconds before it said nothing of the endpoint now).
        self._retry_at = 0.0
        self._closing = True
        self._wake.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._abandon(grace_until=time.monotonic() + 1.0)
        self._spill_stop.set()
        self._spill_wake.set()
        if self._spiller is not None:
            self._spiller.join(timeout + 1.0)
        self.transport.close()
        with self._close_hooks_lock:
            self._closed = True
            hooks, self._close_hooks = self._close_hooks, []
        if self._spool is not None:
            self._spool.close()
        atexit.unregister(self._atexit)
        for hook in hooks:
            try:
                hook(self)
            except Exception:  # a hook's bug must not fail the close
                log.exception("spendstream meter close hook %r failed", hook)

    def _call_at_close(self, hook: Callable[[Meter], None]) -> None:
        """Run ``hook(meter)`` when the Meter closes (at once if it has): for integrations
        keeping per-Meter state that holds the Meter, which must not outlive its close."""
        with self._close_hooks_lock:
            if not self._closed:
                self._close_hooks.append(hook)
                return
        hook(self)

    def _after_fork(self) -> None:
        """A forked child gets its own sender, spool slot and connections.

        What the parent had queued stays the parent's to send (the child starts empty), so
        nothing is sent twice; locks are new, as the parent's may have been held at fork.
        """
        self._c = _Counters()
        self._attempts_lock = threading.Lock()
        self._close_hooks_lock = threading.Lock()
        self._wake = threading.Event()
        self._queue = collections.deque()
        self._held, self._inflight, self._current = [], 0, None
        self._send_started = None
        self._stash_lock = threading.Lock()
        self._spill_stop = threading.Event()
        self._spill_wake = threading.Event()
        self._retry_at, self._backoff = 0.0, _BACKOFF_MIN_S
        if self._spool is not None:
            old = self._spool
            old.forget_after_fork()
            self._use_spool(
                _open_spool(
                    old.root,
                    max_bytes=old.max_bytes,
                    segment_bytes=old.segment_bytes,
                    destination=old.destination,
                )
            )
        after_fork = getattr(self.transport, "after_fork", None)
        if after_fork is not None:
            after_fork()
        self._thread = threading.Thread(target=self._run, name="spendstream-meter", daemon=True)
        self._thread.start()
        self._spiller = self._start_spiller()
        mp_util = sys.modules.get("multiprocessing.util")
        if mp_util is not None:
            # A multiprocessing child (a Process, a Pool worker let finish) ends in
            # os._exit: atexit never runs, and what it recorded in its last linger went
            # with it. Its exit runs multiprocessing's finalizers; those registered now
            # are cleared as it starts, then its after-fork callbacks run: register there.
            mp_util.register_after_fork(self, _close_at_multiprocessing_exit)

    def _use_spool(self, spool: Spool | None) -> None:
        self._spool = spool
        if hasattr(self.transport, "kept_in"):  # its log lines then say which slot
            self.transport.kept_in = "memory" if spool is None else str(spool.dir)

    def _abandon(self, *, grace_until: float) -> None:
        """The sender is stuck in a send past the deadline: spool its batch and go.

        That batch may still reach the broker later, so it may arrive twice (same event_id:
        the pipeline dedupes); losing it would be worse. A sender between sends (its send
        returned, even this moment) is waited for until ``grace_until``: past the deadline it
        settles that batch, spools what is left and ends. Inside a send that hangs there is
        nothing to wait for (the spill thread has its batch on disk already after
        ``spool_flush_s / 2`` if it fit): a wait held the exit 1 s more for every
        black-holed endpoint.
        """
        while True:
            with self._c.lock:
                if self._current is not None or time.monotonic() >= grace_until:
                    # Taken from a sender settling the send that just returned, a failed
                    # batch was held after the stash below (neither spooled nor dropped) and
                    # a held one that got through was counted sent and dropped both.
                    self._abandoned = True
                    current, self._current = self._current, None
                    break
            self._thread.join(0.005)
            if not self._thread.is_alive():
                return  # it settled and stashed everything itself
        if self._spool is not None:
            log.warning(
                "meter closed while a send was still pending: its events are spooled too, in %s",
                self._spool.dir,
            )
        else:  # the drop is logged below
            log.warning("meter closed while a send was still pending")
        if current is not None and current.mirrored is not None:
            current.on_disk.wait()  # the spill thread wrote (or is writing) what fit
        if current is not None and current.source != "spool":  # spooled lines are on disk
            batch, source = current.batch[current.on_disk_lines :], current.source
        else:
            batch, source = [], ""
        if batch:
            if self._spool is not None:
                self._spool_records(batch, inflight=len(batch) if source == "queue" else 0)
            else:
                with self._c.lock:
                    self._c.dropped += len(batch)
                    self._inflight -= len(batch) if source == "queue" else 0
                self._log_drop(len(batch), "closed with no spool during a send")
        if source == "held":
            self._held = []
        self._stash_all()

    def __enter__(self) -> Meter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the sender thread ------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            if not self._closing:
                self._wake.wait(self.linger_s)
                self._wake.clear()
            now = time.monotonic()
            if self._abandoned:
                return
            if self._closing and now >= self._deadline:
                self._stash_all()
                return
            try:
                progressed = self._step(now)
            except Exception:  # the sender must outlive its own bugs
                log.exception("spendstream meter sender error")
                progressed = False
                time.sleep(_BACKOFF_MIN_S)
            if self._closing and self._drained():
                return
            if self._closing and not progressed:
                if self._spool is not None and time.monotonic() < self._retry_at:
                    # The transport just failed and the spool keeps what is left for the
                    # next process: waiting out the deadline held the exit ~10 s (per Meter)
                    # whenever the endpoint was down, for nothing.
                    self._stash_all()
                    return
                # With no spool, what is left is lost at the deadline: keep trying until it.
                time.sleep(min(0.05, max(0.0, self._deadline - time.monotonic())))

    def _step(self, now: float) -> bool:
        """One round; True if something was delivered."""
        if now < self._retry_at:
            self._stash_queue()  # the transport is down: keep memory for new events
            return False
        if self._held:
            return self._deliver(list(self._held), source="held")
        if self._spool is not None and not self._spool.empty:
            # Replaying: what is queued is newer than every spooled line, so it joins the
            # spool's tail now, from this thread. Left in memory until the spool drained,
            # it filled the queue, and record() then wrote each new event to disk itself.
            self._stash_queue()
            lines = self._spool.peek(self.batch_size)
            if lines:
                return self._deliver([_record_of(line) for line in lines], source="spool")
        batch = self._take(self.batch_size)
        return bool(batch) and self._deliver(batch, source="queue")

    def _take(self, n: int) -> list[Record]:
        # Under the counters' lock, so metrics never see an event in neither place.
        queue = self._queue
        with self._c.lock:
            events = [queue.popleft() for _ in range(min(n, len(queue)))]
            self._inflight += len(events)
        return [
            Record(
                partition_key(ev.api_key_id, ev.session_id, ev.request_id, ev.event_id),
                _value(ev),
            )
            for ev in events
        ]

    def _deliver(self, batch: list[Record], *, source: Literal["queue", "held", "spool"]) -> bool:
        entry = _InFlight(batch, source)
        with self._c.lock:
            self._current = entry
            self._send_started = time.monotonic()
        try:
            result = self.transport.send(batch)
        except Exception:  # a transport must not raise; if it does, treat it as down
            log.exception("transport %s raised", _name_of(self.transport))
            result = SendResult(failed=list(range(len(batch))))
        with self._c.lock:
            if self._abandoned:  # close() has accounted for this batch already
                return False
            self._current = None
            self._send_started = None
        if entry.mirrored is not None:
            entry.on_disk.wait()
        failed = bool(result.failed)
        if failed:
            with self._c.lock:
                self._c.send_failures += 1
        # What the spill thread put on disk of a hung batch: its first on_disk_lines lines
        # (all of them, or fewer when the disk cut the write short).
        spilled = entry.on_disk_lines
        if entry.mirrored == _MIRROR_HEAD:
            # Those lines are the spool's head: settled exactly as a replayed batch (taken
            # back out once sent, not sent twice); the rest, if any, as the batch they are.
            self._settle(batch[:spilled], _part(result, 0, spilled), "spool", 0)
            self._settle(batch[spilled:], _part(result, spilled, len(batch)), source, spilled)
        elif entry.mirrored == _MIRROR_TAIL:
            # Those lines are in the spool behind newer ones: they will be re-sent from there
            # (same event_id, counted once by the pipeline); only the rest is settled here.
            self._settle(batch[spilled:], _part(result, spilled, len(batch)), source, spilled)
        else:
            self._settle(batch, result, source, 0)
        self._learn(failed)
        return len(set(result.failed)) < len(batch)  # sent or rejected: something moved

    def _settle(
        self,
        batch: list[Record],
        result: SendResult,
        source: Literal["queue", "held", "spool"],
        first_line: int,
    ) -> None:
        """Count what a send did with ``batch`` (lines ``first_line`` on of the batch sent)
        and keep what failed: spooled lines stay at the spool's head, others go to its tail
        (or are held)."""
        if not batch:
            return
        failed = sorted(set(result.failed))
        ok = len(batch) - len(failed) - len(result.rejected)
        for i, reason in result.rejected:
            log.warning(
                "usage event rejected by %s: %s (line %d)",
                _name_of(self.transport),
                reason,
                first_line + i + 1,
            )
        retry = [batch[i] for i in failed]
        to_spool = bool(retry) and source != "spool" and self._spool is not None
        with self._c.lock:
            self._c.sent += ok
            self._c.rejected += len(result.rejected)
            if source == "spool":
                self._c.replayed += ok
            if source != "spool":
                self._held = [] if to_spool else retry
                if source == "queue":
                    self._inflight -= len(batch)
                if to_spool:  # counted in flight until _spool_records accounts for them
                    self._inflight += len(retry)
        if source == "spool":
            # Spooled lines stay at the head until sent: commit the leading delivered ones.
            # A line after the first failure that did get through stays and is re-sent
            # (same event_id: the pipeline dedupes); the transports fail a batch's tail.
            assert self._spool is not None
            self._spool.commit(failed[0] if failed else len(batch))
        elif to_spool:
            self._spool_or_hold(retry)

    def _learn(self, failed: bool) -> None:
        """Back off after a failed send; a successful one resets the backoff."""
        if failed:
            self._retry_at = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, _BACKOFF_MAX_S)
        else:
            self._backoff = _BACKOFF_MIN_S

    def _spool_records(self, records: list[Record], *, inflight: int) -> None:
        """At close: spool what fits, count and log the rest dropped."""
        assert self._spool is not None
        taken = self._spool.append([r.value for r in records])
        lost = len(records) - taken
        with self._c.lock:
            self._c.spooled += taken
            self._c.dropped += lost
            self._inflight -= inflight
        if lost:
            self._log_drop(lost, self._spool_refusal())

    def _spool_or_hold(self, records: list[Record]) -> None:
        """A failed batch's events (counted in flight) to the spool's tail; what the spool
        cannot take (full, or the disk refusing bytes) stays in memory, held as a Meter with
        no spool holds its failed batch: retried first (it is older than every line in the
        spool: the sender takes from the queue only once the spool is empty), offered to the
        spool again at each failure, spooled or dropped at close. Dropped here, a spool
        filled by an outage lost a whole batch per failed retry: one batch of memory, which
        the batch took while it was sent, keeps them."""
        assert self._spool is not None
        taken = self._spool.append([r.value for r in records])
        held = records[taken:]
        with self._c.lock:
            self._c.spooled += taken
            self._inflight -= len(records)
            self._held = held
        if held and self._quiet.due("held"):
            log.warning(
                "%s of a failed send kept in memory, retried before the spool: %s. They are "
                "lost if the process is killed, and counted as dropped if the Meter closes "
                "before they are sent",
                plural(len(held), "usage event"),
                self._spool_refusal(),
            )

    def _spool_refusal(self) -> str:
        """Why the spool took fewer lines than it was given, and what to change."""
        spool = self._spool
        if spool is None:
            return "no spool: give Meter spool_dir= (or $SPENDSTREAM_SPOOL_DIR) a directory"
        why = spool.refusal or f"spool full ({spool.max_bytes:,} bytes unsent)"
        if why.startswith("spool full"):
            return (
                f"{why}: raise Meter spool_max_bytes= (now {spool.max_bytes:,}) to hold a "
                "longer outage"
            )
        return f"{why}: free space on that disk, or give Meter spool_dir= another one"

    def _stash_queue(self) -> bool:
        """Move the queue to the spool's tail, as much of it as the spool has room for: the
        rest stays queued (a full spool drops only what also finds the queue full). True if
        anything moved."""
        if self._spool is None or not self._queue:
            return False
        with self._stash_lock:  # the sender and the spill thread both stash: keep their order
            return self._move_queue()

    def _move_queue(self) -> bool:
        """``_stash_queue``, the stash lock held."""
        assert self._spool is not None
        events, records = self._take_fitting(self._spool.max_bytes - self._spool.size_bytes)
        if not records:
            return False
        # record()'s overflow and a failed batch's retry write without the stash lock: the
        # room counted above may be gone. What the spool refuses goes back to the queue's
        # head rather than being dropped, as a full spool leaves queued events in memory.
        taken = self._spool.append([r.value for r in records])
        with self._c.lock:
            self._c.spooled += taken
            self._inflight -= len(records)
            self._queue.extendleft(reversed(events[taken:]))
        return taken > 0

    def _take_fitting(self, room: int) -> tuple[list[UsageEvent], list[Record]]:
        """``_take``, stopping at the first event whose line would not fit in ``room`` bytes."""
        queue = self._queue
        fitting: list[tuple[UsageEvent, Record]] = []
        # Serialised outside the counters' lock, which record() takes when it overflows or
        # drops an invalid event: a half-full queue held it ~10 ms.
        for ev in list(queue):
            value = _value(ev)
            room -= len(value) + 1
            if room < 0:
                break
            key = partition_key(ev.api_key_id, ev.session_id, ev.request_id, ev.event_id)
            fitting.append((ev, Record(key, value)))
        events: list[UsageEvent] = []
        out: list[Record] = []
        with self._c.lock:
            for ev, record in fitting:
                if not queue or queue[0] is not ev:
                    break  # the sender took it meanwhile: what follows is no longer the head
                queue.popleft()
                events.append(ev)
                out.append(record)
            self._inflight += len(out)
        return events, out

    # -- the spill thread: memory to disk while the transport is stuck ------------------

    def _start_spiller(self) -> threading.Thread | None:
        if self._spool is None:
            return None
        thread = threading.Thread(target=self._spill_loop, name="spendstream-spill", daemon=True)
        thread.start()
        return thread

    def _spill_loop(self) -> None:
        tick = self.spool_flush_s / 4
        wake, stop = self._spill_wake, self._spill_stop
        while True:
            wake.wait(tick)
            wake.clear()
            if stop.is_set():
                return
            try:
                moved = self._spill_if_stuck(time.monotonic())
            except Exception:  # the spill thread must outlive its own bugs
                log.exception("spendstream meter spill error")
                moved = True
            # A full spool took nothing: record() would wake this thread at every call.
            if not moved and len(self._queue) >= self._high_water and stop.wait(tick):
                return

    def _spill_if_stuck(self, now: float) -> bool:
        """Put the batch in flight and the queue on disk when a send hangs or failed, and
        the queue when a replay lets it reach its high-water mark. True if the queue moved."""
        with self._c.lock:
            started, entry = self._send_started, self._current
            stuck = started is not None and now - started >= self.spool_flush_s / 2
            if not (stuck and entry is not None and entry.source == "queue" and not entry.mirrored):
                entry = None
            elif entry is not None:
                entry.mirrored = _MIRROR_PENDING
        if entry is not None:
            self._mirror(entry)
        replaying = self._spool is not None and not self._spool.empty
        if stuck or now < self._retry_at or (replaying and len(self._queue) >= self._high_water):
            return self._stash_queue()
        return False

    def _mirror(self, entry: _InFlight) -> None:
        """Copy the hung batch to the spool, all of it or none: the send still holds it, so
        what does not fit is not lost (a part copied had the rest counted and logged as
        dropped, and took room the queue's events would have had)."""
        assert self._spool is not None
        try:
            with self._stash_lock:
                taken, first = self._spool.append_first([r.value for r in entry.batch], whole=True)
        except BaseException:
            # Not on disk: the sender settles the batch as usual. Marked refused rather than
            # untried, so no second attempt finds on_disk already set.
            with self._c.lock:
                entry.mirrored = _MIRROR_REFUSED
            entry.on_disk.set()
            raise
        whole = taken == len(entry.batch)
        with self._c.lock:
            self._c.spooled += taken
            self._inflight -= taken  # the rest stay in flight, the send's to settle
            entry.on_disk_lines = taken
            if not taken:
                entry.mirrored = _MIRROR_REFUSED
            else:  # at the head even when the disk took only part of it: its first lines
                entry.mirrored = _MIRROR_HEAD if first else _MIRROR_TAIL
        entry.on_disk.set()
        if not whole:
            log.warning(
                "a send has hung %.1f s and %s of its %s could not be written to the spool "
                "(%s): held in memory by the send, spooled if it fails or still hangs at close",
                self.spool_flush_s / 2,
                f"{len(entry.batch) - taken:,}",
                plural(len(entry.batch), "usage event"),
                self._spool_refusal(),
            )

    def _stash_all(self) -> None:
        """At the close deadline (or a failed send while closing, with a spool): nothing in
        memory may vanish unaccounted."""
        # Counted in flight while the spool takes them: out of _held first, they were in
        # no count meanwhile (and a flush() with nothing else pending said True).
        with self._c.lock:
            held = self._held if self._spool is not None else []
            if held:
                self._held = []
                self._inflight += len(held)
        if held:
            self._spool_records(held, inflight=len(held))
        # Held throughout: a spill moving the queue meanwhile could put refused events back
        # after it was emptied, left counted as neither spooled nor dropped.
        with self._stash_lock:
            if self._spool is not None and self._queue:
                self._move_queue()
            with self._c.lock:
                left = len(self._queue) + len(self._held)
                self._queue.clear()
                self._held = []
                self._c.dropped += left
        if left:
            self._log_drop(
                left,
                "closed with the transport down and "
                + ("no spool" if self._spool is None else self._spool_refusal()),
            )


_MeterOptions = frozenset(
    {
        "spool_dir",
        "spool_max_bytes",
        "queue_size",
        "batch_size",
        "linger_s",
        "on_invalid",
        "defaults",
        "close_timeout_s",
        "spool_flush_s",
    }
)


_EventFields = frozenset(UsageEvent.model_fields)


def _close_at_multiprocessing_exit(meter: Meter) -> None:
    import multiprocessing.util

    multiprocessing.util.Finalize(None, meter._atexit, exitpriority=0)


def _open_spool(root: Path | str, **options: Any) -> Spool | None:
    """The spool at ``root``, or None (logged) when it cannot be had: a read-only home in a
    container, a user without one, every slot taken. Raised, it stopped the application
    that made the Meter (or, in a forked child, left it without a sender thread)."""
    try:
        spool = Spool(root, **options)
    except OSError as exc:
        log.error(
            "spendstream meter: no spool (%s); events the transport cannot take now are held "
            "in memory (queue_size), then dropped and counted. Give Meter spool_dir= (or "
            "$SPENDSTREAM_SPOOL_DIR) a writable directory",
            exc,
        )
        return None
    if spool.stranded:
        log.warning(
            "spendstream meter: the spool %s also holds events for other destinations, "
            "replayed only by a Meter sending there (a running one may be at it now): %s. If "
            "one is this destination spelt otherwise, a Meter made with that spelling "
            "replays it, or Meter.replay_slot(%r, transport) sends a slot through any "
            "transport",
            spool.root,
            "; ".join(f"{slot} {size:,} bytes for {where}" for slot, where, size in spool.stranded),
            str(spool.root / spool.stranded[0][0]),
        )
    return spool


def _destination_of(transport: Transport) -> str:
    """Where the transport sends, naming the spool slots it may replay."""
    destination = getattr(transport, "destination", None)
    if isinstance(destination, str):
        return destination
    # A transport that does not say still never shares slots with another class's events.
    kind = type(transport)
    return f"{_name_of(transport)}:{kind.__module__}.{kind.__qualname__}"


def _split_options(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(Meter keyword arguments with event-field defaults gathered, transport arguments)."""
    meter_kw: dict[str, Any] = {}
    defaults = dict(kwargs.pop("defaults", None) or {})
    rest: dict[str, Any] = {}
    for key, value in kwargs.items():
        if key in _MeterOptions:
            meter_kw[key] = value
        elif key in _EventFields:
            defaults[key] = value
        else:
            rest[key] = value
    meter_kw["defaults"] = defaults
    return meter_kw, rest


def _value(event: UsageEvent) -> bytes:
    return event.__pydantic_serializer__.to_json(event, exclude_none=True)


def _part(result: SendResult, start: int, stop: int) -> SendResult:
    """What ``result`` says of the batch's lines ``start`` to ``stop``, numbered from 0."""
    return SendResult(
        failed=[i - start for i in result.failed if start <= i < stop],
        rejected=[(i - start, why) for i, why in result.rejected if start <= i < stop],
    )
