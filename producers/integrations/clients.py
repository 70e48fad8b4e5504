"""``meter.instrument(client)``: every call of an OpenAI or Anthropic SDK client is recorded.

The client is returned as it was (same object, same type); on it, the resources that make
metered calls (OpenAI ``chat.completions``, ``responses``, ``embeddings``, ``completions``;
Anthropic ``messages`` and ``beta.messages``) get their request method wrapped (each
resource's ``_post``, through which ``create``, ``parse`` and the ``stream()`` helpers all
go), so nothing changes for the caller except that a usage event is recorded:

- a response: when it arrives, with its usage (``providers.usage_from``'s readers);
- a stream (``stream=True`` or ``.stream()``, sync or async): when it ends, with the usage
  of its final chunk (OpenAI), ``message_start`` + ``message_delta`` (Anthropic) or
  ``response.completed`` (Responses API). OpenAI chat streams carry usage only when asked:
  ``stream_options={"include_usage": True}`` is added when the caller did not set
  ``stream_options``, and the usage-only final chunk it brings is kept from the caller, who
  did not ask for it. A stream dropped before its end is recorded when it is closed or
  collected, with the usage seen so far and tag ``stream=incomplete``;
- a failure (the SDK raised): ``status`` ``timeout`` for the SDK's timeout errors and HTTP
  408/504, else ``error``; 0 tokens, the requested model;
- ``attempt``: the SDK's own retries plus one, where the final HTTP exchange is visible to
  the caller (streams, errors, raw responses); ``latency_ms`` from call to end (of stream);
- fields: the Meter's defaults, then ``instrument``'s, then ``with meter.tags(...)`` around
  the call (taken when the call starts, so a stream read later keeps its call's tags).

``client.with_raw_response`` calls are recorded when the caller parses the response; the
``with_options()`` copy of a client is a new client: instrument it too.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from spendstream.producers.meter import InvalidUsageEvent, status_of
from spendstream.producers.providers import anthropic_usage, openai_usage, openrouter_usage

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
        resource._post = _wrap(resource._post, spec)
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


def _wrap(post: Callable[..., Any], spec: _Spec) -> Callable[..., Any]:
    if inspect.iscoroutinefunction(post):

        @functools.wraps(post)
        async def apost(path: str, *args: Any, **kwargs: Any) -> Any:
            call = _begin(spec, path, kwargs)
            if call is None:
                return await post(path, *args, **kwargs)
            try:
                result = await post(path, *args, **kwargs)
            except BaseException as exc:
                call.failed(exc)
                raise
            return call.result(result)

        return apost

    @functools.wraps(post)
    def spost(path: str, *args: Any, **kwargs: Any) -> Any:
        call = _begin(spec, path, kwargs)
        if call is None:
            return post(path, *args, **kwargs)
        try:
            result = post(path, *args, **kwargs)
        except BaseException as exc:
            call.failed(exc)
            raise
        return call.result(result)

    return spost


def _begin(spec: _Spec, path: str, kwargs: dict[str, Any]) -> _Call | None:
    api = spec.paths.get(path.split("?", 1)[0])
    if api is None:  # count_tokens, cancel...: not a metered call
        return None
    body = kwargs.get("body")
    body = body if isinstance(body, Mapping) else {}
    stream = bool(kwargs.get("stream") or body.get("stream"))
    injected = False
    if stream and api == "chat" and spec.stream_usage and body.get("stream_options") is None:
        kwargs["body"] = {**body, "stream_options": {"include_usage": True}}
        injected = True
    fields = {**spec.fields, **spec.meter.context_tags()}
    return _Call(spec, api, str(body.get("model") or "unknown"), fields, injected)


class _Call:
    """One metered call, from the request to its response or the end of its stream."""

    __slots__ = ("api", "done", "fields", "hidden", "kept", "model", "spec", "started")

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

    # -- outcomes ---------------------------------------------------------------------------

    def result(self, result: Any) -> Any:
        if hasattr(result, "_iterator") and hasattr(result, "response"):  # Stream, AsyncStream
            self._observe_stream(result)
        elif hasattr(result, "http_response") and callable(getattr(result, "parse", None)):
            self._observe_raw(result)  # with_raw_response / with_streaming_response
        else:
            self.record(response=result)
        return result

    def failed(self, exc: BaseException) -> None:
        self.record(status=status_of(exc), http=getattr(exc, "response", None))

    def record(
        self,
        *,
        response: Any = None,
        status: str = "ok",
        http: Any = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        if self.done:
            return
        self.done = True
        try:
            self._record(response, status, http, tags)
        except Exception:  # metering must never break (or mask) the caller's own call
            log.exception("%s call not metered", self.spec.provider)

    def _record(
        self, response: Any, status: str, http: Any, tags: Mapping[str, str] | None
    ) -> None:
        event: dict[str, Any] = {
            "provider": self.spec.provider,
            "model": self.model,
            "input_tokens": 0,
            "output_tokens": 0,
            "status": status,
            "latency_ms": (time.perf_counter() - self.started) * 1000.0,
        }
        all_tags = {"api": self.api, **(tags or {})}
        source = response if response is not None else (self.kept or None)
        if source is not None:
            try:
                usage = self._usage(source)
            except ValueError:
                all_tags["usage"] = "missing"
            else:
                event.update(usage)
                event["provider"] = self.spec.provider
        elif status == "ok":
            all_tags["usage"] = "missing"  # a stream that ended before any event
        attempt = _attempt(http)
        if attempt is not None:
            event["attempt"] = attempt
        # A parsed response carries the SDK's `_request_id`; a stream has only its HTTP
        # response, whose header the SDK reads it from (OpenAI's and Anthropic's names).
        request_id = getattr(response, "_request_id", None) or _header(
            http, "x-request-id", "request-id"
        )
        if isinstance(request_id, str) and request_id:
            all_tags["provider_request_id"] = request_id[:256]
        user_tags = self.fields.get("tags")
        event.update({k: v for k, v in self.fields.items() if k != "tags"})
        event["tags"] = {**all_tags, **(user_tags or {})}
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

    # -- streams ----------------------------------------------------------------------------

    def _keep(self, chunk: Any) -> bool:
        """Keep the chunks that carry usage (and the first: it names the model);
        False for the usage-only chunk the caller did not ask for."""
        usage = getattr(chunk, "usage", None)
        if not self.kept or usage is not None or getattr(chunk, "type", None) in _USAGE_EVENTS:
            self.kept.append(chunk)
        return not (self.hidden and usage is not None and getattr(chunk, "choices", None) == [])

    def _observe_stream(self, stream: Any) -> None:
        inner = stream._iterator
        http = getattr(stream, "response", None)
        incomplete = {"stream": "incomplete"}
        close = getattr(stream, "close", None)
        if inspect.isasyncgen(inner) or hasattr(inner, "__anext__"):
            ours_async = self._aiterate(inner, http)
            stream._iterator = ours_async
            if inspect.iscoroutinefunction(close):
                # A stream closed before its end (`async with ... : break`, `await
                # s.close()`) is recorded then, not when it is collected, maybe never.
                async def aclose() -> None:
                    try:
                        await close()
                    finally:
                        if not getattr(ours_async, "ag_running", False):
                            await ours_async.aclose()
                        self.record(http=http, tags=incomplete)

                stream.close = aclose
            return
        ours = self._iterate(inner, http)
        stream._iterator = ours
        if callable(close):

            def sclose() -> None:
                try:
                    close()
                finally:
                    if inspect.getgeneratorstate(ours) != inspect.GEN_RUNNING:
                        ours.close()  # its own finally records what it read
                    self.record(http=http, tags=incomplete)  # never started: still a call

            stream.close = sclose

    def _iterate(self, inner: Iterator[Any], http: Any) -> Generator[Any, None, None]:
        outcome: dict[str, Any] = {"status": "ok", "tags": {"stream": "incomplete"}}
        try:
            for chunk in inner:
                if self._keep(chunk):
                    yield chunk
            outcome["tags"] = {}
        except GeneratorExit:
            raise
        except BaseException as exc:
            outcome = {"status": status_of(exc), "tags": {}}
            raise
        finally:
            self.record(http=http, **outcome)

    async def _aiterate(self, inner: AsyncIterator[Any], http: Any) -> AsyncGenerator[Any, None]:
        outcome: dict[str, Any] = {"status": "ok", "tags": {"stream": "incomplete"}}
        try:
            async for chunk in inner:
                if self._keep(chunk):
                    yield chunk
            outcome["tags"] = {}
        except GeneratorExit:
            raise
        except BaseException as exc:
            outcome = {"status": status_of(exc), "tags": {}}
            raise
        finally:
            self.record(http=http, **outcome)

    def _observe_raw(self, raw: Any) -> None:
        parse = raw.parse
        call = self

        if inspect.iscoroutinefunction(parse):

            @functools.wraps(parse)
            async def aparse(*args: Any, **kwargs: Any) -> Any:
                return call._parsed(await parse(*args, **kwargs), raw)

            raw.parse = aparse
        else:

            @functools.wraps(parse)
            def sparse(*args: Any, **kwargs: Any) -> Any:
                return call._parsed(parse(*args, **kwargs), raw)

            raw.parse = sparse

    def _parsed(self, parsed: Any, raw: Any) -> Any:
        if hasattr(parsed, "_iterator") and hasattr(parsed, "response"):
            if not self.done:
                self._observe_stream(parsed)
        else:
            self.record(response=parsed, http=raw.http_response)
        return parsed


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
