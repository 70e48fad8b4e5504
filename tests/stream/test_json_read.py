"""The batch reader told the keys recent batches used: the same table as told every key."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from spendstream.stream import batch
from spendstream.stream.json_read import READ_SCHEMA, KeyHint, read_json_lines


def _line(**fields: object) -> bytes:
    base: dict[str, object] = {
        "event_id": "e",
        "ts": "2026-11-28T00:00:00Z",
        "provider": "openai",
        "model": "gpt-5",
        "input_tokens": 10,
        "output_tokens": 2,
    }
    base.update(fields)
    return orjson.dumps({k: v for k, v in base.items() if v is not ...})


def _joined(lines: list[bytes]) -> bytes:
    return b"\n".join(lines)


def _read_all(lines: list[bytes]) -> pa.Table | None:
    return read_json_lines(len(lines), _joined(lines))


def _trained(lines: list[bytes]) -> KeyHint:
    hint = KeyHint()
    assert read_json_lines(len(lines), _joined(lines), hint) is not None
    return hint


def test_a_hint_holds_the_keys_with_values_and_those_of_the_first_line() -> None:
    hint = _trained([_line(team=None, turn=3), _line(region="eu")])
    # team: written (as null) by the first line; turn, region: a value somewhere.
    assert hint.keys == {
        "event_id", "ts", "provider", "model", "input_tokens", "output_tokens",
        "team", "turn", "region",
    }  # fmt: skip


def test_a_narrow_read_gives_every_column_of_the_full_read() -> None:
    hint = _trained([_line()])
    assert hint.keys is not None and len(hint.keys) < len(READ_SCHEMA)
    lines = [_line(event_id=f"e{i}", input_tokens=i) for i in range(5)]
    got = read_json_lines(len(lines), _joined(lines), hint)
    assert got is not None and got.schema.equals(READ_SCHEMA)
    assert got.equals(_read_all(lines))
    assert got.column("region").null_count == 5  # absent: null, as the full read has it


def test_a_key_outside_the_hint_is_read_and_learnt() -> None:
    hint = _trained([_line()])
    lines = [_line(), _line(session_id="s1", latency_ms=1.5), _line()]
    got = read_json_lines(len(lines), _joined(lines), hint)
    assert got is not None and got.equals(_read_all(lines))
    assert got.column("session_id").to_pylist() == [None, "s1", None]
    assert hint.keys is not None and {"session_id", "latency_ms"} <= hint.keys


def test_a_key_only_ever_null_past_the_first_line_rests_the_hint() -> None:
    hint = _trained([_line()])
    lines = [_line(), _line(cost_center=None)]
    assert read_json_lines(len(lines), _joined(lines), hint) == _read_all(lines)
    # The narrow read failed and taught nothing: the next batches are read whole at once.
    assert all(hint.narrow() is None for _ in range(KeyHint.REST))
    assert hint.narrow() is not None


def test_the_full_schema_is_read_every_renew_batches_so_unused_keys_leave() -> None:
    hint = _trained([_line(session_id="s")])
    assert hint.keys is not None and "session_id" in hint.keys
    lines = [_line()]
    for _ in range(KeyHint.RENEW):
        assert read_json_lines(1, _joined(lines), hint) is not None
    assert "session_id" not in hint.keys


def test_lines_the_reader_refuses_are_refused_with_or_without_a_hint() -> None:
    hint = _trained([_line()])
    for bad in (_line(tags={"a": "b"}), _line(input_tokens="10"), b'{"event_id": "e"', b"[1]"):
        lines = [_line(), bad]
        assert read_json_lines(2, _joined(lines), hint) is None
        assert _read_all(lines) is None


_OPTIONAL = {
    "session_id": st.text(alphabet="abc", max_size=3),
    "turn": st.integers(0, 9),
    "latency_ms": st.floats(0, 10, allow_nan=False),
    "batch": st.booleans(),
    "region": st.sampled_from(["eu", "us"]),
    "cache_read_tokens": st.integers(0, 99),
}


@st.composite
def _lines(draw: st.DrawFn) -> list[bytes]:
    out = []
    for i in range(draw(st.integers(1, 6))):
        fields: dict[str, object] = {"event_id": f"e{i}"}
        for name, values in _OPTIONAL.items():
            how = draw(st.sampled_from(["absent", "null", "value"]))
            if how != "absent":
                fields[name] = None if how == "null" else draw(values)
        out.append(_line(**fields))
    return out


@settings(max_examples=200)
@given(st.lists(_lines(), min_size=1, max_size=5))
def test_any_sequence_of_batches_reads_as_each_alone_with_every_key(
    batches: list[list[bytes]],
) -> None:
    hint = KeyHint()
    for lines in batches:
        got = read_json_lines(len(lines), _joined(lines), hint)
        want = _read_all(lines)
        assert want is not None and got is not None
        assert got.schema.equals(want.schema)
        assert got.to_pylist() == want.to_pylist()
        # On Arrow's pool (embedded ingest) the same table.
        threaded = read_json_lines(len(lines), _joined(lines), threads=True)
        assert threaded is not None and threaded.equals(want)


def test_decode_lines_teaches_the_hint_it_is_given_and_none_reads_with_every_key() -> None:
    now = datetime(2026, 11, 28, 1, tzinfo=UTC)
    before = batch.SHARED_HINT.keys
    mine = KeyHint()
    lines = [_line(region="eu")]
    with_hint = batch.decode_lines(lines, now, str, hint=mine)
    assert mine.keys is not None and "region" in mine.keys
    without = batch.decode_lines([_line(cost_center="x")], now, str, hint=None)
    assert batch.SHARED_HINT.keys == before  # an HTTP request's lines teach it nothing
    assert with_hint.events.column("region").to_pylist() == ["eu"]
    assert without.events.column("cost_center").to_pylist() == ["x"]
