"""`spendstream kafka-local start|stop|status`: the implementation lives in spendstream.local.kafka.

``running_local_broker()`` and ``elsewhere_hint()`` serve the commands that find that broker
by themselves (run, alerts, breakers): a typo'd address is told where the broker runs."""

from __future__ import annotations

import argparse
import sys

from spendstream.local.kafka import configure, run

__all__ = ["configure", "elsewhere_hint", "run", "running_local_broker", "say_where_it_runs"]


def running_local_broker() -> str | None:
    """The address of a running ``spendstream kafka-local`` broker (or ``local start``'s),
    in their default data dirs, as ``--bootstrap-servers``' default finds one; else None."""
    from spendstream.local.kafka import default_data_dir, running_bootstrap
    from spendstream.local.services import default_data_dir as services_dir

    for where in (default_data_dir(), services_dir() / "kafka"):
        found = running_bootstrap(where)
        if found:
            return found
    return None


def elsewhere_hint(bootstrap: str, args: argparse.Namespace) -> str | None:
    """When no broker answers at ``bootstrap`` (the command's, from ``args``) but a kafka-local
    broker runs at another address: the sentence that says so, else None."""
    named = (
        "--bootstrap-servers"
        if getattr(args, "bootstrap_servers", None)
        else "[kafka] bootstrap_servers"
    )
    running = running_local_broker()
    if running is None or running == bootstrap:
        return None
    return (
        f"a spendstream kafka-local broker is running at {running}, not at {bootstrap} "
        f"({named}): a typo? Name {running}, or leave the address out and the command "
        "uses that broker by itself"
    )


def say_where_it_runs(command: str, bootstrap: str, args: argparse.Namespace) -> None:
    """No broker answers at ``bootstrap``: a kafka-local broker running elsewhere is told,
    on stderr, as ``command``'s line."""
    elsewhere = elsewhere_hint(bootstrap, args)
    if elsewhere is not None:
        print(f"{command}: {elsewhere}", file=sys.stderr, flush=True)
