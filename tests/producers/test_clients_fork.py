"""A call in flight when the process forks (a stream open in a gunicorn ``--preload`` or
Celery prefork parent) is recorded once, by the parent: a real ``os.fork()``, the real
anthropic SDK against the local provider server, both processes' Meters appending to one
file (``Meter.jsonl``), so that every event either sends is counted."""

from __future__ import annotations

import gc
import json
import os
from pathlib import Path
from typing import Any

import anthropic
import pytest

from spendstream.producers.meter import Meter
from tests.producers.provider_server import ANTHROPIC_USAGE, CLAUDE_INPUT, ProviderServer

MESSAGES = [{"role": "user", "content": "hi"}]


def _events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


@pytest.mark.parametrize("child", ["drops", "closes", "reads to its end"])
def test_a_stream_open_at_a_fork_is_recorded_once_by_the_parent(
    server: ProviderServer, tmp_path: Path, child: str
) -> None:
    # The child's copy of the stream was recorded too, when the child dropped, closed or
    # read it: two events for one call, its cost counted twice.
    path = tmp_path / "calls.jsonl"
    meter = Meter.jsonl(path, spool_dir=None, linger_s=0.001)
    try:
        client = meter.instrument(
            anthropic.Anthropic(api_key="k", base_url=server.anthropic_url, max_retries=0)
        )
        stream = client.messages.create(
            model="claude-sonnet-4-5", max_tokens=10, messages=MESSAGES, stream=True
        )
        assert next(iter(stream)).type == "message_start"  # in flight: its usage seen
        pid = os.fork()
        if pid == 0:  # the child: leave its copy, deliver what it recorded, exit at once
            code = 1
            try:
                if child == "drops":
                    del stream
                    gc.collect()
                elif child == "closes":
                    stream.close()
                else:
                    for _ in stream:
                        pass
                # A call of the child's own: the child's, recorded there.
                client.messages.create(model="child-call", max_tokens=10, messages=MESSAGES)
                delivered = meter.flush(timeout_s=10)
                meter.close(timeout_s=5)
                code = 0 if delivered else 1
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        if child == "reads to its end":  # the child took the shared socket's bytes
            stream.close()
        else:
            assert [event.type for event in stream][-1] == "message_stop"
        assert meter.flush(timeout_s=10)
    finally:
        meter.close(timeout_s=5)
    events = _events(path)
    children = [e for e in events if e["model"].startswith("child-call")]
    assert len(children) == 1, events  # the child records the calls it makes
    (event,) = [e for e in events if e not in children]  # the parent's stream, once
    assert (event["provider"], event["status"], event["input_tokens"]) == (
        "anthropic",
        "ok",
        CLAUDE_INPUT,
    )
    if child == "reads to its end":
        assert (event["output_tokens"], event["tags"]["stream"]) == (1, "incomplete")
    else:
        assert event["output_tokens"] == ANTHROPIC_USAGE["output_tokens"]
        assert "stream" not in event["tags"]


def test_a_stream_open_at_a_fork_in_a_forked_child_is_recorded_once_by_that_child(
    server: ProviderServer, tmp_path: Path
) -> None:
    # A fork of a fork (a daemonized server's workers): the grandchild's copy of a stream its
    # parent (itself a child) opened is its parent's too, not recorded a second time.
    path = tmp_path / "calls.jsonl"
    meter = Meter.jsonl(path, spool_dir=None, linger_s=0.001)
    client = meter.instrument(
        anthropic.Anthropic(api_key="k", base_url=server.anthropic_url, max_retries=0)
    )

    def forked(body: Any) -> int:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                body()
                code = 0 if meter.flush(timeout_s=10) else 1
                meter.close(timeout_s=5)
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status)

    def child() -> None:
        stream = client.messages.create(
            model="claude-sonnet-4-5", max_tokens=10, messages=MESSAGES, stream=True
        )
        next(iter(stream))
        if forked(stream.close) != 0:  # the grandchild closes its copy
            raise AssertionError("grandchild failed")
        for _ in stream:
            pass

    try:
        assert forked(child) == 0
    finally:
        meter.close(timeout_s=5)
    events = _events(path)
    assert len(events) == 1, events
    assert (events[0]["output_tokens"], events[0]["tags"].get("stream")) == (
        ANTHROPIC_USAGE["output_tokens"],
        None,
    )
