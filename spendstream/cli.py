"""The one ``spendstream`` command: a thin dispatcher over the library.

Each subcommand lives in ``spendstream/commands/<name>.py`` and exposes
``configure(parser)`` (its arguments; cheap, no heavy imports) and
``run(args) -> int`` (imports what it needs, then calls library functions).
Exit codes: 0 success, 1 failure, 2 usage or configuration error, 3 the workdir is
in use by another ``ingest`` or ``demo`` (spendstream/workdir.py), 130 interrupted, 141
the reader of stdout went away (a pipe to ``head``).
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import importlib.util
import os
import re
import sys
from collections.abc import Sequence

from spendstream import __version__
from spendstream.errors import ConfigError, SpendstreamError, ToolMissingError, WorkdirBusy

__all__ = ["COMMANDS", "build_parser", "main"]

# name -> one-line help. The module spendstream.commands.<name with - as _> implements it.
COMMANDS: dict[str, str] = {
    "demo": "run the whole pipeline embedded on a synthetic workload and say what it found",
    "ingest": "run the pipeline embedded over event files: JSON Lines or OTLP/JSON traces ('-' is stdin)",
    "import-batch": "land OpenAI or Anthropic batch result files as usage events (batch = true)",
    "run": "run the stream processors on Kafka (and the HTTP ingest endpoint)",
    "alerts": "route alert events from Kafka to PagerDuty, Slack, webhooks and the console",
    "sql": "run a SQL statement against the warehouse",
    "query": "run a named warehouse query",
    "breakers": "list circuit breakers or reset one",
    "leases": "serve budget leases for hard budgets on Kafka",
    "kafka-local": "start, stop or inspect a real single-node Kafka on this machine (no Docker)",
    "local": "start, stop or inspect Kafka, PostgreSQL and an S3 server on this machine (no Docker)",
    "prices": "inspect prices: unpriced models, reprice a time range, reconcile reported costs",
    "warehouse": "warehouse maintenance: compact, check data quality, load revenue, migrate",
    "report": "write a self-contained HTML cost report",
    "whatif": "re-price actual traffic under alternative assumptions",
    "init": "write a commented starter spendstream.toml (--cluster for a Kafka cluster)",
    "serve": "serve the report as a live web page, with open breakers and recent alerts",
}


def _module_name(command: str) -> str:
    return "spendstream.commands." + command.replace("-", "_")


def _available() -> list[str]:
    # A command appears once its module exists; a module that exists but fails to import is a bug
    # and must surface (when its options are built), so only absence is tolerated here.
    return [name for name in COMMANDS if importlib.util.find_spec(_module_name(name)) is not None]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        if re.fullmatch(r"the following arguments are required: (COMMAND|ACTION)", message):
            # `spendstream` (or `spendstream prices`) alone: what there is to run, with a
            # line each, rather than a usage line that lists none of them.
            self.print_help(sys.stderr)
        else:
            self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}{_did_you_mean(message)}\n")


def _did_you_mean(message: str) -> str:
    """argparse names a mistyped command or choice but not the one meant (before 3.14)."""
    found = re.match(r"argument .*: invalid choice: '([^']*)' \(choose from (.*)\)$", message)
    if found is None:
        return ""
    choices = re.findall(r"'([^']*)'", found.group(2)) or found.group(2).split(", ")
    close = difflib.get_close_matches(found.group(1), choices, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _innermost(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> argparse.ArgumentParser:
    """The parser of the (sub)command the arguments chose: `prices show`'s, not the top's."""
    while True:
        sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        chosen = None if sub is None else getattr(args, sub.dest, None)
        if sub is None or chosen not in sub.choices:
            return parser
        parser = sub.choices[chosen]


def _unrecognized(
    parser: argparse.ArgumentParser, args: argparse.Namespace, extras: list[str]
) -> None:
    """Words no option took, said by the command they were given to, with the flag meant:
    argparse said `spendstream: error: unrecognized arguments: --ouput x.html` under the top
    command's usage line, and `spendstream sql SELECT team FROM usage_facts` (unquoted) the
    same of `team FROM usage_facts`."""
    command = _innermost(parser, args)
    hints = []
    flags = [o for a in command._actions for o in a.option_strings if o.startswith("--")]
    for word in extras:
        if word.startswith("--"):
            close = difflib.get_close_matches(word.split("=", 1)[0], flags, n=1)
            if close:
                hints.append(f"{word.split('=', 1)[0]}: did you mean {close[0]}?")
    statement = getattr(args, "statement", None)
    if args.command == "sql" and isinstance(statement, str) and not extras[0].startswith("-"):
        words = [statement, *(w for w in extras if not w.startswith("-"))]
        # Unquoted, `SELECT * FROM t` reaches us with the directory's file names for `*`:
        # each run of names that exist here is put back as the `*` it was.
        globbed = [os.path.lexists(w) for w in words]
        shown: list[str] = []
        for word, named in zip(words, globbed, strict=True):
            if not (named and shown and shown[-1] == "*"):
                shown.append("*" if named else word)
        whole = " ".join(shown)
        hints.append(
            f'the statement is one argument: quote it, spendstream sql "{whole}"'
            + (
                " (unquoted, the shell put this directory's file names for *)"
                if any(globbed)
                else ""
            )
        )
    said = "; ".join(["unrecognized arguments: " + " ".join(extras), *hints])
    command.error(said)


def build_parser(only: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """Every command's parser; with `only`, just those commands' options are built.

    A command's options import its module, and some of those import numpy, pyarrow and
    pydantic: building all of them took ~0.6 s before `--version` or `--help` could answer.
    The other commands are still listed (help, choices, did-you-mean)."""
    parser = _Parser(
        prog="spendstream",
        description="Event-streaming metering pipeline for LLM spend.",
    )
    parser.add_argument("--version", action="version", version=f"spendstream {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in _available():
        p = sub.add_parser(name, help=COMMANDS[name], description=COMMANDS[name])
        if only is None or name in only:
            module = importlib.import_module(_module_name(name))
            module.configure(p)
            p.set_defaults(_module=module)
    return parser


def _command_named(argv: Sequence[str]) -> str | None:
    # The top-level parser has only flags, so the first word that is not one names the command.
    first = next((a for a in argv if not a.startswith("-")), None)
    return first if first in COMMANDS else None


def main(argv: Sequence[str] | None = None) -> int:
    words = list(argv) if argv is not None else sys.argv[1:]
    command = _command_named(words)
    # No command named (`--version`, `--help`, a typo): list every command, import none.
    parser = build_parser([command] if command is not None else [])
    args, extras = parser.parse_known_args(words)
    if extras:
        _unrecognized(parser, args, extras)
    try:
        code = int(args._module.run(args) or 0)
        sys.stdout.flush()  # inside the try: a reader gone since the last write is caught below
        return code
    except (ConfigError, ToolMissingError) as exc:
        print(f"spendstream {args.command}: {exc}", file=sys.stderr)
        return 2
    except WorkdirBusy as exc:
        print(f"spendstream {args.command}: {exc}", file=sys.stderr)
        return WorkdirBusy.exit_code
    except SpendstreamError as exc:
        print(f"spendstream {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        again = (
            ": what landed stays landed; the same command again lands the rest (a replay adds "
            "nothing)"
            if args.command in ("ingest", "import-batch")
            else ""
        )
        print(f"\nspendstream {args.command}: interrupted{again}", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`spendstream sql ... | head`): exit as a C tool killed by
        # SIGPIPE would (128 + 13), quietly; stdout goes to /dev/null so the interpreter's
        # final flush does not raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
