"""Batches of a source that may be live (``runtime.batching.live_batches``), as
``spendstream ingest -`` cuts a pipe: a slow stream lands what came within
``batch_within_s``, a backlog lands in backlog-sized batches, and nothing is lost."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from spendstream.runtime.batching import live_batches
from tests.runtime.kafka_workers import fact_count

# Deadlines only turn a hang into a failure with a message; nothing asserts speed.
DEADLINE_S = 60.0


def test_a_stalled_source_lands_what_it_has_within_the_wait() -> None:
    gate = threading.Event()

    def source() -> Iterator[int]:
        yield from (1, 2, 3)
        gate.wait(DEADLINE_S)  # a pipe with nothing more for now
        yield 4

    batches = live_batches(source(), batch_size=100, backlog_batch_size=1000, within_s=0.5)
    assert next(batches) == [1, 2, 3]
    gate.set()
    assert next(batches) == [4]
    assert list(batches) == []


def test_a_live_batch_is_cut_at_the_batch_size() -> None:
    # Records arrive one at a time, never more than one waiting: batches of batch_size.
    def source() -> Iterator[int]:
        for i in range(25):
            time.sleep(0.001)
            yield i

    sizes = [len(b) for b in live_batches(source(), 10, 10, within_s=DEADLINE_S)]
    assert sizes == [10, 10, 5]


def test_a_backlog_lands_in_batches_up_to_the_backlog_size_and_nothing_is_lost() -> None:
    batches = list(live_batches(range(2500), 10, 400, within_s=DEADLINE_S))
    assert [x for b in batches for x in b] == list(range(2500))
    sizes = [len(b) for b in batches]
    assert max(sizes) == 400, sizes  # the reader ran ahead: far more than a batch waited
    assert all(s >= 10 for s in sizes[:-1]), sizes


def test_a_batch_past_its_wait_is_cut_without_waiting_again() -> None:
    # Records still waiting when a batch's within_s has run out go to the next batch; the
    # reader must not wait a negative time for them. within_s=0: every deadline has passed
    # by the time it is checked, so each batch holds just its first record, whatever waits.
    batches = list(live_batches(range(5), 10, 10, within_s=0))
    assert batches == [[0], [1], [2], [3], [4]]


def test_a_batch_is_cut_once_within_s_has_passed_since_its_first_record() -> None:
    # A clock that reads 0 when the first batch starts and within_s from then on: record 2
    # is already waiting, but the first batch's wait has run out, so it goes to the next.
    # (A deadline of 2 x within_s survived a mutation pass: it took record 2 in.)
    readings = iter([0.0])

    def clock() -> float:
        return next(readings, 10.0)

    batches = list(live_batches(iter([1, 2]), 10, 10, within_s=10.0, clock=clock))
    assert batches == [[1], [2]]


def test_a_quiet_source_yields_an_empty_batch_every_idle_wait() -> None:
    gate = threading.Event()

    def source() -> Iterator[int]:
        yield 1
        gate.wait(DEADLINE_S)
        yield 2

    batches = live_batches(source(), 10, 10, within_s=0.01, idle_s=0.02)
    # (An empty batch may come first, if the reader thread starts later than idle_s.)
    assert next(b for b in batches if b) == [1]
    assert next(batches) == []  # nothing came: the caller gets its turn
    assert next(batches) == []
    gate.set()
    rest = list(batches)
    assert [x for b in rest for x in b] == [2]


def test_a_busy_source_yields_no_empty_batch() -> None:
    # Every record is there at once: only a source quiet for idle_s gets an empty batch.
    batches = list(live_batches(range(500), 10, 40, within_s=DEADLINE_S, idle_s=1.0))
    assert all(batches) and [x for b in batches for x in b] == list(range(500))


def test_a_source_that_fails_raises_where_the_batches_are_read() -> None:
    def source() -> Iterator[int]:
        yield 1
        raise OSError("the pipe broke")

    batches = live_batches(source(), 10, 10, within_s=0.05)
    with pytest.raises(OSError, match="the pipe broke"):
        list(batches)


def _event(i: int, **fields: object) -> bytes:
    return json.dumps(
        {
            "event_id": f"live-{i}",
            "ts": f"2026-03-01T10:00:{i:02d}Z",
            "provider": "openai",
            "model": "gpt-5-mini",
            "input_tokens": 10,
            "output_tokens": 1,
            **fields,
        }
    ).encode()


def test_ingest_from_a_pipe_lands_a_few_lines_without_waiting_for_a_batch(
    tmp_path: Path,
) -> None:
    """`spendstream ingest -` on a pipe that stays open: three lines land while the writer
    is still there (before, they waited for 2,000), then the rest at the end."""
    wd = tmp_path / "wd"
    with _ingest_pipe("--workdir", str(wd), stderr=subprocess.STDOUT) as (proc, stdin):
        stdin.write(b"".join(_event(i) + b"\n" for i in range(3)))
        stdin.flush()
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline and _facts(wd) < 3:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else b""
            time.sleep(0.2)
        assert _facts(wd) == 3
        stdin.write(b"".join(_event(i) + b"\n" for i in range(3, 5)))
    assert _facts(wd) == 5


@contextlib.contextmanager
def _ingest_pipe(*args: str, stderr: int) -> Iterator[tuple[subprocess.Popen[bytes], IO[bytes]]]:
    """`spendstream ingest ARGS -` reading a pipe the test writes to; closed at the end, when
    the command must exit 0 (killed if the test failed first)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "spendstream", "ingest", *args, "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdin is not None
    try:
        yield proc, proc.stdin
        proc.stdin.close()
        assert proc.wait(DEADLINE_S) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _facts(workdir: Path) -> int:
    # The command creates the warehouse (its views) before it reads its first line.
    return fact_count(workdir) if (workdir / "warehouse" / "spendstream.duckdb").exists() else 0


def test_ingest_from_a_quiet_pipe_resolves_an_idle_incident_before_the_pipe_closes(
    tmp_path: Path,
) -> None:
    """A route's auto_resolve_s on `spendstream ingest -`: the page for a runaway session
    is resolved while the pipe, quiet since, stays open (before, only when it closed)."""
    config = tmp_path / "spendstream.toml"
    config.write_text(
        "[runaway]\nmax_session_turns = 5\n"
        '[[alerts.sink]]\nname = "console"\ntype = "console"\nstream = "stdout"\n'
        '[[alerts.route]]\nname = "runaways"\nkinds = ["runaway_session"]\n'
        'sinks = ["console"]\nauto_resolve_s = 1\n'
    )
    lines: list[str] = []
    with _ingest_pipe(
        *("--config", str(config), "--workdir", str(tmp_path / "wd")), stderr=subprocess.DEVNULL
    ) as (proc, stdin):
        out = proc.stdout
        assert out is not None
        reader = threading.Thread(
            target=lambda: lines.extend(line.decode() for line in iter(out.readline, b"")),
            daemon=True,
        )
        reader.start()
        turns = (
            _event(i, session_id="agent-loop", turn=i, api_key_id="key-agent") for i in range(8)
        )
        stdin.write(b"".join(t + b"\n" for t in turns))
        stdin.flush()
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline and not any("[RESOLVED]" in x for x in lines):
            assert proc.poll() is None, lines
            time.sleep(0.1)
        pages = [x for x in lines if x.startswith("[")]
        assert len(pages) == 2, lines
        assert pages[0].startswith("[CRITICAL]") and "agent-loop" in pages[0]
        assert pages[1].startswith("[RESOLVED]") and "agent-loop" in pages[1]
        assert proc.poll() is None  # the pipe is still open
    reader.join(DEADLINE_S)
    # The incident was resolved once: the final tick at the pipe's end finds nothing open.
    assert sum("[RESOLVED]" in x for x in lines) == 1, lines
