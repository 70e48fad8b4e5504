"""stream/batch.py: the columnar decoder accepts and rejects exactly what the model does
(plus the receipt bound on ts), with the model's values and reasons; every line is
accounted for; nothing raises."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from spendstream.producers.event import UsageEvent, describe_validation_error
from spendstream.stream import batch as batch_module
from spendstream.stream.batch import (
    CONFLICT,
    DIGEST,
    DUPLICATE,
    EVENTS,
    MAX_RECORD_BYTES,
    MAX_STORED_RAW_CHARS,
    NEW,
    ROW,
    conflict_error,
    decode_lines,
    events_from_table,
    judge_lines,
)
from spendstream.stream.json_read import read_json_lines
from spendstream.table_schemas import EVENT_FIELDS, event_columns
from tests.stream.event_strategies import (
    NOW,
    SKEW_S,
    arbitrary_lines,
    batches,
    edge_batches,
    near_valid_lines,
    valid_lines,
)

EVENT_NAMES = [name for name, _ in EVENT_FIELDS]


def _reference(raw: bytes) -> UsageEvent | str:
    """What the model says, then the receipt bound: the decoder must agree exactly."""
    try:
        event = UsageEvent.model_validate_json(raw)
    except ValidationError as err:
        return describe_validation_error(err)
    if event.ts > NOW + timedelta(seconds=SKEW_S):
        return (
            f"ts: {event.ts.isoformat()} is more than [detection] max_future_skew_s ({SKEW_S} s) "
            "after the pipeline received the record; the producer's clock is ahead, or ts is "
            "not when the call finished"
        )
    return event


def _position(i: int) -> str:
    return f"f.jsonl:{i + 1}"


def _assert_agrees_with_the_model(lines: list[bytes]) -> None:
    decoded = decode_lines(lines, NOW, _position, SKEW_S)
    verdicts = [_reference(raw) for raw in lines]
    accepted = [i for i, v in enumerate(verdicts) if isinstance(v, UsageEvent)]
    table = decoded.events
    assert table.schema == EVENTS
    assert table.column(ROW).to_pylist() == accepted
    assert decoded.dead_rows == [i for i, v in enumerate(verdicts) if isinstance(v, str)]
    for row, dead in zip(decoded.dead_rows, decoded.dead_letters, strict=True):
        assert dead.error == verdicts[row]
        assert dead.source == _position(row) and dead.received_at == NOW
    # Identical values, as Arrow holds them: ts in UTC microseconds, reported_cost_usd as
    # the exact DECIMAL(38, 18), tags as a map, defaults filled in.
    expected = pa.table(event_columns([verdicts[i] for i in accepted]))  # type: ignore[misc]
    assert table.select(EVENT_NAMES).equals(expected)
    # ... and as objects (the seam to pricing and detection).
    for event, i in zip(events_from_table(table), accepted, strict=True):
        ref = verdicts[i]
        assert isinstance(ref, UsageEvent)
        # Empty tags are no tags: the warehouse (a MAP column) stores both as null.
        assert event == ref.model_copy(update={"tags": ref.tags or None})
        assert event.ts.utcoffset() == timedelta(0)
        assert event.reported_cost_usd == ref.reported_cost_usd


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches(near_valid_lines()))
def test_near_valid_events_are_judged_exactly_as_the_model_judges_them(lines: list[bytes]) -> None:
    _assert_agrees_with_the_model(lines)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edge_batches())
def test_lines_of_one_producer_at_their_bounds_are_judged_as_the_model_judges_them(
    lines: list[bytes],
) -> None:
    _assert_agrees_with_the_model(lines)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(valid_lines(), min_size=1, max_size=30))
def test_valid_events_in_every_form_decode_to_the_models_values(lines: list[bytes]) -> None:
    _assert_agrees_with_the_model(lines)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches(arbitrary_lines()))
def test_arbitrary_input_never_raises_and_every_line_is_accounted_for(lines: list[bytes]) -> None:
    decoded = decode_lines(lines, NOW, _position, SKEW_S)
    rows = decoded.events.column(ROW).to_pylist()
    assert sorted(rows + decoded.dead_rows) == list(range(len(lines)))
    assert all(d.error.strip() for d in decoded.dead_letters)
    _assert_agrees_with_the_model(lines)


def _event(**over: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": "e-1",
        "ts": "2026-06-01T11:00:00.5Z",
        "provider": "openai",
        "model": "gpt-5-mini",
        "input_tokens": 100,
        "output_tokens": 20,
    }
    event.update(over)
    return event


def _line(**over: Any) -> bytes:
    return json.dumps(_event(**over)).encode()


def test_one_bad_line_among_good_ones_is_one_dead_letter_and_the_rest_decode() -> None:
    lines = [_line(event_id=f"e{i}") for i in range(50)]
    lines[17] = b'{"event_id": "e17", "ts": '
    lines[30] = _line(event_id="e30", input_tokens="12")
    decoded = decode_lines(lines, NOW, _position, SKEW_S)
    assert decoded.events.num_rows == 48
    assert decoded.dead_rows == [17, 30]
    assert [d.source for d in decoded.dead_letters] == ["f.jsonl:18", "f.jsonl:31"]
    assert decoded.dead_letters[1].error == "input_tokens: Input should be a valid integer"


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        ({"ts": "9999-12-31T23:59:59Z"}, "ts: 9999-12-31T23:59:59+00:00 is more than"),
        ({"ts": "0001-01-01T00:00:00Z"}, "ts: 0001-01-01T00:00:00+00:00 is before 2015"),
        ({"ts": "0001-01-01T00:00:00+01:00"}, "ts: 0001-01-01T00:00:00+01:00 is out of range"),
        ({"reported_cost_usd": "1e400"}, "reported_cost_usd: Input should be less than"),
        ({"input_tokens": 2**63 - 1}, "input_tokens: Input should be less than or equal"),
        ({"ts": "2026-06-01T14:00:00Z"}, "ts: 2026-06-01T14:00:00+00:00 is more than"),
    ],
)
def test_issue_12_poison_values_are_dead_letters_with_a_reason(
    over: dict[str, Any], reason: str
) -> None:
    decoded = decode_lines([_line(), _line(event_id="bad", **over)], NOW, _position, SKEW_S)
    assert decoded.events.column("event_id").to_pylist() == ["e-1"]
    (dead,) = decoded.dead_letters
    assert dead.error.startswith(reason) and dead.source == "f.jsonl:2"


@pytest.mark.parametrize("ts", [1762000000, 1762000000000, 1762000000.5, "1762000000", " 1.7e9 "])
def test_a_time_written_as_a_number_is_a_dead_letter_on_both_paths(ts: object) -> None:
    # pydantic read these as unix seconds or milliseconds (guessing by size), and they
    # landed, where the contract, the JSON Schema's pattern and bounds.md say RFC 3339 text.
    lines = [_line(), _line(event_id="bad", ts=ts)]
    _assert_agrees_with_the_model(lines)
    (dead,) = decode_lines(lines, NOW, _position, SKEW_S).dead_letters
    assert dead.error.startswith(f"ts: {str(ts).strip()} is a number, not an RFC 3339 time")
    assert "unix time is not taken" in dead.error


@pytest.mark.parametrize(
    ("cost", "taken"),
    [
        (" 1.5 ", False),  # Python's Decimal read these; the JSON Schema and Arrow do not
        ("1_000", False),
        ("１.５", False),
        ("1,000", False),
        ("1.5 USD", False),
        ("+1.5", True),
        ("1e3", True),
        (".5", True),
        ("5.", True),
        ("-0", True),  # zero
        ("-1", False),  # refused by the bound, in its own words
    ],
)
def test_a_cost_string_is_taken_only_as_json_writes_a_decimal_on_both_paths(
    cost: str, taken: bool
) -> None:
    lines = [_line(), _line(event_id="c", reported_cost_usd=cost)]
    _assert_agrees_with_the_model(lines)
    decoded = decode_lines(lines, NOW, _position, SKEW_S)
    assert ("c" in decoded.events.column("event_id").to_pylist()) is taken
    if not taken and cost != "-1":
        (dead,) = decoded.dead_letters
        assert "is not a decimal number as JSON writes one" in dead.error


@pytest.mark.parametrize(
    "ts", [Decimal("1762000000"), np.int64(1762000000), b"1762000000", 1762000000.5]
)
def test_a_time_given_to_the_python_api_as_any_number_is_refused(ts: object) -> None:
    # A Decimal, a numpy integer or bytes of digits were still read as unix time.
    with pytest.raises(ValidationError, match="is a number, not an RFC 3339 time"):
        UsageEvent.model_validate(
            {"event_id": "e", "ts": ts, "provider": "openai", "model": "m",
             "input_tokens": 1, "output_tokens": 1}
        )  # fmt: skip


def test_receipt_bound_is_inclusive_to_the_microsecond() -> None:
    edge = NOW + timedelta(seconds=SKEW_S)
    at = _line(event_id="at", ts=edge.isoformat())
    past = _line(event_id="past", ts=(edge + timedelta(microseconds=1)).isoformat())
    decoded = decode_lines([at, past], NOW, _position, SKEW_S)
    assert decoded.events.column("event_id").to_pylist() == ["at"]
    assert decoded.dead_rows == [1]
    wider = decode_lines([past], NOW, _position, SKEW_S + 1)
    assert wider.events.num_rows == 1


def test_size_limit_is_checked_before_parsing() -> None:
    huge = b'{"event_id": "' + b"x" * MAX_RECORD_BYTES + b'"}'
    decoded = decode_lines([huge, _line()], NOW, _position, SKEW_S)
    assert decoded.events.num_rows == 1
    (dead,) = decoded.dead_letters
    assert (
        dead.error
        == f"record is {len(huge)} bytes; a usage event may be at most {MAX_RECORD_BYTES} bytes"
    )
    assert dead.raw.endswith(f"[truncated, {len(huge)} chars in all]")


def test_a_record_of_exactly_the_size_limit_is_decoded() -> None:
    # The limit is "at most" MAX_RECORD_BYTES: a record that size (JSON whitespace makes
    # one) is an event like any other; one byte more is a dead letter.
    line = _line()
    at = line[:-1] + b" " * (MAX_RECORD_BYTES - len(line)) + b"}"
    over = line[:-1] + b" " * (MAX_RECORD_BYTES + 1 - len(line)) + b"}"
    assert (len(at), len(over)) == (MAX_RECORD_BYTES, MAX_RECORD_BYTES + 1)
    decoded = decode_lines([at, over], NOW, _position, SKEW_S)
    assert decoded.events.column(ROW).to_pylist() == [0]
    assert decoded.dead_rows == [1]
    assert decoded.dead_letters[0].error.startswith(f"record is {MAX_RECORD_BYTES + 1} bytes")


def test_a_dead_letter_keeps_a_line_of_up_to_the_stored_limit_whole() -> None:
    whole = b"x" * MAX_STORED_RAW_CHARS
    cut = b"x" * (MAX_STORED_RAW_CHARS + 1)
    kept, truncated = decode_lines([whole, cut], NOW, _position, SKEW_S).dead_letters
    assert kept.raw == whole.decode()
    assert truncated.raw == (
        "x" * MAX_STORED_RAW_CHARS + f"... [truncated, {MAX_STORED_RAW_CHARS + 1} chars in all]"
    )


def _spy_on_the_model(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The lines the decoder hands to pydantic, in order (judged as before)."""
    judged: list[bytes] = []
    real = batch_module._judge

    def spy(raw: bytes, latest_us: int, skew_s: int) -> UsageEvent | str:
        judged.append(raw)
        return real(raw, latest_us, skew_s)

    monkeypatch.setattr(batch_module, "_judge", spy)
    return judged


def _spy_on_the_screening(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The lines the slower line-by-line screening (``_plain``) looks at, in order."""
    screened: list[bytes] = []
    real_plain = batch_module._plain
    monkeypatch.setattr(batch_module, "_plain", lambda raw: screened.append(raw) or real_plain(raw))
    return screened


def test_rows_the_fast_path_cannot_vouch_for_are_judged_by_the_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Escapes, tags, explicit nulls for defaulted fields and odd timestamp forms all go to
    # pydantic; plain rows never do.
    judged = _spy_on_the_model(monkeypatch)
    plain = [_line(event_id=f"p{i}", team="search", reported_cost_usd="0.25") for i in range(5)]
    odd = [
        _line(event_id="esc", team="s\u00e9arch").replace(b"\xc3\xa9", b"\\u00e9"),
        _line(event_id="tags", tags={"plan": "pro"}),
        _line(event_id="null", status=None),
        _line(event_id="lower", ts="2026-06-01t11:00:00z"),
        _line(event_id="float-cost", reported_cost_usd=1.2345678901234567e-05),  # 21 places
    ]
    decoded = decode_lines(plain + odd, NOW, _position, SKEW_S)
    assert sorted(judged) == sorted(odd)
    assert decoded.events.column("event_id").to_pylist() == [
        *(f"p{i}" for i in range(5)),
        "esc",
        "tags",
        "lower",
        "float-cost",
    ]
    assert (
        decoded.dead_letters[0].error
        == "status: Input should be 'ok', 'error', 'timeout' or 'refused'"
    )


def test_a_key_the_reader_does_not_know_sends_that_line_alone_to_the_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A map's key or a misspelt one fails the batch's read: those lines go to pydantic, and
    # the rest of the batch is still read by the fast path.
    judged = _spy_on_the_model(monkeypatch)
    plain = [_line(event_id=f"p{i}") for i in range(6)]
    tools = _line(event_id="tools", tool_requests={"web_search": 2})
    typo = _line(event_id="typo", modle="gpt-5")
    no_tags = _line(event_id="no-tags", tags=None)
    lines = [*plain[:3], tools, typo, no_tags, *plain[3:]]
    decoded = decode_lines(lines, NOW, _position, SKEW_S)
    assert judged == [tools, typo, no_tags]
    assert decoded.events.column("event_id").to_pylist() == [
        "p0", "p1", "p2", "tools", "no-tags", "p3", "p4", "p5",
    ]  # fmt: skip
    assert decoded.events.column("tool_requests").to_pylist()[3] == [("web_search", 2)]
    assert decoded.dead_rows == [4] and "modle" in decoded.dead_letters[0].error
    _assert_agrees_with_the_model(lines)


def test_a_batch_refused_for_its_maps_alone_is_read_again_without_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Lines with a map's key are set aside and the rest read again at once: the slower
    # line-by-line screening is for reads that still fail.
    judged = _spy_on_the_model(monkeypatch)
    screened = _spy_on_the_screening(monkeypatch)
    tagged = [_line(event_id=f"t{i}", tags={"plan": "pro"}) for i in range(2)]
    lines = [_line(event_id="p0"), tagged[0], _line(event_id="p1"), tagged[1]]
    decoded = decode_lines(lines, NOW, _position, SKEW_S)
    assert judged == tagged and screened == []
    assert decoded.events.column("event_id").to_pylist() == ["p0", "t0", "p1", "t1"]
    # A line the reader refuses for another reason still gets the line-by-line screening.
    typo = _line(event_id="typo", modle="x")
    decode_lines([*lines, typo], NOW, _position, SKEW_S)
    assert typo in screened


def test_a_pretty_printed_record_goes_to_the_model_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A Kafka value written with indent= holds newlines: the reader would split it, fail the
    # batch's read, and send every line to the line-by-line screening. It is set aside first.
    judged = _spy_on_the_model(monkeypatch)
    screened = _spy_on_the_screening(monkeypatch)
    pretty = json.dumps(json.loads(_line(event_id="pretty")), indent=2).encode()
    lines = [_line(event_id="p0"), pretty, _line(event_id="p1")]
    decoded = decode_lines(lines, NOW, _position, SKEW_S)
    assert judged == [pretty] and screened == []
    assert decoded.events.column("event_id").to_pylist() == ["p0", "pretty", "p1"]


def test_a_record_broken_by_a_single_newline_goes_to_the_model_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # One newline inside a record is enough for the reader to split it: the batch's newline
    # count is then exactly one per line, as if each line were whole, and the line must
    # still be set aside before the read (not found by screening every line after it fails).
    judged = _spy_on_the_model(monkeypatch)
    screened = _spy_on_the_screening(monkeypatch)
    broken = _line(event_id="broken").replace(b', "ts"', b',\n"ts"')
    assert broken.count(b"\n") == 1
    lines = [_line(event_id="p0"), broken, _line(event_id="p1")]
    decoded = decode_lines(lines, NOW, _position, SKEW_S)
    assert judged == [broken] and screened == []
    assert decoded.events.column("event_id").to_pylist() == ["p0", "broken", "p1"]


def test_a_record_cut_short_goes_to_the_model_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    # A line that opens an object but does not close it (a record cut off in transit) is
    # not a fast-path candidate: it would fail the batch's read and send every line to the
    # slower line-by-line screening.
    judged = _spy_on_the_model(monkeypatch)
    screened = _spy_on_the_screening(monkeypatch)
    cut = _line(event_id="cut")[:-12]
    lines = [_line(event_id="p0"), cut, _line(event_id="p1")]
    decoded = decode_lines(lines, NOW, _position, SKEW_S)
    assert judged == [cut] and screened == []
    assert decoded.events.column("event_id").to_pylist() == ["p0", "p1"]
    assert decoded.dead_rows == [1]


def test_lines_with_a_key_each_of_their_own_are_refused_by_the_reader_not_inferred() -> None:
    # The reader is told to refuse unknown keys, never to infer them as columns: inferring
    # costs lines x distinct keys (a batch of 20k lines with a key each took 24 s).
    lines = [_line(event_id=f"k{i}", **{f"key_{i}": 1}) for i in range(50)]
    assert read_json_lines(len(lines), b"\n".join(lines)) is None
    decoded = decode_lines([*lines, _line(event_id="plain")], NOW, _position, SKEW_S)
    assert decoded.events.column("event_id").to_pylist() == ["plain"]
    assert decoded.dead_rows == list(range(50))


def test_explicit_null_of_an_optional_field_stays_on_the_fast_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    judged: list[bytes] = []
    monkeypatch.setattr(batch_module, "_judge", lambda raw, *a: judged.append(raw) or "x")
    decoded = decode_lines([_line(team=None, turn=None, reported_cost_usd=None)], NOW, _position)
    assert judged == [] and decoded.events.num_rows == 1


def test_a_line_the_reader_refuses_is_found_without_failing_its_neighbours() -> None:
    # A duplicate key passes the per-line screen but fails pyarrow's reader: halving finds it.
    good = [_line(event_id=f"g{i}") for i in range(40)]
    twice = _line(event_id="twice")[:-1] + b', "input_tokens": 7}'
    decoded = decode_lines([*good[:25], twice, *good[25:]], NOW, _position, SKEW_S)
    ids = decoded.events.column("event_id").to_pylist()
    assert ids == [*(f"g{i}" for i in range(25)), "twice", *(f"g{i}" for i in range(25, 40))]
    assert decoded.events.column("input_tokens").to_pylist()[25] == 7  # the model's: the last


def test_empty_batch_gives_an_empty_table() -> None:
    decoded = decode_lines([], NOW, _position)
    assert decoded.events.num_rows == 0 and decoded.events.schema == EVENTS
    assert decoded.dead_letters == []


def test_digest_column_tells_content_apart_and_ignores_form() -> None:
    same = [
        _line(),
        json.dumps(_event(), separators=(",", ":")).encode(),
        _line(ts="2026-06-01T12:00:00.500+01:00", cache_read_tokens=0, status="ok"),
        _line(tags={}),  # no tags is no tags
    ]
    other = [_line(input_tokens=101), _line(ts="2026-06-01T11:00:00.500001Z"), _line(team="x")]
    decoded = decode_lines(same + other, NOW, _position, SKEW_S)
    digests = decoded.events.column(DIGEST).to_pylist()
    assert len(set(digests[:4])) == 1
    assert len(set(digests)) == 4


def test_reported_cost_keeps_its_exact_decimal() -> None:
    decoded = decode_lines(
        [_line(reported_cost_usd="0.000000000000000001"), _line(reported_cost_usd=999999.5)],
        NOW,
        _position,
    )
    assert decoded.events.column("reported_cost_usd").to_pylist() == [
        Decimal("1E-18"),
        Decimal("999999.5"),
    ]
    assert decoded.events.column("ts").to_pylist()[0] == datetime(
        2026, 6, 1, 11, 0, 0, 500000, tzinfo=UTC
    )


def test_a_cost_written_as_a_long_json_number_decodes_as_the_model_reads_it() -> None:
    # The model reads a JSON number through a float (a string exactly); the Arrow reader
    # is exact for both. A number with more digits than a float keeps must land with the
    # model's value, or one event would cost differently by the path that decoded it.
    long = b"0.12345678901234567"
    line = _line()[:-1] + b', "reported_cost_usd": ' + long + b"}"
    decoded = decode_lines([line, _line(event_id="e-2")], NOW, _position, SKEW_S)
    assert decoded.events.column("reported_cost_usd").to_pylist() == [
        Decimal(repr(float(long))),
        None,
    ]
    assert Decimal(repr(float(long))) != Decimal(long.decode())
    _assert_agrees_with_the_model([line, _line(event_id="e-2")])


@pytest.mark.parametrize(
    ("whole", "parts", "last"),
    [
        (
            {"input_tokens": 100},
            {"cache_read_tokens": 60, "cache_write_tokens": 40},
            "cache_write_tokens",
        ),
        ({"cache_write_tokens": 40}, {"cache_write_1h_tokens": 40}, "cache_write_1h_tokens"),
        (
            {"output_tokens": 20},
            {"output_audio_tokens": 10, "output_image_tokens": 10},
            "output_image_tokens",
        ),
    ],
)
def test_parts_may_fill_their_whole_but_not_exceed_it_by_one_token(
    whole: dict[str, int], parts: dict[str, int], last: str
) -> None:
    # The model's token invariants (sum of the parts <= the whole), at the boundary: the
    # columnar checks must refuse the one token over, as the model does.
    at = _line(event_id="at", **whole, **parts)
    over = _line(event_id="over", **whole, **{**parts, last: parts[last] + 1})
    decoded = decode_lines([at, over, _line()], NOW, _position, SKEW_S)
    assert decoded.events.column("event_id").to_pylist() == ["at", "e-1"]
    assert decoded.dead_rows == [1]
    _assert_agrees_with_the_model([at, over, _line()])


@pytest.mark.parametrize(
    "name", ["event_id", "ts", "provider", "model", "input_tokens", "output_tokens"]
)
def test_an_explicit_null_for_a_required_field_is_a_dead_letter(name: str) -> None:
    # The reader reads the null (the key is known); the columnar checks must refuse the row
    # as the model does, not pass a null through every other check (which skip nulls).
    null = json.dumps({**_event(event_id="null"), name: None}).encode()
    lines = [_line(event_id="a"), null, _line(event_id="b")]
    decoded = decode_lines(lines, NOW, _position, SKEW_S)
    assert decoded.events.column("event_id").to_pylist() == ["a", "b"]
    assert decoded.dead_rows == [1]
    assert decoded.dead_letters[0].error.startswith(name)
    _assert_agrees_with_the_model(lines)


def test_token_rules_still_hold_in_a_batch_with_a_null_token_count() -> None:
    # A null input_tokens (its line refused) makes the batch's token sums take Arrow's
    # null-aware kernels instead of numpy's: the other lines' parts must still be checked.
    null = _line(event_id="null", input_tokens=None)
    over = _line(event_id="over", cache_read_tokens=101)
    lines = [null, over, _line()]
    decoded = decode_lines(lines, NOW, _position, SKEW_S)
    assert decoded.events.column("event_id").to_pylist() == ["e-1"]
    assert decoded.dead_rows == [0, 1]
    _assert_agrees_with_the_model(lines)


_BYTES = st.binary(max_size=40).map(lambda b: b.replace(b"\n", b""))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(_BYTES, st.sampled_from([b"null", b'"tags"', b"nul", b'"', b"\\", b""])).flatmap(
            lambda head: _BYTES.map(lambda tail: head + tail)
        ),
        max_size=12,
    ),
    st.sampled_from([b"null", b'"tags"', b'"tool_requests"', b"\\", b'"', b"ll", b"a"]),
)
def test_rows_with_finds_exactly_the_lines_holding_the_needle(
    raws: list[bytes], needle: bytes
) -> None:
    # The oracle: Python's own substring test, line by line (matches at a line's start and
    # end, overlapping candidates, quotes around the anchor, empty lines).
    lines = batch_module._Lines(raws)
    assert lines.rows_with(needle).tolist() == [needle in raw for raw in raws]


def test_judge_lines_keeps_new_events_counts_replays_and_dead_letters_conflicts() -> None:
    # A conflicting duplicate is a dead letter, not a duplicate: the counts of a batch
    # (landed + duplicates + dead-lettered) must add up to the lines read.
    verdicts = {"new": NEW, "replay": DUPLICATE, "clash": CONFLICT, "clash-2": CONFLICT}

    def classify(ids: pa.ChunkedArray, ts: pa.ChunkedArray, digests: pa.ChunkedArray) -> Any:
        return np.array([verdicts[i] for i in ids.to_pylist()], dtype=np.int8)

    lines = [
        _line(event_id="clash"),
        _line(event_id="new"),
        b"not json",
        _line(event_id="replay"),
        _line(event_id="clash-2"),
    ]
    judged = judge_lines(lines, NOW, _position, classify, SKEW_S)
    assert judged.new.column("event_id").to_pylist() == ["new"]
    assert judged.duplicates == 1
    assert [d.source for d in judged.dead_letters] == ["f.jsonl:3", "f.jsonl:1", "f.jsonl:5"]
    assert judged.dead_letters[1].error == conflict_error("clash")
    assert judged.dead_letters[2].raw == lines[4].decode()
    assert judged.new.num_rows + judged.duplicates + len(judged.dead_letters) == len(lines)
