"""Breaker resets handed to the embedded writer that holds a workdir (a live ``ingest -``).

``spendstream breakers reset`` closes an embedded breaker with one more commit of the
workdir's writer, under its lock (``runtime/embedded_reset.py``). While an ``ingest`` holds
that lock (a pipe read for days), the reset is asked of it instead: a request file in
``<workdir>/reset-requests/``, which the running writer applies between batches (and every
second while a live pipe is quiet) and answers with a file beside it.

Each side claims a request by a rename or an unlink, so exactly one wins: the writer takes
``<id>.request`` by renaming it ``<id>.taken``; the asker gives up by unlinking
``<id>.request``, and when that fails the writer has it and its answer is waited for.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from spendstream.workdir import write_atomically

__all__ = ["REQUESTS_DIR", "Asked", "ResetRequest", "ask_writer", "clear_left", "taken_requests"]

REQUESTS_DIR = "reset-requests"
_POLL_S = 0.1


@dataclass(frozen=True, slots=True)
class Asked:
    """What came of a request: the writer's ``answer``, or none, when ``taken`` says whether
    the writer had claimed it (its reset may have landed: it took it, then stopped or was
    slower than two waits) or not (withdrawn: nothing happens later)."""

    answer: dict[str, Any] | None
    taken: bool


def ask_writer(workdir: Path, scope: str, timeout_s: float) -> Asked:
    """Ask the writer holding ``workdir`` to reset ``scope``. Its answer (``event``: the
    ``closed`` event's fields, or None when the scope was not open there; ``resolved`` and
    ``dead_lettered``: the notifications it caused); or none when no writer took the request
    within ``timeout_s`` (it was withdrawn: nothing happens later), or one took it and did
    not answer within ``timeout_s`` more. Interrupted (Ctrl-C), the request is withdrawn
    unless already taken."""
    folder = workdir / REQUESTS_DIR
    folder.mkdir(exist_ok=True)
    rid = uuid.uuid4().hex
    request, answer = folder / f"{rid}.request", folder / f"{rid}.answer"
    write_atomically(request, orjson.dumps({"scope": scope}))
    try:
        return _wait_answer(request, answer, timeout_s)
    except BaseException:
        # Left behind, the request would be applied by whichever writer holds the workdir
        # next (an ingest started days later), long after its asker stopped waiting.
        request.unlink(missing_ok=True)
        raise


def _wait_answer(request: Path, answer: Path, timeout_s: float) -> Asked:
    deadline = time.monotonic() + timeout_s
    taken = False
    while True:
        try:
            data: dict[str, Any] = orjson.loads(answer.read_bytes())
        except FileNotFoundError:
            pass
        else:
            answer.unlink(missing_ok=True)
            return Asked(data, taken=True)
        if time.monotonic() >= deadline:
            if taken:
                return Asked(None, taken=True)  # taken, not answered in a second wait
            try:
                request.unlink()
                return Asked(None, taken=False)
            except FileNotFoundError:
                # Taken just now: its commit is under way; wait for the answer once more.
                taken, deadline = True, time.monotonic() + timeout_s
        time.sleep(_POLL_S)


@dataclass(frozen=True, slots=True)
class ResetRequest:
    scope: str | None  # None: the request file was not one (its answer says so)
    path: Path  # <id>.taken

    def answer(self, data: dict[str, Any]) -> None:
        write_atomically(self.path.with_suffix(".answer"), orjson.dumps(data))
        self.path.unlink(missing_ok=True)


def taken_requests(workdir: Path) -> Iterator[ResetRequest]:
    """The waiting requests, each claimed for this writer as it is yielded."""
    folder = workdir / REQUESTS_DIR
    try:
        waiting = sorted(folder.glob("*.request"))
    except OSError:
        return
    for path in waiting:
        taken = path.with_suffix(".taken")
        try:
            os.rename(path, taken)
        except FileNotFoundError:
            continue  # withdrawn by its asker
        try:
            scope = orjson.loads(taken.read_bytes())["scope"]
        except (OSError, ValueError, KeyError, TypeError):
            scope = None
        yield ResetRequest(scope if isinstance(scope, str) else None, taken)


# An asker waits at most two timeouts for its answer: one older than this has no reader.
_ANSWER_KEPT_S = 600.0


def clear_left(workdir: Path, now: float | None = None) -> None:
    """What earlier runs left, removed by a writer as it starts (it holds the workdir's lock,
    so no other writer is answering): requests a killed writer had taken (their asker has
    long stopped waiting and was told the reset may have landed), answers no asker read (it
    was interrupted), and half-written files."""
    folder = workdir / REQUESTS_DIR
    try:
        left = list(folder.iterdir())
    except OSError:
        return
    now = time.time() if now is None else now
    for path in left:
        try:
            # An asker's .tmp becomes its .request in an instant: only an old one is left.
            stale = path.suffix == ".taken" or (
                path.suffix in (".answer", ".tmp") and now - path.stat().st_mtime > _ANSWER_KEPT_S
            )
            if stale:
                path.unlink()
        except OSError:
            continue  # gone meanwhile, or not ours to remove: it is only clutter
