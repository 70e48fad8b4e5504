"""``meter.instrument(client)``: every call of an OpenAI or Anthropic SDK client is recorded.

The client is returned as it was (same object, same type); on it, the resources that make
metered calls (OpenAI ``chat.completions``, ``responses`` (``compact`` too),
``embeddings``, ``completions``;
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
  and tag ``stream=incomplete``; one the cyclic collector ends (OpenAI's streams are in a
  cycle of the SDK's own) is recorded just after, by a thread of its own (``collected``);
- ``with_raw_response``: when the call returns (the SDK has read the body by then), from
  the body, whether or not the caller ever parses it; for ``stream=True``, as a stream if
  parsed, else from the bytes read through ``http_response``;
- ``with_streaming_response``: when the body has been read (``read()``, ``parse()``,
  ``json()``, ``iter_lines()``...), from its bytes; if it is closed before, with what was
  read;
- no usage to be read (a server that sends none, a stream left before any): 0 tokens and
  tag ``usage=missing``, as ``Meter(on_invalid="drop")`` records such a call: it was made,
  and paid (the warning it logs is rate limited: ``rate_limited_log``);
- an OpenAI Responses API call with ``background=True`` (``background_responses``): not
  when it is created (queued, nothing used yet), nor when its create is left unread, but when this process first sees it finished (``completed``,
  ``incomplete``, ``failed``, ``cancelled``) through ``responses.retrieve``,
  ``responses.cancel`` or its stream, with the usage of the finished response, the fields
  of the call that created it (when it was created here), tag ``background=<status>`` and
  ``event_id`` ``openai-response:<id>``: another instrumented process that retrieves the
  same response sends the same id, which the pipeline lands once;
- a failure (the SDK raised): ``status`` ``timeout`` for the SDK's timeout errors and HTTP
  408/504, else ``error``; 0 tokens, the requested model. An answer whose read raises (the
  connection dropped mid-body), parsed or read as bytes, is a failure too, with the usage
  of what was read;
- ``attempt``: the SDK's own retries plus one, where the final HTTP exchange is visible to
  the caller (streams, errors, raw responses); ``latency_ms`` from call to end (of stream);
- fields: the Meter's defaults, then ``instrument``'s, then ``with meter.tags(...)`` around
  the call (taken when the call starts, so a stream read later keeps its call's tags);
  ``tags`` of all three are merged, with the call's own (``api``...).

A call in flight at an ``os.fork()`` (a stream open in the parent) is recorded by the
parent only: the child's copy records nothing, however the child leaves it.

The ``with_options()`` copy of a client is a new client: instrument it too.

Here: the wrapping of a client's resources. A call's life is ``calls.MeteredCall``; what
is read of an HTTP answer, ``answers``; background responses, ``background_responses``;
ends found by the garbage collector, ``collected``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from spendstream.producers.integrations import collected
from spendstream.producers.integrations.background_responses import LOOKUPS
from spendstream.producers.integrations.calls import MeteredCall

if TYPE_CHECKING:
    from spendstream.producers.meter import Meter

__all__ = ["Spec", "instrument"]

ClientT = TypeVar("ClientT")

# Resource attribute path -> {request path: api}, per SDK.
_OPENAI_RESOURCES = {
    ("chat", "completions"): {"/chat/completions": "chat"},
    # compact: a compaction pass over a conversation, billed like a response.
    ("responses",): {"/responses": "responses", "/responses/compact": "responses"},
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
        spec = Spec(meter, family, name, paths, stream_usage and family == "openai", fields)
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


class Spec:
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


def _wrap(request: Callable[..., Any], spec: Spec, method: str) -> Callable[..., Any]:
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


def _begin(spec: Spec, method: str, path: str, kwargs: dict[str, Any]) -> MeteredCall | None:
    route = path.split("?", 1)[0]
    api = spec.paths.get(route) if method == "post" else None
    lookup = api is None and "/responses" in spec.paths and bool(LOOKUPS[method].match(route))
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
    call = MeteredCall(
        spec, api or "responses", str(body.get("model") or "unknown"), fields, injected
    )
    call.lookup = lookup
    call.background = api == "responses" and bool(body.get("background"))
    return call
