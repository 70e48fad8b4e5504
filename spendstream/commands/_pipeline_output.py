"""How the embedded commands (ingest, demo) show progress and their summary."""

from __future__ import annotations

import re
import shlex
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from spendstream.runtime.embedded import IngestSummary, Interrupted
from spendstream.warehouse.charts import usd
from spendstream.wording import clipped, escape_controls, exact_usd, plural, usd_value

__all__ = ["print_summary", "progress_printer", "summary_on_interrupt"]

_DIGITS = re.compile(r"\d+")


def progress_printer(stream: TextIO) -> Callable[[IngestSummary], None] | None:
    """A progress line on a terminal; nothing in a pipe."""
    if not stream.isatty():
        return None
    started = time.monotonic()

    def show(s: IngestSummary) -> None:
        rate = s.read / max(time.monotonic() - started, 1e-9)
        stream.write(
            f"\r  read {s.read:,}  landed {s.landed:,}  dead-lettered {s.dead_lettered:,}  ({rate:,.0f}/s)"
        )
        stream.flush()

    return show


def _shorten(reason: str, width: int = 160) -> str:
    # Control characters escaped: a reason quotes what a record held, and a terminal must
    # not take it for commands.
    return clipped(escape_controls(reason), width)


def _hint(reason: str) -> str:
    """What a first-time user most often gets wrong, said where they see it."""
    if reason.startswith(("event_id: required field", "ts: required field")):
        return (
            " (every line of a file names its own event_id and ts, so a replay adds nothing;"
            " HTTP and the Meter fill them in)"
        )
    if reason.startswith("ts: Input should"):  # no offset, or not a date-time at all
        return " (ts is RFC 3339 with its offset, e.g. 2026-03-02T10:00:00Z or ...+01:00)"
    empty = re.match(r"(\w+): String should have at least 1 character", reason)
    if empty and empty.group(1) not in ("event_id", "provider", "model"):
        # `"team": ""` from a converted spreadsheet's empty cell.
        return ' (a field with no value is left out of the line, not written as "")'
    if re.match(r"\w+: Input should be a valid integer", reason):
        # "input_tokens": "1200" (a spreadsheet's export) or 1200.0: the reason does not
        # say what the line held.
        return ' (a count is a whole JSON number, unquoted: 1200, not "1200" or 1200.5)'
    return ""


def _alike(reasons: Counter[str]) -> Counter[str]:
    """Reasons that differ only in their numbers (each line's own ts, token count...) are
    one reason, shown by its most frequent wording with "e.g.": 35 records an hour ahead are
    "35 x ts: ... is more than max_future_skew_s ...", not 35 reasons of 1."""
    groups: dict[str, list[tuple[str, int]]] = {}
    for reason, count in reasons.items():
        groups.setdefault(_DIGITS.sub("0", reason), []).append((reason, count))
    alike: Counter[str] = Counter()
    for members in groups.values():
        shown = max(members, key=lambda m: m[1])[0]
        alike["e.g. " + shown if len(members) > 1 else shown] += sum(c for _, c in members)
    return alike


def print_summary(
    s: IngestSummary, out: TextIO, workdir: Path | None = None, config: str | None = None
) -> None:
    """The counts (read = landed + duplicates + dead-lettered) and what was caught;
    ``workdir`` and ``config``: the --workdir and --config the user gave, repeated in the
    commands it suggests."""
    if out.isatty():
        out.write("\n")
    wd = f" --workdir {shlex.quote(str(workdir))}" if workdir is not None else ""
    out.write(
        f"read {s.read:,} = landed {s.landed:,} + duplicates {s.duplicates:,} + dead-lettered {s.dead_lettered:,}\n"
    )
    if s.dead_lettered:
        reasons = _alike(s.dead_letter_reasons)
        # Three reasons named, the rest counted; but a single reason left is named too
        # ("1 more, for 1 other reason" took as much room as the reason would have).
        named = reasons.most_common(4 if len(reasons) == 4 else 3)
        for reason, count in named:
            out.write(f"  {count:,} x {_shorten(reason)}{_hint(reason.removeprefix('e.g. '))}\n")
        rest = sum(reasons.values()) - sum(count for _, count in named)
        if rest:
            others = len(reasons) - len(named)
            out.write(
                f"  {rest:,} more, for {others:,} other reason{'s' if others != 1 else ''}"
                " (the query below lists every dead letter)\n"
            )
        out.write(
            f"dead letters (each names its file:line): spendstream sql{wd} "
            '"SELECT source, error FROM dead_letters ORDER BY received_at DESC LIMIT 20"\n'
        )
    # Cents for reading, and the exact sum beside them when they differ: a total to reconcile
    # with the warehouse's sum(cost_usd) or a provider's invoice must not be one rounded.
    shown = usd(s.cost_usd)
    cost = shown if usd_value(shown) == s.cost_usd else f"{shown} (exactly {exact_usd(s.cost_usd)})"
    out.write(f"cost of landed facts: {cost} ({s.unpriced:,} unpriced)\n")
    if s.unpriced:
        # "(1 unpriced)" said neither which model nor what to do: most often a model name
        # mistyped in a producer, which `prices unpriced` names with the nearest priced one.
        calls = "1 call" if s.unpriced == 1 else f"{s.unpriced:,} calls"
        out.write(
            f"no price for {calls}: spendstream prices unpriced{wd} names the models, why, "
            "and the nearest priced name\n"
        )
    if s.late:
        out.write(
            f"late for detection: {s.late:,} of the landed events came after their minute's "
            f"window had closed ([detection] allowed_lateness_s, {s.lateness_s:,} s, behind a "
            "newer event): reports count them; per-minute rules did not, longer windows only "
            "while open (sort a backfill by ts before ingesting it, or raise the lateness)\n"
        )
    kinds = s.alerts_by_kind()
    if kinds:
        out.write("alerts: " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())) + "\n")
    else:
        out.write("alerts: none\n")
    opened = [b for b in s.breaker_events if b.state == "open"]
    if opened:
        scopes = sorted({b.scope for b in opened})
        shown = ", ".join(scopes[:10])
        more = f" and {len(scopes) - 10} more" if len(scopes) > 10 else ""
        # What to do with them, where they are said: a first user did not know that
        # `breakers` lists and resets what ingest opened (no Kafka needed).
        out.write(
            f"breakers opened: {shown}{more} (spendstream breakers list{wd} shows the open "
            f"ones; spendstream breakers reset{wd} SCOPE closes one)\n"
        )
    if s.notifications:
        n = s.notifications
        # The replay command only when something died: beside "0 dead-lettered" it read as a
        # step still to take. It names the --workdir and --config given (the sinks are
        # there), or the replay would look in ./spendstream-data and find nothing.
        # Dead letters the router sent itself once their sink answered again (auto-replay):
        # the hint then counts what is still to send, or it offered a replay of nothing.
        later = ""
        if n["replayed"]:
            superseded = (
                f", {n['replay_superseded']:,} superseded by newer ones"
                if n["replay_superseded"]
                else ""
            )
            their = "its" if n["replayed"] == 1 else "their"
            later = (
                f"; {plural(n['replayed'], 'dead letter')} sent once {their} sink answered "
                f"again{superseded}"
            )
        elif n["replay_superseded"]:
            # None sent: "0 dead letters sent once their sink answered again" read as a
            # failure, and a sink still down supersedes too (its probe waited behind them).
            later = (
                f"; {plural(n['replay_superseded'], 'dead letter')} superseded by newer "
                "notifications (not sent)"
            )
        # None: not counted (the summary of an interrupted run): what this run dead-lettered
        # may have been replayed since, so no number is claimed then.
        # And only when this run dead-lettered or replayed some: older dead letters alone (a
        # refusal that fails at every replay, say) put it beside "0 dead-lettered" each run.
        pending = s.dead_letters_pending
        replay = ""
        if n["dead_lettered"] if pending is None else (n["dead_lettered"] or later) and pending:
            cf = f" --config {shlex.quote(config)}" if config is not None else ""
            if pending is None:
                what = "any still dead" if later else "send them again"
            elif pending == n["dead_lettered"] and not later:
                what = "send them again"
            else:
                what = f"{pending:,} still to send"
            replay = f" ({what}: spendstream alerts --replay-dead-letters{wd}{cf})"
        out.write(
            f"notifications: {n['triggered']:,} sent, {n['resolved']:,} resolved, "
            f"{n['dead_lettered']:,} dead-lettered{later}{replay}\n"
        )


@contextmanager
def summary_on_interrupt(
    out: TextIO, workdir: Path | None = None, config: str | None = None
) -> Iterator[None]:
    """On Ctrl-C, the summary of the batches finished before it, then the interrupt goes on
    (the CLI says what landed stays landed, exit 130): a pipe read for days, stopped, told
    nothing of what it had landed."""
    try:
        yield
    except Interrupted as stop:
        try:
            out.write("\ninterrupted; the batches finished before it:\n")
            print_summary(stop.summary, out, workdir, config)
            out.flush()
        except OSError:
            # Its reader went with the same Ctrl-C (`ingest - | tee log`): the interrupt,
            # not the broken pipe, is what the CLI must report (exit 130, on stderr).
            pass
        raise
