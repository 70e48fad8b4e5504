"""Client-side enforcement: refuse a call while a circuit breaker covering it is open.

``BreakerView`` follows the compacted ``spendstream.breakers`` topic (key: scope, value:
the breaker event as JSON) in a background thread and keeps the latest state per scope
in memory, so ``guard()`` answers from a local dict: no network round trip per call.

Readiness: a view is *ready* once it has read the topic up to where it ended when the view
started (or found that the topic does not exist yet: no breaker ever moved). The first
``guard()`` on a started view that is not ready waits for it, at most ``ready_timeout_s``
(default 10 s), once; ``Meter.watch_breakers`` does that wait itself before returning. A view
still not ready after that wait lets calls through, unless it was made with
``fail_closed=True``, when every ``guard()`` refuses (scope ``global``) until it is ready.

``guard(view, team=..., api_key_id=..., session_id=..., ...)`` raises ``BreakerOpen``
naming the scope and reason when the breaker of ``global`` or of any of the call's
scopes (team, feature, project, user, api key, session) is ``open``; ``half_open`` lets
calls through, so a resumed loop trips it again. ``aguard`` is the async twin.

The per-request ceiling (``max_request_usd``) refuses a call whose worst case — its input
tokens plus ``max_tokens`` of output at the model's list price — exceeds the ceiling,
raising ``RequestCeilingExceeded`` (a ``BreakerOpen``). Prices come from a ``rates``
table passed in (``{(provider, model): RequestRate}``, USD per million tokens), else
from the genai-prices catalog when it is installed (the ``pipeline`` extra): this package
must not import the pipeline's pricer. A model with no known price is refused when a
ceiling is set: its worst case cannot be bounded.

Embedded (no Kafka): ``WorkdirBreakerView(workdir)`` follows the open breakers an embedded
writer (``spendstream ingest``, a live ``ingest -`` pipe above all) keeps in
``<workdir>/breakers.json``; ``guard()`` takes either view.

Authenticated records: given a ``signer`` (``[breaker] hmac_key_env``/``hmac_key_file``,
see ``spendstream.signing``), the view applies only records whose ``spendstream-sig``
header verifies; any other record (a forged ``closed``, say) is ignored, counted in
``view.unverified`` and logged once. Without a signer every record is trusted.

Nothing here imports the pipeline: the topic's JSON is parsed here.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Self

from spendstream.errors import BreakerOpen
from spendstream.kafka.settings import KafkaSettings, as_settings
from spendstream.producers import wire_json
from spendstream.scopes import GLOBAL, SCOPE_FIELDS
from spendstream.signing import RecordSigner
from spendstream.wording import exact_usd

if TYPE_CHECKING:
    from spendstream.config import Config
    from spendstream.kafka.consumer import Partition

__all__ = [
    "BREAKERS_FILE",
    "BREAKERS_TOPIC",
    "BreakerStates",
    "BreakerView",
    "RequestCeilingExceeded",
    "RequestRate",
    "ViewEntry",
    "WorkdirBreakerView",
    "aguard",
    "call_cost_usd",
    "call_scopes",
    "guard",
    "worst_case_usd",
]

log = logging.getLogger(__name__)

# Mirrors spendstream.topics.BREAKERS (a test keeps them equal); producers stay import-light.
BREAKERS_TOPIC = "spendstream.breakers"
# What an embedded writer (`ingest`, `demo`) keeps of its open breakers in its workdir, for
# WorkdirBreakerView (written by spendstream.runtime.breakers_file).
BREAKERS_FILE = "breakers.json"
_MTOK = Decimal(1_000_000)


class ViewEntry(NamedTuple):
    state: str  # open | half_open | closed
    reason: str
    ts: str  # event time of the transition, as published
    received_ns: int  # monotonic time the view applied it (for latency measurements)


@dataclass(frozen=True, slots=True)
class RequestRate:
    """List price of one model in USD per million tokens."""

    input_per_mtok: Decimal
    output_per_mtok: Decimal


class RequestCeilingExceeded(BreakerOpen):
    """The call's worst-case cost is over ``max_request_usd`` (or cannot be bounded)."""

    def __init__(self, reason: str, worst_case_usd: Decimal | None, max_request_usd: Decimal):
        super().__init__("request", reason)
        self.args = (f"request refused: {reason}",)  # no breaker is involved
        self.worst_case_usd = worst_case_usd
        self.max_request_usd = max_request_usd


class BreakerStates:
    """The local copy of every breaker that is not closed, kept by a background thread from
    a source (``BreakerView``: the breakers topic; ``WorkdirBreakerView``: an embedded
    workdir's file), and what ``guard()`` asks of it.

    ``start()`` it; ``wait_ready()`` blocks until it has caught up with its source as it
    stood at start. The first ``guard`` on a view that is not ready waits for it (at most
    ``ready_timeout_s``, once); after that, an unready view lets calls through unless
    ``fail_closed``.
    """

    def __init__(
        self, *, fail_closed: bool = False, ready_timeout_s: float = 10.0, keep_closed: bool = False
    ) -> None:
        self.fail_closed = fail_closed
        self.ready_timeout_s = ready_timeout_s
        self._states: dict[str, ViewEntry] = {}
        self._closed: dict[str, ViewEntry] | None = {} if keep_closed else None
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._changed = threading.Condition()
        self.error: BaseException | None = None
        self._waited = threading.Event()  # someone waited for readiness once: guard won't again
        self._unready_logged = False

    @property
    def source(self) -> str:
        """Where the view reads, for messages."""
        raise NotImplementedError

    def _run(self) -> None:
        """The background thread: keep the states up to date until ``_stop``."""
        raise NotImplementedError

    def unready_reported(self) -> None:
        """Someone has logged that this view is not ready: ``guard()`` does not again."""
        self._unready_logged = True

    # --- the local state ------------------------------------------------------------

    def _put(self, scope: str, entry: ViewEntry) -> None:
        if entry.state == "closed":
            self._states.pop(scope, None)
            if self._closed is not None:
                self._closed[scope] = entry
        else:
            self._states[scope] = entry
            if self._closed is not None:
                self._closed.pop(scope, None)
        self._notify()

    def _forget(self, scope: str) -> None:
        self._states.pop(scope, None)
        if self._closed is not None:
            self._closed.pop(scope, None)
        self._notify()

    @property
    def states(self) -> Mapping[str, ViewEntry]:
        """Every breaker that is not closed (live, not a copy: read, never write)."""
        return self._states

    def get(self, scope: str) -> ViewEntry | None:
        """The scope's breaker unless closed."""
        return self._states.get(scope)

    def snapshot(self) -> dict[str, ViewEntry]:
        """Every breaker that is not closed."""
        return dict(self._states)

    def latest(self, include_closed: bool = False) -> dict[str, ViewEntry]:
        """Each scope's latest transition; closed ones only when the view was made with
        ``keep_closed`` (else asking for them is a ValueError: the view forgot them)."""
        if not include_closed:
            return dict(self._states)
        if self._closed is None:
            raise ValueError(f"this {type(self).__name__} was made without keep_closed=True")
        return {**self._closed, **self._states}

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def wait_ready(self, timeout_s: float | None = None) -> bool:
        """Block until the view has read its source as of start; False at the timeout."""
        try:
            return self._ready.wait(timeout_s)
        finally:
            self._waited.set()

    def _wait_first(self) -> bool:
        """The one wait ``guard`` does on a started view that is not ready yet."""
        if self._ready.is_set():
            return True
        if self._thread is None or self._waited.is_set():
            return False
        return self.wait_ready(self.ready_timeout_s)

    def _mark_ready(self) -> None:
        if not self._ready.is_set():
            self._ready.set()
            self._notify()

    def wait_for(self, scope: str, state: str, timeout_s: float) -> bool:
        """Block until ``scope`` is in ``state`` (``closed``: absent); for tests and tools."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                entry = self._states.get(scope)
                current = entry.state if entry else "closed"
                if current == state:
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    # --- the thread -----------------------------------------------------------------

    def start(self) -> Self:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"breaker-view:{self.source}", daemon=True
            )
            self._thread.start()
        return self

    def close(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class BreakerView(BreakerStates):
    """A local, continuously updated copy of the breakers topic (``BreakerStates``)."""

    def __init__(
        self,
        bootstrap_servers: str | KafkaSettings,
        topic: str = BREAKERS_TOPIC,
        *,
        fail_closed: bool = False,
        ready_timeout_s: float = 10.0,
        poll_timeout_ms: int = 200,
        signer: RecordSigner | None = None,
        client_options: Mapping[str, Any] | None = None,
        keep_closed: bool = False,
    ) -> None:
        """``bootstrap_servers``: an address, or ``KafkaSettings`` for SASL/TLS;
        ``client_options``: librdkafka settings for the consumer; ``keep_closed``: remember
        each scope's latest ``closed`` transition too (``latest(include_closed=True)``), for a
        listing of every breaker; ``guard`` never needs it."""
        super().__init__(
            fail_closed=fail_closed, ready_timeout_s=ready_timeout_s, keep_closed=keep_closed
        )
        self.settings = as_settings(bootstrap_servers)
        self.topic = topic
        self.signer = signer
        self._poll_timeout_ms = poll_timeout_ms
        self._client_options = dict(client_options or {})
        self.unverified = 0  # records ignored because their signature did not verify

    @classmethod
    def from_config(cls, config: Config, **kwargs: Any) -> BreakerView:
        """A view of ``[kafka] topic_prefix`` + the breakers topic with the ``[kafka]`` client
        settings and the ``[breaker]`` HMAC key (a missing secret is a ConfigError)."""
        from spendstream.signing import load_breaker_signer

        return cls(
            KafkaSettings.from_config(config.kafka),
            config.kafka.topic_prefix + BREAKERS_TOPIC,
            signer=load_breaker_signer(config.breaker),
            **kwargs,
        )

    @property
    def bootstrap_servers(self) -> str:
        return self.settings.bootstrap_servers

    @property
    def source(self) -> str:
        return f"{self.topic} at {self.bootstrap_servers}"

    def apply(
        self,
        key: bytes | str | None,
        value: bytes | str | None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        """Apply one record of the topic (a tombstone, ``value=None``, forgets the scope).

        With a signer, a record whose signature header does not verify is ignored."""
        if self.signer is not None and not self._verified(key, value, headers):
            return
        if isinstance(key, bytes):
            key = key.decode("utf-8", errors="replace")
        if value is None:
            if key is not None:
                self._forget(key)
            else:
                self._notify()
            return
        try:
            data = wire_json.loads(value)
            scope = str(data.get("scope") or key)
            entry = ViewEntry(
                state=str(data["state"]),
                reason=str(data.get("reason", "")),
                ts=str(data.get("ts", "")),
                received_ns=time.monotonic_ns(),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("ignoring malformed breaker record for key %r", key)
            return
        self._put(scope, entry)

    def _verified(
        self,
        key: bytes | str | None,
        value: bytes | str | None,
        headers: list[tuple[str, bytes]] | None,
    ) -> bool:
        assert self.signer is not None
        k = key.encode() if isinstance(key, str) else key
        v = value.encode() if isinstance(value, str) else (value or b"")
        if self.signer.verify_headers("breaker", k, v, headers):
            return True
        self.unverified += 1
        if self.unverified == 1:
            log.warning(
                "breaker view: ignoring a record on %s that is not signed with the configured "
                "[breaker] HMAC key (key %r); further ones are only counted (view.unverified)",
                self.topic,
                k,
            )
        return False

    # --- the Kafka side -------------------------------------------------------------

    def _run(self) -> None:
        # librdkafka reconnects by itself once connected; this loop covers a broker that is
        # down when the view starts, refused credentials and any unexpected error, resuming
        # from the last position.
        positions: dict[Partition, int] = {}
        backoff_s = 0.5
        while not self._stop.is_set():
            try:
                self._consume(positions)
                return
            except Exception as exc:  # the caller's service must keep running
                self.error = exc
                log.warning("breaker view: %s; retrying in %.1f s", exc, backoff_s)
                self._stop.wait(backoff_s)
                backoff_s = min(backoff_s * 2, 10.0)

    def _consume(self, positions: dict[Partition, int]) -> None:
        from spendstream.kafka.consumer import BEGINNING, Consumer

        # No group: every client reads the whole topic; there are no offsets to commit.
        consumer = Consumer(
            self.settings, client_id="spendstream-breaker-view", config=self._client_options
        )
        try:
            found = None
            while found is None and not self._stop.is_set():
                found = consumer.partitions_for(self.topic, timeout_s=10)
                if not found:
                    found = None
                    # No topic yet: no breaker ever moved, so there is nothing to catch up on.
                    self._mark_ready()
                    self._stop.wait(0.5)  # the topic appears when the first breaker moves
            if found is None:
                return
            parts = [(self.topic, p) for p in found]
            consumer.assign({p: positions.get(p, BEGINNING) for p in parts})
            targets: dict[Partition, tuple[int, int]] = {p: consumer.watermarks(p) for p in parts}
            self.error = None
            timeout_s = self._poll_timeout_ms / 1000
            while not self._stop.is_set():
                for msg in consumer.consume(500, timeout_s):
                    self.apply(msg.key(), msg.value(), msg.headers())
                    positions[(self.topic, msg.partition() or 0)] = (msg.offset() or 0) + 1
                if not self._ready.is_set() and all(
                    positions.get(p, low) >= high for p, (low, high) in targets.items()
                ):
                    self._mark_ready()
        finally:
            consumer.close()


# A breakers.json younger than this is read again at every poll, even with its stamp unchanged.
_RECENT_NS = 2_000_000_000


class WorkdirBreakerView(BreakerStates):
    """The open breakers of an embedded workdir (``spendstream ingest``, ``demo``): no Kafka.

    The embedded writer keeps its breakers' state in ``<workdir>/breakers.json``, rewritten
    (whole, by a rename) at its start and whenever a breaker moves; this view reads it again
    whenever it changes, every ``poll_s``. Ready once read, or found missing (no embedded
    writer has run there: no breaker is open). A file that cannot be read keeps the last
    state read and is retried (logged once until it reads again).
    """

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        *,
        fail_closed: bool = False,
        ready_timeout_s: float = 10.0,
        poll_s: float = 0.2,
    ) -> None:
        super().__init__(fail_closed=fail_closed, ready_timeout_s=ready_timeout_s)
        self.path = Path(workdir).expanduser() / BREAKERS_FILE
        self._poll_s = poll_s
        self._bytes: bytes | None = None  # the file as last parsed

    @property
    def source(self) -> str:
        return str(self.path)

    def _run(self) -> None:
        seen: tuple[int, int, int] | None = None  # the file's (inode, mtime, size) last read
        while not self._stop.is_set():
            try:
                st = self.path.stat()
            except FileNotFoundError:
                if seen is not None:  # the workdir was removed or reset: nothing is open
                    for scope in list(self._states):
                        self._forget(scope)
                    seen = None
                self._mark_ready()
            except OSError as exc:
                self._failed(exc)
            else:
                stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
                # Two rewrites within one tick of the file system's clock, of one size, the
                # second reusing the first's freed inode, leave one stamp: while the file is
                # that young its bytes are compared too.
                recent = time.time_ns() - st.st_mtime_ns < _RECENT_NS
                if stamp != seen or recent:
                    try:
                        self._load(None if stamp != seen else self._bytes)
                    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                        self._failed(exc)
                    else:
                        seen, self.error = stamp, None
                        self._mark_ready()
            self._stop.wait(self._poll_s)

    def _load(self, unless: bytes | None = None) -> None:
        """Read the file; parsed unless its bytes are ``unless`` (those last parsed)."""
        raw = self.path.read_bytes()
        if raw == unless:
            return
        data = wire_json.loads(raw)
        now = time.monotonic_ns()
        entries = {
            str(b["scope"]): ViewEntry(str(b["state"]), str(b["reason"]), str(b["ts"]), now)
            for b in data["breakers"]
        }
        for scope in [s for s in self._states if s not in entries]:
            self._forget(scope)
        for scope, entry in entries.items():
            known = self._states.get(scope)
            if known is None or known[:3] != entry[:3]:  # received_ns: when it first came
                self._put(scope, entry)
        self._bytes = raw

    def _failed(self, exc: BaseException) -> None:
        if self.error is None:
            log.warning("breaker view: cannot read %s (%s); retrying", self.path, exc)
        self.error = exc


def call_scopes(tags: Mapping[str, object]) -> list[str]:
    """The breaker scopes covering a call with these tags, ``global`` first."""
    scopes = [GLOBAL]
    for kind, field in SCOPE_FIELDS.items():
        value = tags.get(field)
        if value is not None:
            scopes.append(f"{kind}:{value}")
    return scopes


def _catalog_price(
    provider: str,
    model: str,
    input_tokens: int,
    output_tokens: int,
    cache_read_tokens: int = 0,
    cache_write_tokens: int = 0,
) -> Decimal | None:
    try:
        import genai_prices
    except ImportError:
        return None
    try:
        # Priced with the call's own token counts, so long-context tiers apply as they would.
        calc = genai_prices.calc_price(
            genai_prices.Usage(
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cache_read_tokens=cache_read_tokens or None,
                cache_write_tokens=cache_write_tokens or None,
            ),
            model,
            provider_id=provider,
        )
    except LookupError:
        return None
    return Decimal(calc.total_price)


def call_cost_usd(
    provider: str,
    model: str,
    input_tokens: int,
    output_tokens: int,
    *,
    cache_read_tokens: int = 0,
    cache_write_tokens: int = 0,
    rates: Mapping[tuple[str, str], RequestRate] | None = None,
) -> Decimal | None:
    """A call's cost at list price; None when no price is known.

    ``rates`` wins (input and output rates only: cached input is priced as uncached, an
    upper bound); otherwise the genai-prices catalog (if installed) with its cache rates.
    No batch or negotiated discount: the pipeline's price is never above this one unless
    a ``[[prices.model]]`` override is dearer than the catalog (pass it as ``rates``).
    """
    rate = rates.get((provider, model)) if rates is not None else None
    if rate is not None:
        return (input_tokens * rate.input_per_mtok + output_tokens * rate.output_per_mtok) / _MTOK
    return _catalog_price(
        provider, model, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens
    )


def worst_case_usd(
    provider: str,
    model: str,
    input_tokens: int,
    max_tokens: int,
    rates: Mapping[tuple[str, str], RequestRate] | None = None,
    *,
    cache_writes: bool = False,
) -> Decimal | None:
    """Input tokens plus ``max_tokens`` of output at list price; None when no price is known.

    ``rates`` wins; otherwise the genai-prices catalog (if installed) prices the call.
    Cache discounts are ignored: the worst case is an uncached prompt. ``cache_writes``:
    the prompt may also be written to the provider's cache, which some providers price
    above plain input; the worst case is then the dearer of the two.
    """
    worst = call_cost_usd(provider, model, input_tokens, max_tokens, rates=rates)
    if worst is None or not cache_writes or not input_tokens:
        return worst
    written = call_cost_usd(
        provider, model, input_tokens, max_tokens, cache_write_tokens=input_tokens, rates=rates
    )
    return worst if written is None else max(worst, written)


def guard(
    view: BreakerStates,
    *,
    max_request_usd: Decimal | str | int | None = None,
    provider: str | None = None,
    model: str | None = None,
    input_tokens: int | None = None,
    max_tokens: int | None = None,
    rates: Mapping[tuple[str, str], RequestRate] | None = None,
    **tags: object,
) -> None:
    """Raise ``BreakerOpen`` if the call must not be made; return None when it may.

    ``tags`` are the event's attribution fields (``team``, ``feature``, ``project``,
    ``user_id``, ``api_key_id``, ``session_id``); others are accepted and ignored.
    """
    if not view.ready and not view._wait_first():
        if view.fail_closed:
            raise BreakerOpen(
                "global", f"breaker view has not caught up with {view.source} (fail_closed)"
            )
        if not view._unready_logged:
            view._unready_logged = True
            log.warning(
                "breaker view not caught up with %s after %.1f s: guard() lets calls through "
                "until it is (fail_closed=False)",
                view.source,
                view.ready_timeout_s,
            )
    states = view.states
    for scope in call_scopes(tags):
        entry = states.get(scope)
        if entry is not None and entry.state == "open":
            raise BreakerOpen(scope, entry.reason)
    if max_request_usd is None:
        return
    ceiling = Decimal(str(max_request_usd))
    if provider is None or model is None or input_tokens is None or max_tokens is None:
        raise TypeError("max_request_usd needs provider, model, input_tokens and max_tokens")
    worst = worst_case_usd(provider, model, input_tokens, max_tokens, rates)
    if worst is None:
        raise RequestCeilingExceeded(
            f"no price known for {provider}/{model}: cannot hold it to max_request_usd ${ceiling}",
            None,
            ceiling,
        )
    if worst > ceiling:
        raise RequestCeilingExceeded(
            f"worst case {exact_usd(worst)} ({input_tokens:,} input + "
            f"{max_tokens:,} max output tokens of {provider}/{model}) exceeds "
            f"max_request_usd ${ceiling}",
            worst,
            ceiling,
        )


async def aguard(view: BreakerStates, **kwargs: Any) -> None:
    """The async twin of ``guard``: the check is local, so it never blocks the loop."""
    guard(view, **kwargs)
