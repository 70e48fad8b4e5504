"""``spendstream demo``: the whole pipeline, embedded, on a synthetic workload with a story in it."""

from __future__ import annotations

import argparse
import shutil
import sys
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from spendstream.commands._options import add_config, add_workdir
from spendstream.config import Config

if TYPE_CHECKING:
    import duckdb

    from spendstream.runtime.agent_burst import AgentBurst
    from spendstream.runtime.embedded import IngestSummary

__all__ = ["configure", "how_to_call", "run", "tell_story"]

# Story sections show at most this many lines each; the header says when there are more.
SHOWN = 8


def configure(parser: argparse.ArgumentParser) -> None:
    add_workdir(parser)
    parser.add_argument(
        "--events", type=int, default=50_000, metavar="N", help="events to generate (default 50000)"
    )
    parser.add_argument("--seed", type=int, default=7, metavar="N", help="random seed (default 7)")
    # Only --config: a ./spendstream.toml or $SPENDSTREAM_CONFIG made for real traffic
    # would change the story's limits and budgets under it.
    add_config(
        parser,
        help="TOML configuration file (default: the demo workload's own; $SPENDSTREAM_CONFIG "
        "and ./spendstream.toml are not read; keys: docs/configuration.md)",
    )


def _money(v: Any) -> str:
    from spendstream.warehouse.charts import usd

    return "unpriced" if v is None else usd(Decimal(v))


def _money_past(value: Any, threshold: Any) -> str:
    """A spend beside the threshold it crossed (``usd_past``: "$0.82 ... over $0.82" said
    nothing)."""
    from spendstream.wording import usd_past

    if value is None or threshold is None:
        return _money(value)
    return usd_past(Decimal(value), Decimal(threshold))


def how_to_call() -> tuple[str, list[str]]:
    """(how to type the command, lines to print first when it is not on PATH as ``spendstream``).

    ``make demo`` runs ``.venv/bin/spendstream`` without putting ``.venv/bin`` on the user's
    PATH: say so, and how to fix it, rather than print commands that answer "not found".
    """
    script = Path(sys.prefix) / "bin" / "spendstream"
    if not script.exists():  # not an installed environment (e.g. python -m from a checkout)
        return f"{sys.executable} -m spendstream", []
    found = shutil.which("spendstream")
    if found and Path(found).resolve() == script.resolve():
        return "spendstream", []
    return "spendstream", [
        "`spendstream` is not on this shell's PATH"
        + (f" (that one is {found})" if found else "")
        + ". Put it there, once per shell:",
        f"  . {_relative(Path(sys.prefix) / 'bin' / 'activate')}",
        f"or call it by its path: {_relative(script)}",
    ]


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def run(args: argparse.Namespace) -> int:
    from spendstream.commands._options import announce_advisories
    from spendstream.config import config_from_dict, load_config
    from spendstream.errors import ConfigError
    from spendstream.synthetic import DEMO_CONFIG_TOML
    from spendstream.workdir import WorkdirLock, resolve_workdir

    if args.events < 1000:
        raise ConfigError(
            f"--events must be at least 1000 for the story to show (got {args.events})"
        )
    import tomllib

    config = (
        announce_advisories(load_config(args.config))
        if args.config
        else config_from_dict(tomllib.loads(DEMO_CONFIG_TOML), "demo")
    )

    workdir = resolve_workdir(args.workdir)
    with WorkdirLock(workdir, "demo"):
        return _demo(args, config, workdir)


def _demo(args: argparse.Namespace, config: Config, workdir: Path) -> int:
    from spendstream.commands._pipeline_output import print_summary, progress_printer
    from spendstream.runtime.embedded import EmbeddedRunner, read_lines
    from spendstream.synthetic import write_jsonl

    events_file = workdir / "demo" / f"events-seed{args.seed}-{args.events}.jsonl"
    _refuse_another_size_of_the_same_seed(workdir, events_file, args.seed, args.events)
    events_file.parent.mkdir(parents=True, exist_ok=True)
    out = sys.stdout
    calls = write_jsonl(events_file, args.events, args.seed)
    out.write(
        f"spendstream demo: {calls:,} synthetic LLM calls over 3 days (seed {args.seed}; "
        f"--events {args.events:,} and their retries), then a burst of agents\n"
    )
    out.write(f"  events written to {events_file}\n\n")
    from spendstream.runtime.agent_burst import BURST_SCOPE, burst_start, run_agent_burst

    burst_at = burst_start()
    # The lease service's clock stands at the agents' burst, just after the synthetic days.
    runner = EmbeddedRunner(workdir, config, lease_clock=lambda: burst_at)
    summary = runner.run(read_lines([str(events_file)]), progress=progress_printer(sys.stderr))
    burst = None
    agents_file = workdir / "demo" / f"agents-seed{args.seed}.jsonl"
    if summary.landed and BURST_SCOPE in runner.leases.scopes:
        burst = run_agent_burst(runner, burst_at, agents_file, seed=args.seed)
        summary.add(burst.summary)
    elif agents_file.exists():
        # A re-run: the agents' calls are already in the warehouse, landing them adds nothing.
        summary.add(runner.run(read_lines([str(agents_file)])))
    print_summary(summary, out, workdir if args.workdir else None)
    out.write("\n")
    tell_story(workdir, out, config.anomaly.factor, summary, config, burst)
    from spendstream.warehouse.report import write_report

    report = write_report(workdir, workdir / "report.html", config=config.warehouse)
    command, path_notes = how_to_call()
    db = workdir / "warehouse" / "spendstream.duckdb"
    wd = f" --workdir {workdir}" if args.workdir else ""
    out.write("\nQuery the warehouse yourself:\n")
    for note in path_notes:
        out.write(f"  {note}\n")
    out.write(
        f'  {command} sql{wd} "SELECT team, sum(cost_usd) AS usd FROM usage_facts '
        'GROUP BY ALL ORDER BY usd DESC"\n'
        f"  {command} query{wd} --list\n"
        f"  {command} serve{wd}            # the report as a live page, refreshed as facts land\n"
        "  from Python (the duckdb module is installed with spendstream):\n"
        f"    python -c \"import duckdb; duckdb.connect('{db}', read_only=True)"
        ".sql('FROM cost_by_team').show()\"\n"
    )
    out.write(f"\nReport: {report}  (open it in a browser; it works offline)\n")
    return 0


def _refuse_another_size_of_the_same_seed(
    workdir: Path, events_file: Path, seed: int, events: int
) -> None:
    """A demo's event ids are its seed and each call's place in the workload: run with
    other --events in a workdir that holds the seed's demo, every id is taken by other
    content. It was 2,056 conflicting_duplicate dead letters, "landed 0", and a story
    saying every event "was already in the warehouse"; refused before anything lands."""
    from spendstream.errors import ConfigError

    if not (workdir / "warehouse").exists():
        return
    earlier = sorted(
        p for p in events_file.parent.glob(f"events-seed{seed}-*.jsonl") if p != events_file
    )
    if not earlier:
        return
    size = earlier[0].stem.rsplit("-", 1)[1]
    held = f"{int(size):,}" if size.isdigit() else size
    raise ConfigError(
        f"{workdir} holds the demo of --seed {seed} --events {held}; one of --events "
        f"{events:,} would reuse its event ids with other content (each line a "
        "conflicting_duplicate dead letter, nothing landed). Give it a --workdir of its own "
        f"(e.g. --workdir spendstream-demo-{events}), or run it with the same --events"
    )


# An unpriced_model alert's calls (its model, on its UTC day) that are still unpriced; none
# left: `prices reprice` has priced them since the alert, and the story says so.
# A late call's alert (details call_day) is dated the day it arrived; its calls are of
# earlier days.
_STILL_UNPRICED = (
    "SELECT 1 FROM usage_facts AS f WHERE NOT f.priced AND f.provider = a.details['provider'] "
    "AND f.model = a.details['model'] AND (f.date = CAST(a.details['day'] AS DATE) OR "
    "(a.details['call_day'] IS NOT NULL AND f.date < CAST(a.details['day'] AS DATE)))"
)
REPRICED_NOTE = " [priced since: `spendstream prices reprice` wrote their costs]"


def _story_header(con: duckdb.DuckDBPyConnection, summary: IngestSummary | None) -> str:
    """Whose story this is: this run's, or the warehouse's (earlier runs included)."""
    if summary is None:
        return "What the warehouse holds:\n"
    (held,) = con.execute("SELECT count(*) FROM usage_facts").fetchone() or (0,)
    if summary.landed == 0:
        return (
            f"Nothing new landed: all {summary.read:,} events were already in the warehouse "
            "(a re-run adds nothing).\n"
            f"What the warehouse holds, from earlier runs ({held:,} facts):\n"
        )
    if held > summary.landed:
        return (
            f"This run landed {summary.landed:,} of the warehouse's {held:,} facts; "
            "what the warehouse holds, earlier runs included:\n"
        )
    return "What it caught:\n"


def _section(out: TextIO, title: str, lines: list[str], total: int, more_sql: str) -> None:
    if not total:
        return
    shown = lines[:SHOWN]
    head = f"{title} ({total})" if len(shown) == total else f"{title} ({total}; first {len(shown)})"
    out.write(f"  {head}:\n")
    for line in shown:
        out.write(f"    {line}\n")
    if len(shown) < total:
        out.write(f'    ... all of them: spendstream sql "{more_sql}"\n')


def _hour_total(con: duckdb.DuckDBPyConnection, scope: str, hour: Any) -> Any:
    from spendstream.scopes import scope_fields

    fields = scope_fields(scope)
    where = " AND ".join(f"{column} = ?" for column in fields) or "TRUE"
    row = con.execute(
        "SELECT sum(cost_usd) FROM usage_facts WHERE ts >= ? AND ts < ? + INTERVAL 1 HOUR AND "
        + where,
        [hour, hour, *fields.values()],
    ).fetchone()
    return row[0] if row else None


def _tell_burst(con: duckdb.DuckDBPyConnection, out: TextIO, burst: AgentBurst) -> None:
    """The agents' burst: what they asked for, what the leases let through, what landed."""
    from spendstream.scopes import scope_fields

    fields = scope_fields(burst.scope)
    where = "".join(f" AND {column} = ?" for column in fields)
    landed, ran = con.execute(
        f"SELECT sum(cost_usd), count(*) FROM usage_facts WHERE ts >= ? AND ts < ?{where}",
        [burst.period_start, burst.period_end, *fields.values()],
    ).fetchone() or (None, 0)
    held = "within" if landed is None or landed <= burst.cap_usd else "OVER"
    ran_text = f"{ran:,} calls ran and landed {_money(landed)}"
    if ran != burst.ran:  # an earlier run's agents spent in the same period (another --seed)
        ran_text = (
            f"{burst.ran:,} calls ran; with earlier runs' agents {burst.scope} landed "
            f"{_money(landed)} this {burst.period}"
        )
    out.write(
        f"  Hard cap under a burst: {burst.agents} agents made {burst.calls:,} calls at once on "
        f"{burst.scope} (hard budget {_money(burst.cap_usd)} a {burst.period}),\n"
        f"  asking for {_money(burst.requested_usd)} at worst. Every call first reserved its "
        f"worst case on a budget lease: {burst.leases:,} leases granted "
        f"{_money(burst.granted_usd)}, what calls left unused going back to be granted again.\n"
        f"  {ran_text}, {held} the {_money(burst.cap_usd)} cap; {burst.refused:,} were refused "
        "with BudgetExhausted before they were made.\n\n"
    )


def tell_story(
    workdir: Path,
    out: TextIO,
    factor: Decimal,
    summary: IngestSummary | None = None,
    config: Config | None = None,
    burst: AgentBurst | None = None,
) -> None:
    """Say what the pipeline caught and where the money went, from the warehouse views.

    The views hold every run's facts: with ``summary`` (this run's counts) the story says
    whether it is this run's or the warehouse's, so a re-run does not pass old news as new.
    With ``burst`` (this run's agents' burst) it says how the hard cap held.
    """
    from spendstream.synthetic import LOOP_SESSION
    from spendstream.warehouse.charts import plural
    from spendstream.warehouse.reading import connect

    con = connect(workdir, None if config is None else config.warehouse)
    try:
        q = con.execute
        out.write(_story_header(con, summary))
        rows = q("SELECT kind, count(*) FROM alerts GROUP BY kind ORDER BY kind").fetchall()
        for kind, n in rows:
            out.write(f"  {kind:<18} {plural(n, 'alert'):>10}\n")
        out.write("\n")
        loop = q(
            "SELECT min(ts) FILTER (WHERE kind IN ('runaway_session', 'runaway_rate')), "
            "string_agg(DISTINCT kind, ', ') FROM alerts WHERE scope IN (?, ?)",
            [f"session:{LOOP_SESSION}", "api_key:key-platform-agent-ci"],
        ).fetchone()
        spend = q(
            "SELECT sum(cost_usd), count(*), min(ts), max(ts) FROM usage_facts WHERE session_id = ?",
            [LOOP_SESSION],
        ).fetchone()
        if loop and loop[0] is not None and spend and spend[0] is not None:
            after = q(
                "SELECT sum(cost_usd), count(*) FROM usage_facts WHERE session_id = ? AND ts > ?",
                [LOOP_SESSION, loop[0]],
            ).fetchone()
            if after:
                out.write(
                    f"  Runaway agent loop: session {LOOP_SESSION} made {spend[1]:,} calls "
                    f"({spend[2]:%H:%M}-{spend[3]:%H:%M} UTC) costing {_money(spend[0])}.\n"
                    f"  It was flagged at {loop[0]:%H:%M:%S} ({loop[1]}); its breaker opened "
                    f"then. With meter.guard() the {after[1]:,} later calls "
                    f"({_money(after[0])}) would have been refused.\n\n"
                )
        if burst is not None:
            _tell_burst(con, out, burst)
        anomalies = q(
            "SELECT scope, ts, value, threshold, date_trunc('hour', ts) FROM alerts "
            "WHERE kind = 'hourly_anomaly' ORDER BY ts, scope"
        ).fetchall()
        _section(
            out,
            "Hourly anomalies",
            [
                f"{scope}: {_money_past(value, threshold)} spent by {ts:%H:%M:%S} in the hour of "
                f"{ts:%Y-%m-%d %H}:00 UTC, over {_money(threshold)} ({float(factor):g}x its "
                f"previous-24h hourly mean); the hour ended at {_money(_hour_total(con, scope, hour))}"
                for scope, ts, value, threshold, hour in anomalies
            ],
            len(anomalies),
            "SELECT scope, ts, value, threshold FROM alerts WHERE kind = 'hourly_anomaly'",
        )
        for title, kinds in (
            ("Budget", ("budget_threshold", "budget_exceeded")),
            ("Cache hit drops", ("cache_hit_drop",)),
            ("Unpriced models", ("unpriced_model",)),
        ):
            listed = ", ".join(f"'{k}'" for k in kinds)
            messages = [
                m + (REPRICED_NOTE if priced_since else "")
                for m, priced_since in q(
                    f"SELECT message, kind = 'unpriced_model' AND NOT EXISTS ({_STILL_UNPRICED}) "
                    f"FROM alerts AS a WHERE kind IN ({listed}) ORDER BY ts, scope"
                ).fetchall()
            ]
            _section(
                out,
                title,
                messages,
                len(messages),
                f"SELECT ts, message FROM alerts WHERE kind IN ({listed}) ORDER BY ts",
            )
        opened = q(
            "SELECT scope, reason FROM breaker_events WHERE state = 'open' ORDER BY ts, scope"
        ).fetchall()
        _section(
            out,
            "Circuit breakers opened",
            [f"{scope}: {reason}" for scope, reason in opened],
            len(opened),
            "SELECT * FROM breaker_events WHERE state = 'open' ORDER BY ts",
        )

        out.write("\nWhere the money went:\n")
        total = q(
            "SELECT sum(cost_usd), count(*), count(*) FILTER (WHERE NOT priced) FROM usage_facts"
        ).fetchone() or (None, 0, 0)
        unpriced = f" ({plural(total[2], 'unpriced call')} not in the total)" if total[2] else ""
        out.write(f"  total {_money(total[0])} over {plural(total[1], 'call')}{unpriced}\n")
        for team, usd, share in q(
            "SELECT coalesce(team, '(untagged)'), sum(cost_usd) AS usd, "
            "100 * sum(cost_usd) / (SELECT sum(cost_usd) FROM usage_facts) "
            "FROM usage_facts GROUP BY ALL ORDER BY usd DESC NULLS LAST"
        ).fetchall():
            pct = "" if share is None else f"  {float(share):5.1f}%"
            out.write(f"  team {team:<10} {_money(usd):>12}{pct}\n")
        out.write("  top features:\n")
        for feature, model, usd in q(
            "SELECT feature, model, sum(cost_usd) AS usd FROM usage_facts "
            "GROUP BY ALL ORDER BY usd DESC NULLS LAST LIMIT 5"
        ).fetchall():
            out.write(f"    {feature:<20} {model:<26} {_money(usd):>12}\n")
    finally:
        con.close()
