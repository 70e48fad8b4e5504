"""A hung batch spilled to the spool when the disk takes only part of it (``spool.write_lines``
raising ``ShortWrite``): a real short write, the kernel refusing bytes past RLIMIT_FSIZE in a
child process (EFBIG, as a full disk refuses them with ENOSPC), against a real local HTTP
server that holds the send. Whatever becomes of the send, every event arrives once and is
counted once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.producers.test_meter import TOKEN, IngestServer
from tests.producers.test_meter import server as server  # the fixture, found by pytest here

_CHILD = r"""
import json, logging, resource, signal, sys, time
from spendstream.producers import UsageEvent
from spendstream.producers.meter import Meter

logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(message)s")
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
spool_dir, url, token = sys.argv[1:4]

def fields(i):
    return {"event_id": f"e{i:06d}", "provider": "openai", "model": "gpt-5-mini",
            "input_tokens": 100 + i, "output_tokens": 10, "ts": "2026-01-01T00:00:00Z"}

line = len(UsageEvent.model_validate(fields(0)).model_dump_json(exclude_none=True)) + 1
meter = Meter.http(url, token, spool_dir=spool_dir, batch_size=5, spool_flush_s=0.4,
                   linger_s=0.01, timeout_s=120)
_, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
# A spool segment can grow to 2.5 lines: the spill of the 5-line batch keeps 2 whole lines
# and cuts the torn third off.
resource.setrlimit(resource.RLIMIT_FSIZE, (2 * line + line // 2, hard))

def metrics():
    m = meter.metrics
    return [m.sent, m.spooled, m.replayed, m.dropped, m.queued, m.send_failures]

def wait_for(condition):
    for _ in range(60_000):  # a guard against a hang, not a speed target
        if condition():
            return
        time.sleep(0.001)
    raise SystemExit("timed out")

def say(*what):
    print(json.dumps(what), flush=True)

for i in range(5):
    meter.record(**fields(i))
wait_for(lambda: meter.metrics.spooled == 2)  # the hung batch's spill, cut short
say("spilled", metrics(), meter.flush())  # flush(): the rest cannot go on disk; no wait
sys.stdin.readline()  # the parent lets the send end
wait_for(lambda: metrics()[4] == 0 or metrics()[5])  # settled, or failed
say("settled", metrics())
sys.stdin.readline()  # the parent makes the endpoint answer
say("flushed", meter.flush(timeout_s=60), metrics())
meter.close()
"""


@pytest.mark.parametrize("send", ["succeeds", "fails"])
def test_a_hung_batch_the_disk_takes_only_part_of_arrives_once_and_is_counted_once(
    server: IngestServer, tmp_path: Path, send: str
) -> None:
    # The spill took 2 of the hung batch's 5 lines (the disk then refused bytes). Succeeding,
    # the send delivered all 5 and the 2 were sent again from the spool; failing, the 3 the
    # spool could not take were counted dropped.
    server.answering.clear()
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(tmp_path / "spool"), server.url, TOKEN],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None

    def told(what: str) -> list[object]:
        out = child.stdout.readline() if child.stdout is not None else ""
        assert out, f"the child ended before saying {what}: {child.communicate()[1]}"
        said: list[object] = json.loads(out)
        assert said[0] == what, said
        return said[1:]

    try:
        # sent, spooled, replayed, dropped, queued (3 in flight), send_failures
        metrics, flushed = told("spilled")
        assert metrics == [0, 2, 0, 0, 3, 0]
        assert flushed is False
        seg = [p for p in (tmp_path / "spool").glob("slot-*/seg-*.jsonl")]
        assert [json.loads(li)["event_id"] for li in seg[0].read_bytes().splitlines()] == [
            "e000000",
            "e000001",
        ]
        assert seg[0].read_bytes().endswith(b"\n")  # the torn third line was cut off
        if send == "fails":
            server.status = 503
        server.answering.set()
        child.stdin.write("\n")
        child.stdin.flush()
        (metrics,) = told("settled")
        if send == "succeeds":
            # Delivered: the 2 spilled lines were taken back out of the spool.
            assert metrics == [5, 2, 2, 0, 0, 0]
        else:
            # The 2 spilled lines stay at the spool's head; the 3 the disk refused are held
            # (retried meanwhile, and failing again, as the endpoint still answers 503).
            assert metrics[:5] == [0, 2, 0, 0, 3] and metrics[5] >= 1
        server.status = 200
        child.stdin.write("\n")
        child.stdin.flush()
        flushed, metrics = told("flushed")
        assert flushed is True
        assert metrics[:5] == [5, 2, 2, 0, 0]  # sent once each, nothing dropped or left
    finally:
        _, err = child.communicate(timeout=120)  # closes its stdin: a waiting child goes on
    assert child.returncode == 0, err
    assert "Traceback" not in err
    assert sorted(server.event_ids()) == [f"e{i:06d}" for i in range(5)]  # each once
