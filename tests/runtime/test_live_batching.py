"""Batches of a source that may be live (``runtime.batching.live_batches``), as
``spendstream ingest -`` cuts a pipe: a slow stream lands what came within
``batch_within_s``, a backlog lands in backlog-sized batches, and nothing is lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

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

    batches = live_batches(source(), batch_size=100, backlog_batch_size=1000, within_s=0.05)
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


def test_a_source_that_fails_raises_where_the_batches_are_read() -> None:
    def source() -> Iterator[int]:
        yield 1
        raise OSError("the pipe broke")

    batches = live_batches(source(), 10, 10, within_s=0.05)
    with pytest.raises(OSError, match="the pipe broke"):
        list(batches)


def _event(i: int) -> bytes:
    return json.dumps(
        {
            "event_id": f"live-{i}",
            "ts": f"2026-03-01T10:00:{i:02d}Z",
            "provider": "openai",
            "model": "gpt-5-mini",
            "input_tokens": 10,
            "output_tokens": 1,
        }
    ).encode()


def test_ingest_from_a_pipe_lands_a_few_lines_without_waiting_for_a_batch(
    tmp_path: Path,
) -> None:
    """`spendstream ingest -` on a pipe that stays open: three lines land while the writer
    is still there (before, they waited for 2,000), then the rest at the end."""
    wd = tmp_path / "wd"
    proc = subprocess.Popen(
        [sys.executable, "-m", "spendstream", "ingest", "--workdir", str(wd), "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdin is not None
    try:
        proc.stdin.write(b"".join(_event(i) + b"\n" for i in range(3)))
        proc.stdin.flush()
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline and _facts(wd) < 3:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else b""
            time.sleep(0.2)
        assert _facts(wd) == 3
        proc.stdin.write(b"".join(_event(i) + b"\n" for i in range(3, 5)))
        proc.stdin.close()
        assert proc.wait(DEADLINE_S) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert _facts(wd) == 5


def _facts(workdir: Path) -> int:
    # The command creates the warehouse (its views) before it reads its first line.
    return fact_count(workdir) if (workdir / "warehouse" / "spendstream.duckdb").exists() else 0
