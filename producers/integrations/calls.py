"""One metered call of an instrumented client, from its request to the end of its answer:
a response, a stream read to its end or left, a raw or streaming response read or closed,
a failure; recorded once, whichever comes first (see ``clients`` for what is recorded)."""

from __future__ import annotations

import atexit
import contextvars
import functools
import inspect
import logging
import os
import time
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from spendstream.producers.integrations import answers, background_responses, collected
from spendstream.producers.meter import InvalidUsageEvent, status_of
from spendstream.producers.providers import anthropic_usage, openai_usage, openrouter_usage
from spendstream.producers.rate_limited_log import RateLimitedLogs

if TYPE_CHECKING:
    from spendstream.producers.integrations.clients import Spec

__all__ = ["MeteredCall"]

log = logging.getLogger("spendstream.producers")

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
# A server that never sends usage would say so at every call: once a minute, with a count,
# per provider (one provider's lines, at every call, held another's first one back).
_USAGE_MISSING = RateLimitedLogs(log, logging.WARNING)


def _flush_usage_missing() -> None:
    _USAGE_MISSING.flush()  # a burst's count, at exit: it waited for the next occurrence


atexit.register(_flush_usage_missing)  # before logging.shutdown (atexit runs LIFO)

# Which process a call belongs to: bumped in a forked child, so that the calls in flight in
# the parent at the fork (a stream open then, inherited by the child: dropped, closed or read
# there) are recorded by the parent alone, once, and never by the child's copy.
_generation = 0


def _after_fork_in_child() -> None:
    global _generation
    _generation += 1


os.register_at_fork(after_in_child=_after_fork_in_child)


class MeteredCall:
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
        "generation",
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
        self, spec: Spec, api: str, model: str, fields: dict[str, Any], injected: bool
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
        self.generation = _generation  # the process that made the call (see _generation)

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
        if self.generation != _generation:
            return  # a forked child's copy of a call its parent made: the parent records it
        collected.later(functools.partial(self._record_once, response, status, tags))

    def _record_once(self, response: Any, status: str, tags: Mapping[str, str] | None) -> None:
        try:
            if (self.background or self.lookup) and background_responses.settle(
                self, response, status
            ):
                return
            if not self.lookup:
                self.emit(response, status, tags, {})
        except Exception:  # metering must never break (or mask) the caller's own call
            log.exception("%s call not metered", self.spec.provider)

    def emit(
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
                _USAGE_MISSING[self.spec.provider].log(
                    "%s usage missing (%s): recorded with 0 tokens, tagged usage=missing",
                    self.spec.provider,
                    exc,
                )
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
        # default tags would be lost, as ProviderResponses._usage_missing_tags
        # (producers/meter_responses.py) says.
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
        source = answers.plain(source)
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
        self.attempt = answers.attempt(http)
        self.request_id = answers.header(http, "x-request-id", "request-id")
        self.sse = "text/event-stream" in (answers.header(http, "content-type") or "")

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
        watcher = answers.closing_watcher(
            getattr(http, "stream", None), self._cut_short, asynchronous
        )
        if watcher is not None:
            http.stream = watcher
        self.finalizer = weakref.finalize(http, self._cut_short)

    def _cut_short(self) -> None:
        if self.reading or self.done:
            return  # the reader records the end it is reading, with its usage
        if self.body is not None:
            self.record(
                response=answers.decoded(bytes(self.body)),
                tags=_INCOMPLETE if self.sse and not self.ended else None,
            )
        else:
            self.record(tags=_INCOMPLETE)

    # -- raw responses ----------------------------------------------------------------------

    def _observe_raw(self, raw: Any) -> None:
        asynchronous = inspect.iscoroutinefunction(raw.parse)
        parse = answers.weakly_bound(raw, "parse")
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
            self.record(response=answers.decoded(content))

    def _tee(self, http: Any, *, asynchronous: bool) -> None:
        """Keep the body's bytes as the caller reads them (``read()``, ``json()``,
        ``iter_lines()``...: all go through ``iter_bytes``) and record at its end."""
        self.body = bytearray()
        call = self
        if asynchronous:
            aiter_bytes = answers.weakly_bound(http, "aiter_bytes")

            async def watched_aiter_bytes(*args: Any, **kwargs: Any) -> AsyncIterator[bytes]:
                parts = aiter_bytes(*args, **kwargs)
                try:
                    while True:
                        call.reading += 1
                        try:
                            part = await parts.__anext__()
                        except StopAsyncIteration:
                            break
                        except BaseException as exc:
                            call._read_failed(exc)
                            raise
                        finally:
                            call.reading -= 1
                        call._read(part)
                        yield part
                finally:
                    await parts.aclose()
                call._read_to_end()

            http.aiter_bytes = watched_aiter_bytes
        else:
            iter_bytes = answers.weakly_bound(http, "iter_bytes")

            def watched_iter_bytes(*args: Any, **kwargs: Any) -> Iterator[bytes]:
                parts = iter_bytes(*args, **kwargs)
                try:
                    while True:
                        call.reading += 1
                        try:
                            part = next(parts)
                        except StopIteration:
                            break
                        except BaseException as exc:
                            call._read_failed(exc)
                            raise
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

    def _read_failed(self, exc: BaseException) -> None:
        """The body's read raised (the connection dropped, a read timeout): a failed call,
        recorded as a stream's reader records one (``_iterate``): that status, and the usage
        of what was read, if any."""
        if self.body is None:
            return  # parsed into a stream, whose reader records the failure
        self.record(response=answers.decoded(bytes(self.body)), status=status_of(exc))

    def _read_to_end(self) -> None:
        if self.body is None:
            return  # parsed into a stream, which records itself
        self.ended = True
        self.record(response=answers.decoded(bytes(self.body)))

    def _parsed(self, parsed: Any) -> Any:
        if hasattr(parsed, "_iterator") and hasattr(parsed, "response"):
            if not self.done:
                self._observe_stream(parsed)
        else:
            self.record(response=parsed)
        return parsed
