"""``spendstream import-batch FILE...``: provider batch result files through the embedded pipeline.

Each line of an OpenAI Batch API output file or an Anthropic Message Batches results file
becomes a usage event with ``batch = true`` (``spendstream.producers.batch_results``),
landed exactly as ``spendstream ingest`` lands events; importing a file again adds nothing.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator

from spendstream.commands._options import add_pipeline, config_from_args
from spendstream.errors import ConfigError
from spendstream.instants import parse_instant

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE", help="batch results files (JSON Lines)")
    parser.add_argument(
        "--provider",
        choices=["openai", "anthropic"],
        default=None,
        help="whose results these are (default: each line's shape says)",
    )
    parser.add_argument(
        "--at",
        default=None,
        metavar="T",
        help="event time for lines without their own (Anthropic's), as ISO 8601 "
        "(default: the file's modification time)",
    )
    # A result line names the request, never who made it: the importer says.
    for flag, field in _ATTRIBUTION_FLAGS.items():
        parser.add_argument(
            f"--{flag}",
            dest=field,
            default=None,
            metavar="NAME",
            help=f"the events' {field} (for attribution; default: none)",
        )
    parser.add_argument(
        "--tag",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a tag every event gets (repeatable)",
    )
    add_pipeline(parser)


# import-batch's attribution flags -> the event field each sets.
_ATTRIBUTION_FLAGS = {
    "team": "team",
    "feature": "feature",
    "project": "project",
    "environment": "environment",
    "cost-center": "cost_center",
    "user": "user_id",
}


def _attribution(args: argparse.Namespace) -> dict[str, object]:
    """The fields the flags give every event, checked as the event model checks them: a bad
    value is one usage error now, not a dead letter per line."""
    from pydantic import ValidationError

    from spendstream.producers.event import UsageEvent, describe_validation_error

    fields: dict[str, object] = {
        field: getattr(args, field)
        for field in _ATTRIBUTION_FLAGS.values()
        if getattr(args, field) is not None
    }
    tags: dict[str, str] = {}
    for tag in args.tag:
        key, sep, value = tag.partition("=")
        if not sep or not key:
            raise ConfigError(f"--tag {tag!r}: write it KEY=VALUE (e.g. --tag batch_job=nightly)")
        tags[key] = value
    if tags:
        fields["tags"] = tags
    probe = {"event_id": "probe", "ts": "2026-01-01T00:00:00Z", "provider": "openai",
             "model": "probe", "input_tokens": 0, "output_tokens": 0}  # fmt: skip
    try:
        UsageEvent.model_validate({**probe, **fields})
    except ValidationError as exc:
        flags = {v: k for k, v in _ATTRIBUTION_FLAGS.items()} | {"tags": "tag"}
        raise ConfigError(
            f"{describe_validation_error(exc)} (from --{', --'.join(flags[f] for f in fields)})"
        ) from None
    return fields


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    at = parse_instant(args.at, "--at")
    attribution = _attribution(args)
    for path in args.files:
        try:
            open(path, "rb").close()
        except OSError as exc:
            raise ConfigError(f"cannot read batch results file {path}: {exc.strerror}") from None

    from spendstream.commands._pipeline_output import (
        print_summary,
        progress_printer,
        summary_on_interrupt,
    )
    from spendstream.producers.batch_results import read_batch_results
    from spendstream.runtime.embedded import Rejected, ingest_records
    from spendstream.workdir import WorkdirLock, resolve_workdir

    def records() -> Iterator[tuple[str, bytes] | Rejected]:
        for path in args.files:
            lines = read_batch_results(
                path, provider=args.provider, default_ts=at, attribution=attribution
            )
            for line in lines:
                if line.event is not None:
                    yield f"{path}:{line.line}", line.event
                else:
                    yield Rejected(f"{path}:{line.line}", line.raw, line.error or "rejected")

    workdir = resolve_workdir(args.workdir)
    shown = workdir if args.workdir else None
    # One embedded writer per workdir (exit 3).
    with WorkdirLock(workdir, "import-batch"), summary_on_interrupt(sys.stdout, shown, args.config):
        summary = ingest_records(
            workdir,
            config,
            records(),
            route_alerts=args.route_alerts,
            progress=progress_printer(sys.stderr),
        )
    print_summary(summary, sys.stdout, shown, args.config)
    return 0
