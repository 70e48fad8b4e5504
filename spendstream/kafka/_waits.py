"""Waiting on the client: metadata within a deadline (saying *why* it failed) and admin futures."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable, Container
from typing import Any

import confluent_kafka

from spendstream.errors import KafkaUnavailable
from spendstream.kafka._errors import ErrorLatch, translate

__all__ = ["fetch_metadata", "result"]

_SLICE_S = 0.4  # how often a wait looks at error_cb's news (refused credentials)


def fetch_metadata(
    list_topics: Callable[..., Any],
    serve_callbacks: Callable[[], object],
    latch: ErrorLatch,
    topic: str | None,
    timeout_s: float,
    where: str,
) -> Any:
    """``list_topics`` in short slices until ``timeout_s``; between slices, serve the client's
    callbacks so that refused credentials end the wait at once as a ``KafkaAuthError``."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        try:
            return list_topics(topic, timeout=max(0.01, min(_SLICE_S, left)))
        except confluent_kafka.KafkaException as exc:
            serve_callbacks()
            blocking = latch.blocking()
            if blocking is not None:
                latch.clear()  # reported once; a new call looks again
                raise translate(blocking, "cannot connect", where) from None
            if time.monotonic() >= deadline:
                why = latch.reason() or exc.args[0]
                raise translate(why, "cannot connect", where) from None


def result(
    future: Any, timeout_s: float, context: str, where: str, ignore: Container[str] = ()
) -> Any:
    """An admin future's result; a failure named in ``ignore`` returns None."""
    try:
        return future.result(timeout=timeout_s)
    except confluent_kafka.KafkaException as exc:
        err = exc.args[0]
        if err.name() in ignore:
            return None
        raise translate(err, context, where) from None
    except concurrent.futures.TimeoutError:
        # One of the project's errors, as every other failure here: callers that wait for
        # the broker (a partition's opening retries) catch those, not the futures' own.
        raise KafkaUnavailable(
            f"{context}: no answer within {timeout_s:g} s ({where})",
            code="_TIMED_OUT",
            retriable=True,
        ) from None
