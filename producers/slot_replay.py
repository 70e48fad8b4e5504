"""Sending a spool slot's events through a transport of your choosing
(``Meter.replay_slot``), and reading a spooled line back into a ``Record`` (the Meter's
own replay does the same)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from spendstream.producers.spool import Spool
from spendstream.producers.transports import Record, Transport
from spendstream.topics import partition_key

__all__ = ["SlotReplay", "record_of", "replay_slot", "transport_name"]

log = logging.getLogger("spendstream.producers")


@dataclass(frozen=True, slots=True)
class SlotReplay:
    """What ``Meter.replay_slot`` did. Sent and rejected events are gone from the slot;
    ``left_bytes`` are still in it (the transport failed: run it again)."""

    slot: Path
    destination: str | None  # the slot's own, which the events were not sent to
    sent: int
    rejected: int  # refused by the receiver, as a Meter counts them: not kept
    left_bytes: int


def replay_slot(slot: Path | str, transport: Transport, *, batch_size: int = 1_000) -> SlotReplay:
    """Send the events waiting in a spool slot through ``transport``, oldest first,
    removing each batch from the slot once sent; stops at the first batch the transport
    fails (run it again later). For a slot of another destination, which only a Meter
    sending there replays (the same server spelt otherwise: the warning at ``Meter()``
    names it). The slot's lock is held throughout, so no Meter replays or writes it
    meanwhile; ``SpoolUnavailable`` if a running process holds it. ``transport`` is
    yours to close."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    spool = Spool(slot=slot)
    sent = rejected = 0
    try:
        while not spool.empty:
            lines = spool.peek(batch_size)
            if not lines:  # only a line a crash tore is left: skipped, as a Meter does
                spool.commit(1)
                break
            result = transport.send([record_of(line) for line in lines])
            failed = sorted(set(result.failed))
            done = failed[0] if failed else len(lines)
            refused = [why for i, why in result.rejected if i < done]
            for why in refused:
                log.warning("usage event rejected by %s: %s", transport_name(transport), why)
            sent += done - len(refused)
            rejected += len(refused)
            spool.commit(done)
            if failed:
                break
        return SlotReplay(spool.dir, spool.destination, sent, rejected, spool.size_bytes)
    finally:
        spool.close()


def record_of(line: bytes) -> Record:
    try:
        d = json.loads(line)
        key = partition_key(
            d.get("api_key_id"), d.get("session_id"), d.get("request_id"), str(d["event_id"])
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        key = b""  # unreadable line: let the pipeline dead-letter it rather than lose it
    return Record(key, line)


def transport_name(transport: Transport) -> str:
    """The transport's ``name``, or its class's: any object with ``send`` and ``close`` is a
    transport (a custom one without ``name`` failed in ``Meter()`` with AttributeError)."""
    name = getattr(transport, "name", None)
    return name if isinstance(name, str) else type(transport).__name__
