"""``FileTransport`` on a disk that refuses bytes part-way through a batch (the same short-write
helper as the spool's: ``spool.write_lines``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

_DISK_FILLS = r"""
import json, resource, signal, sys
from spendstream.producers.transports import FileTransport, Record

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
transport = FileTransport(sys.argv[1])
records = [Record(b"k", b'{"event_id":"e%03d","pad":"%s"}' % (i, b"x" * 70)) for i in range(20)]
_, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (1000, hard))  # 99-byte lines: 10 whole, part of an 11th
first = transport.send(records)
resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))  # space again
again = transport.send([records[i] for i in first.failed])
print(json.dumps([first.failed, again.failed]))
"""


def test_a_batch_the_disk_cuts_short_keeps_its_whole_lines_and_retries_only_the_rest(
    tmp_path: Path,
) -> None:
    # The whole batch was failed and sent again: the ten events already written whole
    # landed twice in the file.
    calls = tmp_path / "calls.jsonl"
    proc = subprocess.run(
        [sys.executable, "-c", _DISK_FILLS, str(calls)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    first, again = json.loads(proc.stdout.splitlines()[-1])
    assert (first, again) == (list(range(10, 20)), [])
    lines = calls.read_bytes().split(b"\n")
    assert lines[-1] == b""  # the file ends on a whole line
    events = [json.loads(line)["event_id"] for line in lines[:-1] if line != lines[10]]
    assert events == [f"e{i:03d}" for i in range(20)]  # each once, in order
    assert not lines[10].endswith(b"}")  # the torn 11th line: ended, one dead letter to ingest
