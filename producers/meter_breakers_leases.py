"""The Meter's circuit-breaker checks and budget leases, wired to its default tags.

``Meter`` takes these methods from ``BreakersAndLeases``: ``watch_breakers`` /
``watch_workdir_breakers`` (a breaker view, ``producers/guard.py``), ``guard`` / ``aguard``
(refuse a call whose breaker is open), ``use_leases`` / ``reserve`` / ``areserve`` (hold a
call's worst case on its hard budgets, ``producers/leases.py``) and ``settle_from`` (what a
recorded call cost). A check or a reservation covers the scopes the call is recorded in:
the Meter's defaults, the ``meter.tags()`` blocks the caller is in, then the call's own.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from spendstream.errors import SpendstreamError
from spendstream.kafka.settings import KafkaSettings, answering_servers
from spendstream.producers.call import CALL_TAGS
from spendstream.producers.event import UsageEvent
from spendstream.producers.guard import (
    BREAKERS_TOPIC,
    BreakerStates,
    BreakerView,
    RequestRate,
    WorkdirBreakerView,
    call_cost_usd,
    worst_case_usd,
)
from spendstream.producers.guard import aguard as _aguard
from spendstream.producers.guard import guard as _guard
from spendstream.producers.leases import LeaseClient, Reservation, to_usd

__all__ = ["BreakersAndLeases"]

log = logging.getLogger("spendstream.producers")


class BreakersAndLeases:
    """Breaker checks and budget reservations for a Meter (its base class)."""

    _defaults: dict[str, Any]  # the Meter's default event fields

    # -- circuit breakers (producers/guard.py) --------------------------------------------

    # A started BreakerView, or None: set it yourself or with watch_breakers().
    breakers: BreakerStates | None = None

    def watch_breakers(
        self,
        bootstrap: str | KafkaSettings,
        topic: str = BREAKERS_TOPIC,
        *,
        wait_s: float = 10.0,
        fail_closed: bool = False,
        **kw: Any,
    ) -> BreakerView:
        """Follow the breakers topic so ``guard()`` answers locally; close the view yourself.

        ``bootstrap`` is an address or ``KafkaSettings`` (SASL/TLS); ``signer=`` (a
        ``spendstream.signing.RecordSigner``) makes the view ignore unsigned records.
        Blocks until the view has read the topic to its end (breakers already open are
        known), at most ``wait_s`` (0: return at once; the first ``guard()`` then waits up
        to ``wait_s``). A view not ready by then lets calls through, unless
        ``fail_closed=True``: then every ``guard()`` refuses until it is ready.
        """
        view = BreakerView(bootstrap, topic, fail_closed=fail_closed, ready_timeout_s=wait_s, **kw)
        self.breakers = view.start()
        if wait_s > 0 and not view.wait_ready(wait_s):
            # librdkafka retries a dead address quietly: "still reading" would be wrong.
            why = view.error or (
                "still reading"
                if answering_servers(view.bootstrap_servers, 1.0)
                else "no broker answers there"
            )
            log.warning(
                "breaker view not caught up with %s at %s within %.1f s (%s); guard() %s",
                topic,
                view.bootstrap_servers,
                wait_s,
                why,
                "refuses every call until it is" if fail_closed else "lets calls through",
            )
            view.unready_reported()  # guard() need not say it again
        return view

    def watch_workdir_breakers(
        self,
        workdir: str | os.PathLike[str] | None = None,
        *,
        wait_s: float = 10.0,
        fail_closed: bool = False,
    ) -> WorkdirBreakerView:
        """Without Kafka: follow the breakers the embedded pipeline (``spendstream ingest``,
        ``tail -F calls.jsonl | spendstream ingest -`` as calls come) keeps in ``workdir``, so
        ``guard()`` answers locally; close the view yourself. ``workdir`` as the CLI finds
        it: given, else ``$SPENDSTREAM_HOME``, else ``./spendstream-data``. Waits for the
        first read, at most ``wait_s``; a view not ready by then lets calls through unless
        ``fail_closed``."""
        # The CLI's own rule (a light module: os, fcntl, pathlib), so the app and the
        # `spendstream ingest` beside it never look in two places.
        from spendstream.workdir import resolve_workdir

        view = WorkdirBreakerView(
            resolve_workdir(workdir), fail_closed=fail_closed, ready_timeout_s=wait_s
        )
        self.breakers = view.start()
        if wait_s > 0 and not view.wait_ready(wait_s):
            log.warning(
                "breaker view could not read %s within %.1f s (%s); guard() %s",
                view.path,
                wait_s,
                view.error,
                "refuses every call until it can" if fail_closed else "lets calls through",
            )
            view.unready_reported()
        return view

    def guard(
        self,
        *,
        reserve: bool = False,
        max_usd: Decimal | str | int | float | None = None,
        **tags: Any,
    ) -> Reservation | None:
        """Raise ``BreakerOpen`` if a breaker covering the call is open (``guard.guard``).

        Tags default to the Meter's ``defaults`` and the ``meter.tags()`` blocks the caller
        is in; ``max_request_usd`` and its price arguments pass through. With ``reserve=True`` (or ``max_usd``) the call's worst case
        is also reserved on its hard budgets (``reserve``) and the ``Reservation`` returned;
        ``BudgetExhausted`` refuses it. Without a breaker view only the reservation is made.
        """
        merged = self._call_tags(tags)
        wants_lease = reserve or max_usd is not None
        if self.breakers is not None:
            _guard(self.breakers, **merged)
        elif not wants_lease:
            raise SpendstreamError(
                "Meter.guard needs a breaker view: meter.watch_breakers(bootstrap) on Kafka, "
                "meter.watch_workdir_breakers(workdir) beside an embedded ingest"
            )
        if not wants_lease:
            return None
        merged.pop("max_request_usd", None)
        return self.reserve(max_usd, **merged)

    async def aguard(
        self,
        *,
        reserve: bool = False,
        max_usd: Decimal | str | int | float | None = None,
        **tags: Any,
    ) -> Reservation | None:
        """The async twin of ``guard``. The breaker check is local and never blocks; a
        reservation takes from a lease in hand without yielding, and a refill waits off the
        event loop (``LeaseClient.areserve``)."""
        merged = self._call_tags(tags)
        wants_lease = reserve or max_usd is not None
        if self.breakers is not None:
            await _aguard(self.breakers, **merged)
        elif not wants_lease:
            raise SpendstreamError(
                "Meter.aguard needs a breaker view: meter.watch_breakers(bootstrap) on Kafka, "
                "meter.watch_workdir_breakers(workdir) beside an embedded ingest"
            )
        if not wants_lease:
            return None
        merged.pop("max_request_usd", None)
        return await self.areserve(max_usd, **merged)

    def _call_tags(self, tags: Mapping[str, Any]) -> dict[str, Any]:
        """The tags the call's event will carry: defaults < ``meter.tags()`` blocks < these.
        A breaker check or a reservation must cover the scopes the call is recorded in."""
        return {**self._defaults, **CALL_TAGS.get(), **tags}

    # -- budget leases (producers/leases.py) --------------------------------------------------

    # The process's LeaseClient, or None: set it with use_leases().
    leases: LeaseClient | None = None

    def use_leases(self, client: LeaseClient) -> LeaseClient:
        """Reserve calls on hard budgets through ``client``; close it yourself."""
        self.leases = client
        return client

    def reserve(
        self,
        max_usd: Decimal | str | int | float | None = None,
        *,
        provider: str | None = None,
        model: str | None = None,
        input_tokens: int | None = None,
        max_tokens: int | None = None,
        rates: Mapping[tuple[str, str], RequestRate] | None = None,
        **tags: Any,
    ) -> Reservation:
        """Hold the call's worst case on every hard budget covering it (``LeaseClient.reserve``).

        ``max_usd``, or the worst case of ``input_tokens`` plus ``max_tokens`` of output of
        ``provider``/``model`` at list price (``rates`` or genai-prices; the prompt may be
        written to the cache). Tags default to the Meter's ``defaults`` and ``meter.tags()``
        blocks, as the recorded event's do. Raises
        ``BudgetExhausted`` or ``LeaseUnavailable``; use the result as a context manager
        and settle it, or pass it to ``record(..., reservation=r)``.
        """
        worst, merged = self._worst_case(
            max_usd, provider, model, input_tokens, max_tokens, rates, tags
        )
        assert self.leases is not None
        reservation = self.leases.reserve(worst, **merged)
        reservation.rates = rates
        return reservation

    async def areserve(
        self,
        max_usd: Decimal | str | int | float | None = None,
        *,
        provider: str | None = None,
        model: str | None = None,
        input_tokens: int | None = None,
        max_tokens: int | None = None,
        rates: Mapping[tuple[str, str], RequestRate] | None = None,
        **tags: Any,
    ) -> Reservation:
        """``reserve`` for asyncio: a refill waits off the event loop (``LeaseClient.areserve``)."""
        worst, merged = self._worst_case(
            max_usd, provider, model, input_tokens, max_tokens, rates, tags
        )
        assert self.leases is not None
        reservation = await self.leases.areserve(worst, **merged)
        reservation.rates = rates
        return reservation

    def _worst_case(
        self,
        max_usd: Decimal | str | int | float | None,
        provider: str | None,
        model: str | None,
        input_tokens: int | None,
        max_tokens: int | None,
        rates: Mapping[tuple[str, str], RequestRate] | None,
        tags: Mapping[str, Any],
    ) -> tuple[Decimal | str | int | float, dict[str, Any]]:
        if self.leases is None:
            raise SpendstreamError("Meter.reserve needs a lease client: meter.use_leases(...)")
        if max_usd is None:
            if provider is None or model is None or input_tokens is None or max_tokens is None:
                raise TypeError(
                    "reserve() needs max_usd, or provider, model, input_tokens and max_tokens"
                )
            worst = worst_case_usd(
                provider, model, input_tokens, max_tokens, rates, cache_writes=True
            )
            if worst is None:
                raise SpendstreamError(
                    f"no price known for {provider}/{model}: pass max_usd or rates to reserve()"
                )
            max_usd = worst
        return max_usd, self._call_tags(tags)

    def _settle_recorded(
        self,
        reservation: Reservation,
        event: UsageEvent | Mapping[str, Any] | None,
        fields: Mapping[str, Any],
    ) -> None:
        data = (
            event.to_json_dict() if isinstance(event, UsageEvent) else {**(event or {}), **fields}
        )
        reservation.settle(self.settle_from(reservation, data))

    def settle_from(self, reservation: Reservation, event: Mapping[str, Any]) -> Decimal:
        """What a recorded call cost, to settle its reservation with.

        The event's tokens at list price (``reservation.rates`` if given, else genai-prices
        with its cache rates), else its ``reported_cost_usd``, else the reservation's
        ``max_usd`` (nothing says less). No batch or negotiated discount is taken off: the
        pipeline's price is at most this one.
        """
        try:
            cost = call_cost_usd(
                str(event["provider"]),
                str(event["model"]),
                int(event.get("input_tokens", 0)),
                int(event.get("output_tokens", 0)),
                cache_read_tokens=int(event.get("cache_read_tokens", 0)),
                cache_write_tokens=int(event.get("cache_write_tokens", 0)),
                rates=reservation.rates,
            )
        except (KeyError, TypeError, ValueError):
            cost = None
        if cost is None and event.get("reported_cost_usd") is not None:
            cost = to_usd(event["reported_cost_usd"])
        return reservation.max_usd if cost is None else cost
