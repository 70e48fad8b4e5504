"""What ``instrument`` reads of an HTTP answer without changing it for the caller: its body
as the usage readers take it, the end of its byte stream, its headers."""

from __future__ import annotations

import functools
import json
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any, cast

__all__ = ["attempt", "closing_watcher", "decoded", "header", "plain", "weakly_bound"]


def decoded(body: bytes) -> Any:
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


def plain(source: Any) -> Any:
    """An SDK answer (or a stream's chunks) as plain data for the usage readers, dumped
    without pydantic's serializer warnings: an answer the SDK's own models do not fit (the
    user messages in ``responses.compact``'s output are parsed as output messages; an
    output item of a type newer than the installed SDK) would warn, in the caller's
    process, at every call (under ``-W error``: raise, and the call go unmetered); the
    usage is read all the same. Every dump of an answer for the readers goes through here
    (``calls``, ``background_responses``). Per call (pydantic's ``warnings=False``), not
    a process-wide warnings filter, which no thread could change safely."""
    if isinstance(source, list):
        return [plain(item) for item in source]
    dump = getattr(source, "model_dump", None)
    if isinstance(source, Mapping) or not callable(dump):
        return source
    try:
        return dump(mode="json", by_alias=True, exclude_none=True, warnings=False)
    except TypeError:  # not pydantic's model_dump: the readers' own as_dict takes it
        return source


def weakly_bound(obj: Any, name: str) -> Callable[..., Any]:
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


def closing_watcher(stream: Any, closed: Callable[[], None], asynchronous: bool) -> Any:
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


def header(http: Any, *names: str) -> str | None:
    headers = getattr(http, "headers", None)
    if headers is None:
        return None
    for name in names:
        value = headers.get(name)
        if isinstance(value, str) and value:
            return value
    return None


def attempt(http: Any) -> int | None:
    """The SDK's retry count of the final HTTP exchange, plus one (Stainless SDKs send it)."""
    request = getattr(http, "request", None)
    headers = getattr(request, "headers", None)
    if headers is None:
        return None
    try:
        return int(headers.get("x-stainless-retry-count", "0")) + 1
    except (TypeError, ValueError):
        return None
