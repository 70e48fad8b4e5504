"""``RateLimitedLog`` (the first occurrence logged, then at most one line a minute with a
count of the rest) with a clock of the test's own, and the instrumented clients' "usage
missing" warning through it: real openai SDK, the local provider server, no sleeps."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator

import openai
import pytest

from spendstream.producers.integrations import calls
from spendstream.producers.meter import Meter
from spendstream.producers.rate_limited_log import RateLimitedLog, RateLimitedLogs
from tests.producers.collecting import CollectingTransport, collecting_meter, flushed
from tests.producers.provider_server import ProviderServer

LOGGER = "spendstream.producers"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_the_first_occurrence_is_logged_then_one_line_a_minute_with_a_count(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, LOGGER)
    line = RateLimitedLog(logging.getLogger(LOGGER), clock=clock)
    assert line.log("usage missing (%s)", "first") is True
    for i in range(41):
        clock.now += 1
        assert line.log("usage missing (%s)", i) is False
    assert line.suppressed == 41
    assert _lines(caplog) == ["usage missing (first)"]
    clock.now = 1000.0 + 59.9  # still inside the minute
    assert line.log("usage missing (%s)", "late") is False
    clock.now = 1000.0 + 60.0
    assert line.log("usage missing (%s)", "next") is True
    assert _lines(caplog)[1:] == [
        "usage missing (next) [42 more like it in the last 60 s not logged]"
    ]
    assert line.suppressed == 0
    clock.now += 3600  # a quiet hour: the next one is a first one again
    assert line.log("usage missing (%s)", "again") is True
    assert _lines(caplog)[2:] == ["usage missing (again)"]
    assert {r.levelno for r in caplog.records} == {logging.WARNING}
    assert {r.filename for r in caplog.records} == {"test_clients_rate_limited_log.py"}


def test_flush_logs_the_count_a_burst_left_untold(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    line = RateLimitedLog(logging.getLogger(LOGGER), logging.INFO, every_s=10, clock=clock)
    assert line.flush() is False  # nothing left untold
    line.log("dropped %d events", 1)
    clock.now += 2
    line.log("dropped %d events", 2)
    line.log("dropped %d events", 3)
    assert line.flush() is True
    assert line.flush() is False
    assert _lines(caplog) == [
        "dropped 1 events",
        "[2 more like 'dropped 3 events' in the last 2 s not logged]",  # the last, as read
    ]
    assert line.log("dropped %d events", 4) is True  # after a flush: a first one


def test_a_bad_format_is_logged_as_it_is_and_threads_count_every_occurrence(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, LOGGER)
    line = RateLimitedLog(logging.getLogger(LOGGER), clock=clock)
    line.log("first")

    def hit() -> None:
        for _ in range(1000):
            line.log("%d%% of %s", 5)  # one argument short: formatted only when logged

    threads = [threading.Thread(target=hit) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert line.suppressed == 4000
    clock.now += 60
    assert line.log("%d%% of %s", 5) is True
    assert _lines(caplog)[1] == ("%d%% of %s (5,) [4000 more like it in the last 60 s not logged]")
    with pytest.raises(ValueError, match="every_s"):
        RateLimitedLog(logging.getLogger(LOGGER), every_s=-1)


def test_a_forked_child_starts_each_line_afresh_with_a_lock_of_its_own(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    # A lock held at the fork (here by the forking thread itself, as another thread of the
    # parent might be holding it then) stayed held in the child: its next log() hung.
    import os
    import signal

    line = RateLimitedLog(logging.getLogger(LOGGER), clock=clock)
    line.log("first")
    line.log("second")
    line._lock.acquire()
    try:
        pid = os.fork()
        if pid == 0:  # the child: log at once, counting from nothing
            code = 1
            try:
                signal.alarm(20)  # a hang ends the child, which the parent sees as a failure
                code = 0 if line.log("in the child") and line.suppressed == 0 else 2
            finally:
                os._exit(code)
    finally:
        line._lock.release()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert line.suppressed == 1  # the parent's count is its own


# -- the instrumented clients' "usage missing" warning ---------------------------------------


@pytest.fixture
def metered() -> Iterator[tuple[Meter, CollectingTransport]]:
    meter, transport = collecting_meter()
    yield meter, transport
    meter.close(timeout_s=5)


def test_a_server_that_never_sends_usage_does_not_flood_the_log(
    server: ProviderServer,
    metered: tuple[Meter, CollectingTransport],
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # "usage missing ... recorded with 0 tokens" was logged at every such call.
    monkeypatch.setattr(
        calls, "_USAGE_MISSING", RateLimitedLogs(calls.log, clock=clock), raising=False
    )
    caplog.set_level(logging.WARNING, LOGGER)
    client = metered[0].instrument(
        openai.OpenAI(api_key="k", base_url=server.openai_url, max_retries=0),
        stream_usage=False,  # streams without usage: every call's usage is missing
    )
    for _ in range(20):
        list(client.chat.completions.create(model="gpt-5", messages=[], stream=True))
    assert len(_lines(caplog)) == 1
    assert _lines(caplog)[0].startswith("openai usage missing (no usage in the streamed")
    clock.now += 60
    list(client.chat.completions.create(model="gpt-5", messages=[], stream=True))
    assert len(_lines(caplog)) == 2
    assert _lines(caplog)[1].endswith("[19 more like it in the last 60 s not logged]")
    events = flushed(*metered)  # every call still recorded, and tagged
    assert [(e["input_tokens"], e["tags"]["usage"]) for e in events] == [(0, "missing")] * 21


def test_one_providers_missing_usage_does_not_hold_back_anothers_first_line(
    server: ProviderServer,
    metered: tuple[Meter, CollectingTransport],
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # One line a minute for every provider together: a gateway whose openai streams lack
    # usage at every call hid, for as long as that went on, that a second provider's did.
    monkeypatch.setattr(
        calls, "_USAGE_MISSING", RateLimitedLogs(calls.log, clock=clock), raising=False
    )
    caplog.set_level(logging.WARNING, LOGGER)
    meter = metered[0]
    clients = [
        meter.instrument(
            openai.OpenAI(api_key="k", base_url=server.openai_url, max_retries=0),
            stream_usage=False,
            **({"provider": name} if name != "openai" else {}),
        )
        for name in ("openai", "azure", "openai")
    ]
    for client in clients:
        list(client.chat.completions.create(model="gpt-5", messages=[], stream=True))
    assert [line.split(" ", 1)[0] for line in _lines(caplog)] == ["openai", "azure"]
    assert calls._USAGE_MISSING.flush() is True  # openai's second call, counted not logged
    assert _lines(caplog)[-1].startswith('[1 more like "openai usage missing (no usage in')
    assert calls._USAGE_MISSING.flush() is False


def test_a_burst_left_untold_is_counted_when_the_process_exits(server: ProviderServer) -> None:
    # The count of a burst's lines not logged waited for the next occurrence, a minute on:
    # a process that exits before then never said it; its log showed one line for them all.
    script = textwrap.dedent(
        f"""
        import logging, os, openai
        from spendstream.producers.meter import Meter
        logging.basicConfig(level=logging.WARNING, format="%(message)s")
        meter = Meter.jsonl(os.devnull, spool_dir=None)
        client = meter.instrument(
            openai.OpenAI(api_key="k", base_url={server.openai_url!r}, max_retries=0),
            stream_usage=False,
        )
        for _ in range(5):
            list(client.chat.completions.create(model="gpt-5", messages=[], stream=True))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=os.getcwd(),
        check=True,
    )
    lines = [line for line in done.stderr.splitlines() if "usage missing" in line]
    assert len(lines) == 2, done.stderr
    assert lines[0].startswith("openai usage missing (no usage in the streamed")
    # ... with the last of them as it would have read (the format alone showed "%s" where
    # the provider was).
    assert lines[1].startswith('[4 more like "openai usage missing (no usage in the streamed')
