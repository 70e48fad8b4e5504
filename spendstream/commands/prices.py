"""``spendstream prices``: rates, price data freshness, unpriced models, reconciliation, repricing.

    spendstream prices show      PROVIDER MODEL [--at T] [--service-tier T] [--region R] [--config FILE]
    spendstream prices update    [--url URL] [--workdir DIR]
    spendstream prices unpriced  [--since T] [--until T] [--provider P] [--format F]
    spendstream prices reconcile [--since T] [--until T] [--provider P] [--model M] [--format F]
    spendstream prices reprice   --since T --until T [--at-current-prices] [--yes] [--config FILE]

Each action calls one library function (``spendstream.pricebook``,
``spendstream.pricedata``, ``spendstream.warehouse.reading``) and prints its result.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spendstream.commands._options import add_config, add_format, add_workdir, config_from_args
from spendstream.errors import ConfigError
from spendstream.instants import parse_instant
from spendstream.wording import exact_usd

if TYPE_CHECKING:
    from spendstream.config import Config

__all__ = ["configure", "run"]


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

    p = sub.add_parser(
        "show",
        help="every rate in force for a provider and model (all dimensions, tiers, batch), "
        "its source and how old the price data is",
    )
    p.add_argument("provider", help="as events name it, e.g. anthropic, openai, google")
    p.add_argument("model", help="as events name it, e.g. claude-sonnet-4-5, gpt-5-mini")
    p.add_argument("--at", default=None, metavar="T", help="at this UTC time (default: now)")
    p.add_argument("--service-tier", default=None, metavar="TIER", help="flex, priority, ...")
    p.add_argument("--region", default=None, metavar="REGION", help="for regional prices")
    add_workdir(p)
    add_config(p)
    add_format(p)

    p = sub.add_parser(
        "update",
        help="fetch newer genai-prices price data into the workdir (used instead of the bundled)",
    )
    p.add_argument(
        "--url",
        default=None,
        help="where to fetch the data file (default: genai-prices' published data)",
    )
    add_workdir(p)

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


def run(args: argparse.Namespace) -> int:
    from spendstream.workdir import resolve_workdir

    action = args.action
    if action == "show":
        return _show(args)
    if action == "update":
        return _update(args)
    since = parse_instant(args.since, "--since")
    until = parse_instant(args.until, "--until")
    if since is not None and until is not None and since >= until:
        raise ConfigError("--since must be before --until")
    if action == "reprice":
        return _reprice(args, since, until)
    from spendstream.warehouse.output import render
    from spendstream.warehouse.reading import run_named

    workdir = resolve_workdir(args.workdir)
    name = "unpriced_models" if action == "unpriced" else "cost_reconciliation"
    filters = {
        "since": None if since is None else since.isoformat(),
        "until": None if until is None else until.isoformat(),
        "provider": args.provider,
        "model": getattr(args, "model", None),
    }
    config = config_from_args(args)
    columns, rows = run_named(workdir, name, filters, config=config.warehouse)
    if action == "unpriced":
        from spendstream.pricebook import unpriced_reasons

        columns, rows = unpriced_reasons(workdir, config, columns, rows)
        rows = _with_suggestions(workdir, config, columns, rows)
    render(columns, rows, args.format, sys.stdout)
    return 0


def _with_suggestions(
    workdir: Path, config: Config, columns: list[str], rows: list[tuple[Any, ...]]
) -> list[tuple[Any, ...]]:
    """Each unpriced row's reason with the priced name nearest to its provider or model:
    ``gpt5-mini`` is most often ``gpt-5-mini`` mistyped in a producer, and the fix is
    there, not a [[prices.model]] entry (``prices show`` said so; ``unpriced`` did not).
    Only where the catalog knows no such provider or model: beside a dated row or a
    missing token rate, a near name would mislead."""
    from spendstream.pricebook import did_you_mean, rate_card_for

    card = rate_card_for(workdir, config.prices)
    at = columns.index("provider"), columns.index("model"), columns.index("reason")
    out = []
    for row in rows:
        provider, model, reason = row[at[0]], row[at[1]], str(row[at[2]])
        unknown = reason.startswith(("provider ", "genai-prices knows no "))
        hint = did_you_mean(card, str(provider), str(model)) if unknown else ""
        out.append((*row[: at[2]], f"{reason}{hint}", *row[at[2] + 1 :]))
    return out


def _reprice(args: argparse.Namespace, since: datetime | None, until: datetime | None) -> int:
    config = config_from_args(args)
    from spendstream.pricebook import reprice_range
    from spendstream.warehouse.charts import plural
    from spendstream.warehouse.output import render
    from spendstream.workdir import resolve_workdir

    done = reprice_range(
        resolve_workdir(args.workdir),
        config,
        since,
        until,
        provider=args.provider,
        model=args.model,
        at_current_prices=args.at_current_prices,
        write=args.yes,
    )
    report = done.report
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
    render(columns, rows, args.format, sys.stdout)
    print(
        f"total: old {exact_usd(report.old_cost_usd)} new {exact_usd(report.new_cost_usd)} "
        f"difference {exact_usd(report.difference_usd)}; {report.changed:,} of "
        f"{plural(len(report.facts), 'fact')} would change",
        file=sys.stderr,
    )
    if args.yes and report.changed:
        print(f"wrote new costs for {plural(done.written, 'fact')}", file=sys.stderr)
    elif report.changed:
        print("nothing written: run again with --yes to write the new costs", file=sys.stderr)
    return 0


def _show(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    from spendstream.pricebook import show_rates
    from spendstream.stream.ratesheet import RATE_COLUMNS
    from spendstream.warehouse.charts import plural
    from spendstream.warehouse.output import render
    from spendstream.workdir import resolve_workdir

    at = parse_instant(args.at, "--at") or datetime.now(UTC)
    sheet = show_rates(
        resolve_workdir(args.workdir),
        config,
        args.provider,
        args.model,
        at,
        service_tier=args.service_tier,
        region=args.region,
    )
    render(RATE_COLUMNS, sheet.rows, args.format, sys.stdout)
    err = sys.stderr
    print(f"price_source: {sheet.source} (at {at.isoformat()})", file=err)
    print(f"batch price_source: {sheet.batch_source}", file=err)
    tier = args.service_tier
    if tier is not None and not any(
        label in sheet.source for label in (f"service_tier:{tier}", f"tier={tier}", "+premium:")
    ):
        # `--service-tier flx` showed the standard rates, with nothing to tell them from
        # flex's: a tier nothing prices is the standard price.
        print(
            f"note: no {args.provider}/{args.model} price is specific to service tier "
            f"{tier!r} (a typo?): the rates above are the standard ones, which a call with "
            "that tier is priced at",
            file=err,
        )
    now = datetime.now(UTC)
    age = ""
    if sheet.data_as_of is not None:
        old = plural((now - sheet.data_as_of).days, "day")
        age = f", as of {sheet.data_as_of:%Y-%m-%d} ({old} old)"
    print(f"price data: {sheet.data_source}{age}", file=err)
    newest = sheet.newest_price_change
    if newest is not None:
        ago = plural((now.date() - newest).days, "day")
        print(f"newest dated price change in the data: {newest} ({ago} ago)", file=err)
    print("newer price data: spendstream prices update", file=err)
    return 0


def _update(args: argparse.Namespace) -> int:
    from spendstream.pricedata import DEFAULT_URL, PriceDataError, update_price_data
    from spendstream.workdir import resolve_workdir

    workdir = resolve_workdir(args.workdir)
    try:
        data = update_price_data(workdir, args.url or DEFAULT_URL)
    except PriceDataError as exc:
        print(f"spendstream prices update: {exc}", file=sys.stderr)
        return 1
    as_of = f"{data.as_of:%Y-%m-%d}" if data.as_of else "unknown date"
    print(
        f"price data updated: {data.providers} providers, {data.models} models, as of {as_of}, "
        f"from {data.source}; kept in {workdir / 'prices'}"
    )
    return 0
