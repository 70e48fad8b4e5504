"""``WorkdirBreakerView``: ``guard()`` without Kafka, from the open breakers an embedded
writer (``ingest``, a live ``ingest -`` above all) keeps in ``<workdir>/breakers.json``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from spendstream.cli import main
from spendstream.errors import BreakerOpen
from spendstream.local.kafka import find_free_port
from spendstream.producers import Meter
from spendstream.producers.guard import BREAKERS_FILE, WorkdirBreakerView, guard
from spendstream.runtime.breakers_file import write_breakers_file
from spendstream.stream.breakers import BreakerStatus

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def test_the_view_follows_the_file_as_the_writer_replaces_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with WorkdirBreakerView(tmp_path, poll_s=0.01) as view:
        assert view.wait_ready(30)  # no file: no embedded writer ran, nothing is open
        guard(view, team="search")

        write_breakers_file(tmp_path, {"team:search": BreakerStatus("open", "budget", T0)})
        assert view.wait_for("team:search", "open", 30)
        with pytest.raises(BreakerOpen) as stop:
            guard(view, team="search", feature="f")
        assert (stop.value.scope, stop.value.reason) == ("team:search", "budget")
        guard(view, team="ads")  # another team's calls go on

        # half_open lets calls through (a resumed loop trips it again)
        write_breakers_file(tmp_path, {"team:search": BreakerStatus("half_open", "budget", T0)})
        assert view.wait_for("team:search", "half_open", 30)
        guard(view, team="search")

        # A file that cannot be read keeps what was read last, said once.
        write_breakers_file(tmp_path, {"global": BreakerStatus("open", "runaway_rate", T0)})
        assert view.wait_for("global", "open", 30)
        with caplog.at_level("WARNING"):
            (tmp_path / BREAKERS_FILE).write_text("{not json")
            for _ in range(3000):  # until the view tried it (a hang guard, not a speed limit)
                if view.error is not None:
                    break
                time.sleep(0.01)
        assert view.error is not None
        with pytest.raises(BreakerOpen):
            guard(view, team="ads")
        said = [r.getMessage() for r in caplog.records if "cannot read" in r.getMessage()]
        assert len(said) == 1 and BREAKERS_FILE in said[0]

        write_breakers_file(tmp_path, {})  # the writer closed everything
        assert view.wait_for("global", "closed", 30)
        assert view.error is None
        guard(view, team="search")


def test_a_rewrite_the_files_stamp_does_not_show_is_read_all_the_same(tmp_path: Path) -> None:
    # Two rewrites within one tick of the file system's clock, of one size, the second on
    # the first's freed inode: (inode, mtime, size) unchanged, and the view kept the first
    # for ever. Made here by writing in place and setting the mtime back.
    write_breakers_file(tmp_path, {"team:aaaa": BreakerStatus("open", "budget", T0)})
    path = tmp_path / BREAKERS_FILE
    with WorkdirBreakerView(tmp_path, poll_s=0.01) as view:
        assert view.wait_for("team:aaaa", "open", 30)
        before = path.stat()
        with path.open("r+b") as f:
            f.write(path.read_bytes().replace(b"team:aaaa", b"team:bbbb"))
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        after = path.stat()
        assert (after.st_ino, after.st_mtime_ns, after.st_size) == (
            before.st_ino, before.st_mtime_ns, before.st_size,
        )  # fmt: skip
        assert view.wait_for("team:bbbb", "open", 30)
        guard(view, team="aaaa")
        with pytest.raises(BreakerOpen):
            guard(view, team="bbbb")


def test_a_workdir_where_no_breaker_moved_gets_no_file(tmp_path: Path) -> None:
    # The workdir of a writer whose tables live elsewhere (a bucket) holds only its lock.
    write_breakers_file(tmp_path, {})
    assert list(tmp_path.iterdir()) == []
    write_breakers_file(tmp_path, {"global": BreakerStatus("open", "budget", T0)})
    write_breakers_file(tmp_path, {})  # once there, it says what closed
    assert (tmp_path / BREAKERS_FILE).read_bytes() == b'{"breakers":[]}'


def test_a_view_made_fail_closed_refuses_until_it_has_read_the_file(tmp_path: Path) -> None:
    view = WorkdirBreakerView(tmp_path, fail_closed=True)  # not started: never ready
    with pytest.raises(BreakerOpen) as stop:
        guard(view, team="t")
    assert stop.value.scope == "global" and str(tmp_path / BREAKERS_FILE) in stop.value.reason


def test_an_app_guards_its_calls_with_the_breakers_a_live_ingest_keeps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # No Kafka anywhere: the app meters to a pipe (`tail -F calls.jsonl | ingest -`), its
    # agent loops, the session's breaker opens, and the app's next call is refused.
    config = tmp_path / "spendstream.toml"
    config.write_text("[runaway]\nmax_session_turns = 3\n[breaker]\nidle_advance_s = 0\n")
    work = tmp_path / "data"
    common = ["--workdir", str(work), "--config", str(config)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "spendstream", "ingest", "-", *common],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None
    calls = tmp_path / "calls.jsonl"
    meter = Meter.jsonl(calls, team="search")
    try:
        view = meter.watch_workdir_breakers(work, wait_s=60)
        assert view.ready
        meter.guard(session_id="loop")  # nothing open yet
        for i in range(5):
            meter.record(
                provider="openai", model="gpt-5-mini", input_tokens=10, output_tokens=1,
                session_id="loop", ts=f"2026-11-01T12:00:{i:02d}Z",
            )  # fmt: skip
        assert meter.flush(60)
        proc.stdin.write(calls.read_bytes())  # as `tail -F calls.jsonl | ingest -` would
        proc.stdin.flush()
        assert view.wait_for("session:loop", "open", 120)
        with pytest.raises(BreakerOpen) as stop:
            meter.guard(session_id="loop")
        assert stop.value.scope == "session:loop"
        meter.guard(session_id="other")

        # Closed by hand while the pipe runs: the app's calls go through again.
        dead = ["--bootstrap-servers", f"127.0.0.1:{find_free_port()}"]
        assert main(["breakers", "reset", "session:loop", *common, *dead]) == 0
        assert "session:loop: closed (manual reset)" in capsys.readouterr().out
        assert view.wait_for("session:loop", "closed", 120)
        meter.guard(session_id="loop")
        view.close()
    finally:
        meter.close()
        proc.stdin.close()
        assert proc.wait(timeout=120) == 0


def test_watch_workdir_breakers_finds_the_workdir_as_the_cli_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # It looked in ./spendstream-data whatever $SPENDSTREAM_HOME said, where `spendstream
    # ingest` (resolve_workdir) keeps its breakers: the open breaker was never seen.
    home = tmp_path / "home"
    home.mkdir()
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("SPENDSTREAM_HOME", str(home))
    write_breakers_file(home, {"team:search": BreakerStatus("open", "budget", T0)})
    with Meter.jsonl(tmp_path / "calls.jsonl", spool_dir=None, team="search") as meter:
        view = meter.watch_workdir_breakers(wait_s=60)
        try:
            with pytest.raises(BreakerOpen) as stop:
                meter.guard()
            assert stop.value.scope == "team:search"
            assert view.path == home.resolve() / BREAKERS_FILE
        finally:
            view.close()
        # Given, it wins over the environment; without either, ./spendstream-data.
        other = meter.watch_workdir_breakers(tmp_path / "given", wait_s=0)
        other.close()
        assert other.path == (tmp_path / "given").resolve() / BREAKERS_FILE
        monkeypatch.delenv("SPENDSTREAM_HOME")
        default = meter.watch_workdir_breakers(wait_s=0)
        default.close()
        assert default.path == elsewhere.resolve() / "spendstream-data" / BREAKERS_FILE


def test_watching_a_workdir_loads_no_pipeline_dependency(tmp_path: Path) -> None:
    # The workdir is found with spendstream.workdir's own rule: it must stay light.
    code = (
        "import json, sys\n"
        "from spendstream.producers import Meter\n"
        f"m = Meter.jsonl({str(tmp_path / 'calls.jsonl')!r}, spool_dir=None)\n"
        "m.watch_workdir_breakers(wait_s=0).close()\n"
        "m.close(timeout_s=0)\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert "spendstream.workdir" in loaded
    heavy = ["duckdb", "pyarrow", "pandas", "numpy", "great_expectations"]
    assert [m for m in loaded if m.split(".")[0] in heavy] == []
    assert not [m for m in loaded if m.startswith(("spendstream.stream", "spendstream.runtime"))]
