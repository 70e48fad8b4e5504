"""The on-disk spool: FIFO order, bounds, restart recovery, one process per slot."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spendstream.producers.spool import Spool


def _lines(n: int, start: int = 0) -> list[bytes]:
    return [b'{"event_id":"e%06d"}' % i for i in range(start, start + n)]


def test_lines_come_back_in_the_order_they_were_appended(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=100)  # many small segments
    assert spool.append(_lines(50)) == 50
    got: list[bytes] = []
    while not spool.empty:
        chunk = spool.peek(7)
        got.extend(chunk)
        spool.commit(len(chunk))
    assert got == _lines(50)
    spool.close()


def test_peek_does_not_consume_until_commit(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append(_lines(3))
    assert spool.peek(2) == _lines(2)
    assert spool.peek(2) == _lines(2)
    spool.commit(1)
    assert spool.peek(5) == _lines(2, start=1)
    spool.close()


def test_append_refuses_lines_beyond_max_bytes(tmp_path: Path) -> None:
    size = len(_lines(1)[0]) + 1
    spool = Spool(tmp_path, max_bytes=10 * size)
    assert spool.append(_lines(15)) == 10
    assert spool.size_bytes == 10 * size
    spool.commit(4)
    assert spool.append(_lines(5, start=100)) == 4
    assert spool.peek(100) == _lines(6, start=4) + _lines(4, start=100)
    spool.close()


def test_a_restarted_process_resumes_after_the_last_commit(tmp_path: Path) -> None:
    first = Spool(tmp_path, segment_bytes=200)
    first.append(_lines(30))
    first.commit(12)
    first.close()
    second = Spool(tmp_path, segment_bytes=200)
    assert second.dir == first.dir  # the freed slot is claimed again
    second.append(_lines(5, start=30))
    assert second.peek(100) == _lines(18, start=12) + _lines(5, start=30)
    second.close()


def test_drained_spool_gives_its_disk_space_back(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=100)
    spool.append(_lines(40))
    spool.commit(40)
    assert spool.empty and spool.size_bytes == 0
    assert sum(p.stat().st_size for p in spool.dir.glob("seg-*.jsonl")) == 0
    spool.append(_lines(2, start=40))
    assert spool.peek(5) == _lines(2, start=40)
    spool.close()


def test_a_segment_is_deleted_once_every_line_in_it_was_sent(tmp_path: Path) -> None:
    size = len(_lines(1)[0]) + 1
    spool = Spool(tmp_path, segment_bytes=5 * size)
    spool.append(_lines(12))  # segments of 5, 5 and 2 lines
    assert len(list(spool.dir.glob("seg-*.jsonl"))) == 3
    spool.commit(5)  # exactly the first segment
    assert len(list(spool.dir.glob("seg-*.jsonl"))) == 2
    spool.commit(5)
    assert len(list(spool.dir.glob("seg-*.jsonl"))) == 1
    assert spool.peek(10) == _lines(2, start=10)
    spool.close()


def test_committing_more_lines_than_are_spooled_keeps_the_spool_usable(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append(_lines(3))
    spool.commit(10)
    assert spool.empty
    assert spool.append(_lines(2, start=3)) == 2
    assert spool.peek(10) == _lines(2, start=3)
    spool.close()


def test_a_torn_last_line_from_a_crash_is_skipped_and_counted(tmp_path: Path) -> None:
    first = Spool(tmp_path)
    first.append(_lines(3))
    seg = sorted(first.dir.glob("seg-*.jsonl"))[-1]
    first.close()
    with seg.open("ab") as f:
        f.write(b'{"event_id":"torn')  # the process died mid-write
    second = Spool(tmp_path)
    second.append(_lines(1, start=3))
    lines = second.peek(10)
    assert lines == _lines(4)
    second.commit(len(lines))
    assert second.corrupt_lines == 1
    assert second.empty
    second.close()


def test_a_crash_between_dropping_a_drained_segment_and_moving_the_head_loses_nothing(
    tmp_path: Path,
) -> None:
    first = Spool(tmp_path)
    first.append(_lines(5))
    first.commit(2)
    stale_head = (first.dir / "head").read_text()  # segment 0, two lines in
    first.commit(3)  # drained: the segment is dropped, then the head is replaced
    first.close()
    # kill -9 between the two: the segment is gone, the head still points into it
    (first.dir / "head").write_text(stale_head)
    second = Spool(tmp_path)
    assert second.empty
    assert second.append(_lines(4, start=5)) == 4
    assert second.peek(10) == _lines(4, start=5)
    second.commit(4)
    assert second.empty
    second.close()


def test_two_live_spools_on_one_root_take_different_slots(tmp_path: Path) -> None:
    a, b = Spool(tmp_path), Spool(tmp_path)
    assert a.dir != b.dir
    a.append(_lines(1))
    assert b.empty
    a.close()
    b.close()


def test_bounds_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="positive"):
        Spool(tmp_path, max_bytes=0)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("append"), st.integers(1, 30)),
            st.tuples(st.just("commit"), st.integers(0, 30)),
            st.tuples(st.just("reopen"), st.just(0)),
        ),
        max_size=25,
    )
)
def test_any_mix_of_appends_commits_and_restarts_behaves_like_a_fifo(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, int]]
) -> None:
    root = tmp_path_factory.mktemp("spool")
    size = len(_lines(1)[0]) + 1
    spool = Spool(root, max_bytes=40 * size, segment_bytes=5 * size)
    model: list[bytes] = []
    next_id = 0
    for op, n in ops:
        if op == "append":
            taken = spool.append(_lines(n, start=next_id))
            assert taken == min(n, 40 - len(model))  # the byte bound, exactly
            model.extend(_lines(taken, start=next_id))
            next_id += n
        elif op == "commit":
            k = len(spool.peek(n))
            assert k == min(n, len(model))
            spool.commit(k)
            del model[:k]
        else:
            spool.close()
            spool = Spool(root, max_bytes=40 * size, segment_bytes=5 * size)
        assert spool.size_bytes == len(model) * size
        assert spool.peek(100) == model
    spool.close()


# A real write failure, in a child process: RLIMIT_FSIZE makes the kernel refuse bytes past
# the limit (EFBIG, SIGXFSZ ignored) as a full disk refuses them (ENOSPC).
_DISK_FILLS = r"""
import resource, signal, sys
from spendstream.producers.spool import Spool

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
spool = Spool(sys.argv[1], segment_bytes=1 << 20)
_, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (1000, hard))
lines = [b"%03d" % i + b"x" * 97 for i in range(20)]  # 101 bytes with its newline
taken = spool.append(lines)
print(taken, spool.size_bytes, spool.refusal)
print(spool.append([b"y" * 200]), spool.refusal)
resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
print(spool.append([b"after"]), [line[:3] for line in spool.peek(100)])
"""


def test_a_disk_that_refuses_bytes_keeps_the_whole_lines_and_cuts_a_torn_one(
    tmp_path: Path,
) -> None:
    # It raised OSError into record()'s caller, and the sender and spill threads wrote on
    # past a torn line. Now the lines wholly written are kept, the torn one is cut off,
    # and the rest are refused with the disk's reason (the Meter counts them dropped).
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", _DISK_FILLS, str(tmp_path / "spool")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    first, late, after = proc.stdout.splitlines()
    taken, size, refusal = first.split(" ", 2)
    assert (int(taken), int(size)) == (9, 909)  # 9 x 101 bytes; the 10th would cross 1000
    assert refusal.startswith(f"cannot write the spool in {tmp_path / 'spool'}/slot-0: ")
    assert "File too large" in refusal
    assert late.startswith("0 cannot write the spool in ")
    # The file ends on a whole line: what comes after is read back intact.
    expected = [f"b'{i:03d}'" for i in range(9)] + ["b'aft'"]
    assert after == f"1 [{', '.join(expected)}]"
