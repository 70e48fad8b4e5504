"""Delivery you can trust: retries with capped exponential backoff and full jitter.

Retried: 5xx, 429 (after its ``Retry-After``), timeouts and connection errors. Never
retried: any other 4xx, which means the request itself is wrong. A notification that is
not delivered within the retry budget (attempts or seconds) comes back ``dead`` and the
router dead-letters it; either way the caller may then commit the Kafka offset.

A sink that has just given up is *down*: for ``sink_down_s`` after that, its notifications
come back ``dead`` at once, not attempted (the router dead-letters them, and
``--replay-dead-letters`` sends them), instead of spending the whole retry budget again
on each one; then a single attempt tells whether it is back. A refusal (4xx) is an answer,
not an outage: it opens nothing, and it closes a down sink like a delivery does.

A sink that gave up and then answers again is *back*: the deliverer only notes it
(``take_back``), and the router, once the notification in hand is settled, replays that
sink's outage dead letters (``is_outage``). Replaying from inside ``send`` would nest one
delivery in another and reorder the batch's writes to the state.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Literal

import httpx

from spendstream.config import DeliveryConfig
from spendstream.wording import plural

__all__ = [
    "SINK_DOWN",
    "DeliveryResult",
    "HttpDeliverer",
    "HttpRequest",
    "RetryPolicy",
    "is_outage",
    "parse_retry_after",
]

log = logging.getLogger("spendstream.alerts.delivery")

# How a notification skipped while its sink is down reads in its dead letter (the sink's
# last error follows in parentheses).
SINK_DOWN = "not attempted: sink down"


def is_outage(error: str) -> bool:
    """Whether a dead letter's ``error`` says the sink did not answer (or was not asked).

    Connection failures, timeouts, 5xx and 429, and the skip while the sink was down: the
    same request may be accepted once the sink is back. Any other 4xx is the sink refusing
    this request, which a resend would meet again.
    """
    if error.startswith((SINK_DOWN, "connection failed", "timeout")):
        return True
    if error.startswith("HTTP "):
        code = error[5:8]
        return code.isdigit() and (code == "429" or code.startswith("5"))
    return False


@dataclass(slots=True, frozen=True)
class HttpRequest:
    url: str
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True, frozen=True)
class DeliveryResult:
    status: Literal["delivered", "dead"]
    attempts: int
    error: str = ""

    @property
    def delivered(self) -> bool:
        return self.status == "delivered"


@dataclass(slots=True, frozen=True)
class _Down:
    until: float  # monotonic
    error: str  # the last error of the delivery that gave up


@dataclass(slots=True, frozen=True)
class RetryPolicy:
    max_attempts: int = 8
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    retry_budget_s: float = 300.0
    timeout_s: float = 10.0
    # After a sink gives up, how long its notifications are dead-lettered without an attempt.
    sink_down_s: float = 60.0

    @classmethod
    def from_config(cls, cfg: DeliveryConfig) -> RetryPolicy:
        return cls(
            max_attempts=cfg.max_attempts,
            backoff_initial_s=cfg.backoff_initial_s,
            backoff_max_s=cfg.backoff_max_s,
            retry_budget_s=cfg.retry_budget_s,
            timeout_s=cfg.timeout_s,
            sink_down_s=cfg.sink_down_s,
        )

    def backoff_s(self, attempt: int, rng: random.Random) -> float:
        """Full jitter (uniform in [0, cap]) so many routers retrying at once spread out."""
        cap = min(self.backoff_max_s, self.backoff_initial_s * 2 ** (attempt - 1))
        return rng.uniform(0, cap)


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP-date; None when absent or garbled."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


class HttpDeliverer:
    """POSTs a request until it is accepted, refused for good, or the budget is spent.

    ``sleep``, ``monotonic`` and ``rng`` are injectable so that tests control time and
    jitter; the HTTP side is always real.
    """

    def __init__(
        self,
        policy: RetryPolicy,
        client: httpx.Client | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        # httpx logs every request URL at INFO, and a Slack webhook URL is a secret.
        for name in ("httpx", "httpcore"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self.policy = policy
        self.client = client or httpx.Client(timeout=policy.timeout_s, follow_redirects=False)
        self._sleep = sleep
        self._monotonic = monotonic
        self._rng = rng or random.Random()
        self._down: dict[str, _Down] = {}
        # Sinks that gave up since they last answered: kept even with ``sink_down_s = 0``
        # (no down state), so that their answering again still starts the recovery.
        self._failing: set[str] = set()
        # Sinks that answered again after giving up, in that order, until ``take_back``.
        self._back: list[str] = []

    def down(self, sink: str) -> str | None:
        """The last error of ``sink`` while it is down (its notifications not attempted)."""
        d = self._down.get(sink)
        return d.error if d is not None and self._monotonic() < d.until else None

    def monotonic(self) -> float:
        """The deliverer's clock (injected in tests), for pacing work around deliveries."""
        return self._monotonic()

    def failing(self, sink: str) -> bool:
        """Whether ``sink`` gave up on a notification and has not answered since (with or
        without a down state: ``sink_down_s = 0`` keeps none)."""
        return sink in self._failing

    def probe_due(self, sink: str) -> bool:
        """Whether ``sink`` is down and its cool-down is over: its next send is the probe."""
        d = self._down.get(sink)
        return d is not None and self._monotonic() >= d.until

    def take_back(self) -> list[str]:
        """The sinks that answered again after giving up since the last call, oldest first."""
        back, self._back = self._back, []
        return back

    def _up(self, sink: str) -> None:
        was_down = self._down.pop(sink, None) is not None
        if was_down:
            log.warning("alert sink %s answers again: its notifications are sent again", sink)
        if (was_down or sink in self._failing) and sink not in self._back:
            self._back.append(sink)
        self._failing.discard(sink)

    def close(self) -> None:
        self.client.close()

    def send(self, sink: str, request: HttpRequest) -> DeliveryResult:
        # Errors name the sink, never the URL: a Slack webhook URL is itself the secret.
        max_attempts = self.policy.max_attempts
        down = self._down.get(sink)
        if down is not None:
            if self._monotonic() < down.until:
                return DeliveryResult("dead", 0, f"{SINK_DOWN} ({down.error})")
            max_attempts = 1  # the cool-down is over: one attempt tells whether it is back
        started = self._monotonic()
        attempt = 0
        error = ""
        while True:
            attempt += 1
            wait: float | None = None
            try:
                resp = self.client.post(
                    request.url, content=request.body, headers=dict(request.headers)
                )
            except httpx.TimeoutException as exc:
                error = f"timeout ({type(exc).__name__})"
            except httpx.TransportError as exc:
                error = f"connection failed ({type(exc).__name__})"
            else:
                if 200 <= resp.status_code < 300:
                    self._up(sink)
                    return DeliveryResult("delivered", attempt)
                error = f"HTTP {resp.status_code}"
                if resp.status_code == 429 or resp.status_code >= 500:
                    wait = parse_retry_after(resp.headers.get("retry-after"), datetime.now(UTC))
                else:
                    # The sink answered: this request is wrong, the sink is not down.
                    self._up(sink)
                    log.error("alert sink %s refused a notification: %s (not retried)", sink, error)
                    return DeliveryResult("dead", attempt, error)
            if wait is None:
                wait = self.policy.backoff_s(attempt, self._rng)
            elapsed = self._monotonic() - started
            if attempt >= max_attempts or elapsed + wait > self.policy.retry_budget_s:
                log.error(
                    "alert sink %s: giving up after %s in %.1fs: %s",
                    sink,
                    plural(attempt, "attempt"),
                    elapsed,
                    error,
                )
                self._failing.add(sink)
                if self.policy.sink_down_s > 0:  # 0: each notification its full retries
                    self._down[sink] = _Down(self._monotonic() + self.policy.sink_down_s, error)
                    log.warning(
                        "alert sink %s is down: its notifications are dead-lettered without "
                        "an attempt for %.0fs, then one attempt tries it again "
                        "(spendstream alerts --replay-dead-letters sends the dead letters)",
                        sink,
                        self.policy.sink_down_s,
                    )
                return DeliveryResult("dead", attempt, error)
            log.warning("alert sink %s: %s; retry %d in %.2fs", sink, error, attempt, wait)
            self._sleep(wait)
