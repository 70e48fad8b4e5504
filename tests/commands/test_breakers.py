"""``spendstream breakers``: one set of options for list and reset, a broker found as `run`
finds it, and a dead broker reported at once."""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path

import pytest

from spendstream.cli import build_parser, main
from spendstream.local.kafka import find_free_port
from tests.commands.conftest import LocalBroker, cli

OPTIONS = ["--workdir", "W", "--config", "C.toml", "--bootstrap-servers", "h:1", "--format", "csv"]


@pytest.mark.parametrize(
    "argv",
    [
        ["breakers", *OPTIONS, "list"],
        ["breakers", "list", *OPTIONS],
        ["breakers", *OPTIONS, "reset", "api_key:k1"],
        ["breakers", "reset", "api_key:k1", *OPTIONS],
        [
            "breakers",
            "--workdir",
            "W",
            "--config",
            "C.toml",
            "reset",
            "api_key:k1",
            "--format",
            "csv",
            "--bootstrap-servers",
            "h:1",
        ],
    ],
)
def test_list_and_reset_take_the_same_options_before_or_after_the_action(
    argv: list[str],
) -> None:
    args = build_parser().parse_args(argv)
    assert (args.workdir, args.config, args.bootstrap_servers, args.format) == (
        "W",
        "C.toml",
        "h:1",
        "csv",
    )


def test_breakers_alone_lists(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["breakers", "--workdir", str(tmp_path), "--format", "csv"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == ["scope,state,reason,ts"]
    # No warehouse there: an empty list, and a word that this may not be the workdir meant.
    assert f"no warehouse at {tmp_path}" in err and "--from-kafka" in err


def test_reset_says_at_once_that_no_broker_answers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dead = f"127.0.0.1:{find_free_port()}"
    code = main(
        ["breakers", "reset", "api_key:k1", "--workdir", str(tmp_path), "--bootstrap-servers", dead]
    )
    err = capsys.readouterr().err
    assert code == 1
    # The fast path: refused before any Kafka client was made (its own retries take 10 s+).
    assert f"no Kafka broker answers at {dead}" in err and "cannot publish" not in err
    assert "--bootstrap-servers" in err and "kafka-local start" in err
    # ... and, run away from the directory ingest ran in, that no workdir is here either:
    # only Kafka was named, though the breaker was most likely an ingest's.
    assert err.rstrip().endswith(
        f"; nor is there a warehouse in {tmp_path} (a breaker `ingest` opened is reset where "
        "it ran, or with --workdir DIR)"
    ), err


def test_list_from_kafka_says_at_once_that_no_broker_answers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # It retried for 30 s before "could not read spendstream.breakers within 30s".
    dead = f"127.0.0.1:{find_free_port()}"
    started = time.monotonic()
    where = ["--workdir", str(tmp_path), "--bootstrap-servers", dead]
    code = main(["breakers", "list", "--from-kafka", *where])
    assert code == 1
    assert time.monotonic() - started < 10
    err = capsys.readouterr().err
    assert f"no Kafka broker answers at {dead}" in err
    assert "without --from-kafka, list shows the warehouse's breakers" in err


def test_reset_as_the_readme_writes_it_finds_the_kafka_local_broker(
    kafka_local_default: LocalBroker, tmp_path: Path
) -> None:
    workdir = str(tmp_path / "wd")
    # A scope whose breaker never opened (a typo, say) is not "reset": refused, nothing landed.
    typo = cli(
        "breakers", "reset", "api_key:key-ci", "--workdir", workdir, env=kafka_local_default.env
    )
    assert typo.returncode == 2, typo.stderr
    assert "api_key:key-ci has no breaker" in typo.stderr and "never opened" in typo.stderr
    assert not (tmp_path / "wd" / "warehouse").exists()
    reset = cli(
        "breakers", "reset", "api_key:key-ci", "--force", "--workdir", workdir,
        env=kafka_local_default.env,
    )  # fmt: skip
    assert reset.returncode == 0, reset.stderr
    assert reset.stdout.startswith("api_key:key-ci: closed (")
    assert f"kafka-local broker at {kafka_local_default.bootstrap}" in reset.stderr
    listed = cli(
        "breakers", "list", "--all", "--workdir", workdir, "--format", "csv",
        "--bootstrap-servers", kafka_local_default.bootstrap, env=kafka_local_default.env,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[1].startswith("api_key:key-ci,closed,")
    # Closed already: what was asked for holds, exit 0, nothing published again.
    again = cli(
        "breakers", "reset", "api_key:key-ci", "--workdir", workdir, env=kafka_local_default.env
    )
    assert again.returncode == 0, again.stderr
    assert "api_key:key-ci: already closed" in again.stderr and again.stdout == ""


def test_the_broker_of_local_start_is_found_like_a_kafka_local_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # `spendstream local start` runs its broker in <its data dir>/kafka: commands without a
    # configured broker find it there too (they found only `kafka-local start`'s).
    import argparse
    import os

    import spendstream.local.kafka as kafka_local
    import spendstream.local.services as services
    from spendstream.commands._options import kafka_config_from_args
    from spendstream.local.kafka import find_free_ports

    services_dir = tmp_path / "local"
    port, controller = find_free_ports(2)
    broker_dir = str(services_dir / "kafka")
    started = cli(
        "kafka-local", "start", "--dir", broker_dir, "--port", str(port),
        "--controller-port", str(controller), env=dict(os.environ),
    )  # fmt: skip
    try:
        assert started.returncode == 0, started.stderr
        monkeypatch.setattr(kafka_local, "default_data_dir", lambda: tmp_path / "no-kafka-local")
        monkeypatch.setattr(services, "default_data_dir", lambda: services_dir)
        args = argparse.Namespace(config=None, bootstrap_servers=None, workdir=str(tmp_path))
        monkeypatch.chdir(tmp_path)
        config = kafka_config_from_args(args)
        assert config.kafka.bootstrap_servers == f"127.0.0.1:{port}"
        assert f"running from {services_dir / 'kafka'}" in capsys.readouterr().err
    finally:
        stopped = cli("kafka-local", "stop", "--dir", broker_dir, env=dict(os.environ))
        assert stopped.returncode == 0, stopped.stderr


def test_list_counts_the_closed_scopes_it_leaves_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from datetime import UTC, datetime, timedelta

    from spendstream.records import BreakerEvent
    from spendstream.warehouse import Warehouse

    t0 = datetime(2026, 3, 2, 9, tzinfo=UTC)
    events = [
        BreakerEvent("api_key:k-open", "open", "runaway_rate", t0),
        BreakerEvent("api_key:k-reset", "open", "runaway_rate", t0),
        BreakerEvent("api_key:k-reset", "closed", "manual reset", t0 + timedelta(minutes=5)),
        BreakerEvent("session:s-1", "open", "session_budget", t0),
        BreakerEvent("session:s-1", "closed", "cooled down", t0 + timedelta(minutes=9)),
    ]
    with Warehouse(tmp_path) as wh:
        wh.commit(facts=[], breaker_events=events)
    assert main(["breakers", "list", "--workdir", str(tmp_path), "--format", "csv"]) == 0
    out, err = capsys.readouterr()
    assert [line.split(",")[:2] for line in out.splitlines()] == [
        ["scope", "state"],
        ["api_key:k-open", "open"],
    ]
    # On stderr, so the CSV stays what a script reads; the last thing a person sees.
    assert err.splitlines()[-1] == "2 closed scopes not shown (--all lists them)"

    assert main(["breakers", "list", "--all", "--workdir", str(tmp_path), "--format", "csv"]) == 0
    out, err = capsys.readouterr()
    assert [line.split(",")[:2] for line in out.splitlines()[1:]] == [
        ["api_key:k-open", "open"],
        ["api_key:k-reset", "closed"],
        ["session:s-1", "closed"],
    ]
    assert "not shown" not in err

    # One closed scope: singular; none closed: no line at all.
    with Warehouse(tmp_path) as wh:
        wh.commit(
            facts=[],
            breaker_events=[
                BreakerEvent("session:s-1", "open", "session_budget", t0 + timedelta(hours=1))
            ],
        )
    assert main(["breakers", "--workdir", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert "session:s-1" in out and "api_key:k-reset" not in out
    assert err.splitlines()[-1] == "1 closed scope not shown (--all lists them)"


def test_list_help_says_what_the_default_shows(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["breakers", "--help"])
    out = capsys.readouterr().out
    assert "open or half-open" in out and "--all" in out


def test_list_from_kafka_takes_all_and_counts_the_closed_ones_it_hides(
    kafka_local_default: LocalBroker, tmp_path: Path
) -> None:
    # --from-kafka ignored --all: what clients see showed no closed breaker, and said nothing
    # of hiding them, while the warehouse's listing had them.
    scope = f"api_key:key-{uuid.uuid4().hex[:8]}"
    workdir = str(tmp_path / "wd")
    env = kafka_local_default.env
    reset = cli("breakers", "reset", scope, "--force", "--workdir", workdir, env=env)
    assert reset.returncode == 0, reset.stderr
    listed = cli("breakers", "list", "--from-kafka", "--all", "--format", "csv", env=env)
    assert listed.returncode == 0, listed.stderr
    assert f"{scope},closed,manual reset," in listed.stdout
    shown = cli("breakers", "list", "--from-kafka", "--format", "csv", env=env)
    assert shown.returncode == 0, shown.stderr
    assert scope not in shown.stdout
    assert re.search(r"\d+ closed scopes? not shown \(--all lists them\)", shown.stderr)


def _session_calls(tmp_path: Path) -> Path:
    """Five calls of session loop, one second apart: over max_session_turns = 3."""
    events = tmp_path / "calls.jsonl"
    events.write_text(
        "".join(
            json.dumps(
                {
                    "event_id": f"e{i}",
                    "ts": f"2026-11-01T12:00:{i:02d}Z",
                    "provider": "openai",
                    "model": "gpt-5-mini",
                    "input_tokens": 10,
                    "output_tokens": 1,
                    "session_id": "loop",
                }
            )
            + "\n"
            for i in range(5)
        )
    )
    return events


def _session_opened(tmp_path: Path) -> tuple[Path, list[str]]:
    """A workdir whose `ingest` opened session loop's breaker, and the options naming it."""
    config = tmp_path / "spendstream.toml"
    config.write_text("[runaway]\nmax_session_turns = 3\n")
    work = tmp_path / "data"
    common = ["--workdir", str(work), "--config", str(config)]
    assert main(["ingest", str(_session_calls(tmp_path)), *common]) == 0
    return work, common


def test_reset_closes_a_breaker_ingest_opened_without_kafka(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # An embedded user: `ingest` opened a session breaker; no Kafka anywhere.

    config = tmp_path / "spendstream.toml"
    config.write_text("[runaway]\nmax_session_turns = 3\n")
    events = _session_calls(tmp_path)
    common = ["--workdir", str(tmp_path / "data"), "--config", str(config)]
    dead = ["--bootstrap-servers", f"127.0.0.1:{find_free_port()}"]
    assert main(["ingest", str(events), *common]) == 0
    capsys.readouterr()
    assert main(["breakers", "list", *common, "--format", "csv"]) == 0
    assert "session:loop,open," in capsys.readouterr().out

    # A scope that never opened here (a typo): said so, not "no Kafka broker" (exit 2).
    assert main(["breakers", "reset", "session:lop", *common, *dead]) == 2
    err = capsys.readouterr().err
    assert "session:lop has no breaker in the warehouse in" in err and "a typo?" in err
    assert "and no Kafka broker answers at" in err and "--force" in err
    assert "pointed at another broker" not in err  # not the Kafka-only message

    assert main(["breakers", "reset", "session:loop", *common, *dead]) == 0
    out = capsys.readouterr().out
    assert out.startswith("session:loop: closed (manual reset) at ")
    assert main(["breakers", "list", *common, "--format", "csv"]) == 0
    assert "session:loop" not in capsys.readouterr().out

    # Done once: a second reset says so, and does not send the user to Kafka.
    assert main(["breakers", "reset", "session:loop", *common, *dead]) == 0
    err = capsys.readouterr().err
    assert "session:loop: already closed" in err and "no Kafka broker" not in err

    # The next ingest continues from the state without the breaker: the warehouse keeps
    # the reset as the scope's latest event.
    assert main(["ingest", str(events), *common]) == 0
    capsys.readouterr()
    assert main(["breakers", "list", "--all", *common, "--format", "csv"]) == 0
    assert "session:loop,closed,manual reset," in capsys.readouterr().out


def test_a_mistyped_reset_names_the_scope_it_most_likely_meant(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `breakers reset team:serch` said "a typo?" and sent the user to `breakers list`,
    # though it had just read every breaker of the workdir.
    _, common = _session_opened(tmp_path)
    dead = ["--bootstrap-servers", f"127.0.0.1:{find_free_port()}"]
    capsys.readouterr()
    assert main(["breakers", "reset", "session:lop", *common, *dead]) == 2
    err = capsys.readouterr().err
    assert "a typo? Did you mean session:loop (open)?" in err
    # Nothing near: no guess.
    assert main(["breakers", "reset", "team:zzzzzz", *common, *dead]) == 2
    assert "Did you mean" not in capsys.readouterr().err


def test_an_embedded_reset_resolves_the_page_ingest_sent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:

    from tests.alerts.conftest import ScriptedServer

    hook = ScriptedServer().start()
    try:
        config = tmp_path / "spendstream.toml"
        config.write_text(
            "[runaway]\nmax_session_turns = 3\n\n"
            f'[[alerts.sink]]\nname = "hook"\ntype = "webhook"\nurl = "{hook.url}"\n\n'
            '[[alerts.route]]\nname = "all"\nsinks = ["hook"]\n'
        )
        events = _session_calls(tmp_path)
        common = ["--workdir", str(tmp_path / "data"), "--config", str(config)]
        assert main(["ingest", str(events), *common]) == 0
        assert [r.json()["action"] for r in hook.accepted()] == ["trigger"]
        capsys.readouterr()

        assert main(["breakers", "reset", "session:loop", *common]) == 0
        assert "notifications: 1 resolved, 0 dead-lettered" in capsys.readouterr().err
        sent = [r.json() for r in hook.accepted()]
        assert [s["action"] for s in sent] == ["trigger", "resolve"]
        assert sent[1]["alert"]["scope"] == "session:loop"
    finally:
        hook.stop()


def test_a_reset_is_taken_by_the_live_ingest_that_holds_the_workdir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import subprocess
    import sys
    import time

    # `ingest -` reading a pipe for days holds the workdir's writer lock: `breakers reset`
    # answered "in use" (exit 3), and the only way to close the breaker was to stop the pipe.
    config = tmp_path / "spendstream.toml"
    config.write_text("[runaway]\nmax_session_turns = 3\n[breaker]\nidle_advance_s = 0\n")
    work = str(tmp_path / "data")
    common = ["--workdir", work, "--config", str(config)]
    dead = ["--bootstrap-servers", f"127.0.0.1:{find_free_port()}"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "spendstream", "ingest", "-", *common],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(_session_calls(tmp_path).read_bytes())
        proc.stdin.flush()
        for _ in range(600):  # until the breaker opened (a hang guard, not a speed limit)
            time.sleep(0.2)
            assert main(["breakers", "list", *common, "--format", "csv"]) == 0
            if "session:loop,open," in capsys.readouterr().out:
                break
        assert main(["breakers", "reset", "session:lop", *common, *dead]) == 2  # a typo
        assert "session:lop has no breaker in the warehouse" in capsys.readouterr().err

        assert main(["breakers", "reset", "session:loop", *common, *dead]) == 0
        out = capsys.readouterr().out
        assert out.startswith("session:loop: closed (manual reset) at ")
        assert main(["breakers", "list", "--all", *common, "--format", "csv"]) == 0
        assert "session:loop,closed,manual reset," in capsys.readouterr().out
        assert not list((tmp_path / "data" / "reset-requests").iterdir())  # all answered
    finally:
        proc.stdin.close()
        assert proc.wait(timeout=120) == 0
    # The running writer applied it to its own detectors: its later commits keep it closed.
    assert main(["breakers", "list", "--all", *common, "--format", "csv"]) == 0
    assert "session:loop,closed,manual reset," in capsys.readouterr().out


def test_a_reset_no_running_writer_takes_is_withdrawn_and_said_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import spendstream.runtime.embedded_reset as embedded_reset
    from spendstream.workdir import WorkdirLock

    work, common = _session_opened(tmp_path)
    capsys.readouterr()
    monkeypatch.setattr(embedded_reset, "ASK_TIMEOUT_S", 0.5)
    with WorkdirLock(work, "ingest"):  # a writer that takes no requests
        assert main(["breakers", "reset", "session:loop", *common]) == 3
    err = capsys.readouterr().err
    assert "is in use by spendstream ingest" in err
    assert "It did not take the reset within 0.5 s" in err
    assert "so nothing was reset" in err
    assert list((work / "reset-requests").iterdir()) == []  # withdrawn: nothing happens later
    assert main(["breakers", "list", *common, "--format", "csv"]) == 0
    assert "session:loop,open," in capsys.readouterr().out


def test_a_reset_the_writer_took_but_never_answered_is_not_said_undone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    import spendstream.runtime.embedded_reset as embedded_reset
    from spendstream.runtime.reset_requests import taken_requests
    from spendstream.workdir import WorkdirLock

    # A writer killed (or Ctrl-C'd) between its reset commit and its answer: the asker said
    # "nothing was reset", though the writer had taken the request and may have closed it.
    work, common = _session_opened(tmp_path)
    capsys.readouterr()
    monkeypatch.setattr(embedded_reset, "ASK_TIMEOUT_S", 1.0)
    stop = threading.Event()
    taken: list[str | None] = []

    def silent_writer() -> None:  # takes requests as a running ingest does; answers none
        while not stop.is_set():
            taken.extend(r.scope for r in taken_requests(work))
            stop.wait(0.02)

    with WorkdirLock(work, "ingest"):
        thread = threading.Thread(target=silent_writer)
        thread.start()
        try:
            assert main(["breakers", "reset", "session:loop", *common]) == 3
        finally:
            stop.set()
            thread.join()
    assert taken == ["session:loop"]
    err = capsys.readouterr().err
    assert "nothing was reset" not in err
    assert "took the reset" in err and "spendstream breakers list" in err
    # The next writer clears what the silent one left (it holds the lock: no one answers it).
    requests = work / "reset-requests"
    assert [p.suffix for p in requests.iterdir()] == [".taken"]
    assert main(["ingest", str(_session_calls(tmp_path)), *common]) == 0
    assert list(requests.iterdir()) == []


def test_a_writer_starting_clears_answers_no_asker_read_but_not_fresh_ones(
    tmp_path: Path,
) -> None:
    import os

    from spendstream.runtime.reset_requests import REQUESTS_DIR, clear_left

    folder = tmp_path / REQUESTS_DIR
    folder.mkdir()
    for name in ("old.answer", "new.answer", "old.tmp", "new.tmp", "w.request", "k.taken"):
        (folder / name).write_text("{}")
    for name in ("old.answer", "old.tmp"):
        os.utime(folder / name, (1_000_000, 1_000_000))
    clear_left(tmp_path, now=1_000_000 + 601)
    # Fresh answers and temp files may have an asker reading or renaming them right now; a
    # waiting request is the next writer's to take.
    assert sorted(p.name for p in folder.iterdir()) == ["new.answer", "new.tmp", "w.request"]


def test_an_asker_interrupted_while_waiting_withdraws_its_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time
    from types import SimpleNamespace

    import spendstream.runtime.reset_requests as reset_requests

    # Ctrl-C on `breakers reset` while it waited left its request behind: the next writer of
    # the workdir (an ingest started days later) closed the breaker nobody asked for any more.
    def interrupted(_s: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(
        reset_requests, "time", SimpleNamespace(monotonic=time.monotonic, sleep=interrupted)
    )
    with pytest.raises(KeyboardInterrupt):
        reset_requests.ask_writer(tmp_path, "session:loop", 30.0)
    assert list((tmp_path / reset_requests.REQUESTS_DIR).iterdir()) == []
    assert list(reset_requests.taken_requests(tmp_path)) == []


def test_a_reset_run_with_the_workdir_free_rewrites_a_breakers_file_left_stale(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from datetime import UTC, datetime

    from spendstream.producers.guard import WorkdirBreakerView, guard
    from spendstream.runtime.breakers_file import write_breakers_file
    from spendstream.stream.breakers import BreakerStatus

    # A writer killed between a commit that closed a breaker and its breakers.json left the
    # file saying open: clients' guard() refused the scope while `breakers list` said closed,
    # and `breakers reset` (nothing open to close) left the file as it was.
    work, common = _session_opened(tmp_path)
    assert main(["breakers", "reset", "session:loop", *common]) == 0
    capsys.readouterr()
    stale = BreakerStatus("open", "runaway_session", datetime(2026, 11, 1, tzinfo=UTC))
    write_breakers_file(work, {"session:loop": stale})

    dead = ["--bootstrap-servers", f"127.0.0.1:{find_free_port()}"]
    assert main(["breakers", "reset", "session:loop", *common, *dead]) == 0
    assert "session:loop: already closed" in capsys.readouterr().err
    with WorkdirBreakerView(work, poll_s=0.01) as view:
        assert view.wait_ready(30)
        guard(view, session_id="loop")
