"""``spendstream whatif``: a period's actual traffic priced again under other assumptions.

    spendstream whatif [--since T] [--until T] [--workdir DIR] [--config FILE] [--format F]
        [--route SELECTOR=PROVIDER/MODEL]... [--max-output [SELECTOR=]N]...
        [--cache-hit-rate [SELECTOR=]RATE]... [--batch-share [SELECTOR=]SHARE]...
        [--self-host SELECTOR --gpu-usd-per-hour X --decode-tok-s N [--utilisation U]]

SELECTOR: ``all``, ``feature:NAME``, ``model:PROVIDER/MODEL`` or ``under:TOKENS`` (calls
with fewer input tokens). Rates and shares are fractions (0.9) or percentages (90%).
Nothing is written: the warehouse is opened read-only. See docs/report.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from spendstream.commands._options import add_config, add_format, add_workdir, config_from_args
from spendstream.errors import ConfigError
from spendstream.money import MAX_MONEY_USD

if TYPE_CHECKING:
    from spendstream.warehouse.whatif import (
        FeatureLine,
        Lever,
        Selector,
        SelfHosting,
        SelfHostingResult,
        WhatIfResult,
    )

__all__ = ["configure", "levers_from_args", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    add_workdir(parser)
    add_config(parser)
    add_format(parser)
    parser.add_argument("--since", default=None, metavar="T", help="from this UTC date or time")
    parser.add_argument("--until", default=None, metavar="T", help="up to (excluding) this time")
    lever = parser.add_argument_group("levers (repeatable; each shown alone and all together)")
    lever.add_argument(
        "--route",
        action="append",
        default=[],
        metavar="SELECTOR=PROVIDER/MODEL",
        help="send the selected calls to another model, e.g. feature:support-chat=anthropic/claude-haiku-4-5",
    )
    lever.add_argument(
        "--max-output",
        action="append",
        default=[],
        metavar="[SELECTOR=]N",
        help="cap output tokens per call",
    )
    lever.add_argument(
        "--cache-hit-rate",
        action="append",
        default=[],
        metavar="[SELECTOR=]RATE",
        help="raise the cache-read share of input tokens to RATE where it is lower",
    )
    lever.add_argument(
        "--batch-share",
        action="append",
        default=[],
        metavar="[SELECTOR=]SHARE",
        help="move this share of (non-batch) traffic to the provider's batch API",
    )
    host = parser.add_argument_group("self-hosting break-even")
    host.add_argument("--self-host", default=None, metavar="SELECTOR", help="the traffic to move")
    host.add_argument("--gpu-usd-per-hour", default=None, metavar="X", help="price of one GPU")
    host.add_argument(
        "--decode-tok-s", default=None, metavar="N", help="tokens per second one GPU decodes"
    )
    host.add_argument(
        "--utilisation",
        default="0.5",
        metavar="U",
        help="average share of GPU time busy (default 0.5)",
    )
    host.add_argument(
        "--self-host-tokens",
        choices=["output", "total"],
        default="output",
        help="tokens the decode rate applies to (default: output)",
    )


def _decimal(text: str, flag: str, *, fraction: bool = False) -> Decimal:
    t = text.strip()
    percent = t.endswith("%")
    try:
        value = Decimal(t[:-1] if percent else t)
    except InvalidOperation:
        raise ConfigError(f"{flag}: {text!r} is not a number") from None
    if percent:
        value /= 100
    if not value.is_finite() or value < 0 or (fraction and value > 1) or value >= MAX_MONEY_USD:
        bound = "between 0 and 1 (or 0% and 100%)" if fraction else "a number >= 0 and below 1e20"
        raise ConfigError(f"{flag}: {text!r} must be {bound}")
    return value


def _split(text: str, flag: str) -> tuple[Selector, str]:
    from spendstream.warehouse.whatif import Selector

    sel, eq, value = text.rpartition("=")
    return (Selector.parse(sel, flag) if eq else Selector()), value


def levers_from_args(args: argparse.Namespace) -> list[Lever]:
    """The levers in the order given per flag: routes, output caps, cache targets, batch."""
    from spendstream.warehouse.whatif import BatchShare, CacheTarget, OutputCap, Route, Selector

    levers: list[Lever] = []
    for text in args.route:
        sel, eq, target = text.rpartition("=")
        provider, slash, model = target.partition("/")
        if not eq or not slash or not provider or not model:
            raise ConfigError(f"--route: {text!r} is not SELECTOR=PROVIDER/MODEL")
        levers.append(Route(Selector.parse(sel, "--route"), provider, model))
    for text in args.max_output:
        sel, value = _split(text, "--max-output")
        if not value.strip().isdigit():
            raise ConfigError(
                f"--max-output: {text!r} is not [SELECTOR=]N with N a whole number of tokens "
                ">= 0 (e.g. 400, or feature:chat=400)"
            )
        levers.append(OutputCap(sel, int(value)))
    for text in args.cache_hit_rate:
        sel, value = _split(text, "--cache-hit-rate")
        levers.append(CacheTarget(sel, _decimal(value, "--cache-hit-rate", fraction=True)))
    for text in args.batch_share:
        sel, value = _split(text, "--batch-share")
        levers.append(BatchShare(sel, _decimal(value, "--batch-share", fraction=True)))
    return levers


def _hosting(args: argparse.Namespace) -> SelfHosting | None:
    from spendstream.warehouse.whatif import Selector, SelfHosting

    if args.self_host is None:
        if args.gpu_usd_per_hour or args.decode_tok_s:
            raise ConfigError("--gpu-usd-per-hour and --decode-tok-s need --self-host SELECTOR")
        return None
    for flag, value in (
        ("--gpu-usd-per-hour", args.gpu_usd_per_hour),
        ("--decode-tok-s", args.decode_tok_s),
    ):
        if value is None:
            raise ConfigError(f"--self-host needs {flag}")
    decode = _decimal(args.decode_tok_s, "--decode-tok-s")
    util = _decimal(args.utilisation, "--utilisation", fraction=True)
    if not decode or not util:
        raise ConfigError("--decode-tok-s and --utilisation must be above zero")
    return SelfHosting(
        Selector.parse(args.self_host, "--self-host"),
        _decimal(args.gpu_usd_per_hour, "--gpu-usd-per-hour"),
        decode,
        util,
        args.self_host_tokens,
    )


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    from spendstream.pricebook import pricer_for
    from spendstream.warehouse.reading import connect
    from spendstream.warehouse.report import default_period, parse_instant
    from spendstream.warehouse.whatif import run_whatif
    from spendstream.workdir import resolve_workdir

    since = parse_instant(args.since, "--since")
    until = parse_instant(args.until, "--until")
    if since is not None and until is not None and since >= until:
        raise ConfigError("--since must be before --until")
    levers = levers_from_args(args)
    hosting = _hosting(args)
    if not levers and hosting is None:
        raise ConfigError(
            "give at least one lever (--route, --max-output, --cache-hit-rate, --batch-share) "
            "or --self-host"
        )
    workdir = resolve_workdir(args.workdir)
    con = connect(workdir, config.warehouse)
    try:
        period = default_period(con, since, until)
    finally:
        con.close()
    result = run_whatif(
        workdir,
        period.since,
        period.until,
        pricer_for(workdir, config),
        levers,
        hosting,
        config.warehouse,
    )
    _print(result, period.since.isoformat(), period.until.isoformat(), args.format)
    return 0


def _row(ln: FeatureLine, exact: bool, total: bool = False) -> list[Any]:
    def m(v: Decimal) -> Decimal:
        return v if exact else v.quantize(Decimal("0.0001"))

    share = ln.savings_share
    # Calls without a team (and feature) are a line of their own, not the total: a table
    # names them as cost_by_team does; json keeps null.
    team = "(total)" if total else ln.team if ln.team is not None or exact else "(untagged)"
    return [
        team,
        ln.feature,
        ln.calls,
        ln.unpriced_calls,
        m(ln.baseline_usd),
        *(m(ln.baseline_usd - v) for v in ln.lever_usd),
        m(ln.combined_usd),
        m(ln.savings_usd),
        None if share is None else (share * 100).quantize(Decimal("0.01")),
    ]


def _hosting_lines(h: SelfHostingResult) -> list[str]:
    from spendstream.warehouse.charts import plural, usd

    a = h.assumptions
    be = h.break_even_tokens_per_month
    return [
        f"Self-hosting: {a.describe()}",
        f"  traffic: {h.tokens_in_period:,} {a.tokens} tokens in {h.period_hours.normalize():f} h "
        f"-> {h.tokens_per_month:,.0f} tokens/month; API {usd(h.api_usd_per_month)}/month",
        f"  one GPU decodes {h.tokens_per_gpu_month:,.0f} tokens/month at that utilisation; "
        f"{plural(h.gpus, 'GPU')} needed: {usd(h.self_host_usd_per_month)}/month",
        f"  monthly savings of self-hosting: {usd(h.savings_usd_per_month)}"
        + (" (the API is cheaper)" if h.savings_usd_per_month < 0 else ""),
        "  break-even: "
        + (
            f"{be:,.0f} tokens/month (self-hosting wins above it, except just past each extra GPU)"
            if be is not None
            else "never at this GPU price: a fully used GPU costs more than the API bill for "
            "what it decodes"
        ),
        f"  busiest hour: {h.peak_hour_tokens:,} tokens needs {plural(h.gpus_for_peak, 'GPU')} flat "
        f"out: {plural(h.gpus, 'GPU')} {'can' if h.serves_peak else 'can NOT'} serve it",
    ]


def _print(result: WhatIfResult, since: str, until: str, fmt: str) -> None:
    from spendstream.warehouse.output import render
    from spendstream.wording import plural

    columns = [
        "team",
        "feature",
        "calls",
        "unpriced_calls",
        "baseline_usd",
        *(f"lever{i + 1}_savings_usd" for i in range(len(result.levers))),
        "combined_usd",
        "savings_usd",
        "savings_pct",
    ]
    exact = fmt != "table"
    rows = [_row(ln, exact) for ln in result.lines] + [_row(result.total, exact, total=True)]
    if fmt == "json":
        h = result.self_hosting
        doc = {
            "period": {"since": since, "until": until},
            "assumptions": {
                "levers": result.levers,
                "combined_order": "route, output cap, cache, batch",
                "pricing": "each call priced by the pipeline's pricer at its own time",
                "self_hosting": h.assumptions.describe() if h else None,
            },
            "unpriced_calls": result.total.unpriced_calls,
            "calls_sent_to_unpriced_models": result.still_unpriced,
            "features": [
                {**dict(zip(columns, r, strict=True)), "stored_usd": ln.stored_usd}
                for r, ln in zip(rows[:-1], result.lines, strict=True)
            ],
            "total": {**dict(zip(columns, rows[-1], strict=True)), "stored_usd": result.total.stored_usd},
            "self_hosting": None if h is None else {
                k: getattr(h, k) for k in h.__dataclass_fields__ if k != "assumptions"
            },
        }  # fmt: skip
        json.dump(doc, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
        return
    notes = [f"What if, {since} to {until} (nothing is written):"]
    notes += [f"  lever {i + 1}: {d}" for i, d in enumerate(result.levers)]
    if len(result.levers) > 1:
        notes.append(
            "  combined: all levers together, in the order route, output cap, cache, batch"
        )
    notes.append(
        "  baseline: the same calls priced unchanged by the same pricer; "
        f"{plural(result.total.unpriced_calls, 'unpriced call')} "
        f"{'is' if result.total.unpriced_calls == 1 else 'are'} left out"
    )
    if result.still_unpriced:
        notes.append(
            f"  {plural(result.still_unpriced, 'call')} would go to a model with no price: "
            "kept at baseline"
        )
    note_out = sys.stdout if fmt == "table" else sys.stderr
    note_out.write("\n".join(notes) + "\n\n")
    if result.levers:
        render(columns, rows, fmt, sys.stdout)
    if result.self_hosting is not None:
        note_out.write(
            ("\n" if result.levers else "") + "\n".join(_hosting_lines(result.self_hosting)) + "\n"
        )
