"""The client side of budget leases: reserve a call's worst case before making it.

``LeaseClient.reserve(max_usd, **tags)`` takes ``max_usd`` from a lease this process holds
on every hard budget covering the call (``global`` and the tags' team, feature, project,
user, api key and session scopes that have a hard budget). With a lease in hand that is a
few dictionary lookups under a lock: no network. When the lease is short (or expired) the
thread asks the ``LeaseService`` for another, waiting at most ``request_timeout_s``; one
thread refills a scope at a time and the others wait for it. A refusal raises
``BudgetExhausted`` (scope, budget, what is left); no answer raises ``LeaseUnavailable``:
a hard-capped call is never made on a guess.

After the call, ``Reservation.settle(actual_usd)`` returns the difference to the lease (or
``Meter.record(..., reservation=r)`` settles from the recorded event's price). The client
gives a lease back (``LeaseRelease``) when it takes a new one, when the lease expires, when
it has been idle for ``idle_return_s``, and at ``close()``; a lease with calls in flight is
given back except their worst case, and closed when the last one settles.

Thread-safe; any number of threads and processes (each process is its own client). Nothing
of the pipeline is imported here.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from types import TracebackType
from typing import Any

from spendstream.errors import BudgetExhausted, LeaseUnavailable
from spendstream.kafka.settings import KafkaSettings
from spendstream.money import is_usd
from spendstream.producers.guard import RequestRate, call_scopes
from spendstream.producers.lease_protocol import (
    LeaseGrant,
    LeaseRefusal,
    LeaseRelease,
    LeaseRequest,
    LeaseService,
)

__all__ = ["LeaseClient", "LeaseMetrics", "Reservation", "to_usd"]

log = logging.getLogger("spendstream.producers.leases")

_ZERO = Decimal(0)
# A given-back lease whose calls never settled is forgotten this long after it expired
# (the service closed it long before, at expiry + grace).
_FORGET_DRAINING_S = 3600.0


def to_usd(value: Decimal | str | int | float) -> Decimal:
    """A non-negative, finite amount as ``Decimal`` (floats through their shortest repr)."""
    if isinstance(value, bool):
        raise TypeError("an amount of money must be a number, not a bool")
    try:
        money = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except InvalidOperation:
        raise ValueError(f"an amount of money must be a decimal, got {value!r}") from None
    # Below 1e20 as every amount a lease server takes (spendstream.money): a larger one would
    # be refused there, after this client had counted it.
    if not is_usd(money):
        raise ValueError(f"an amount of money must be >= 0 and below 1e20, got {value!r}")
    return money


@dataclass(frozen=True, slots=True)
class LeaseMetrics:
    """Counters since the client started."""

    reserved: int  # reservations made (calls allowed)
    refused: int  # BudgetExhausted raised
    unavailable: int  # LeaseUnavailable raised
    requests: int  # lease requests sent to the service
    grants: int
    releases: int  # LeaseRelease messages sent
    overspent: int  # settlements above their reservation (the cap cannot cover those)
    overspent_usd: Decimal


class _Held:
    """A lease as this process holds it."""

    __slots__ = (
        "deadline",
        "granted",
        "inflight",
        "last_used",
        "late",
        "lease_id",
        "reserved",
        "retired",
        "scope",
        "used",
    )

    def __init__(self, scope: str, lease_id: str, granted: Decimal, deadline: float) -> None:
        self.scope = scope
        self.lease_id = lease_id
        self.granted = granted
        self.deadline = deadline  # monotonic: no new reservation at or after it
        self.reserved = _ZERO  # worst case of the calls in flight
        self.used = _ZERO  # settled
        self.late = _ZERO  # of used: settled at or after the deadline (maybe the next period)
        self.inflight = 0
        self.last_used = 0.0
        self.retired = False

    @property
    def free(self) -> Decimal:
        return self.granted - self.reserved - self.used


class _Slot:
    """One scope's leases in this process."""

    __slots__ = ("current", "draining", "refilling", "refusal", "refused_until", "request_id")

    def __init__(self) -> None:
        self.current: _Held | None = None
        self.draining: dict[str, _Held] = {}
        self.refilling = False
        self.request_id: str | None = None  # reused until answered: a retry never leases twice
        self.refusal: LeaseRefusal | None = None
        self.refused_until = 0.0


class Reservation:
    """A call's worst case, held on every hard budget covering it until ``settle``.

    Use as a context manager: leaving the block without ``settle`` settles at ``max_usd``
    (the call's cost is unknown, so the worst case is assumed); ``cancel()`` when the call
    was not made.
    """

    __slots__ = ("_client", "_held", "actual_usd", "lease_id", "max_usd", "rates", "scopes")

    def __init__(
        self, client: LeaseClient, max_usd: Decimal, scopes: tuple[str, ...], held: list[_Held]
    ) -> None:
        self._client = client
        self._held = held
        self.max_usd = max_usd
        self.scopes = scopes
        # The event field: every lease the call draws on, space-separated; None if unbudgeted.
        self.lease_id = " ".join(h.lease_id for h in held) or None
        self.actual_usd: Decimal | None = None
        # The rates its worst case was priced with (Meter.reserve), to price the actual alike.
        self.rates: Mapping[tuple[str, str], RequestRate] | None = None

    @property
    def settled(self) -> bool:
        return self.actual_usd is not None

    def settle(self, actual_usd: Decimal | str | int | float) -> None:
        """The call cost ``actual_usd``: the rest of ``max_usd`` returns to the lease(s)."""
        if self.actual_usd is not None:
            return  # settled once; a second settle (e.g. record after settle) changes nothing
        actual = to_usd(actual_usd)
        self.actual_usd = actual
        self._client._settle(self, actual)

    def cancel(self) -> None:
        """The call was not made: all of ``max_usd`` returns."""
        self.settle(_ZERO)

    def __enter__(self) -> Reservation:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.actual_usd is None:
            self.settle(self.max_usd)

    def __repr__(self) -> str:
        return f"Reservation(max_usd={self.max_usd}, lease_id={self.lease_id!r})"


class LeaseClient:
    """Budget leases for this process. ``scopes``: the scopes that have a hard budget."""

    def __init__(
        self,
        service: LeaseService,
        scopes: Iterable[str],
        *,
        client_id: str | None = None,
        refill_calls: int = 16,
        idle_return_s: float = 5.0,
        request_timeout_s: float = 2.0,
        refusal_hold_s: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
        background: bool = True,
        owns_service: bool = False,
    ) -> None:
        if refill_calls < 1:
            raise ValueError("refill_calls must be at least 1")
        self.service = service
        self.scopes = frozenset(scopes)
        self.client_id = client_id or _default_client_id()
        self.refill_calls = refill_calls
        self.idle_return_s = idle_return_s
        self.request_timeout_s = request_timeout_s
        self.refusal_hold_s = refusal_hold_s
        self._clock = clock
        self._owns_service = owns_service
        self._cond = threading.Condition(threading.Lock())
        self._slots: dict[str, _Slot] = {scope: _Slot() for scope in self.scopes}
        self._counts = dict.fromkeys(
            ("reserved", "refused", "unavailable", "requests", "grants", "releases", "overspent"), 0
        )
        self._overspent_usd = _ZERO
        self._closed = False
        self._background = background
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_upkeep()
        # Leases go back at interpreter exit; a weak reference keeps no client alive.
        ref = weakref.ref(self)

        def close_at_exit() -> None:
            client = ref()
            if client is not None:
                client.close()

        def forget_in_child() -> None:
            client = ref()
            if client is not None and not client._closed:
                client._after_fork()

        self._atexit = close_at_exit
        atexit.register(close_at_exit)
        os.register_at_fork(after_in_child=forget_in_child)

    def _start_upkeep(self) -> None:
        if self._background:
            self._thread = threading.Thread(
                target=self._run, name="spendstream-leases", daemon=True
            )
            self._thread.start()

    def _after_fork(self) -> None:
        """A forked child must not draw on its parent's leases: they are granted for one
        process's use. It starts with none, its own id, lock and upkeep thread."""
        self.client_id = _default_client_id()
        self._cond = threading.Condition(threading.Lock())
        self._slots = {scope: _Slot() for scope in self.scopes}
        self._stop = threading.Event()
        after_fork = getattr(self.service, "after_fork", None)
        if after_fork is not None:
            after_fork(self.client_id)
        self._start_upkeep()

    @classmethod
    def from_config(cls, service: LeaseService, config: Any, **kwargs: Any) -> LeaseClient:
        """Scopes from ``config.budget`` (those with ``hard_limit``), settings from ``[leases]``."""
        lc = config.leases
        options: dict[str, Any] = {
            "refill_calls": lc.refill_calls,
            "idle_return_s": lc.idle_return_s,
            "request_timeout_s": lc.request_timeout_s,
            "refusal_hold_s": lc.refusal_hold_s,
        }
        options.update(kwargs)
        scopes = [b.scope for b in config.budget if b.hard_limit is not None]
        return cls(service, scopes, **options)

    @classmethod
    def kafka(
        cls, bootstrap: str | KafkaSettings | None = None, config: Any = None, **kwargs: Any
    ) -> LeaseClient:
        """A client asking the lease server over Kafka (``spendstream leases serve``).

        ``config`` (a ``spendstream.config.Config``) gives the hard budgets, ``[leases]``, the
        topic prefix and the ``[kafka]`` client settings (SASL/TLS); ``bootstrap`` (an
        address, or ``KafkaSettings``) overrides where the brokers are. Without ``config``
        pass ``bootstrap`` and ``scopes=[...]``. ``kafka_options``: librdkafka settings.
        """
        from spendstream.kafka import as_settings
        from spendstream.kafka_leases import KafkaLeaseService, LeaseTopics

        settings: KafkaSettings
        if isinstance(bootstrap, KafkaSettings):
            settings = bootstrap
        elif config is not None:
            settings = KafkaSettings.from_config(config.kafka)
            if bootstrap is not None:
                settings = settings.with_bootstrap(bootstrap)
        elif bootstrap is not None:
            settings = as_settings(bootstrap)
        else:
            raise TypeError("LeaseClient.kafka needs bootstrap or config")
        prefix = config.kafka.topic_prefix if config is not None else ""
        client_id = kwargs.pop("client_id", None) or _default_client_id()
        service = KafkaLeaseService(
            settings,
            client_id=client_id,
            names=LeaseTopics.with_prefix(prefix),
            config=kwargs.pop("kafka_options", None),
        )
        kwargs.update(client_id=client_id, owns_service=True)
        if config is not None:
            return cls.from_config(service, config, **kwargs)
        return cls(service, kwargs.pop("scopes"), **kwargs)

    # --- the caller's side ----------------------------------------------------------------

    def covering(self, tags: Mapping[str, object]) -> list[str]:
        """The hard-budget scopes a call with these tags draws on, ``global`` first."""
        return [s for s in call_scopes(tags) if s in self.scopes]

    def reserve(self, max_usd: Decimal | str | int | float, **tags: object) -> Reservation:
        """Hold ``max_usd`` on every hard budget covering the call, or raise.

        Raises ``BudgetExhausted`` when a budget cannot cover it, ``LeaseUnavailable`` when
        the service did not answer within ``request_timeout_s``. A call no hard budget covers
        gets an empty reservation (``lease_id`` None) at no cost.
        """
        amount = to_usd(max_usd)
        scopes = self.covering(tags)
        held: list[_Held] = []
        try:
            for scope in scopes:
                held.append(self._take(scope, amount))
        except BaseException:
            self._give_back(held, amount)
            raise
        return Reservation(self, amount, tuple(scopes), held)

    async def areserve(self, max_usd: Decimal | str | int | float, **tags: object) -> Reservation:
        """``reserve`` for asyncio: with leases in hand it returns without yielding (the same
        local take); a refill waits on a worker thread, so the event loop keeps running.

        A task cancelled while its refill is on the way gives back what the refill took.
        """
        import asyncio

        amount = to_usd(max_usd)
        scopes = self.covering(tags)
        held: list[_Held] = []
        try:
            for scope in scopes:
                now = self._clock()
                with self._cond:
                    taken = self._from_current(self._slots[scope], amount, now)
                if taken is None:
                    refill = asyncio.ensure_future(
                        asyncio.to_thread(self._refill_and_take, scope, amount)
                    )
                    try:
                        taken = await asyncio.shield(refill)
                    except asyncio.CancelledError:
                        refill.add_done_callback(lambda done: self._give_back_late(done, amount))
                        raise
                held.append(taken)
        except BaseException:
            self._give_back(held, amount)
            raise
        return Reservation(self, amount, tuple(scopes), held)

    def _give_back_late(self, refill: Any, amount: Decimal) -> None:
        """A refill whose caller was cancelled: what it took goes back."""
        if not refill.cancelled() and refill.exception() is None:
            self._give_back([refill.result()], amount)

    def _take(self, scope: str, amount: Decimal) -> _Held:
        now = self._clock()
        with self._cond:
            held = self._from_current(self._slots[scope], amount, now)
        return held if held is not None else self._refill_and_take(scope, amount)

    def _from_current(self, slot: _Slot, amount: Decimal, now: float) -> _Held | None:
        """Reserve on the slot's current lease if it is live and has room (lock held)."""
        held = slot.current
        if held is None or now >= held.deadline or held.free < amount:
            return None
        held.reserved += amount
        held.inflight += 1
        held.last_used = now
        self._counts["reserved"] += 1
        return held

    def _refill_and_take(self, scope: str, amount: Decimal) -> _Held:
        deadline = self._clock() + self.request_timeout_s
        while True:
            releases: list[LeaseRelease] = []
            with self._cond:
                slot = self._slots[scope]
                while True:
                    now = self._clock()
                    taken = self._from_current(slot, amount, now)
                    if taken is not None:
                        return taken
                    if self._closed:
                        raise LeaseUnavailable(scope, "the lease client is closed")
                    refusal = slot.refusal
                    if (
                        refusal is not None
                        and now < slot.refused_until
                        and amount > refusal.left_usd
                    ):
                        self._counts["refused"] += 1
                        raise _refused(refusal, amount)
                    if now >= deadline:
                        self._counts["unavailable"] += 1
                        raise LeaseUnavailable(
                            scope, f"no usable lease within {self.request_timeout_s} s"
                        )
                    if not slot.refilling:
                        break
                    self._cond.wait(deadline - now)
                # This thread refills; the current lease (short or expired) goes back first,
                # so what it frees can be part of the new grant.
                slot.refilling = True
                if slot.current is not None:
                    releases += self._retire(slot, slot.current)
                request_id = slot.request_id = slot.request_id or os.urandom(12).hex()
                self._counts["requests"] += 1
            self._send(releases)
            sent_at = self._clock()
            request = LeaseRequest(
                scope, self.client_id, request_id, amount, amount * self.refill_calls
            )
            try:
                reply = self.service.request(request, max(deadline - sent_at, 0.001))
            except BaseException as exc:
                with self._cond:
                    slot.refilling = False
                    self._counts["unavailable"] += 1
                    self._cond.notify_all()
                if isinstance(exc, LeaseUnavailable):
                    raise
                if isinstance(exc, Exception):
                    raise LeaseUnavailable(scope, f"lease request failed: {exc}") from exc
                raise
            with self._cond:
                slot.refilling = False
                slot.request_id = None
                self._cond.notify_all()
                if isinstance(reply, LeaseGrant):
                    self._counts["grants"] += 1
                    held = _Held(scope, reply.lease_id, reply.amount_usd, sent_at + reply.ttl_s)
                    held.last_used = sent_at
                    slot.current = held
                    slot.refusal = None
                    # Loop: this thread (or a faster one) now takes from the new lease; an
                    # answer too small or already expired is retired and asked for anew.
                    continue
                self._counts["refused"] += 1
                hold = self.refusal_hold_s
                if reply.retry_after_s is not None:
                    hold = min(hold, reply.retry_after_s)
                slot.refusal = reply
                slot.refused_until = self._clock() + hold
                raise _refused(reply, amount)

    def _give_back(self, held: list[_Held], amount: Decimal) -> None:
        """Undo reservations taken before another scope refused the call."""
        releases: list[LeaseRelease] = []
        with self._cond:
            for h in held:
                h.reserved -= amount
                h.inflight -= 1
                self._counts["reserved"] -= 1
                releases += self._after_settle(h)
        self._send(releases)

    def _settle(self, reservation: Reservation, actual: Decimal) -> None:
        releases: list[LeaseRelease] = []
        amount = reservation.max_usd
        now = self._clock()
        with self._cond:
            if actual > amount and reservation._held:
                self._counts["overspent"] += 1
                self._overspent_usd += actual - amount
            for h in reservation._held:
                h.reserved -= amount
                h.used += actual
                if now >= h.deadline:
                    h.late += actual
                h.inflight -= 1
                releases += self._after_settle(h)
        if actual > amount and reservation._held:
            log.warning(
                "call cost $%s, above the $%s it reserved on %s: a hard cap cannot cover the "
                "difference; reserve the call's true worst case",
                actual,
                amount,
                ", ".join(reservation.scopes),
            )
        self._send(releases)

    def _after_settle(self, h: _Held) -> list[LeaseRelease]:
        if h.retired and h.inflight == 0:
            slot = self._slots[h.scope]
            slot.draining.pop(h.lease_id, None)
            return [LeaseRelease(h.scope, self.client_id, h.lease_id, h.used, h.late, _ZERO)]
        return []

    def _retire(self, slot: _Slot, h: _Held) -> list[LeaseRelease]:
        """Stop reserving on ``h`` and give back all but its calls in flight (lock held)."""
        if slot.current is h:
            slot.current = None
        h.retired = True
        if h.inflight:
            slot.draining[h.lease_id] = h
        return [LeaseRelease(h.scope, self.client_id, h.lease_id, h.used, h.late, h.reserved)]

    def _send(self, releases: list[LeaseRelease]) -> None:
        for release in releases:
            try:
                self.service.release(release)
            except Exception as exc:  # the lease then ends at its expiry: safe, only slower
                log.warning("could not give lease %s back: %s", release.lease_id, exc)
            else:
                with self._cond:
                    self._counts["releases"] += 1

    # --- upkeep ---------------------------------------------------------------------------

    def return_idle(self) -> int:
        """Give back leases that expired or sat unused for ``idle_return_s``; how many."""
        now = self._clock()
        releases: list[LeaseRelease] = []
        with self._cond:
            for slot in self._slots.values():
                h = slot.current
                if h is not None and (
                    now >= h.deadline
                    or (h.inflight == 0 and now - h.last_used >= self.idle_return_s)
                ):
                    releases += self._retire(slot, h)
                for lease_id, d in list(slot.draining.items()):
                    if now >= d.deadline + _FORGET_DRAINING_S:
                        del slot.draining[lease_id]
        self._send(releases)
        return len(releases)

    def _run(self) -> None:
        tick = max(min(self.idle_return_s / 4, 0.5), 0.01)
        while not self._stop.wait(tick):
            try:
                self.return_idle()
            except Exception:  # upkeep must outlive its own bugs
                log.exception("lease upkeep failed")

    @property
    def metrics(self) -> LeaseMetrics:
        with self._cond:
            c = dict(self._counts)
            return LeaseMetrics(**c, overspent_usd=self._overspent_usd)

    def held(self, scope: str) -> Decimal:
        """What this process could still reserve on ``scope`` without asking (0: nothing)."""
        now = self._clock()
        with self._cond:
            h = self._slots[scope].current if scope in self._slots else None
            return h.free if h is not None and now < h.deadline else _ZERO

    def close(self) -> None:
        """Give every lease back (calls in flight keep their worst case until they settle)."""
        if self._closed:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        releases: list[LeaseRelease] = []
        with self._cond:
            self._closed = True
            for slot in self._slots.values():
                if slot.current is not None:
                    releases += self._retire(slot, slot.current)
            self._cond.notify_all()
        self._send(releases)
        atexit.unregister(self._atexit)
        if self._owns_service:
            self.service.close()

    def __enter__(self) -> LeaseClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _default_client_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{os.urandom(4).hex()}"


def _refused(refusal: LeaseRefusal, need: Decimal) -> BudgetExhausted | LeaseUnavailable:
    if refusal.reason == "unbudgeted":
        return LeaseUnavailable(refusal.scope, "the lease service has no hard budget for it")
    return BudgetExhausted(
        refusal.scope,
        refusal.budget,
        refusal.left_usd,
        need_usd=need,
        held_usd=refusal.held_usd,
        retry_after_s=refusal.retry_after_s,
    )
