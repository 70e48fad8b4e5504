"""``meter.instrument(client)``: every call of an OpenAI or Anthropic SDK client is recorded.

The client is returned as it was (same object, same type); on it, the resources that make
metered calls (OpenAI ``chat.completions``, ``responses``, ``embeddings``, ``completions``;
Anthropic ``messages`` and ``beta.messages``) get their request method wrapped (each
resource's ``_post``, through which ``create``, ``parse``, the ``stream()`` helpers and the
``with_raw_response`` / ``with_streaming_response`` forms all go; and OpenAI ``responses``'
``_get``, for ``retrieve``), so nothing changes for the caller except that each call is
recorded once, however its answer is consumed:

- a response: when it arrives, with its usage (``providers.usage_from``'s readers);
- a stream (``stream=True`` or ``.stream()``, sync or async): when it ends, with the usage
  of its final chunk (OpenAI), ``message_start`` + ``message_delta`` (Anthropic) or
  ``response.completed`` (Responses API). OpenAI chat streams carry usage only when asked:
  ``stream_options={"include_usage": True}`` is added when the caller did not set
  ``stream_options``, and the usage-only final chunk it brings is kept from the caller, who
  did not ask for it. A stream left before its end (closed, its HTTP response closed by a
  helper, or dropped unread and collected) is recorded then, with the usage seen so far
  and tag ``stream=incomplete``;
- ``with_raw_response``: when the call returns (the SDK has read the body by then), from
  the body, whether or not the caller ever parses it; for ``stream=True``, as a stream if
  parsed, else from the bytes read through ``http_response``;
- ``with_streaming_response``: when the body has been read (``read()``, ``parse()``,
  ``json()``, ``iter_lines()``...), from its bytes; if it is closed before, with what was
  read;
- no usage to be read (a server that sends none, a stream left before any): 0 tokens and
  tag ``usage=missing``, as ``Meter(on_invalid="drop")`` records such a call: it was made,
  and paid;
- an OpenAI Responses API call with ``background=True``: not when it is created (queued,
  nothing used yet) but when this process first sees it finished (``completed``,
  ``incomplete``, ``failed``, ``cancelled``) through ``responses.retrieve``,
  ``responses.cancel`` or its stream, with the usage of the finished response, the fields
  of the call that created it (when it was created here), tag ``background=<status>`` and
  ``event_id`` ``openai-response:<id>``: another instrumented process that retrieves the
  same response sends the same id, which the pipeline lands once;
- a failure (the SDK raised): ``status`` ``timeout`` for the SDK's timeout errors and HTTP
  408/504, else ``error``; 0 tokens, the requested model;
- ``attempt``: the SDK's own retries plus one, where the final HTTP exchange is visible to
  the caller (streams, errors, raw responses); ``latency_ms`` from call to end (of stream);
- fields: the Meter's defaults, then ``instrument``'s, then ``with meter.tags(...)`` around
  the call (taken when the call starts, so a stream read later keeps its call's tags);
  ``tags`` of all three are merged, with the call's own (``api``...).

The ``with_options()`` copy of a client is a new client: instrument it too.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import json
import logging
import re
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterator, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import urlsplit

from spendstream.producers.integrations import collected
from spendstream.producers.meter import InvalidUsageEvent, status_of
from spendstream.producers.providers import anthropic_usage, openai_usage, openrouter_usage
from spendstream.producers.shapes import as_dict

if TYPE_CHECKING:
    from spendstream.producers.meter import Meter

__all__ = ["instrument"]

log = logging.getLogger("spendstream.producers")

ClientT = TypeVar("ClientT")

# Resource attribute path -> {request path: api}, per SDK.
_OPENAI_RESOURCES = {
    ("chat", "completions"): {"/chat/completions": "chat"},
    ("responses",): {"/responses": "responses"},
    ("embeddings",): {"/embeddings": "embeddings"},
    ("completions",): {"/completions": "chat"},
}
_ANTHROPIC_RESOURCES = {
    ("messages",): {"/v1/messages": "messages"},
    ("beta", "messages"): {"/v1/messages": "messages"},
}
# OpenAI-compatible APIs the OpenAI SDK is pointed at, by host.
_OPENAI_HOSTS = {
    "openrouter.ai": "openrouter",
    "api.deepseek.com": "deepseek",
    "api.x.ai": "xai",
    "api.groq.com": "groq",
    "api.together.xyz": "together",
    "api.mistral.ai": "mistral",
    "api.fireworks.ai": "fireworks",
    "generativelanguage.googleapis.com": "google",
}
_USAGE_EVENTS = frozenset(
    {
        "message_start",
        "message_delta",
        "response.completed",
        "response.incomplete",
        "response.failed",
    }
)
_INCOMPLETE = {"stream": "incomplete"}
# retrieve (GET) and cancel (POST) of one stored response: not calls of their own, but where
# a background response is seen finished.
_RESPONSE_LOOKUPS = {
    "get": re.compile(r"^/responses/[^/]+$"),
    "post": re.compile(r"^/responses/[^/]+/cancel$"),
}
# A background response's final states, and the event status each is recorded with: all
# are billed for what was used (a cancelled or incomplete one for its tokens so far).
_FINISHED = {"completed": "ok", "incomplete": "ok", "cancelled": "ok", "failed": "error"}


def instrument(
    meter: Meter,
    client: ClientT,
    *,
    provider: str | None = None,
    stream_usage: bool = True,
    **fields: Any,
) -> ClientT:
    """Record every metered call of ``client`` (OpenAI or Anthropic, sync or async).

    ``provider`` overrides the provider name derived from the client (``openai``, ``azure``,
    ``anthropic``, ``bedrock``, ``google``, or an OpenAI-compatible API's host);
    ``stream_usage=False`` leaves OpenAI chat streams' ``stream_options`` alone (for
    servers that refuse it: those streams are then recorded without tokens).
    """
    from spendstream.producers.providers import ProviderHelperUnavailable

    try:
        import genai_prices  # noqa: F401 - the readers need it: fail now, not at each call
    except ImportError as exc:
        raise ProviderHelperUnavailable(
            "meter.instrument() reads usage with genai-prices: pip install 'spendstream[providers]'"
        ) from exc
    family = type(client).__module__.split(".", 1)[0]
    if family == "openai":
        resources, name = _OPENAI_RESOURCES, provider or _openai_provider(client)
    elif family == "anthropic":
        resources, name = _ANTHROPIC_RESOURCES, provider or _anthropic_provider(client)
    else:
        raise TypeError(
            f"meter.instrument() knows OpenAI and Anthropic SDK clients, not {type(client).__name__}"
        )
    collected.start()
    found = 0
    for attrs, paths in resources.items():
        resource: Any = client
        for attr in attrs:
            resource = getattr(resource, attr, None)
            if resource is None:
                break
        if resource is None:
            continue
        found += 1
        if getattr(resource, "_spendstream_meter", None) is meter:
            continue  # instrumented for this Meter already: record once
        spec = _Spec(meter, family, name, paths, stream_usage and family == "openai", fields)
        resource._post = _wrap(resource._post, spec, "post")
        if "/responses" in paths:
            resource._get = _wrap(resource._get, spec, "get")
        resource._spendstream_meter = meter
    if not found:
        raise TypeError(
            f"{type(client).__name__} has none of the resources meter.instrument() wraps"
        )
    return client


def _openai_provider(client: Any) -> str:
    if "azure" in type(client).__name__.lower():
        return "azure"
    host = urlsplit(str(getattr(client, "base_url", ""))).hostname or ""
    return _OPENAI_HOSTS.get(host, "openai")


def _anthropic_provider(client: Any) -> str:
    kind = type(client).__name__.lower()
    if "bedrock" in kind:
        return "bedrock"
    if "vertex" in kind:
        return "google"
    return "anthropic"


class _Spec:
    """What one wrapped resource records: its Meter, provider, paths and fixed fields."""

    __slots__ = ("family", "fields", "meter", "paths", "provider", "stream_usage")

    def __init__(
        self,
        meter: Meter,
        family: str,
        provider: str,
        paths: Mapping[str, str],
        stream_usage: bool,
        fields: Mapping[str, Any],
    ) -> None:
        self.meter = meter
        self.family = family
        self.provider = provider
        self.paths = paths
        self.stream_usage = stream_usage
        self.fields = dict(fields)


def _wrap(request: Callable[..., Any], spec: _Spec, method: str) -> Callable[..., Any]:
    if inspect.iscoroutinefunction(request):

        @functools.wraps(request)
        async def arequest(path: str, *args: Any, **kwargs: Any) -> Any:
            call = _begin(spec, method, path, kwargs)
            if call is None:
                return await request(path, *args, **kwargs)
            try:
                result = await request(path, *args, **kwargs)
            except BaseException as exc:
                call.failed(exc)
                raise
            return call.result(result)

        return arequest

    @functools.wraps(request)
    def srequest(path: str, *args: Any, **kwargs: Any) -> Any:
        call = _begin(spec, method, path, kwargs)
        if call is None:
            return request(path, *args, **kwargs)
        try:
            result = request(path, *args, **kwargs)
        except BaseException as exc:
            call.failed(exc)
            raise
        return call.result(result)

    return srequest


def _begin(spec: _Spec, method: str, path: str, kwargs: dict[str, Any]) -> _Call | None:
    route = path.split("?", 1)[0]
    api = spec.paths.get(route) if method == "post" else None
    lookup = (
        api is None and "/responses" in spec.paths and bool(_RESPONSE_LOOKUPS[method].match(route))
    )
    if api is None and not lookup:  # count_tokens, input_items...: not a metered call
        return None
    body = kwargs.get("body")
    body = body if isinstance(body, Mapping) else {}
    stream = bool(kwargs.get("stream") or body.get("stream"))
    injected = False
    if stream and api == "chat" and spec.stream_usage and body.get("stream_options") is None:
        kwargs["body"] = {**body, "stream_options": {"include_usage": True}}
        injected = True
    context = spec.meter.context_tags()
    fields = {**spec.fields, **context}
    # A tags block's `tags` adds to instrument()'s instead of replacing them.
    tags = {**(spec.fields.get("tags") or {}), **(context.get("tags") or {})}
    fields.pop("tags", None)
    if tags:
        fields["tags"] = tags
    call = _Call(spec, api or "responses", str(body.get("model") or "unknown"), fields, injected)
    call.lookup = lookup
    call.background = api == "responses" and bool(body.get("background"))
    return call


class _Background:
    """One Meter's background responses: those created here and not seen finished yet (so
    their event gets the fields of the call that created them), and the ids recorded."""

    _MAX = 10_000  # past it, the oldest pending one is recorded with its retriever's fields

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pending: OrderedDict[str, _Call] = OrderedDict()
        self.recorded: OrderedDict[str, None] = OrderedDict()

    def pend(self, response_id: str, call: _Call) -> None:
        with self.lock:
            if response_id in self.recorded:
                return
            self.pending[response_id] = call
            if len(self.pending) > self._MAX:
                self.pending.popitem(last=False)

    def claim(self, response_id: str) -> tuple[bool, _Call | None]:
        """(first to see it finished, the call that created it if it was created here)."""
        with self.lock:
            if response_id in self.recorded:
                return False, None
            self.recorded[response_id] = None
            if len(self.recorded) > 10 * self._MAX:
                self.recorded.popitem(last=False)
            return True, self.pending.pop(response_id, None)


_BACKGROUND: weakref.WeakKeyDictionary[Meter, _Background] = weakref.WeakKeyDictionary()
_BACKGROUND_LOCK = threading.Lock()


def _background_of(meter: Meter) -> _Background:
    with _BACKGROUND_LOCK:
        found = _BACKGROUND.get(meter)
        if found is None:
            found = _BACKGROUND[meter] = _Background()
        return found


class _Call:
    """One metered call, from the request to its response, the end of its stream or body,
    or the close or collection of its HTTP response, whichever comes first."""

    __slots__ = (
        "api",
        "attempt",
        "background",
        "body",
        "done",
        "ended",
        "fields",
        "finalizer",
        "hidden",
        "kept",
        "lookup",
        "model",
        "reading",
        "request_id",
        "spec",
        "sse",
        "started",
        "watched",
    )

    def __init__(
        self, spec: _Spec, api: str, model: str, fields: dict[str, Any], injected: bool
    ) -> None:
        self.spec = spec
        self.api = api
        self.model = model
        self.fields = fields
        self.hidden = injected  # the usage-only chunk we asked for is not the caller's
        self.kept: list[Any] = []
        self.done = False
        self.started = time.perf_counter()
        self.lookup = False  # a retrieve or cancel: only a finished background response counts
        self.background = False
        self.attempt: int | None = None
        self.request_id: str | None = None
        self.watched = False
        # Above 0 while the SDK pulls the next piece of the answer: the HTTP response it
        # closes then is closed because the answer ended, which the reader records, with
        # its usage. A count: a parsed stream pulls through the body's reader.
        self.reading = 0
        self.body: bytearray | None = None  # the bytes read so far, when the caller reads them
        self.ended = False  # the body was read to its end
        self.sse = False
        self.finalizer: weakref.finalize[Any, Any] | None = None

    # -- outcomes ---------------------------------------------------------------------------

    def result(self, result: Any) -> Any:
        try:
            if hasattr(result, "_iterator") and hasattr(result, "response"):  # Stream
                self._observe_stream(result)
            elif hasattr(result, "http_response") and callable(getattr(result, "parse", None)):
                self._observe_raw(result)  # with_raw_response / with_streaming_response
            else:
                self.record(response=result)
        except Exception:  # the call was made: recorded as it can be, never raised to its caller
            log.exception("%s answer not observed: recorded without its usage", self.spec.provider)
            self.record()
        return result

    def failed(self, exc: BaseException) -> None:
        if self.lookup:
            return  # a retrieve that failed used nothing
        self._see_http(getattr(exc, "response", None))
        self.record(status=status_of(exc))

    def record(
        self,
        *,
        response: Any = None,
        status: str = "ok",
        tags: Mapping[str, str] | None = None,
    ) -> None:
        if self.done:
            return
        self.done = True
        if self.finalizer is not None:
            self.finalizer.detach()  # recorded: the call need not outlive its answer
            self.finalizer = None
        collected.later(functools.partial(self._record_once, response, status, tags))

    def _record_once(self, response: Any, status: str, tags: Mapping[str, str] | None) -> None:
        try:
            if (self.background or self.lookup) and self._settle_background(response, status):
                return
            if not self.lookup:
                self._record(response, status, tags, {})
        except Exception:  # metering must never break (or mask) the caller's own call
            log.exception("%s call not metered", self.spec.provider)

    def _record(
        self,
        response: Any,
        status: str,
        tags: Mapping[str, str] | None,
        extra: Mapping[str, Any],
    ) -> None:
        event: dict[str, Any] = {
            "provider": self.spec.provider,
            "model": self.model,
            "input_tokens": 0,
            "output_tokens": 0,
            "status": status,
            "latency_ms": (time.perf_counter() - self.started) * 1000.0,
        }
        own = {"api": self.api, **(tags or {})}
        missing = False
        source = response if response is not None else (self.kept or None)
        if source is not None:
            try:
                usage = self._usage(source)
            except ValueError as exc:
                missing = True
                log.warning("usage missing (%s): recorded with 0 tokens, tagged usage=missing", exc)
            else:
                event.update(usage)
                event["provider"] = self.spec.provider
        elif status == "ok":
            missing = True  # an answer of which nothing was read
        if self.attempt is not None:
            event["attempt"] = self.attempt
        # A parsed response carries the SDK's `_request_id`; else the HTTP response's header
        # the SDK reads it from (OpenAI's and Anthropic's names).
        request_id = getattr(response, "_request_id", None) or self.request_id
        if isinstance(request_id, str) and request_id:
            own["provider_request_id"] = request_id[:256]
        event.update({k: v for k, v in self.fields.items() if k != "tags"})
        event.update(extra)
        # record() takes a `tags` field as the whole of the event's tags: the Meter's
        # default tags would be lost, as _usage_missing_tags in meter.py says.
        merged = {
            **(self.spec.meter.defaults.get("tags") or {}),
            **own,
            **(self.fields.get("tags") or {}),
        }
        if missing:
            merged["usage"] = "missing"
        event["tags"] = merged
        try:
            # In an empty context: the meter.tags() of the call were taken when it started;
            # a stream read inside another block must not pick up that block's fields.
            contextvars.Context().run(self.spec.meter.record, **event)
        except InvalidUsageEvent as exc:
            log.error("%s call not metered: %s", self.spec.provider, exc)

    def _usage(self, source: Any) -> dict[str, Any]:
        if self.spec.family == "anthropic":
            found = anthropic_usage(source)
        elif self.spec.provider == "openrouter":
            found = openrouter_usage(source)
        else:
            found = openai_usage(source, api=self.api if self.api != "chat" else None)
        found.pop("provider", None)
        return found

    def _see_http(self, http: Any) -> None:
        """Keep what the event needs from the HTTP response, so that the call holds no
        reference to it (its collection is one of the ends we watch for)."""
        if http is None:
            return
        self.attempt = _attempt(http)
        self.request_id = _header(http, "x-request-id", "request-id")
        self.sse = "text/event-stream" in (_header(http, "content-type") or "")

    # -- background responses (OpenAI Responses API) --------------------------------------

    def _settle_background(self, response: Any, status: str) -> bool:
        """True if this is a background response's business, now done: recorded finished
        (once per response), or left pending until it is seen finished."""
        state = _response_state(response if response is not None else self.kept)
        response_id = state.get("id") if state else None
        if state is None and status == "ok" and not self.lookup:
            # A background create left before its answer was read: it runs on at OpenAI,
            # and is recorded, like any other, when seen finished (a 0-token event now
            # would be a second one for the same call).
            return True
        if state is None or not isinstance(response_id, str):
            return False  # nothing was created (a refused create) or nothing says what
        finished = state.get("status") in _FINISHED
        if self.lookup:
            if finished and state.get("background"):
                self._record_finished(response_id, state)
            return True
        if finished:
            self._record_finished(response_id, state)
        elif status == "ok" or self.kept:
            # Queued, or its stream left before its end: it runs on at the provider.
            _background_of(self.spec.meter).pend(response_id, self)
        else:
            return False
        return True

    def _record_finished(self, response_id: str, state: dict[str, Any]) -> None:
        first, created_here = _background_of(self.spec.meter).claim(response_id)
        if not first:
            return
        call = created_here or self
        status = str(state["status"])
        # What another process retrieving it would send too, so the pipeline lands it once:
        # an id from the response's, and the provider's times rather than ours.
        extra: dict[str, Any] = {"event_id": f"openai-response:{response_id}"[:128]}
        created, completed = state.get("created_at"), state.get("completed_at")
        if isinstance(completed, int | float) and not isinstance(completed, bool):
            extra["ts"] = datetime.fromtimestamp(completed, UTC)
            if isinstance(created, int | float) and completed - created >= 0:
                extra["latency_ms"] = (completed - created) * 1000.0
        call.attempt = None
        call.request_id = None
        call._record(state, _FINISHED[status], {"background": status}, extra)

    # -- streams ----------------------------------------------------------------------------

    def _keep(self, chunk: Any) -> bool:
        """Keep the chunks that carry usage (and the first: it names the model);
        False for the usage-only chunk the caller did not ask for."""
        usage = getattr(chunk, "usage", None)
        if not self.kept or usage is not None or getattr(chunk, "type", None) in _USAGE_EVENTS:
            self.kept.append(chunk)
        return not (self.hidden and usage is not None and getattr(chunk, "choices", None) == [])

    def _observe_stream(self, stream: Any) -> None:
        self.body = None  # a raw response parsed into a stream: its chunks say it all
        inner = stream._iterator
        http = getattr(stream, "response", None)
        self._see_http(http)
        if inspect.isasyncgen(inner) or hasattr(inner, "__anext__"):
            stream._iterator = self._aiterate(inner)
            self._watch(http, asynchronous=True)
        else:
            stream._iterator = self._iterate(inner)
            self._watch(http, asynchronous=False)

    def _iterate(self, inner: Iterator[Any]) -> Generator[Any, None, None]:
        outcome: dict[str, Any] = {"status": "ok", "tags": _INCOMPLETE}
        try:
            while True:
                self.reading += 1
                try:
                    chunk = next(inner)
                except StopIteration:
                    break
                finally:
                    self.reading -= 1
                if self._keep(chunk):
                    yield chunk
            outcome["tags"] = {}
        except GeneratorExit:
            raise
        except BaseException as exc:
            outcome = {"status": status_of(exc), "tags": {}}
            raise
        finally:
            self.record(**outcome)

    async def _aiterate(self, inner: AsyncIterator[Any]) -> AsyncGenerator[Any, None]:
        outcome: dict[str, Any] = {"status": "ok", "tags": _INCOMPLETE}
        try:
            while True:
                self.reading += 1
                try:
                    chunk = await inner.__anext__()
                except StopAsyncIteration:
                    break
                finally:
                    self.reading -= 1
                if self._keep(chunk):
                    yield chunk
            outcome["tags"] = {}
        except GeneratorExit:
            raise
        except BaseException as exc:
            outcome = {"status": status_of(exc), "tags": {}}
            raise
        finally:
            self.record(**outcome)

    # -- the HTTP response: its close and its collection end the call ----------------------

    def _watch(self, http: Any, *, asynchronous: bool) -> None:
        """Record the call when its HTTP response is closed (``stream.close()``, a helper's
        ``close()``, a ``with`` block's end) or collected unclosed (a stream dropped
        unread): either way, no more of the answer can come."""
        if http is None or self.watched:
            return
        self.watched = True
        # The close is seen through the response's byte stream, which holds no reference
        # back to it: a wrapper of its close() would (a cycle, freed only by the cyclic
        # collector, in which the weak reference a wrapper could hold instead is cleared
        # before the SDK's own finalizer closes the response, to release its connection).
        watcher = _closing_watcher(getattr(http, "stream", None), self._cut_short, asynchronous)
        if watcher is not None:
            http.stream = watcher
        self.finalizer = weakref.finalize(http, self._cut_short)

    def _cut_short(self) -> None:
        if self.reading or self.done:
            return  # the reader records the end it is reading, with its usage
        if self.body is not None:
            self.record(
                response=_decoded(bytes(self.body)),
                tags=_INCOMPLETE if self.sse and not self.ended else None,
            )
        else:
            self.record(tags=_INCOMPLETE)

    # -- raw responses ----------------------------------------------------------------------

    def _observe_raw(self, raw: Any) -> None:
        asynchronous = inspect.iscoroutinefunction(raw.parse)
        parse = _weakly_bound(raw, "parse")
        call = self

        if asynchronous:

            @functools.wraps(parse)
            async def aparse(*args: Any, **kwargs: Any) -> Any:
                return call._parsed(await parse(*args, **kwargs))

            raw.parse = aparse
        else:

            @functools.wraps(parse)
            def sparse(*args: Any, **kwargs: Any) -> Any:
                return call._parsed(parse(*args, **kwargs))

            raw.parse = sparse

        http = raw.http_response
        self._see_http(http)
        try:
            content = http.content  # with_raw_response: the SDK read the body already
        except Exception:  # not read (with_streaming_response, a stream): read it as it goes
            self._tee(http, asynchronous=asynchronous)
        else:
            self.ended = True
            self.record(response=_decoded(content))

    def _tee(self, http: Any, *, asynchronous: bool) -> None:
        """Keep the body's bytes as the caller reads them (``read()``, ``json()``,
        ``iter_lines()``...: all go through ``iter_bytes``) and record at its end."""
        self.body = bytearray()
        call = self
        if asynchronous:
            aiter_bytes = _weakly_bound(http, "aiter_bytes")

            async def watched_aiter_bytes(*args: Any, **kwargs: Any) -> AsyncIterator[bytes]:
                parts = aiter_bytes(*args, **kwargs)
                try:
                    while True:
                        call.reading += 1
                        try:
                            part = await parts.__anext__()
                        except StopAsyncIteration:
                            break
                        finally:
                            call.reading -= 1
                        call._read(part)
                        yield part
                finally:
                    await parts.aclose()
                call._read_to_end()

            http.aiter_bytes = watched_aiter_bytes
        else:
            iter_bytes = _weakly_bound(http, "iter_bytes")

            def watched_iter_bytes(*args: Any, **kwargs: Any) -> Iterator[bytes]:
                parts = iter_bytes(*args, **kwargs)
                try:
                    while True:
                        call.reading += 1
                        try:
                            part = next(parts)
                        except StopIteration:
                            break
                        finally:
                            call.reading -= 1
                        call._read(part)
                        yield part
                finally:
                    parts.close()
                call._read_to_end()

            http.iter_bytes = watched_iter_bytes
        self._watch(http, asynchronous=asynchronous)

    def _read(self, part: bytes) -> None:
        if self.body is not None:
            self.body += part

    def _read_to_end(self) -> None:
        if self.body is None:
            return  # parsed into a stream, which records itself
        self.ended = True
        self.record(response=_decoded(bytes(self.body)))

    def _parsed(self, parsed: Any) -> Any:
        if hasattr(parsed, "_iterator") and hasattr(parsed, "response"):
            if not self.done:
                self._observe_stream(parsed)
        else:
            self.record(response=parsed)
        return parsed


def _decoded(body: bytes) -> Any:
    """A body as the usage readers take it: a JSON object, or the events of an SSE stream
    (those read whole); None if nothing in it can be read."""
    text = body.decode("utf-8", "replace")
    # RecursionError: nested deeper than json decodes; read by the caller's thread, the
    # body must not raise there what the SDK alone would not.
    if text.lstrip().startswith("{"):
        try:
            return json.loads(text)
        except (ValueError, RecursionError):
            return None  # cut short
    events = []
    for line in text.splitlines():
        if line.startswith("data:"):
            try:
                events.append(json.loads(line[5:]))
            except (ValueError, RecursionError):
                continue  # [DONE], or the last line cut short
    return [e for e in events if isinstance(e, dict)] or None


def _weakly_bound(obj: Any, name: str) -> Callable[..., Any]:
    """``obj.<name>``, for a wrapper put in its place on ``obj`` to call, holding ``obj``
    weakly: a bound method would make a cycle (``obj`` -> wrapper -> method -> ``obj``) that
    kept an answer dropped unread, and its body, until the cyclic collector ran, and
    recorded it only then, from inside the collection; the SDK alone frees it at once."""
    own = getattr(obj, "__dict__", {}).get(name)
    if own is not None:
        return cast("Callable[..., Any]", own)  # already replaced (another Meter): as it is
    method = getattr(type(obj), name)
    ref = weakref.ref(obj)

    def bound(*args: Any, **kwargs: Any) -> Any:
        target = ref()
        if target is None:  # unreachable: the wrapper lives on the object
            raise ReferenceError(f"{name}() of a collected object")
        return method(target, *args, **kwargs)

    return bound


def _closing_watcher(stream: Any, closed: Callable[[], None], asynchronous: bool) -> Any:
    """``stream`` (an HTTP response's body) in a wrapper that calls ``closed`` after it is
    closed; None if it is no httpx byte stream (httpx or the SDKs' httpx2: by base name)."""
    wanted = "AsyncByteStream" if asynchronous else "SyncByteStream"
    for base in type(stream).__mro__:
        if base.__name__ == wanted:
            return _watcher_class(base)(stream, closed)
    return None


@functools.cache
def _watcher_class(base: type) -> type:
    class Watched(base):  # type: ignore[misc, valid-type]
        """The body of a watched HTTP response: as it was, but for what its close does."""

        def __init__(self, inner: Any, closed: Callable[[], None]) -> None:
            self._inner = inner
            self._closed = closed

        def __getattr__(self, name: str) -> Any:
            return getattr(self._inner, name)  # elapsed, which the response reads back

        def __iter__(self) -> Iterator[bytes]:
            yield from self._inner

        async def __aiter__(self) -> AsyncIterator[bytes]:
            async for part in self._inner:
                yield part

        def close(self) -> None:
            try:
                self._inner.close()
            finally:
                self._closed()

        async def aclose(self) -> None:
            try:
                await self._inner.aclose()
            finally:
                self._closed()

    return Watched


def _response_state(source: Any) -> dict[str, Any] | None:
    """The Responses API object in an answer (a response, or a stream's events): the
    finished one if any, else the latest seen."""
    items = source if isinstance(source, list) else [source]
    latest: dict[str, Any] | None = None
    for item in items:
        if item is None:
            continue
        try:
            data = as_dict(item)
        except TypeError:
            continue
        if data.get("object") != "response":
            inner = data.get("response")
            data = as_dict(inner) if isinstance(inner, Mapping) else {}
        if data.get("object") == "response":
            latest = data
            if data.get("status") in _FINISHED:
                return data
    return latest


def _header(http: Any, *names: str) -> str | None:
    headers = getattr(http, "headers", None)
    if headers is None:
        return None
    for name in names:
        value = headers.get(name)
        if isinstance(value, str) and value:
            return value
    return None


def _attempt(http: Any) -> int | None:
    """The SDK's retry count of the final HTTP exchange, plus one (Stainless SDKs send it)."""
    request = getattr(http, "request", None)
    headers = getattr(request, "headers", None)
    if headers is None:
        return None
    try:
        return int(headers.get("x-stainless-retry-count", "0")) + 1
    except (TypeError, ValueError):
        return None
