"""What `spendstream ingest` says at its end, read as a first-time user reads it."""

from __future__ import annotations

import json
import os
import pty
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from spendstream.cli import main

NOW = datetime.now(UTC).replace(microsecond=0)


def _event(event_id: str, **over: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "ts": (NOW - timedelta(minutes=5)).isoformat(),
        "provider": "openai",
        "model": "gpt-5-mini",
        "input_tokens": 1000,
        "output_tokens": 100,
        **over,
    }


def _write(path: Path, lines: list[dict[str, Any] | str]) -> Path:
    path.write_text("".join((e if isinstance(e, str) else json.dumps(e)) + "\n" for e in lines))
    return path


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_four_reasons_are_all_named_rather_than_one_said_to_be_more(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A file with a typo'd field, a missing one, a ts without offset and bad JSON: the summary
    # named three and said "1 more, for 1 other reason", a line as long as the reason.
    events = _write(
        tmp_path / "e.jsonl",
        [
            {**_event("typo"), "ouput_tokens": 1},
            {k: v for k, v in _event("missing").items() if k != "input_tokens"},
            _event("naive", ts="2026-12-01 12:05:00"),
            "{nope",
            _event("fine"),
        ],
    )
    assert main(["ingest", str(events), "--workdir", str(tmp_path / "w")]) == 0
    out = capsys.readouterr().out
    shown = [line.strip() for line in out.splitlines() if line.startswith("  ")]
    assert len(shown) == 4, shown
    assert not any("other reason" in line for line in shown)
    assert any("Invalid JSON" in line for line in shown)
    assert sum(int(line.split(" ", 1)[0]) for line in shown) == 4


def test_the_replay_command_is_offered_only_for_dead_lettered_notifications(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Every alert delivered: "0 dead-lettered (spendstream alerts --replay-dead-letters)"
    # read as a step still to take.
    config = tmp_path / "console.toml"
    config.write_text('[[alerts.sink]]\nname = "c"\ntype = "console"\nstream = "log"\n')
    events = _write(tmp_path / "e.jsonl", [_event("u-1", provider="acme", model="m9")])
    work = tmp_path / "w"
    assert main(["ingest", str(events), "--workdir", str(work), "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "notifications: 1 sent, 0 resolved, 0 dead-lettered\n" in out
    assert "--replay-dead-letters" not in out


def test_the_replay_command_names_the_workdir_and_configuration_the_ingest_had(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The sinks are in --config and the dead letters in --workdir: the replay offered
    # without them looks in ./spendstream-data, with no sinks, and finds nothing to send.
    config = tmp_path / "hook.toml"
    config.write_text(
        "[alerts.delivery]\nmax_attempts = 1\n\n"
        f'[[alerts.sink]]\nname = "hook"\ntype = "webhook"\n'
        f'url = "http://127.0.0.1:{_closed_port()}/spend"\n'
    )
    events = _write(tmp_path / "e.jsonl", [_event("u-1", provider="acme", model="m9")])
    work = tmp_path / "my work"
    assert main(["ingest", str(events), "--workdir", str(work), "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert (
        "notifications: 0 sent, 0 resolved, 1 dead-lettered (send them again: spendstream "
        f"alerts --replay-dead-letters --workdir '{work}' --config {config})\n"
    ) in out
    # ... and the command offered works as written.
    assert (
        main(["alerts", "--replay-dead-letters", "--workdir", str(work), "--config", str(config)])
        == 1
    )
    err = capsys.readouterr().err
    assert "1 still failing" in err
    assert "not tried" not in err  # its sink is there: tried, and down


def test_a_replay_without_the_sinks_that_paged_says_it_tried_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # `spendstream alerts --replay-dead-letters` without the --config that paged: its dead
    # letters' sink is not there, nothing is tried, and "1 still failing" read as the sink
    # still being down.
    config = tmp_path / "hook.toml"
    config.write_text(
        "[alerts.delivery]\nmax_attempts = 1\n\n"
        f'[[alerts.sink]]\nname = "hook"\ntype = "webhook"\n'
        f'url = "http://127.0.0.1:{_closed_port()}/spend"\n'
    )
    events = _write(tmp_path / "e.jsonl", [_event("u-1", provider="acme", model="m9")])
    work = str(tmp_path / "w")
    assert main(["ingest", str(events), "--workdir", work, "--config", str(config)]) == 0
    capsys.readouterr()
    monkeypatch.delenv("SPENDSTREAM_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)  # no ./spendstream.toml
    assert main(["alerts", "--replay-dead-letters", "--workdir", work]) == 1
    err = capsys.readouterr().err
    assert err.endswith(
        "1 still failing\n  not tried, for want of their sink: 'hook' (this run's "
        "configuration has no [[alerts.sink]]: give the one that paged, --config FILE)\n"
    ), err
    other = tmp_path / "other.toml"
    other.write_text('[[alerts.sink]]\nname = "c"\ntype = "console"\nstream = "log"\n')
    assert main(["alerts", "--replay-dead-letters", "--workdir", work, "--config", str(other)]) == 1
    assert capsys.readouterr().err.endswith(
        "  not tried, for want of their sink: 'hook' (this run's configuration has no "
        "[[alerts.sink]] of that name)\n"
    )


def test_unpriced_calls_are_followed_by_the_command_that_names_their_models(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # "cost of landed facts: $0.00 (1 unpriced)" said neither which model nor what to do.
    events = _write(tmp_path / "e.jsonl", [_event("u-1", model="gpt5-mini"), _event("fine")])
    work = tmp_path / "w"
    assert main(["ingest", str(events), "--workdir", str(work)]) == 0
    out = capsys.readouterr().out
    hint = (
        f"\nno price for 1 call: spendstream prices unpriced --workdir {work} names the models, "
        "why, and the nearest priced name\n"
    )
    assert hint in out
    # ... and it does.
    assert main(["prices", "unpriced", "--workdir", str(work), "--format", "csv"]) == 0
    assert "did you mean gpt-5-mini?" in capsys.readouterr().out
    # Every call priced: no such line.
    more = _write(tmp_path / "f.jsonl", [_event("fine-2")])
    assert main(["ingest", str(more), "--workdir", str(work)]) == 0
    assert "no price" not in capsys.readouterr().out


def test_stdin_from_a_terminal_is_said_to_be_read_from_it(tmp_path: Path) -> None:
    # `spendstream ingest -` with nothing piped in waited without a word.
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "spendstream", "ingest", "-", "--workdir", str(tmp_path / "w")],
        stdin=follower,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    os.close(follower)
    try:
        os.write(leader, (json.dumps(_event("tty-1")) + "\n").encode() + b"\x04")
        out, err = proc.communicate(timeout=120)
    finally:
        os.close(leader)
    assert proc.returncode == 0, err
    assert "reading events from the terminal, one JSON object a line (Ctrl-D ends them" in err
    assert "read 1 = landed 1 + duplicates 0 + dead-lettered 0" in out


def test_an_ingest_into_the_demos_workdir_says_it_mixes_with_the_synthetic_calls(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `make demo` then `spendstream ingest calls.jsonl` in the same directory: the user's
    # calls landed among the demo's, silently, and every sum mixed them.
    work = tmp_path / "spendstream-data"
    assert main(["demo", "--workdir", str(work), "--events", "1000"]) == 0
    capsys.readouterr()
    events = _write(tmp_path / "e.jsonl", [_event("mine-1")])
    assert main(["ingest", str(events), "--workdir", str(work)]) == 0
    err = capsys.readouterr().err
    assert f"note: {work} holds `spendstream demo`'s synthetic calls" in err
    assert "--workdir DIR, or run it in another directory" in err
    # A workdir of one's own: no note.
    assert main(["ingest", str(events), "--workdir", str(tmp_path / "mine")]) == 0
    assert "synthetic" not in capsys.readouterr().err


def test_breakers_opened_are_followed_by_the_commands_that_list_and_reset_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # "breakers opened: session:loop" said nothing of what to do with it, nor that
    # `breakers` works on what ingest opened, without Kafka.
    config = tmp_path / "c.toml"
    config.write_text("[runaway]\nmax_session_turns = 3\n")
    calls = [_event(f"t{i}", session_id="loop", turn=i) for i in range(5)]
    work = tmp_path / "w"
    events = _write(tmp_path / "e.jsonl", calls)
    assert main(["ingest", str(events), "--workdir", str(work), "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert (
        f"breakers opened: session:loop (spendstream breakers list --workdir {work} shows the "
        f"open ones; spendstream breakers reset --workdir {work} SCOPE closes one)\n"
    ) in out
    # ... as written, they work.
    assert main(["breakers", "list", "--workdir", str(work), "--format", "csv"]) == 0
    assert "session:loop,open," in capsys.readouterr().out
    assert main(["breakers", "reset", "--workdir", str(work), "session:loop"]) == 0


def test_an_ingest_that_starts_a_new_workdir_says_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # `spendstream ingest ../calls.jsonl` run from another directory landed in a warehouse
    # of its own there, unsaid: `spendstream sql` where the user's was then found none of it.
    monkeypatch.delenv("SPENDSTREAM_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    events = _write(tmp_path / "e.jsonl", [_event("mine-1")])
    assert main(["ingest", str(events)]) == 0
    err = capsys.readouterr().err
    work = tmp_path.resolve() / "spendstream-data"
    assert f"spendstream ingest: new workdir {work} (commands run in this directory" in err, err
    assert main(["ingest", str(events)]) == 0  # the same one again: nothing new to say
    assert "new workdir" not in capsys.readouterr().err
    assert main(["ingest", str(events), "--workdir", "other"]) == 0
    assert (
        capsys.readouterr().err
        == f"spendstream ingest: new workdir {tmp_path.resolve() / 'other'}\n"
    )


def test_a_count_written_as_a_string_or_a_fraction_is_shown_how_to_write_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # "input_tokens": "1200" (a spreadsheet's export) or 1200.5: the summary said "Input
    # should be a valid integer", not what the line held nor how to write it.
    events = _write(
        tmp_path / "e.jsonl",
        [_event("quoted", input_tokens="1200"), _event("fraction", output_tokens=10.5)],
    )
    assert main(["ingest", str(events), "--workdir", str(tmp_path / "w")]) == 0
    shown = [line.strip() for line in capsys.readouterr().out.splitlines() if line.startswith("  ")]
    assert len(shown) == 2, shown
    assert all(
        line.endswith('(a count is a whole JSON number, unquoted: 1200, not "1200" or 1200.5)')
        for line in shown
    ), shown


def test_an_empty_file_is_said_to_be_empty(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # "read 0 = landed 0 + duplicates 0 + dead-lettered 0" and nothing else: the file named
    # was not the one the producer wrote, or not yet written.
    empty = tmp_path / "calls.jsonl"
    empty.write_text("\n")
    assert main(["ingest", str(empty), "--workdir", str(tmp_path / "w")]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("read 0 = landed 0")
    assert f"hint: {empty} is empty: nothing to land" in captured.err, captured.err
    full = _write(tmp_path / "full.jsonl", [_event("one")])
    assert main(["ingest", str(full), str(empty), "--workdir", str(tmp_path / "w")]) == 0
    assert "is empty" not in capsys.readouterr().err  # something read: no hint


def test_an_empty_optional_field_is_shown_to_be_left_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `"team": ""` (a converted spreadsheet's empty cell) said "String should have at least
    # 1 character", not that a field with no value is left out; a required one gets no hint.
    events = _write(tmp_path / "e.jsonl", [_event("t", team=""), _event("p", provider="")])
    assert main(["ingest", str(events), "--workdir", str(tmp_path / "w")]) == 0
    shown = sorted(
        line.strip() for line in capsys.readouterr().out.splitlines() if line.startswith("  ")
    )
    assert shown == [
        "1 x provider: String should have at least 1 character",
        "1 x team: String should have at least 1 character (a field with no value is left out "
        'of the line, not written as "")',
    ]


def test_dead_letters_the_router_sent_once_the_sink_answered_again_are_not_offered_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The first page meets a 503 and dies; the second is delivered, so the router sends the
    # first one itself (auto-replay). The summary still offered "send them again" for it,
    # and the replay it named found nothing to send.
    from tests.alerts.conftest import ScriptedServer

    hook = ScriptedServer(script=[503]).start()
    try:
        config = tmp_path / "hook.toml"
        config.write_text(
            "[alerts.delivery]\nmax_attempts = 1\nsink_down_s = 0\n\n"
            f'[[alerts.sink]]\nname = "hook"\ntype = "webhook"\nurl = "{hook.url}"\n'
        )
        events = _write(
            tmp_path / "e.jsonl",
            [
                _event("u-1", provider="acme", model="m9"),
                _event("u-2", provider="acme", model="m8"),
            ],
        )
        work = tmp_path / "w"
        assert main(["ingest", str(events), "--workdir", str(work), "--config", str(config)]) == 0
        out = capsys.readouterr().out
        assert len(hook.accepted()) == 2  # the second page, then the first one again
    finally:
        hook.stop()
    assert (
        "notifications: 1 sent, 0 resolved, 1 dead-lettered; 1 dead letter sent once its "
        "sink answered again\n"
    ) in out
    assert "--replay-dead-letters" not in out


def test_an_interrupted_run_claims_no_number_of_dead_letters_still_to_send() -> None:
    # Ctrl-C's summary has no count of the state's dead letters: the run's own number,
    # claimed as "still to send", counted those the router had replayed since (it read
    # "1 dead-lettered; 1 dead letter sent once its sink answered again (1 still to send").
    from collections import Counter
    from io import StringIO

    from spendstream.commands._pipeline_output import print_summary
    from spendstream.runtime.embedded import IngestSummary

    def line(**counts: int) -> str:
        summary = IngestSummary(notifications=Counter(counts))
        out = StringIO()
        print_summary(summary, out)
        return next(x for x in out.getvalue().splitlines() if x.startswith("notifications:"))

    assert line(triggered=1, dead_lettered=1, replayed=1) == (
        "notifications: 1 sent, 0 resolved, 1 dead-lettered; 1 dead letter sent once its sink "
        "answered again (any still dead: spendstream alerts --replay-dead-letters)"
    )
    assert line(dead_lettered=2) == (
        "notifications: 0 sent, 0 resolved, 2 dead-lettered (send them again: spendstream "
        "alerts --replay-dead-letters)"
    )
    assert line(triggered=1, replay_superseded=2) == (
        "notifications: 1 sent, 0 resolved, 0 dead-lettered; 2 dead letters superseded by "
        "newer notifications (not sent)"
    )
    assert line(triggered=1, replayed=2, replay_superseded=1) == (
        "notifications: 1 sent, 0 resolved, 0 dead-lettered; 2 dead letters sent once their "
        "sink answered again, 1 superseded by newer ones"
    )


def test_the_number_still_to_send_is_named_when_the_router_replayed_some() -> None:
    # One dead-lettered by this run, one (another) replayed, one still to send: "send them
    # again" would name this run's, which may be the one replayed.
    from collections import Counter
    from io import StringIO

    from spendstream.commands._pipeline_output import print_summary
    from spendstream.runtime.embedded import IngestSummary

    summary = IngestSummary(
        notifications=Counter(dead_lettered=1, replayed=1), dead_letters_pending=1
    )
    out = StringIO()
    print_summary(summary, out)
    assert (
        "notifications: 0 sent, 0 resolved, 1 dead-lettered; 1 dead letter sent once its sink "
        "answered again (1 still to send: spendstream alerts --replay-dead-letters)\n"
    ) in out.getvalue()


def test_older_dead_letters_alone_do_not_put_the_replay_beside_none_dead_lettered() -> None:
    # A run that paged and dead-lettered nothing, in a workdir whose state holds an older
    # dead letter (a 4xx refusal fails at every replay): the command was offered each run.
    from collections import Counter
    from io import StringIO

    from spendstream.commands._pipeline_output import print_summary
    from spendstream.runtime.embedded import IngestSummary

    out = StringIO()
    print_summary(IngestSummary(notifications=Counter(triggered=1), dead_letters_pending=1), out)
    assert "notifications: 1 sent, 0 resolved, 0 dead-lettered\n" in out.getvalue()


def test_a_stopped_alert_router_counts_the_dead_letters_it_sent_itself() -> None:
    # `spendstream alerts`' last line left out the dead letters replayed once their sink
    # answered again: a replay after the stop seemed to have them all still to send.
    from spendstream.alerts.consumer import ConsumeSummary
    from spendstream.commands.alerts import closing_line

    total = ConsumeSummary(records=2, alerts=2, triggered=1, dead_lettered=1, replayed=3)
    assert closing_line(total) == (
        "spendstream alerts: read 2 records: 2 alerts, 0 breaker events, 0 bad; 1 triggered, "
        "0 resolved, 1 dead-lettered; of earlier dead letters, 3 sent once their sink "
        "answered again, 0 superseded"
    )
    assert closing_line(ConsumeSummary(records=1, alerts=1, triggered=1)).endswith(
        "1 triggered, 0 resolved, 0 dead-lettered"
    )
