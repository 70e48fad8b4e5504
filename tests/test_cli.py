"""The one `spendstream` command: every contract command exists, has help, and misuse exits 2."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from spendstream.cli import COMMANDS, build_parser, main

CONTRACT_COMMANDS = [
    "demo", "ingest", "run", "alerts", "sql", "query", "breakers", "kafka-local", "local",
    "init", "serve",
]  # fmt: skip


def _subcommands() -> dict[str, object]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return dict(action.choices)  # type: ignore[arg-type]


def test_every_contract_command_is_available() -> None:
    available = _subcommands()
    missing = [c for c in CONTRACT_COMMANDS if c not in available]
    assert missing == []


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_available_command_has_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    if name not in _subcommands():
        pytest.fail(f"command {name} is listed in COMMANDS but has no module")
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert COMMANDS[name] in " ".join(out.split())


def test_version_and_help_answer_without_building_any_command() -> None:
    # Building a command's options imports its module (numpy, pyarrow, pydantic for some):
    # `--version`, `--help` and a mistyped command must not wait for every command's.
    probe = (
        "import sys\n"
        "from spendstream.cli import main\n"
        "for argv in (['--version'], ['--help'], ['reprot']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('spendstream.commands.')"
        " or m in ('pyarrow', 'numpy', 'pydantic')))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines()[-1] == "[]"
    assert "spendstream 0.1" in done.stdout and "report" in done.stdout
    assert "did you mean 'report'?" in done.stderr


def test_a_command_builds_only_its_own_options() -> None:
    probe = (
        "import sys\n"
        "from spendstream.cli import main\n"
        "try:\n"
        "    main(['init', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('spendstream.commands.')))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    built = done.stdout.splitlines()[-1]
    assert "spendstream.commands.init" in built and "spendstream.commands.report" not in built


def test_unknown_subcommand_exits_2_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])
    assert exc.value.code == 2
    assert "frobnicate" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "meant"),
    [
        (["demoo"], "'demo'"),
        (["breakers", "lst"], "'list'"),
        (["sql", "--format", "jsn"], "'json'"),
    ],
)
def test_a_mistyped_choice_is_answered_with_the_one_meant(
    argv: list[str], meant: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert capsys.readouterr().err.rstrip().endswith(f"did you mean {meant}?")


def test_a_mistyped_query_name_is_answered_with_the_one_meant(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["query", "cost_by_tem", "--workdir", str(tmp_path)]) == 2
    assert "unknown query 'cost_by_tem'; did you mean 'cost_by_team'?" in capsys.readouterr().err
    # In capitals, as SQL is often written: no suggestion was made.
    assert main(["query", "COST_BY_TEAM", "--workdir", str(tmp_path)]) == 2
    assert "unknown query 'COST_BY_TEAM'; did you mean 'cost_by_team'?" in capsys.readouterr().err


def _cli(*argv: str, **kw: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "spendstream", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kw,  # type: ignore[call-overload]
    )


def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path: Path) -> None:
    # `spendstream sql ... | head -1`: more rows than a pipe holds, the reader gone after
    # the first: exit as a C tool would on SIGPIPE, no traceback.
    empty = tmp_path / "none.jsonl"
    empty.write_text("")
    assert main(["ingest", str(empty), "--workdir", str(tmp_path)]) == 0  # a warehouse to read
    proc = _cli("sql", "--workdir", str(tmp_path), "SELECT range AS n FROM range(200000)")
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert first.strip() in (b"n", b"-")  # the table's header
    assert proc.wait(timeout=120) == 141, err
    assert "Traceback" not in err and "BrokenPipeError" not in err


def test_an_interrupted_ingest_says_what_landed_stays(tmp_path: Path) -> None:
    import signal
    import time

    proc = _cli("ingest", "-", "--workdir", str(tmp_path), stdin=subprocess.PIPE)
    assert proc.stdin is not None and proc.stderr is not None and proc.stdout is not None
    lines = [
        {"event_id": f"e{i}", "ts": "2026-11-01T00:00:00Z", "provider": "openai",
         "model": "gpt-4o", "input_tokens": 1000, "output_tokens": 10}
        for i in range(3)
    ] + [{"event_id": "bad"}]  # fmt: skip
    proc.stdin.write(b"".join(json.dumps(x).encode() + b"\n" for x in lines))
    proc.stdin.flush()
    count = "SELECT count(*) FROM usage_facts"
    for _ in range(600):  # until the batch landed (a hang guard, not a speed limit)
        time.sleep(0.2)
        done = _cli("sql", "--workdir", str(tmp_path), "--format", "csv", count)
        if done.communicate(timeout=120)[0].decode().split() == ["count_star()", "3"]:
            break
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130
    err, out = proc.stderr.read().decode(), proc.stdout.read().decode()
    assert "spendstream ingest: interrupted: what landed stays landed" in err
    assert "Traceback" not in err
    # What a pipe read for hours landed, said when it is stopped.
    assert "interrupted; the batches finished before it:\n" in out
    assert "read 4 = landed 3 + duplicates 0 + dead-lettered 1\n" in out


def test_ctrl_c_with_the_reader_of_stdout_gone_still_says_interrupted(tmp_path: Path) -> None:
    import signal
    import time

    # `ingest - | tee log`: one Ctrl-C stops both, so the summary cannot be written; its
    # BrokenPipeError replaced the interrupt (exit 141, "interrupted" never said on stderr).
    proc = _cli("ingest", "-", "--workdir", str(tmp_path), stdin=subprocess.PIPE)
    assert proc.stdin is not None and proc.stderr is not None and proc.stdout is not None
    line = {"event_id": "e0", "ts": "2026-11-01T00:00:00Z", "provider": "openai",
            "model": "gpt-4o", "input_tokens": 1000, "output_tokens": 10}  # fmt: skip
    proc.stdin.write(json.dumps(line).encode() + b"\n")
    proc.stdin.flush()
    proc.stdout.close()  # the reader is gone
    count = "SELECT count(*) FROM usage_facts"
    for _ in range(600):  # until the batch landed (a hang guard, not a speed limit)
        time.sleep(0.2)
        done = _cli("sql", "--workdir", str(tmp_path), "--format", "csv", count)
        if done.communicate(timeout=120)[0].decode().split() == ["count_star()", "1"]:
            break
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130
    err = proc.stderr.read().decode()
    assert "spendstream ingest: interrupted: what landed stays landed" in err
    assert "Traceback" not in err


def test_a_quiet_live_pipe_moves_its_breakers_on_by_the_quiet_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import time

    # `ingest -` as a live stream: a key whose runaway opened its breaker and whose traffic
    # then stopped (the breaker stopped it) stayed open for ever, waiting for event time.
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        "[runaway]\nmax_calls_per_minute = 3\n"
        "[breaker]\nrate_cooldown_s = 1\nidle_advance_s = 0.5\n"
    )
    work = str(tmp_path / "w")
    proc = _cli("ingest", "-", "--workdir", work, "--config", str(cfg), stdin=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    events = [
        {"event_id": f"e{i}", "ts": f"2026-11-01T00:00:00.00{i}Z", "provider": "openai",
         "model": "gpt-4o", "input_tokens": 10, "output_tokens": 1, "api_key_id": "k"}
        for i in range(5)
    ]  # fmt: skip
    proc.stdin.write(b"".join(json.dumps(e).encode() + b"\n" for e in events))
    proc.stdin.flush()
    sql = "SELECT state FROM breaker_events WHERE scope = 'api_key:k' ORDER BY ts, state DESC"
    states: list[str] = []
    for _ in range(600):  # until it moved (a hang guard, not a speed limit)
        time.sleep(0.2)
        done = _cli("sql", "--workdir", work, "--format", "csv", sql)
        states = done.communicate(timeout=120)[0].decode().split()[1:]
        if "half_open" in states:
            break
    proc.stdin.close()
    assert proc.wait(timeout=120) == 0
    assert states == ["open", "half_open"]
    # Landed with the detectors' state: what `breakers` lists, and where the next run resumes.
    assert main(["breakers", "--workdir", work, "--config", str(cfg), "--format", "csv"]) == 0
    listed = capsys.readouterr().out
    assert "api_key:k,half_open" in listed, listed


def test_the_ingest_summary_gives_the_exact_cost_beside_its_cents(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A total to reconcile with an invoice read only in cents, and summed in Python's
    # 28-digit default context: $21 billion with 18 decimals has 29 digits.
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[[prices.model]]\nprovider = "acme"\nmodel = "m"\n'
        'input_per_mtok = "999999999.123456789012345678"\noutput_per_mtok = "0"\n'
    )
    events = tmp_path / "e.jsonl"
    events.write_text(
        "".join(
            json.dumps(
                {
                    "ts": f"2026-11-01T00:00:{i:02}Z",
                    "provider": "acme",
                    "model": "m",
                    "input_tokens": 1_000_000,
                    "output_tokens": 0,
                    "event_id": f"e{i}",
                }
            )
            + "\n"
            for i in range(21)
        )
    )
    argv = ["ingest", str(events), "--workdir", str(tmp_path / "w"), "--config", str(cfg)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("cost of landed facts"))
    assert line == (
        "cost of landed facts: $20,999,999,981.59 "
        "(exactly $20999999981.592592569259259238) (0 unpriced)"
    )


def test_no_subcommand_exits_2() -> None:
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2


@pytest.mark.parametrize(
    ("argv", "listed"),
    [([], ["demo", "ingest", "sql", "breakers"]), (["prices"], ["show", "unpriced", "reprice"])],
)
def test_a_command_or_action_left_out_lists_the_ones_there_are(
    argv: list[str], listed: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    # `spendstream` alone printed a usage line and "the following arguments are required:
    # COMMAND", naming none of them: a new user typed --help next, every time.
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    for name in listed:
        assert f"\n    {name} " in err, err
    assert err.endswith(
        " error: the following arguments are required: " + ("ACTION\n" if argv else "COMMAND\n")
    )


def test_bad_config_key_exits_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[runaway]\nmax_calls_per_minit = 5\n")
    events = tmp_path / "e.jsonl"
    events.write_text("")
    rc = main(["ingest", str(events), "--workdir", str(tmp_path / "w"), "--config", str(cfg)])
    assert rc == 2
    assert "runaway.max_calls_per_minit" in capsys.readouterr().err


def test_ingest_whose_alert_sink_lacks_its_secret_names_the_flag_that_skips_paging(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The spendstream.toml a team runs `alerts` with names a webhook's secret; an ingest of a
    # file beside it stopped at the missing variable without saying it could land unpaged.
    monkeypatch.delenv("HOOK_SECRET_FOR_TEST", raising=False)
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[[alerts.sink]]\nname = "hook"\ntype = "webhook"\nurl = "http://127.0.0.1:1/"\n'
        'secret_env = "HOOK_SECRET_FOR_TEST"\n'
    )
    events = tmp_path / "e.jsonl"
    events.write_text("")
    args = ["ingest", str(events), "--workdir", str(tmp_path / "w"), "--config", str(cfg)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "environment variable HOOK_SECRET_FOR_TEST is not set or empty" in err
    assert "--no-route-alerts" in err
    assert main([*args, "--no-route-alerts"]) == 0


def test_console_script_runs_as_module() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "spendstream", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0
    assert proc.stdout.startswith("spendstream ")


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_command_is_documented_for_users(name: str) -> None:
    root = Path(__file__).resolve().parents[1]
    text = (root / "README.md").read_text() + "".join(
        p.read_text() for p in sorted((root / "docs").glob("*.md"))
    )
    assert f"spendstream {name}" in text, f"no README/docs page shows `spendstream {name}`"


def test_warehouse_compact_help_says_the_min_files_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["warehouse", "compact", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "at least N files (default: 2)" in out


def _undocumented(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> list[str]:
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += _undocumented(sub, (*path, name))
        elif not action.help and action.dest != "help":
            out.append(" ".join((*path, *(action.option_strings or [action.dest]))))
    return out


def test_every_option_and_argument_says_what_it_is() -> None:
    # `local --help` listed --kafka-port N, --postgres-port N, ... with no word of what or
    # which default, and `prices show --help` a bare "provider" and "model".
    # kafka-local's ACTION is spendstream/local/kafka.py's (its choices say it all).
    assert _undocumented(build_parser(), ()) == ["kafka-local action"]


@pytest.mark.parametrize("argv", [["sql"], ["query"], ["breakers", "list"], ["whatif"]])
def test_format_help_says_its_default(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    assert "table for people (default)" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (
            ["report", "--ouput", "x.html"],
            "spendstream report: error: unrecognized arguments: --ouput x.html; "
            "--ouput: did you mean --out?",
        ),
        (
            ["prices", "show", "openai", "gpt-5-mini", "--att=2026-01-01"],
            "spendstream prices show: error: unrecognized arguments: --att=2026-01-01; "
            "--att: did you mean --at?",
        ),
        (
            ["sql", "SELECT", "team", "FROM", "usage_facts"],
            "spendstream sql: error: unrecognized arguments: team FROM usage_facts; the "
            'statement is one argument: quote it, spendstream sql "SELECT team FROM usage_facts"',
        ),
    ],
)
def test_an_unrecognized_argument_is_said_by_its_command_with_the_one_meant(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # argparse said `spendstream: error: unrecognized arguments: --ouput x.html` under the
    # top command's usage line: neither which command's options to look at, nor the flag
    # meant, nor (for an unquoted `spendstream sql SELECT ...`) that SQL is one argument.
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: spendstream {argv[0]} "), err
    assert err.rstrip().endswith(said), err


@pytest.mark.parametrize("statement", ["", " ; ", "-- just a comment"])
def test_sql_with_no_statement_says_so(
    statement: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # It ended in a traceback (AttributeError: 'NoneType' object has no attribute 'description').
    empty = tmp_path / "none.jsonl"
    empty.write_text("")
    assert main(["ingest", str(empty), "--workdir", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["sql", "--workdir", str(tmp_path), statement]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        'spendstream sql: no SQL statement given; e.g. spendstream sql "SELECT'
    ), err


@pytest.mark.parametrize(
    ("statement", "hint"),
    [
        (
            "cost_by_team",
            'hint: a table or view is read with a query: spendstream sql "SELECT * FROM '
            'cost_by_team", or spendstream query cost_by_team (--help: its filters)',
        ),
        (
            "usage_facts",
            'hint: a table or view is read with a query: spendstream sql "SELECT * FROM usage_facts"',
        ),
        (
            "SELECT count(*) FROM usage_facts WHERE team = ?",
            "hint: give each ? placeholder its value with -p VALUE, in order",
        ),
    ],
)
def test_sql_mistakes_a_first_user_makes_come_with_the_next_step(
    statement: str, hint: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `spendstream sql cost_by_team` answered only "Parser Error: syntax error at or near
    # "cost_by_team"", and a ? without -p "Values were not provided for the following
    # parameters: 1".
    empty = tmp_path / "none.jsonl"
    empty.write_text("")
    assert main(["ingest", str(empty), "--workdir", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["sql", "--workdir", str(tmp_path), statement]) == 1
    err = capsys.readouterr().err
    assert err.startswith("spendstream sql: "), err
    assert err.rstrip().endswith(hint), err


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--retention-s", "-1"), ("--orphan-grace-s", "-1"), ("--orphan-grace-s", "nan")],
)
def test_warehouse_compact_refuses_a_duration_its_config_key_would(
    flag: str, value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `--orphan-grace-s -1` was taken: every unreferenced file deleted at once, a live
    # writer's uncommitted data included (and `--retention-s -1` every snapshot but one).
    empty = tmp_path / "none.jsonl"
    empty.write_text("")
    assert main(["ingest", str(empty), "--workdir", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["warehouse", "compact", "--workdir", str(tmp_path), flag, value]) == 2
    assert capsys.readouterr().err == (
        f"spendstream warehouse: {flag} must be between 0 and 315,360,000 seconds (got {value})\n"
    )


def test_an_unquoted_select_star_is_given_back_with_its_star(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # `spendstream sql SELECT * FROM usage_facts` unquoted: the shell puts the directory's
    # file names for `*`, and the quoted statement suggested held them all.
    monkeypatch.chdir(tmp_path)
    names = ["calls.jsonl", "report.html", "spendstream-data"]
    for name in names:
        (tmp_path / name).touch()
    with pytest.raises(SystemExit) as exc:
        main(["sql", "SELECT", *names, "FROM", "usage_facts"])
    assert exc.value.code == 2
    assert (
        capsys.readouterr()
        .err.rstrip()
        .endswith(
            'quote it, spendstream sql "SELECT * FROM usage_facts" (unquoted, the shell put this '
            "directory's file names for *)"
        )
    )


def test_kafka_md_synopsis_of_run_names_every_option_of_run() -> None:
    # docs/kafka.md opens with `spendstream run [...]`; it left out --bootstrap-servers, the
    # flag a first user with a broker on another port reaches for (and `--stage detect`).
    run = _subcommands()["run"]
    assert isinstance(run, argparse.ArgumentParser)
    doc = (Path(__file__).parents[1] / "docs" / "kafka.md").read_text()
    synopsis = doc.split("\n\n")[1]
    assert synopsis.lstrip().startswith("spendstream run ["), synopsis
    flags = [o for a in run._actions for o in a.option_strings if o.startswith("--")]
    assert [f for f in flags if f != "--help" and f not in synopsis] == [], synopsis
    stage = next(a for a in run._actions if a.dest == "stage")
    assert f"--stage {'|'.join(stage.choices or [])}" in synopsis, synopsis
