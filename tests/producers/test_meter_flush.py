"""``flush()`` and ``close()`` against an endpoint that is down or black-holed (a socket that
takes the connection and never answers): the app is never held for ever, nothing is lost."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from spendstream.local.kafka import find_free_port
from spendstream.producers import Meter
from tests.producers.test_meter import TOKEN, IngestServer, _fields

TS = "2026-01-01T00:00:00Z"


class BlackHole:
    """A TCP listener that accepts every connection, reads nothing and never answers."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.held: list[socket.socket] = []
        self.accepted = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed
                return
            self.held.append(conn)
            self.accepted.set()

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.fixture
def black_hole() -> Iterator[BlackHole]:
    hole = BlackHole()
    yield hole
    hole.close()


def _returned(call: Callable[[], Any], within_s: float = 30.0) -> Any:
    """What ``call()`` returned, run in a thread; fails if it has not returned by then (the
    bound is a guard against hanging the test run, not a speed target)."""
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(call()), daemon=True)
    thread.start()
    thread.join(within_s)
    assert out, f"did not return within {within_s} s"
    return out[0]


def _on_disk(spool: Path) -> list[str]:
    return [
        json.loads(line)["event_id"]
        for seg in sorted(spool.glob("slot-*/seg-*.jsonl"))
        for line in seg.read_bytes().splitlines()
    ]


def _record(meter: Meter, n: int) -> list[str]:
    return [meter.record(**_fields(i, ts=TS)) for i in range(n)]


def test_flush_without_a_timeout_returns_once_the_events_are_on_disk_when_the_endpoint_is_down(
    tmp_path: Path,
) -> None:
    # It waited for ever ("until delivered") while nothing listened at the URL.
    url = f"http://127.0.0.1:{find_free_port()}"  # connection refused
    meter = Meter.http(url, TOKEN, spool_dir=tmp_path / "spool", linger_s=0.01)
    try:
        ids = _record(meter, 20)
        assert _returned(meter.flush) is False
        m = meter.metrics
        assert (m.spooled, m.queued, m.dropped, m.sent) == (20, 0, 0, 0)
        assert _on_disk(tmp_path / "spool") == ids
    finally:
        meter.close(timeout_s=0.5)


def test_flush_without_a_timeout_returns_once_a_black_holed_send_is_on_disk(
    black_hole: BlackHole, tmp_path: Path
) -> None:
    # The send never returns (an HTTP timeout of 5 minutes): the spill thread puts the batch
    # in flight on disk after spool_flush_s / 2, and flush() returns then.
    meter = Meter.http(
        black_hole.url,
        TOKEN,
        timeout_s=300,
        spool_dir=tmp_path / "spool",
        spool_flush_s=0.4,
        linger_s=0.01,
    )
    try:
        ids = _record(meter, 20)
        assert _returned(meter.flush) is False
        assert black_hole.accepted.is_set()
        m = meter.metrics
        assert (m.spooled, m.queued, m.dropped, m.sent) == (20, 0, 0, 0)
        assert _on_disk(tmp_path / "spool") == ids
    finally:
        meter.close(timeout_s=0.5)


def test_flush_without_a_timeout_or_a_spool_returns_with_the_events_still_held(
    black_hole: BlackHole,
) -> None:
    # No safer place than memory: flush() says False once the send hangs, and the Meter
    # keeps the events (in flight, then retried) rather than dropping them.
    meter = Meter.http(
        black_hole.url, TOKEN, timeout_s=300, spool_dir=None, spool_flush_s=0.4, linger_s=0.01
    )
    try:
        _record(meter, 20)
        assert _returned(meter.flush) is False
        m = meter.metrics
        assert (m.queued, m.dropped, m.sent) == (20, 0, 0)
    finally:
        meter.close(timeout_s=0.2)


def test_close_during_a_black_holed_send_waits_out_close_timeout_s_and_no_longer(
    black_hole: BlackHole, tmp_path: Path
) -> None:
    # close_timeout_s is the documented bound, kept: the hung send may still succeed. But the
    # sender was given a second more past it (join(timeout + 1)) though it was stuck in the
    # send with its batch already on disk.
    meter = Meter.http(
        black_hole.url,
        TOKEN,
        timeout_s=300,
        spool_dir=tmp_path / "spool",
        spool_flush_s=0.2,
        close_timeout_s=0.5,
        linger_s=0.01,
    )
    ids = _record(meter, 5)
    assert black_hole.accepted.wait(30)
    waited: list[float] = []
    join = meter._thread.join

    def noted(timeout: float | None = None) -> None:
        waited.append(float("inf") if timeout is None else timeout)
        join(timeout)

    meter._thread.join = noted  # type: ignore[method-assign]
    meter.close()
    assert sum(waited) <= 0.5, waited  # the sender's time, given by close(): not the clock's
    m = meter.metrics
    assert (m.spooled, m.dropped, m.queued, m.sent) == (5, 0, 0, 0)
    assert _on_disk(tmp_path / "spool") == ids


class _SlowToReadWhenEmpty(list[Any]):
    """An empty ``_held`` that takes 0.5 s to read outside the sender thread: the thread
    switch at the worst moment of ``flush()``, made certain rather than left to chance."""

    def __init__(self, sender: threading.Thread) -> None:
        super().__init__()
        self.sender = sender

    def __len__(self) -> int:
        if threading.current_thread() is not self.sender:
            time.sleep(0.5)
        return super().__len__()


def test_flush_never_says_delivered_while_a_failed_batch_goes_back_to_be_held() -> None:
    # flush() read the queue, _held and the in-flight count one by one: a send failing
    # between the reads of _held and of the in-flight count moved its batch from the latter
    # to the former behind flush()'s back, and flush() returned True with nothing sent.
    server = IngestServer()
    server.status, server.delay_s = 503, 0.2
    meter = Meter.http(server.url, TOKEN, spool_dir=None, linger_s=0.01)
    try:
        _record(meter, 5)
        _returned(lambda: _wait_until(lambda: server.requests >= 1))  # the batch in flight
        meter._held = _SlowToReadWhenEmpty(meter._thread)
        assert _returned(meter.flush) is False
        m = meter.metrics
        assert (m.sent, m.queued, m.dropped) == (0, 5, 0)
    finally:
        server.stop()
        meter.close(timeout_s=0.1)


def _wait_until(condition: Callable[[], bool]) -> bool:
    while not condition():
        time.sleep(0.005)
    return True
