"""Issue 12, end to end through ``spendstream ingest``: nothing a client sends stops, blinds
or corrupts the pipeline. Each poison record becomes one dead letter naming its file and
line, the rest lands, re-running adds nothing, detection never sees a rejected record,
and one writer holds a workdir at a time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from spendstream.cli import main
from spendstream.config import Config
from spendstream.runtime.embedded import EmbeddedRunner, read_lines
from spendstream.runtime.http.events import check_body
from spendstream.warehouse.reading import run_sql
from tests.stream.event_strategies import arbitrary_lines, near_valid_lines

NOW = datetime.now(UTC).replace(microsecond=0)


def _event(event_id: str, ts: datetime | str, **over: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": event_id,
        "ts": ts if isinstance(ts, str) else ts.isoformat(),
        "provider": "openai",
        "model": "gpt-5-mini",
        "input_tokens": 1000,
        "output_tokens": 100,
    }
    event.update(over)
    return event


def _write(path: Path, events: list[dict[str, Any] | str]) -> Path:
    path.write_text("".join((e if isinstance(e, str) else json.dumps(e)) + "\n" for e in events))
    return path


def _burst(key: str, n: int = 200, start: datetime | None = None) -> list[dict[str, Any]]:
    """``n`` calls of one api key within one UTC minute: over the default 120/minute."""
    start = (start or NOW - timedelta(minutes=10)).replace(second=0, microsecond=0)
    return [
        _event(f"{key}-{i}", start + timedelta(milliseconds=250 * i), api_key_id=key)
        for i in range(n)
    ]


def _sql(workdir: Path, sql: str) -> list[tuple[Any, ...]]:
    return run_sql(workdir, sql)[1]


def _ingest(capsys: pytest.CaptureFixture[str], workdir: Path, *files: Path) -> str:
    assert main(["ingest", *map(str, files), "--workdir", str(workdir)]) == 0
    return capsys.readouterr().out


POISON = {
    "ts 9999-12-31": _event("p-far-future", "9999-12-31T23:59:59Z"),
    "ts 0001-01-01": _event("p-year-one", "0001-01-01T00:00:00Z"),
    "ts 0001-01-01+01:00": _event("p-before-year-one", "0001-01-01T00:00:00+01:00"),
    "reported_cost_usd 1e400": _event("p-cost", NOW, reported_cost_usd="1e400"),
    "tokens 2^63-1": _event("p-tokens", NOW, input_tokens=2**63 - 1, output_tokens=2**63 - 1),
    # Past what the column holds (int32): refused as a version, not an error of the batch.
    "schema_version 2^33": _event("p-version", NOW, schema_version=2**33),
}


def test_poison_records_are_dead_letters_and_the_rest_lands_every_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = [_event(f"g{i}", NOW - timedelta(minutes=i)) for i in range(20)]
    lines: list[dict[str, Any] | str] = [*good[:10], *POISON.values(), "", *good[10:]]
    events = _write(tmp_path / "events.jsonl", lines)
    work = tmp_path / "work"
    out = _ingest(capsys, work, events)
    assert "read 26 = landed 20 + duplicates 0 + dead-lettered 6" in out
    dead = _sql(work, "SELECT source, error FROM dead_letters ORDER BY source")
    # Lines 11-16 of the file; the blank line 17 counts, so g10 is on line 18.
    assert [s for s, _ in dead] == [f"{events}:{n}" for n in range(11, 17)]
    reasons = dict(zip([e["event_id"] for e in POISON.values()], [e for _, e in dead], strict=True))
    assert reasons["p-far-future"].startswith("ts: 9999-12-31T23:59:59+00:00 is more than")
    assert reasons["p-year-one"].startswith("ts: 0001-01-01T00:00:00+00:00 is before 2015")
    assert "out of range in UTC" in reasons["p-before-year-one"]
    assert reasons["p-cost"] == "reported_cost_usd: Input should be less than or equal to 1000000"
    assert reasons["p-tokens"].startswith(
        "input_tokens: Input should be less than or equal to 1000000000"
    )
    assert reasons["p-version"].startswith("schema_version: Input should be 1")
    assert _sql(work, "SELECT count(*), sum(input_tokens) FROM usage_facts") == [(20, 20_000)]
    # Every re-run: exit 0, nothing new in the warehouse.
    again = _ingest(capsys, work, events)
    assert "read 26 = landed 0 + duplicates 20 + dead-lettered 6" in again
    assert _sql(work, "SELECT count(*) FROM dead_letters") == [(6,)]
    assert _sql(work, "SELECT count(*) FROM usage_facts") == [(20,)]


def test_summary_says_where_to_look_only_when_something_was_dead_lettered(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "my work"
    clean = _ingest(capsys, work, _write(tmp_path / "a.jsonl", [_event("a", NOW)]))
    assert "dead_letters" not in clean
    dirty = _ingest(capsys, work, _write(tmp_path / "b.jsonl", ["{nope"]))
    assert (
        f"spendstream sql --workdir '{work}' "
        '"SELECT source, error FROM dead_letters ORDER BY received_at DESC LIMIT 20"'
    ) in dirty


def test_summary_counts_dead_letters_by_the_first_rule_they_broke(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A first file written by hand, as the HTTP example shows an event (no event_id, no ts):
    # the summary says why, most common first, and what a file line needs.
    by_hand = {"provider": "openai", "model": "gpt-5-mini", "input_tokens": 1, "output_tokens": 1}
    lines: list[dict[str, Any] | str] = [
        by_hand,
        {**by_hand, "ts": NOW.isoformat()},
        by_hand,
        "{nope",
        _event("fine", NOW),
    ]
    out = _ingest(capsys, tmp_path / "work", _write(tmp_path / "a.jsonl", lines))
    assert "read 5 = landed 1 + duplicates 0 + dead-lettered 4" in out
    shown = [line.strip() for line in out.splitlines() if line.startswith("  ")]
    assert [line.split(" (", 1)[0] for line in shown] == [
        "3 x event_id: required field is missing",
        "1 x record: Invalid JSON: key must be a string at line 1 column 2",
    ]
    assert "every line of a file names its own event_id and ts" in shown[0]
    assert "(" not in shown[1]
    # A ts without its offset, or no date-time at all: the summary shows the form it needs.
    naive = [_event("naive", NOW.replace(tzinfo=None)), _event("word", "yesterday")]
    out = _ingest(capsys, tmp_path / "work", _write(tmp_path / "b.jsonl", naive))
    shown = [line.strip() for line in out.splitlines() if line.startswith("  ")]
    assert len(shown) == 2 and all(
        line.endswith("(ts is RFC 3339 with its offset, e.g. 2026-03-02T10:00:00Z or ...+01:00)")
        for line in shown
    ), shown


def test_one_record_two_hours_ahead_does_not_blind_rate_detection(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ahead = _event("ahead", NOW + timedelta(hours=2), api_key_id="k-burst")
    events = _write(tmp_path / "e.jsonl", [ahead, *_burst("k-burst")])
    work = tmp_path / "work"
    out = _ingest(capsys, work, events)
    assert "dead-lettered 1" in out
    alerts = _sql(work, "SELECT kind, scope FROM alerts")
    assert ("runaway_rate", "api_key:k-burst") in alerts
    assert ("api_key:k-burst", "open") in _sql(work, "SELECT scope, state FROM breaker_events")
    # Exactly what the burst alone raises: the rejected record moved nothing.
    alone = tmp_path / "alone"
    _ingest(capsys, alone, _write(tmp_path / "burst.jsonl", _burst("k-burst")))
    query = "SELECT alert_id, kind, scope, ts, value FROM alerts ORDER BY alert_id"
    assert _sql(work, query) == _sql(alone, query)


def test_a_far_future_record_changes_no_alert_of_a_real_workload(tmp_path: Path) -> None:
    from spendstream.synthetic import generate

    workload = [json.dumps(e).encode() for e in generate(6000, seed=5)]
    poisoned = [json.dumps(_event("from-2100", "2100-01-01T00:00:00Z")).encode(), *workload]
    results = []
    for name, lines in (("clean", workload), ("poisoned", poisoned)):
        runner = EmbeddedRunner(tmp_path / name, Config())
        summary = runner.run((f"f:{i + 1}", raw) for i, raw in enumerate(lines))
        results.append(sorted((a.alert_id, a.ts, a.value) for a in summary.alerts))
        assert summary.read == summary.landed + summary.duplicates + summary.dead_lettered
    assert results[0] and results[0] == results[1]


def test_999_good_events_and_one_two_days_ahead_land_999_facts_and_one_dead_letter(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = [_event(f"g{i}", NOW - timedelta(seconds=i)) for i in range(999)]
    bad = _event("ahead", NOW + timedelta(days=2))
    work = tmp_path / "work"
    out = _ingest(capsys, work, _write(tmp_path / "e.jsonl", [*good[:500], bad, *good[500:]]))
    assert "read 1,000 = landed 999 + duplicates 0 + dead-lettered 1" in out
    # Their ids were recorded because their facts landed; the bad one's was not.
    resend = _ingest(capsys, work, _write(tmp_path / "again.jsonl", good))
    assert "read 999 = landed 0 + duplicates 999 + dead-lettered 0" in resend
    assert _sql(work, "SELECT count(*) FROM usage_facts WHERE event_id = 'ahead'") == [(0,)]


def test_identical_bad_lines_at_different_positions_are_different_dead_letters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = _write(tmp_path / "e.jsonl", ["{oops", _event("a", NOW), "{oops", "{oops"])
    work = tmp_path / "work"
    _ingest(capsys, work, events)
    _ingest(capsys, work, events)
    rows = _sql(work, "SELECT source FROM dead_letters ORDER BY source")
    assert rows == [(f"{events}:1",), (f"{events}:3",), (f"{events}:4",)]


def test_a_reused_id_with_other_content_is_a_conflicting_duplicate_dead_letter(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "work"
    first = _write(tmp_path / "first.jsonl", [_event("x", NOW), _event("y", NOW)])
    _ingest(capsys, work, first)
    second = _write(
        tmp_path / "second.jsonl",
        [
            _event("x", NOW),  # a replay: a duplicate
            _event("y", NOW, output_tokens=101),  # another event under a landed id
            _event("z", NOW),
            _event("z", NOW, model="gpt-5"),  # another event under an id earlier in the batch
        ],
    )
    out = _ingest(capsys, work, second)
    assert "read 4 = landed 1 + duplicates 1 + dead-lettered 2" in out
    dead = _sql(work, "SELECT source, error FROM dead_letters ORDER BY source")
    assert [s for s, _ in dead] == [f"{second}:2", f"{second}:4"]
    assert dead[0][1].startswith("conflicting_duplicate: event_id 'y' ")
    assert dead[1][1].startswith("conflicting_duplicate: event_id 'z' ")
    assert _sql(work, "SELECT output_tokens FROM usage_facts WHERE event_id = 'y'") == [(100,)]
    # Re-ingesting the second file adds no dead letter: the reasons do not change.
    _ingest(capsys, work, second)
    assert _sql(work, "SELECT count(*) FROM dead_letters") == [(2,)]


_HOLD = """
import sys, time
from pathlib import Path
from spendstream.workdir import WorkdirLock
with WorkdirLock(Path(sys.argv[1]), "ingest"):
    print("held", flush=True)
    time.sleep(3600)
"""


@pytest.mark.parametrize("command", ["ingest", "demo"])
def test_a_second_writer_on_a_workdir_exits_3_at_once_naming_the_holder(
    tmp_path: Path, command: str
) -> None:
    work = tmp_path / "work"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(work)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        events = _write(tmp_path / "e.jsonl", [_event("a", NOW)])
        args = [str(events)] if command == "ingest" else []
        # The holder never lets go: a second writer that waited for the lock would hang
        # (the timeout only turns that hang into a failure).
        done = subprocess.run(
            [sys.executable, "-m", "spendstream", command, *args, "--workdir", str(work)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 3, done.stderr
        assert holder.poll() is None  # refused while the holder still holds it
        assert f"workdir {work} is in use by spendstream ingest (pid {holder.pid})" in done.stderr
    finally:
        holder.kill()
        holder.wait()
    # The kernel dropped the lock with its holder (killed): the next writer goes ahead.
    if command == "ingest":
        assert main(["ingest", str(events), "--workdir", str(work)]) == 0


def test_the_lock_file_names_the_live_holder_only(tmp_path: Path) -> None:
    from spendstream.errors import WorkdirBusy
    from spendstream.workdir import LOCK_FILE, WorkdirLock

    with WorkdirLock(tmp_path, "demo"):
        assert (tmp_path / LOCK_FILE).read_text() == f"{os.getpid()} demo\n"
        with pytest.raises(WorkdirBusy, match=f"spendstream demo \\(pid {os.getpid()}\\)"):
            WorkdirLock(tmp_path, "ingest").acquire()
    assert (tmp_path / LOCK_FILE).read_text() == ""
    with WorkdirLock(tmp_path, "ingest"):
        pass


# -- fuzz ------------------------------------------------------------------------------------

_lines = st.lists(st.one_of(arbitrary_lines(), near_valid_lines()), min_size=1, max_size=15)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(lines=_lines)
def test_fuzzed_input_never_crashes_ingest_adds_up_and_a_following_burst_still_fires(
    tmp_path: Path, lines: list[bytes]
) -> None:
    work = Path(tempfile.mkdtemp(dir=tmp_path))  # a fresh workdir per example
    key = f"k-fuzz-{work.name}"
    runner = EmbeddedRunner(work, Config(), batch_size=40)
    judged: list[str] = []
    detect = runner.pipeline.detect_table

    def spy(facts: Any) -> Any:
        judged.extend(facts.column("event_id").to_pylist())
        return detect(facts)

    runner.pipeline.detect_table = spy  # type: ignore[method-assign]
    burst = [json.dumps(e).encode() for e in _burst(key, start=NOW - timedelta(minutes=5))]
    records = [(f"f:{i + 1}", raw) for i, raw in enumerate([*lines, *burst])]
    summary = runner.run(records)
    assert summary.read == len(records)
    assert summary.read == summary.landed + summary.duplicates + summary.dead_lettered
    assert ("runaway_rate", f"api_key:{key}") in {(a.kind, a.scope) for a in summary.alerts}
    landed = {r[0] for r in _sql(work, "SELECT event_id FROM usage_facts")}
    assert set(judged) == landed  # detection saw exactly the landed events
    errors = _sql(work, "SELECT error FROM dead_letters")
    assert all(e.strip() for (e,) in errors)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(arbitrary_lines(), near_valid_lines()), max_size=10))
@example([b"\xef\xbb\xbf"])
@example([b"\xef\xbb\xbf{}", b"x"])
def test_fuzzed_http_bodies_account_for_every_line(lines: list[bytes]) -> None:
    body = b"\n".join(line.replace(b"\n", b" ") for line in lines)
    checked = check_body(body, "application/x-ndjson", NOW, "fuzz")
    # A body's leading UTF-8 BOM is not a line (runtime/http/events.py drops it): a body of
    # only a BOM is empty. Hypothesis found [b"\xef\xbb\xbf"] counted as one line here.
    lines_of = body.removeprefix(b"\xef\xbb\xbf").split(b"\n")
    nonblank = [n for n, line in enumerate(lines_of, start=1) if line.strip()]
    assert len(checked.accepted) + len(checked.rejected) == len(nonblank)
    assert sorted(r["line"] for r in checked.rejected) == [
        int(d.source.rsplit("#", 1)[1]) for d in checked.dead_letters
    ]
    assert all(str(r["error"]).strip() for r in checked.rejected)


def test_an_http_body_with_a_line_nested_too_deeply_refuses_that_line_only() -> None:
    # Filling in a missing event_id parsed each line: a RecursionError (no ValueError)
    # made the whole body a 500, its good lines refused with it.
    good = json.dumps(_event("deep-0", NOW)).encode()
    checked = check_body(good + b"\n" + b"[" * 100_000, "application/x-ndjson", NOW, "deep")
    assert len(checked.accepted) == 1
    assert [r["line"] for r in checked.rejected] == [2]


def test_a_line_that_is_not_a_json_object_says_what_it_is() -> None:
    # A JSON array of events is the usual first try at posting several: say what to send.
    array = json.dumps([_event("a-1", NOW), _event("a-2", NOW)]).encode()
    checked = check_body(array, "application/json", NOW, "arr")
    assert [r["error"] for r in checked.rejected] == [
        "record: a usage event is a JSON object, not an array (for several events, write one "
        "object per line: JSON Lines)"
    ]
    checked = check_body(b'"x"\n5\nnull\ntrue\n', "application/x-ndjson", NOW, "kinds")
    assert [r["error"].split(", not ")[1] for r in checked.rejected] == [
        "a string", "a number", "null", "true or false"
    ]  # fmt: skip


def test_a_body_that_starts_with_a_byte_order_mark_is_read_as_ingest_reads_a_file() -> None:
    # `curl --data-binary @events.jsonl` of a file saved by Notepad: ingest lands its first
    # line, POST /v1/events refused it ("Invalid JSON: expected value at line 1 column 1").
    bom = b"\xef\xbb\xbf"
    lines = [json.dumps(_event(f"bom-{i}", NOW)).encode() for i in range(2)]
    checked = check_body(bom + b"\r\n".join(lines) + b"\r\n", "application/x-ndjson", NOW, "b")
    assert (len(checked.accepted), checked.rejected) == (2, [])
    checked = check_body(bom + lines[0], "application/json", NOW, "one")
    assert (len(checked.accepted), checked.rejected) == (1, [])


def test_read_lines_numbers_every_line_of_the_file(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    path.write_bytes(b'{"a": 1}\n\n  \n{"b": 2}\r\n')
    assert list(read_lines([str(path)])) == [(f"{path}:1", b'{"a": 1}'), (f"{path}:4", b'{"b": 2}')]
    assert list(read_lines(["-"], stdin=[b"\n", b"x\n"])) == [("stdin:2", b"x")]


def test_a_byte_order_mark_starting_a_file_is_not_part_of_its_first_line(tmp_path: Path) -> None:
    # Windows editors save UTF-8 with a BOM: the first event must not become a dead letter.
    # Only the file's start is one; elsewhere the bytes stay for the decoder to judge.
    bom = b"\xef\xbb\xbf"
    path = tmp_path / "e.jsonl"
    path.write_bytes(bom + b'{"a": 1}\r\n' + bom + b'{"b": 2}\r\n')
    assert list(read_lines([str(path)])) == [
        (f"{path}:1", b'{"a": 1}'),
        (f"{path}:2", bom + b'{"b": 2}'),
    ]
    assert list(read_lines(["-"], stdin=[bom + b"x\n"])) == [("stdin:1", b"x")]


# -- sums at the maxima ----------------------------------------------------------------------

MAX_TOKENS = 1_000_000_000  # docs/bounds.md: each token count
MAX_REPORTED = Decimal(1_000_000)  # docs/bounds.md: reported_cost_usd
# An override's rates (12 fractional digits, so pricing rounds nothing) up to the catalog's
# highest: the expected costs below are plain Decimal arithmetic, not the pricer's.
RATES = {
    "input": Decimal("599.999999999999"),
    "output": Decimal("600"),
    "cache_read": Decimal("59.999999999999"),
    "cache_write": Decimal("450.000000000001"),
}
PRICES = f"""
[[prices.model]]
provider = "acme"
model = "max-1"
input_per_mtok = "{RATES["input"]}"
output_per_mtok = "{RATES["output"]}"
cache_read_per_mtok = "{RATES["cache_read"]}"
cache_write_per_mtok = "{RATES["cache_write"]}"
"""
# The bundled catalog's dearest model (docs/bounds.md): $150 in, $600 out per million.
O1_PRO_MAX_COST = Decimal(MAX_TOKENS) * (150 + 600) / 1_000_000


def _at_the_maxima(i: int) -> tuple[dict[str, Any], Decimal]:
    """Event ``i`` with every token count at its bound, and the cost it must have."""
    mtok = Decimal(MAX_TOKENS) / 1_000_000
    ts = NOW - timedelta(minutes=3000 - i)
    team = ("alpha", "beta", "gamma", "delta")[i % 4]
    if i % 3 == 0:
        event = _event(f"max-{i}", ts, provider="acme", model="max-1", team=team)
        event.update(input_tokens=MAX_TOKENS, output_tokens=MAX_TOKENS)
        event["reported_cost_usd"] = str(MAX_REPORTED)
        return event, mtok * (RATES["input"] + RATES["output"])
    if i % 3 == 1:
        # input_tokens includes the cached parts: all of it cached, none billed as input.
        event = _event(f"max-{i}", ts, provider="acme", model="max-1", team=team)
        event.update(input_tokens=MAX_TOKENS, output_tokens=MAX_TOKENS)
        event.update(cache_read_tokens=400_000_000, cache_write_tokens=600_000_000)
        event["reported_cost_usd"] = "999999.999999999999999999"  # 18 places
        cached = Decimal("0.4") * RATES["cache_read"] + Decimal("0.6") * RATES["cache_write"]
        return event, mtok * (cached + RATES["output"])
    event = _event(f"max-{i}", ts, model="o1-pro", team=team)
    event.update(input_tokens=MAX_TOKENS, output_tokens=MAX_TOKENS)
    return event, O1_PRO_MAX_COST


def _json_out(capsys: pytest.CaptureFixture[str], argv: list[str]) -> list[dict[str, Any]]:
    assert main(argv) == 0
    rows: list[dict[str, Any]] = json.loads(capsys.readouterr().out)
    return rows


def test_thousands_of_facts_at_the_maxima_sum_exactly_in_every_cost_query(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 12: 16,000 events of 2^63-1 tokens made SUM(cost_usd) overflow and every cost
    query fail. At the documented maxima the sums stay exact (DECIMAL(38,18))."""
    made = [_at_the_maxima(i) for i in range(3000)]
    events = _write(tmp_path / "max.jsonl", [e for e, _ in made])
    config = tmp_path / "prices.toml"
    config.write_text(PRICES)
    work = tmp_path / "work"
    assert main(["ingest", str(events), "--workdir", str(work), "--config", str(config)]) == 0
    assert "read 3,000 = landed 3,000 + duplicates 0 + dead-lettered 0" in capsys.readouterr().out

    per_team: dict[str, Decimal] = {}
    for event, cost in made:
        per_team[event["team"]] = per_team.get(event["team"], Decimal(0)) + cost
    total = sum(per_team.values(), Decimal(0))
    reported = 1000 * MAX_REPORTED + 1000 * Decimal("999999.999999999999999999")
    base = ["--workdir", str(work), "--config", str(config), "--format", "json"]
    sums = _json_out(
        capsys,
        [
            "sql",
            "SELECT sum(cost_usd) AS cost, sum(reported_cost_usd) AS reported, "
            "sum(input_tokens + output_tokens) AS tokens, count(*) FILTER (WHERE priced) AS priced "
            "FROM usage_facts",
            *base,
        ],
    )
    assert sums == [
        {
            "cost": str(total.quantize(Decimal(10) ** -18)),
            "reported": str(reported.quantize(Decimal(10) ** -18)),
            "tokens": 3000 * 2 * MAX_TOKENS,
            "priced": 3000,
        }
    ]
    by_team = _json_out(capsys, ["query", "cost_by_team", *base])
    assert {r["team"]: Decimal(r["cost_usd"]) for r in by_team} == per_team
    assert {r["team"]: r["calls"] for r in by_team} == dict.fromkeys(per_team, 750)
    assert sum(Decimal(str(r["share_pct"])) for r in by_team) == pytest.approx(100, abs=0.05)


def test_summary_counts_reasons_that_differ_only_in_their_numbers_as_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A producer whose clock is an hour ahead: 35 records, each with its own ts in the
    # reason. The summary said "1 x ts: <ts1> ...", "1 x ts: <ts2> ...", "1 x ts: <ts3> ..."
    # and "32 x 32 other reasons": one cause, read as 35.
    ahead = [_event(f"ahead-{i}", NOW + timedelta(hours=1, minutes=i)) for i in range(35)]
    lines: list[dict[str, Any] | str] = [
        *ahead,
        _event("neg", NOW, input_tokens=-1),
        _event("fine", NOW),
    ]
    out = _ingest(capsys, tmp_path / "work", _write(tmp_path / "a.jsonl", lines))
    assert "read 37 = landed 1 + duplicates 0 + dead-lettered 36" in out
    shown = [line.strip() for line in out.splitlines() if line.startswith("  ")]
    assert len(shown) == 2, shown
    assert shown[0].startswith("35 x e.g. ts: ")
    assert "max_future_skew_s" in shown[0]
    assert shown[1] == "1 x input_tokens: Input should be greater than or equal to 0"


def test_summary_counts_the_dead_letters_past_the_three_reasons_it_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Five different reasons: three are named, the other two are still counted, so the
    # lines under "read ... = ... + dead-lettered 5" add up to 5.
    lines: list[dict[str, Any] | str] = [
        _event("neg", NOW, input_tokens=-1),
        _event("str", NOW, input_tokens="1000"),
        {k: v for k, v in _event("no-ts", NOW).items() if k != "ts"},
        _event("future", NOW + timedelta(hours=1)),
        "{nope",
        _event("fine", NOW),
    ]
    out = _ingest(capsys, tmp_path / "work", _write(tmp_path / "a.jsonl", lines))
    assert "read 6 = landed 1 + duplicates 0 + dead-lettered 5" in out
    shown = [line.strip() for line in out.splitlines() if line.startswith("  ")]
    assert len(shown) == 4
    assert shown[-1] == "2 more, for 2 other reasons (the query below lists every dead letter)"
    # The counts add up to the dead letters (it read "2 x 2 other reasons": as if 4).
    assert sum(int(line.split(" ", 1)[0]) for line in shown) == 5


def test_a_backfill_out_of_ts_order_says_how_many_events_detection_could_not_count(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A minute's window closes `allowed_lateness_s` after its end: a burst written after a
    # call hours newer lands but raises nothing, and ingest said nothing of it.
    burst = _burst("k-late", start=NOW - timedelta(hours=3))
    newer = _event("newer", NOW - timedelta(minutes=5))
    out = _ingest(capsys, tmp_path / "w", _write(tmp_path / "e.jsonl", [newer, *burst]))
    assert (
        "late for detection: 200 of the landed events came after their minute's window had "
        "closed ([detection] allowed_lateness_s, 3,600 s, behind a newer event)"
    ) in out
    assert _sql(tmp_path / "w", "SELECT count(*) FROM usage_facts") == [(201,)]
    assert _sql(tmp_path / "w", "SELECT count(*) FROM alerts WHERE kind = 'runaway_rate'") == [(0,)]
    # Sorted by ts, the same events are judged: the burst alerts and nothing is late.
    out = _ingest(capsys, tmp_path / "s", _write(tmp_path / "s.jsonl", [*burst, newer]))
    assert "late for detection" not in out
    assert ("runaway_rate", "api_key:k-late") in _sql(
        tmp_path / "s", "SELECT kind, scope FROM alerts"
    )


def test_a_cost_written_with_a_positive_exponent_lands_as_the_number_it_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Decimal('0E+39') passed the model, and Arrow's decimals cannot hold its exponent:
    # the whole batch failed, at every re-run (ingest, HTTP, OTLP, a Kafka partition).
    costs: list[object] = ["0E+39", "0E+25", "1E+5", "2.5E+2", 0e39]
    lines: list[dict[str, Any] | str] = [_event("g0", NOW)]
    for i, cost in enumerate(costs):
        lines.append(_event(f"c{i}", NOW, reported_cost_usd=cost))
        # With a map the line is read by the model alone, not the columnar reader.
        lines.append(_event(f"t{i}", NOW, reported_cost_usd=cost, tags={"a": "b"}))
    work = tmp_path / "work"
    out = _ingest(capsys, work, _write(tmp_path / "e.jsonl", lines))
    assert "read 11 = landed 11 + duplicates 0 + dead-lettered 0" in out
    rows = dict(_sql(work, "SELECT event_id, reported_cost_usd FROM usage_facts"))
    expected = [Decimal(0), Decimal(0), Decimal(100000), Decimal(250), Decimal(0)]
    for i, cost in enumerate(expected):
        assert rows[f"c{i}"] == cost and rows[f"t{i}"] == cost
    assert rows["g0"] is None


def test_unknown_keys_are_named_printably_and_only_the_first_few(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A key holding ESC [2J cleared the terminal ingest printed its reason to (and could
    # show a forged summary line); 90,000 unknown keys (a line under 1 MB) made a 4 MB reason, one close-match
    # search per key.
    sneaky = "\x1b[2J\x1b[Hread 1 = landed 1\x1b[8m"
    line = {**_event("keys-0", NOW), sneaky: 1, **{f"k{i}": 1 for i in range(70_000)}}
    work = tmp_path / "work"
    out = _ingest(capsys, work, _write(tmp_path / "e.jsonl", [line]))
    assert "\x1b" not in out
    assert "dead-lettered 1" in out and "\\x1b[2J" in out
    ((error,),) = _sql(work, "SELECT error FROM dead_letters")
    assert "\x1b" not in error and len(error) < 2_000
    assert error.startswith("\\x1b[2J\\x1b[Hread 1 = landed 1\\x1b[8m: unknown field")
    assert error.endswith("; and 69,991 more")
