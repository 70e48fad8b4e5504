"""Detectors: pure, stateful, event-time rules over batches of priced facts (one module per rule)."""

from __future__ import annotations

from spendstream.stream.detectors.base import Finding, make_alert

__all__ = ["Finding", "make_alert"]
