"""``spendstream prices``: unpriced models, repricing a time range, reconciliation, rate lookup.

    spendstream prices unpriced  [--since T] [--until T] [--provider P] [--format F]
    spendstream prices reconcile [--since T] [--until T] [--provider P] [--model M] [--format F]
    spendstream prices reprice   --since T --until T [--at-current-prices] [--yes] [--config FILE]
    spendstream prices show      PROVIDER MODEL [--at T] [--config FILE]

``reprice`` prices the stored events of [since, until) again with the current catalog and
configuration and shows old against new totals per provider and model; prices stay
time-effective (each event at the rates in force at its ``ts``) unless
``--at-current-prices``. Nothing is written without ``--yes``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spendstream.commands._options import add_config, add_format, add_workdir, config_from_args
from spendstream.config import WarehouseConfig
from spendstream.errors import ConfigError

if TYPE_CHECKING:
    from spendstream.records import Fact
    from spendstream.stream.repricing import RepriceReport

__all__ = ["configure", "load_facts", "run", "write_repriced"]

_COST_COLUMNS = (
    "input_cost_usd",
    "cache_read_cost_usd",
    "cache_write_cost_usd",
    "output_cost_usd",
    "cost_usd",
    "price_source",
    "ingested_at",
)


def _filters(p: argparse.ArgumentParser, *names: str) -> None:
    helps = {
        "since": "events at or after this UTC time or date (ISO 8601)",
        "until": "events before this UTC time or date (ISO 8601)",
        "provider": "only this provider",
        "model": "only this model",
    }
    for name in names:
        p.add_argument(f"--{name}", default=None, metavar="VALUE", help=helps[name])


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True

    p = sub.add_parser("unpriced", help="models landed with priced = false, and why")
    _filters(p, "since", "until", "provider")
    add_workdir(p)
    add_config(p)
    add_format(p)

    p = sub.add_parser(
        "reconcile", help="our cost against reported_cost_usd, with the differences by model"
    )
    _filters(p, "since", "until", "provider", "model")
    add_workdir(p)
    add_format(p)

    p = sub.add_parser(
        "reprice",
        help="price a time range again (catalog update, changed override); old vs new first",
    )
    p.add_argument("--since", required=True, metavar="T", help="from this UTC time or date")
    p.add_argument("--until", required=True, metavar="T", help="up to (excluding) this time")
    _filters(p, "provider", "model")
    p.add_argument(
        "--at-current-prices",
        action="store_true",
        help="price every event at today's rates instead of those in force at its time",
    )
    p.add_argument("--yes", action="store_true", help="write the new costs (default: only show)")
    add_workdir(p)
    add_config(p)
    add_format(p)

    p = sub.add_parser("show", help="the rates in force for a provider and model")
    p.add_argument("provider")
    p.add_argument("model")
    p.add_argument("--at", default=None, metavar="T", help="at this UTC time (default: now)")
    p.add_argument("--batch", action="store_true", help="as a batch API call")
    add_config(p)
    add_format(p)


def _instant(value: str | None, flag: str) -> datetime | None:
    if value is None:
        return None
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(
            f"{flag} {value!r} is not an ISO 8601 date or time (e.g. 2026-11-01 or "
            "2026-11-01T12:00:00Z)"
        ) from None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def run(args: argparse.Namespace) -> int:
    action = args.action
    if action == "show":
        return _show(args)
    since = _instant(args.since, "--since")
    until = _instant(args.until, "--until")
    if since is not None and until is not None and since >= until:
        raise ConfigError("--since must be before --until")
    if action == "reprice":
        return _reprice(args, since, until)
    from spendstream.warehouse.output import render
    from spendstream.warehouse.reading import run_named
    from spendstream.workdir import resolve_workdir

    name = "unpriced_models" if action == "unpriced" else "cost_reconciliation"
    filters = {
        "since": None if since is None else since.isoformat(),
        "until": None if until is None else until.isoformat(),
        "provider": args.provider,
        "model": getattr(args, "model", None),
    }
    columns, rows = run_named(
        resolve_workdir(args.workdir), name, filters, config=config_from_args(args).warehouse
    )
    if action == "unpriced":
        columns, rows = _with_reasons(args, columns, rows)
    render(columns, rows, args.format, sys.stdout)
    return 0


def _with_reasons(
    args: argparse.Namespace, columns: list[str], rows: list[tuple[Any, ...]]
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Add why each model is unpriced today, under the current catalog and configuration."""
    from spendstream.stream.ratecard import RateCard

    catalog = RateCard(config_from_args(args).prices)
    now = datetime.now(UTC)
    at = columns.index("provider"), columns.index("model")
    out = []
    for row in rows:
        reason = catalog.why_unpriced(row[at[0]], row[at[1]], now)
        out.append((*row, reason or "priced now: `spendstream prices reprice` can price it"))
    return [*columns, "reason"], out


def load_facts(
    workdir: Path,
    since: datetime | None,
    until: datetime | None,
    provider: str | None = None,
    model: str | None = None,
    config: WarehouseConfig | None = None,
) -> list[Fact]:
    """The stored facts of [since, until) (optionally one provider/model), oldest first."""
    from spendstream.producers.event import UsageEvent
    from spendstream.records import Cost, Fact
    from spendstream.warehouse.reading import connect

    fields = list(UsageEvent.model_fields)
    conditions, params = ["TRUE"], {}
    for key, value, sql in (
        ("since", since, "ts >= $since"),
        ("until", until, "ts < $until"),
        ("provider", provider, "provider = $provider"),
        ("model", model, "model = $model"),
    ):
        if value is not None:
            conditions.append(sql)
            params[key] = value
    select = ", ".join(f'"{c}"' for c in (*fields, *_COST_COLUMNS))
    sql = f"SELECT {select} FROM usage_facts WHERE {' AND '.join(conditions)} ORDER BY ts, event_id"
    con = connect(workdir, config)
    try:
        rows = con.execute(sql, params).fetchall()
    finally:
        con.close()
    facts = []
    n = len(fields)
    for row in rows:
        data = {k: v for k, v in zip(fields, row[:n], strict=True) if v is not None}
        tags = data.get("tags")
        if isinstance(tags, dict) and set(tags) == {"key", "value"}:
            data["tags"] = dict(zip(tags["key"], tags["value"], strict=True))
        event = UsageEvent.model_validate(data)
        inp, read, write, out, total, source, ingested_at = row[n:]
        cost = None
        if total is not None:
            cost = Cost(inp, read, write, out, total, source)
        facts.append(Fact(event=event, cost=cost, ingested_at=ingested_at))
    return facts


def _reprice(args: argparse.Namespace, since: datetime | None, until: datetime | None) -> int:
    config = config_from_args(args)
    from spendstream.stream.pricing import Pricer
    from spendstream.stream.repricing import reprice
    from spendstream.workdir import resolve_workdir

    workdir = resolve_workdir(args.workdir)
    facts = load_facts(workdir, since, until, args.provider, args.model, config.warehouse)
    at = datetime.now(UTC) if args.at_current_prices else None
    report = reprice(facts, Pricer.from_config(config.prices), at=at)
    _print_report(report, args.format)
    if not args.yes or report.changed == 0:
        if report.changed:
            print("nothing written: run again with --yes to write the new costs", file=sys.stderr)
        return 0
    written = write_repriced(workdir, report.changed_facts(facts), config.warehouse)
    print(f"wrote new costs for {written} facts", file=sys.stderr)
    return 0


def write_repriced(
    workdir: Path, changed: Sequence[Fact], config: WarehouseConfig | None = None
) -> int:
    """Replace the stored facts with these repriced ones (by event_id); how many were replaced.

    Each affected day is rewritten in one Iceberg snapshot, like a compaction: a reader sees
    either the old costs or the new ones, never a mix within a day.
    """
    from spendstream.warehouse import Warehouse

    wh = Warehouse(workdir, writer="reprice", config=config)
    try:
        return wh.rewrite_facts(changed)
    finally:
        wh.close()


def _print_report(report: RepriceReport, fmt: str) -> None:
    from spendstream.warehouse.output import render

    columns = [
        "provider",
        "model",
        "calls",
        "changed",
        "old_cost_usd",
        "new_cost_usd",
        "difference_usd",
        "old_unpriced",
        "new_unpriced",
        "new_price_source",
    ]
    rows = [
        (
            ln.provider,
            ln.model,
            ln.calls,
            ln.changed,
            ln.old_cost_usd,
            ln.new_cost_usd,
            ln.difference_usd,
            ln.old_unpriced,
            ln.new_unpriced,
            ", ".join(sorted(ln.new_sources)),
        )
        for ln in report.lines
    ]
    render(columns, rows, fmt, sys.stdout)
    print(
        f"total: old ${report.old_cost_usd} new ${report.new_cost_usd} "
        f"difference ${report.difference_usd}; {report.changed} of {len(report.facts)} "
        "facts would change",
        file=sys.stderr,
    )


def _show(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    from spendstream.stream.ratecard import RateCard
    from spendstream.warehouse.output import render

    at = _instant(args.at, "--at") or datetime.now(UTC)
    period = RateCard(config.prices).period(args.provider, args.model, at, args.batch)
    if period is None:
        raise ConfigError(
            f"no price for {args.provider}/{args.model}: not in the genai-prices catalog and "
            "no [[prices.model]] entry; add one to the configuration"
        )
    bounds = ["0", *(f">{t}" for t in period.thresholds)]
    rows: list[tuple[Any, ...]] = []
    for bound, band in zip(bounds, period.bands, strict=True):
        m = period.multiplier
        rows.append(
            (
                bound,
                band.input_per_mtok * m,
                band.cache_read_per_mtok * m,
                band.cache_write_per_mtok * m,
                band.output_per_mtok * m,
                band.request_fee_usd * m,
            )
        )
    render(
        [
            "input_tokens",
            "input_per_mtok",
            "cache_read_per_mtok",
            "cache_write_per_mtok",
            "output_per_mtok",
            "request_fee_usd",
        ],
        rows,
        args.format,
        sys.stdout,
    )
    print(f"price_source: {period.source} (at {at.isoformat()})", file=sys.stderr)
    return 0
